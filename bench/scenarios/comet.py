"""Comet polling: what holding hundreds of polls costs, and how fast a
queued command reaches its camera; then the same cameras against a server
that answers every poll at once.

The gateway is the twistd process; commands are queued through its admin
API (``POST /api/cameras/<serial>/open``) with a bearer token, as a cloud
integration or the admin page would.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from bench.gatewayproc import GatewayProcess, GatewaySetup
from bench.report import Row, ScenarioResult, ms, percent, verdict
from bench.settings import Context, progress
from bench.system import (
    LOAD_CPU,
    SERVER_CPU,
    BenchError,
    Child,
    CpuMeter,
    python,
    wait_until,
)
from gateway.simulator.report import percentile

NAME = "comet polling"


def _held(gateway: GatewayProcess) -> int:
    return int(gateway.status()["cameras"]["comet_polls_held"])


def _start_line(child: Child, prefix: str, timeout: float) -> str:
    while True:
        line = child.read_line(timeout)
        if line is None:
            raise BenchError(f"{child.name} did not start: {child.output_tail()}")
        if line.startswith(prefix):
            return line.strip()


def _fleet(directory: Path, port: int, cameras: int, spread: float, name: str) -> Child:
    child = Child(
        name,
        [
            python(),
            "-m",
            "bench.loadgen",
            "comet",
            "--server",
            f"http://127.0.0.1:{port}",
            "--cameras",
            str(cameras),
            "--spread",
            str(spread),
        ],
        log=directory / f"{name}.log",
        cpu=LOAD_CPU,
        capture=True,
    )
    _start_line(child, "STARTED", 60)
    return child


def _fleet_result(child: Child) -> dict[str, Any]:
    child.process.terminate()
    result = None
    for raw in child.lines_until_end(60):
        if raw.startswith("RESULT "):
            result = json.loads(raw[len("RESULT ") :])
    child.wait(30)
    if result is None:
        raise BenchError(f"{child.name} gave no result: {child.output_tail()}")
    return result


def run(ctx: Context) -> ScenarioResult:
    settings = ctx.settings
    began = time.monotonic()
    directory = ctx.directory("comet")
    cameras, hold = settings.comet_cameras, settings.comet_hold
    rows: list[Row] = []
    notes: list[str] = []

    gateway = GatewayProcess.start(directory / "gateway", GatewaySetup(comet_hold_seconds=hold))
    fleet: Child | None = None
    try:
        progress(f"comet: {cameras} cameras start polling over {hold:.0f} s")
        fleet = _fleet(directory, gateway.camera_port, cameras, hold, "comet-fleet")
        wait_until(
            lambda: _held(gateway) >= cameras,
            hold * 2 + 60,
            f"{cameras} comet polls held",
            interval=0.2,
        )
        # One whole hold period: every camera's poll is answered and renewed once.
        progress(f"comet: holding, measuring CPU for {hold:.0f} s")
        gateway_meter, fleet_meter = CpuMeter(gateway.pid), CpuMeter(fleet.pid)
        gateway_meter.start()
        fleet_meter.start()
        time.sleep(hold)
        idle_cpu, fleet_cpu = gateway_meter.percent(), fleet_meter.percent()
        held = _held(gateway)

        progress(f"comet: {settings.comet_commands} open commands")
        status, listing = gateway.admin("GET", "/api/cameras")
        if status != 200:
            raise BenchError(f"GET /api/cameras: HTTP {status} {listing}")
        serials = [camera["serialno"] for camera in listing["cameras"]]
        random.Random(3).shuffle(serials)
        queued: dict[str, float] = {}
        pace = 1.0 / 20  # 20 commands a second, each to another camera
        for serial in serials[: settings.comet_commands]:
            sent = time.time()
            status, answer = gateway.admin("POST", f"/api/cameras/{serial}/open")
            if status != 202:
                raise BenchError(f"POST /api/cameras/{serial}/open: HTTP {status} {answer}")
            queued[serial] = sent
            time.sleep(pace)
        time.sleep(1.0)
        result = _fleet_result(fleet)
        fleet = None
        latencies = []
        for serial, at in queued.items():
            pulses = [pulse for pulse in result["pulses"].get(serial, []) if pulse >= at]
            if pulses:
                latencies.append((pulses[0] - at) * 1000)
        delivered = len(latencies)
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        rows.append(
            Row(
                f"comet polling, {cameras} cameras",
                "gateway CPU while holding",
                f"{percent(idle_cpu)} of a core ({held} polls held, hold {hold:.0f} s)",
                "answer-at-once server: see next row",
                "-",
                "< 5 % of a core",
                verdict(idle_cpu < 5.0),
                f"simulator {percent(fleet_cpu)}",
            )
        )
        rows.append(
            Row(
                f"comet polling, {cameras} cameras",
                "command delivery latency",
                f"p50 {ms(p50)}, p99 {ms(p99)} ({delivered}/{len(queued)} delivered)",
                "-",
                "-",
                "p99 < 50 ms",
                verdict(p99 is not None and p99 < 50.0 and delivered == len(queued)),
                f"simulator {percent(fleet_cpu)}",
            )
        )
        notes.append(
            f"comet: {cameras} simulated cameras in one separate process, started evenly over "
            f"{hold:.0f} s (as cameras boot at different times), comet_hold_seconds = "
            f"{hold:.0f}; CPU of the twistd gateway from /proc over one whole hold period once "
            f"every poll was held. Delivery: open-barrier commands to {len(queued)} distinct "
            f"random cameras, 20 a second, through the admin API (POST "
            f"/api/cameras/<serial>/open with a bearer token); latency from sending that "
            f"request to the camera's relay pulse (the admin request itself included), "
            f"clocks of one machine."
        )
    finally:
        if fleet is not None:
            fleet.stop()
        gateway.stop()

    # The same cameras against a server that answers every poll at once.
    progress("comet: the same cameras against an answer-at-once server")
    server = Child(
        "answer-at-once",
        [python(), "-m", "bench.servers", "comet"],
        log=directory / "answer-at-once.log",
        cpu=SERVER_CPU,
        capture=True,
    )
    fleet = None
    try:
        port = int(_start_line(server, "PORT ", 30).split()[1])
        spread = min(hold, 2.0)
        fleet = _fleet(directory, port, cameras, spread, "busy-fleet")
        time.sleep(spread + 1.0)
        window = min(hold, 10.0)
        server_meter, fleet_meter = CpuMeter(server.pid), CpuMeter(fleet.pid)
        server_meter.start()
        fleet_meter.start()
        time.sleep(window)
        server_cpu, busy_fleet_cpu = server_meter.percent(), fleet_meter.percent()
        result = _fleet_result(fleet)
        fleet = None
        polls = result["polls"] / max(result["seconds"] - spread, 1e-9)
        rows.append(
            Row(
                f"comet polling, {cameras} cameras",
                "answer-at-once server CPU (comparison)",
                f"{percent(server_cpu)} of a core, about {polls:.0f} polls/s",
                f"gateway holding: {percent(idle_cpu)}",
                "-",
                "-",
                "info",
                f"simulator {percent(busy_fleet_cpu)}",
            )
        )
        notes.append(
            "answer-at-once: a bare twisted.web server (bench/servers.py) answers each poll "
            "at once with the idle reply, so each camera polls again at once: the load of a "
            "server that does not hold polls. Its rate is bounded by how fast the simulator "
            f"can poll (its process ran at {percent(busy_fleet_cpu)} of its core)."
        )
    finally:
        if fleet is not None:
            fleet.stop()
        server.stop()
    return ScenarioResult(NAME, tuple(rows), tuple(notes), time.monotonic() - began)

