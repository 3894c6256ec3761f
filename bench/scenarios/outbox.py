"""The outbox drain after an outage: events queued in the store go to a
local stub cloud (its own process) through the upstream link."""

from __future__ import annotations

import base64
import json
import os
import time

from bench.report import Row, ScenarioResult, not_measured, number, percent, verdict
from bench.settings import Context, progress
from bench.system import LOAD_CPU, SERVER_CPU, BenchError, Child, CpuMeter, python

NAME = "outbox drain"
TARGET = 5000.0  # events/s


def _upstream_available() -> str | None:
    """None when the upstream link can be run, else why not."""
    try:
        from gateway.upstream.service import UpstreamService  # noqa: F401
        from gateway.upstream.settings import UpstreamSettings  # noqa: F401
    except ImportError as error:
        return f"upstream link not available ({error})"
    return None


def run(ctx: Context) -> ScenarioResult:
    settings = ctx.settings
    began = time.monotonic()
    events = settings.outbox_events
    scenario = f"outbox drain after an outage, {number(events)} events"
    target = f">= {number(TARGET)} events/s"
    missing = _upstream_available()
    if missing is not None:
        row = not_measured(scenario, "events/s to a local stub cloud", target, missing)
        return ScenarioResult(NAME, (row,), (), time.monotonic() - began)
    directory = ctx.directory("outbox")
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")
    cloud = Child(
        "stub-cloud",
        [python(), "-m", "bench.servers", "cloud", "--secret", secret],
        log=directory / "cloud.log",
        cpu=LOAD_CPU,
        capture=True,
    )
    drainer: Child | None = None
    try:
        line = cloud.read_line(30)
        if line is None or not line.startswith("PORT "):
            raise BenchError(f"the stub cloud did not start: {cloud.output_tail()}")
        port = int(line.split()[1])
        progress(f"outbox: queueing {events} events in a store")
        drainer = Child(
            "outbox",
            [
                python(),
                "-m",
                "bench.inproc",
                "outbox",
                "--state-dir",
                str(directory / "state"),
                "--events",
                str(events),
                "--cloud",
                f"http://127.0.0.1:{port}",
                "--secret",
                secret,
            ],
            log=directory / "outbox.log",
            cpu=SERVER_CPU,
            capture=True,
        )
        result = None
        cloud_meter = CpuMeter(cloud.pid)
        cloud_cpu = 0.0
        fill_note = ""
        while True:
            line = drainer.read_line(900)
            if line is None:
                break
            if line.startswith("FILLED "):
                fill_note = line.strip()
                progress(f"outbox: {fill_note.lower()}; draining")
                cloud_meter.start()
            elif line.startswith("RESULT "):
                cloud_cpu = cloud_meter.percent()
                result = json.loads(line[len("RESULT ") :])
        drainer.wait(30)
        if result is None:
            raise BenchError(f"the outbox drain gave no result: {drainer.output_tail()}")
    finally:
        if drainer is not None:
            drainer.stop()
        cloud.stop()
    seconds = result["seconds"]
    rate = result["delivered"] / seconds if seconds > 0 else 0.0
    cpu = 100.0 * result["cpu_seconds"] / seconds if seconds > 0 else 0.0
    complete = result["delivered"] >= result["queued"] and result["left"] == 0
    row = Row(
        scenario,
        "events/s to a local stub cloud",
        f"{number(rate)} events/s ({result['delivered']} in {seconds:.1f} s, "
        f"gateway CPU {percent(cpu)})",
        "-",
        "-",
        target,
        verdict(rate >= TARGET and complete),
        f"stub cloud {percent(cloud_cpu)}",
    )
    note = (
        f"outbox: {number(result['queued'])} plate events committed to a fresh store with "
        f"outbox=True ({fill_note.removeprefix('FILLED ').strip() or 'untimed'}), then "
        f"gateway.upstream.UpstreamService started against a stub cloud (bench/servers.py, "
        f"its own process: checks every signature, parses every batch, answers 202) and "
        f"timed until every event was accepted; batches of {result['batch_size']} (the "
        f"default), no images. The store and the upstream service run in one bench process "
        f"(the same UpstreamService the twistd gateway runs, measured alone: no camera traffic competes with the drain)."
    )
    return ScenarioResult(NAME, (row,), (note,), time.monotonic() - began)
