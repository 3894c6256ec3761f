"""The gateway's footprint: start-up time to listening, and resident memory
with a fleet of comet-polling cameras."""

from __future__ import annotations

import statistics
import time

from bench.gatewayproc import GatewayProcess, GatewaySetup
from bench.report import Row, ScenarioResult, verdict
from bench.settings import Context, progress
from bench.system import LOAD_CPU, BenchError, Child, python, rss_bytes, wait_until

NAME = "footprint"
RSS_TARGET_MB = 80.0
STARTUP_TARGET = 1.5


def run(ctx: Context) -> ScenarioResult:
    settings = ctx.settings
    began = time.monotonic()
    directory = ctx.directory("footprint")
    cameras = settings.footprint_cameras
    listening, ready = [], []
    progress(f"footprint: {settings.startups} start-ups")
    for attempt in range(settings.startups):
        gateway = GatewayProcess.start(directory / f"start-{attempt}", GatewaySetup())
        try:
            listening.append(gateway.listening_after)
            from bench.wrk import push_body

            body = push_body(0).render(
                {"serialno": "bench-start", "plateid": "1", "license": "京A12345"}
            )
            ready.append(gateway.wait_ready(body))
        finally:
            gateway.stop()
    startup = statistics.median(listening)
    ready_median = statistics.median(ready)

    progress(f"footprint: RSS with {cameras} comet cameras")
    gateway = GatewayProcess.start(directory / "rss", GatewaySetup())
    idle_rss = rss_bytes(gateway.pid)
    fleet = Child(
        "fleet",
        [
            python(),
            "-m",
            "bench.loadgen",
            "comet",
            "--server",
            f"http://127.0.0.1:{gateway.camera_port}",
            "--cameras",
            str(cameras),
            "--spread",
            "1",
        ],
        log=directory / "fleet.log",
        cpu=LOAD_CPU,
        capture=True,
    )
    try:
        line = fleet.read_line(60)
        if line is None or not line.startswith("STARTED"):
            raise BenchError(f"the camera fleet did not start: {fleet.output_tail()}")
        wait_until(
            lambda: gateway.status()["cameras"]["comet_polls_held"] >= cameras,
            90,
            f"{cameras} comet polls held",
            interval=0.2,
        )
        # The highest of a few samples over a few seconds of holding.
        peak = 0
        for _ in range(10):
            peak = max(peak, rss_bytes(gateway.pid))
            time.sleep(0.3)
        held = gateway.status()["cameras"]["comet_polls_held"]
    finally:
        fleet.stop()
        gateway.stop()
    mb = peak / 1e6
    rows = (
        Row(
            NAME,
            f"RSS with {cameras} cameras comet-polling",
            f"{mb:.1f} MB ({held} polls held; {idle_rss / 1e6:.1f} MB before they came)",
            "-",
            "-",
            f"< {RSS_TARGET_MB:.0f} MB",
            verdict(mb < RSS_TARGET_MB),
            "-",
        ),
        Row(
            NAME,
            "start-up time to listening",
            f"{startup:.2f} s (median of {len(listening)}; plates kept after {ready_median:.2f} s)",
            "-",
            "-",
            f"< {STARTUP_TARGET} s",
            verdict(startup < STARTUP_TARGET),
            "-",
        ),
    )
    note = (
        f"footprint: start-up from the twistd process being started to its camera port "
        f"accepting connections, with a new state directory each time; 'plates kept' is "
        f"when a plate push was first answered (store open, plate list loaded). RSS is "
        f"VmRSS from /proc, the highest of 10 samples over 3 s once all {cameras} simulated "
        f"cameras (separate process) had a poll held."
    )
    return ScenarioResult(NAME, rows, (note,), time.monotonic() - began)
