"""The outbox drain after an outage: events queued in the store go to a
local stub cloud (its own process) through the upstream link."""

from __future__ import annotations

import base64
import json
import os
import time

from bench.report import Row, ScenarioResult, number, percent, verdict
from bench.settings import Context, progress
from bench.system import LOAD_CPU, SERVER_CPU, BenchError, Child, CpuMeter, python

NAME = "outbox drain"
TARGET = 5000.0  # events/s


def run(ctx: Context) -> ScenarioResult:
    settings = ctx.settings
    began = time.monotonic()
    events = settings.outbox_events
    scenario = f"outbox drain after an outage, {number(events)} events"
    target = f">= {number(TARGET)} events/s"
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
        f"the gateway (gateway.tap.build_service, as twistd builds it) started against a "
        f"stub cloud (bench/servers.py, its own process: checks every signature, parses "
        f"every batch, answers 202) and timed until every event was accepted; batches of "
        f"{result['batch_size']} (the default), no images, no camera traffic competing "
        f"with the drain."
    )
    return ScenarioResult(NAME, (row,), (note,), time.monotonic() - began)
