"""The offline backlog: a camera that stored its plates while the gateway
was down uploads them, one record per request, each acknowledged with
``ContinuePushOffline`` only once it is kept."""

from __future__ import annotations

import json
import time

from bench.gatewayproc import GatewayProcess, GatewaySetup, Lane
from bench.report import Row, ScenarioResult, number, percent, verdict
from bench.scenarios.pushes import camera_serials
from bench.settings import Context, progress
from bench.system import LOAD_CPU, BenchError, Child, CpuMeter, free_port, python

NAME = "offline backlog"
TARGET = 500.0  # records/s


def run(ctx: Context) -> ScenarioResult:
    settings = ctx.settings
    began = time.monotonic()
    directory = ctx.directory("offline")
    records = settings.offline_records
    port = free_port()
    progress(f"offline: one camera stores {records} plates while the gateway is down")
    camera = Child(
        "offline-camera",
        [
            python(),
            "-m",
            "bench.loadgen",
            "offline",
            "--server",
            f"http://127.0.0.1:{port}",
            "--plates",
            str(records),
            "--duration",
            "600",
        ],
        log=directory / "camera.log",
        cpu=LOAD_CPU,
        capture=True,
    )
    gateway: GatewayProcess | None = None
    try:
        line = camera.read_line(300)
        if line is None or not line.startswith("STORED "):
            raise BenchError(f"the camera stored no records: {camera.output_tail()}")
        stored = int(line.split()[1])
        serial = camera_serials(1)[0]
        progress(f"offline: {stored} records stored; the gateway starts")
        gateway = GatewayProcess.start(
            directory / "gateway",
            GatewaySetup(lanes=(Lane("Entrance", serial),)),
            camera_port=port,
        )
        started = time.time() - gateway.listening_after
        meter = CpuMeter(gateway.pid)
        meter.start()
        camera_cpu_before = _cpu_or_zero(camera.pid)
        result = None
        while True:
            line = camera.read_line(900)
            if line is None:
                break
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
        gateway_cpu = meter.percent()
        camera.wait(30)
        if result is None:
            raise BenchError(f"the offline camera gave no result: {camera.output_tail()}")
    finally:
        if gateway is not None:
            gateway.stop()
        camera.stop()
    delivered = result["delivered"]
    first, last = result["first_answer"], result["last_answer"]
    span = (last - first) if first is not None and last is not None else 0.0
    rate = (delivered - 1) / span if span > 0 else 0.0
    overall = delivered / (last - started) if last is not None else 0.0
    camera_cpu = (camera.cpu_used or 0.0) - camera_cpu_before
    camera_share = 100.0 * camera_cpu / span if span > 0 else 0.0
    row = Row(
        NAME,
        f"{stored} offline records, one camera, ContinuePushOffline",
        f"{number(rate)} records/s ({delivered} delivered in {span:.1f} s, "
        f"gateway CPU {percent(gateway_cpu)})",
        "-",
        "-",
        f">= {TARGET:.0f} records/s",
        verdict(rate >= TARGET and delivered == stored),
        f"simulator {percent(camera_share)}",
    )
    note = (
        f"offline: the simulated camera (separate process, offline records on) read "
        f"{records} plates while nothing listened on its server port, then the gateway "
        f"(twistd) was started on that port. Rate from the first record answered to the "
        f"last; {number(overall)} records/s counting the gateway's start-up "
        f"({result['interrupted']} uploads interrupted, {result['pending']} left). "
        f"Each record is one request, answered once it is committed (one fsync per record: "
        f"the camera sends the next record only after the ContinuePushOffline reply)."
    )
    return ScenarioResult(NAME, (row,), (note,), time.monotonic() - began)


def _cpu_or_zero(pid: int) -> float:
    from bench.system import cpu_seconds

    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0
