"""Request bodies at the memory budget: the gateway's resident memory while
two hosts keep 32 connections each sending 8 MB plate pushes they never
finish (the default body limit, budget and per-address connection limit),
and a camera's pushes answered meanwhile."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

from bench.gatewayproc import GatewayProcess, GatewaySetup, Lane
from bench.report import Row, ScenarioResult, number, verdict
from bench.settings import Context, progress
from bench.system import rss_bytes

NAME = "request bodies at the memory budget"
HOSTS = ("127.0.0.2", "127.0.0.3")
PER_HOST = 32
BODY = 8_388_608  # the default max_body_bytes
BUDGET = 67_108_864  # the default body_memory_budget_bytes
CAMERA = "bench-bodies-camera"
CAMERA_TIMEOUT = 5.0  # a camera's own timeout for a push


def _head(length: int) -> bytes:
    return (
        b"POST / HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/Json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


class _Unfinished:
    """One connection sending all of a body but its last byte, as fast as
    the gateway reads it; reopened when the gateway closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None
        self.sent = 0
        self.reopened = 0

    def step(self, chunk: memoryview) -> None:
        if self.sock is None:
            sock = socket.socket()
            try:
                sock.settimeout(1.0)
                sock.bind((self.host, 0))
                sock.connect(("127.0.0.1", self.port))
                sock.sendall(_head(BODY))
                sock.setblocking(False)
            except OSError:
                sock.close()
                return
            self.sock, self.sent = sock, 0
            self.reopened += 1
        try:
            if self.sent < BODY - 1:
                self.sent += self.sock.send(chunk[self.sent : BODY - 1])
            if self.sock.recv(65536) == b"":
                raise ConnectionError("closed")
        except BlockingIOError:
            pass
        except OSError:
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _push(port: int, plateid: int) -> float | None:
    body = json.dumps(
        {"AlarmInfoPlate": {"serialno": CAMERA, "result": {"PlateResult": {
            "license": "京A12345", "plateid": plateid, "triggerType": 1}}}}
    ).encode()
    began = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CAMERA_TIMEOUT)
    try:
        connection.request("POST", "/", body=body, headers={"Content-Type": "application/Json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            return None
    except OSError:
        return None
    finally:
        connection.close()
    return time.monotonic() - began


def run(ctx: Context) -> ScenarioResult:
    began = time.monotonic()
    seconds = ctx.settings.bodies_seconds
    directory = ctx.directory("bodies")
    gateway = GatewayProcess.start(
        directory, GatewaySetup(lanes=(Lane("Entrance", CAMERA, heartbeat="common"),))
    )
    try:
        idle = rss_bytes(gateway.pid)
        progress(f"bodies: {len(HOSTS)} x {PER_HOST} unfinished 8 MB bodies for {seconds:.0f} s")
        pile = [_Unfinished(host, gateway.camera_port) for host in HOSTS for _ in range(PER_HOST)]
        chunk = memoryview(b"x" * BODY)
        latencies: list[float] = []
        pushes = [0]
        until = time.monotonic() + seconds

        def hold_pile() -> None:
            while time.monotonic() < until:
                for connection in pile:
                    connection.step(chunk)
                time.sleep(0.01)
            for connection in pile:
                connection.close()

        def camera() -> None:
            time.sleep(1.0)
            while time.monotonic() < until:
                pushes[0] += 1
                latency = _push(gateway.camera_port, pushes[0])
                if latency is not None:
                    latencies.append(latency)
                time.sleep(0.5)

        threads = [threading.Thread(target=hold_pile), threading.Thread(target=camera)]
        for thread in threads:
            thread.start()
        peak = idle
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, rss_bytes(gateway.pid))
            time.sleep(0.02)
        reopened = sum(connection.reopened for connection in pile)
    finally:
        gateway.stop()
    pushes_made = pushes[0]
    grown = (peak - idle) / 1e6
    limit = BUDGET / 1e6
    worst = max(latencies) if latencies else float("nan")
    rows = (
        Row(
            NAME,
            f"RSS with {len(HOSTS)} hosts x {PER_HOST} unfinished 8 MB bodies",
            f"{peak / 1e6:.0f} MB peak, {grown:.0f} MB over idle ({idle / 1e6:.0f} MB); "
            f"{reopened} connections in {seconds:.0f} s",
            "-",
            "-",
            f"growth < budget ({limit:.0f} MB) + 25 %",
            verdict(grown < limit * 1.25),
            "-",
        ),
        Row(
            NAME,
            "a camera's plate pushes meanwhile, 2 a second",
            f"{len(latencies)}/{pushes_made} answered, worst {number(worst * 1000, 1)} ms",
            "-",
            "-",
            f"all within {CAMERA_TIMEOUT:.0f} s",
            verdict(pushes_made > 0 and len(latencies) == pushes_made),
            "-",
        ),
    )
    note = (
        "request bodies at the memory budget: default settings (max_body_bytes 8 MiB, "
        "body_memory_budget_bytes 64 MiB, 32 connections per address, request_timeout_seconds "
        "15, min_body_bytes_per_second 16384). Two loopback addresses keep 32 connections each sending all of an 8 MB body but "
        "its last byte, reopened when the gateway closes them (each thread of the bench "
        "process); a camera pushes a plate every 0.5 s meanwhile, with its 5 s timeout. RSS is "
        "VmRSS of the twistd process, sampled every 20 ms. Before the budget, such bodies cost 245 MB per address. "
        "A short run on a shared machine (2 cores, other work on it): the numbers are a bound "
        "seen once, not a steady state."
    )
    return ScenarioResult(NAME, rows, (note,), time.monotonic() - began)
