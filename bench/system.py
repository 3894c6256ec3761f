"""The machine and its processes: what the harness measures them with.

CPU time comes from ``/proc/<pid>/stat`` (user + system ticks) for a process
that is still running, and from ``wait4()``'s resource usage for one that
has exited (a load generator's own CPU). Memory is ``VmRSS`` from
``/proc/<pid>/status``. Nothing here imports Twisted.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

REPO = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")

# The gateway (and the servers it is compared with) run on the first core;
# load generators on the second, so that they never take the gateway's CPU.
SERVER_CPU = 0
LOAD_CPU = 1


class BenchError(Exception):
    """A scenario could not be run (a process did not start, a port did not open)."""


def python() -> str:
    """The interpreter running the harness (the project's venv)."""
    return sys.executable


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: the repository importable, output unbuffered."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def taskset_available() -> bool:
    """Whether processes can be pinned: ``taskset`` exists and both cores are ours."""
    if shutil.which("taskset") is None:
        return False
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return False
    return {SERVER_CPU, LOAD_CPU} <= allowed


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` run on one core with ``taskset`` when that is possible."""
    if cpu is None or not taskset_available():
        return list(argv)
    return ["taskset", "-c", str(cpu), *argv]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process (all its threads) has used."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        raw = stat.read()
    # The command name may hold spaces and parentheses: fields start after the last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """The resident set size of a running process."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for process {pid}")


@attrs.define
class CpuMeter:
    """CPU use of one running process over a window of wall time."""

    pid: int
    _cpu: float = 0.0
    _wall: float = 0.0

    def start(self) -> None:
        self._cpu = cpu_seconds(self.pid)
        self._wall = time.monotonic()

    def read(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) since :meth:`start`."""
        return cpu_seconds(self.pid) - self._cpu, time.monotonic() - self._wall

    def percent(self) -> float:
        """CPU use since :meth:`start`, in percent of one core."""
        cpu, wall = self.read()
        return 100.0 * cpu / wall if wall > 0 else 0.0


class Child:
    """A child process whose exit status and CPU use are collected with ``wait4``.

    Output goes to ``log`` (a file), or is captured when ``capture`` is set.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        cpu: int | None = None,
        env: Mapping[str, str] | None = None,
        capture: bool = False,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = pinned(argv, cpu)
        self.log = log
        self._log_file = open(log, "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE if capture else self._log_file,
            bufsize=0,
            stderr=self._log_file,
            env=dict(env) if env is not None else child_env(),
            cwd=str(cwd) if cwd is not None else None,
        )
        self.pid = self.process.pid
        self._pending = bytearray()
        self._eof = False
        self.cpu_used: float | None = None  # CPU seconds, once reaped
        self.wall: float | None = None
        self.returncode: int | None = None

    def alive(self) -> bool:
        """Whether the process still runs (an exited one is left to :meth:`wait`
        to reap, so that its CPU use can still be read)."""
        if self.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def read_line(self, timeout: float) -> str | None:
        """The next line of a captured stdout, or None at its end or after ``timeout``."""
        stream = self.process.stdout
        assert stream is not None, "stdout is not captured"
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or self._eof:
                if self._eof and self._pending:
                    line, self._pending = bytes(self._pending), bytearray()
                    return line.decode("utf-8", "replace")
                return None
            ready, _, _ = select.select([stream], [], [], left)
            if ready:
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    self._eof = True
                self._pending += chunk
        line, _, rest = bytes(self._pending).partition(b"\n")
        self._pending = bytearray(rest)
        return line.decode("utf-8", "replace") + "\n"

    def lines_until_end(self, timeout: float) -> list[str]:
        """Every line left on a captured stdout, until the process closes it."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                return lines
            lines.append(line)

    def wait(self, timeout: float) -> int:
        """Reap the process (killing it after ``timeout``); returns its exit status."""
        if self.returncode is not None:
            return self.returncode
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            if time.monotonic() >= deadline:
                self.process.kill()
                pid, status, usage = os.wait4(self.pid, 0)
                break
            time.sleep(0.02)
        self.wall = time.monotonic() - self.started
        self.cpu_used = usage.ru_utime + usage.ru_stime
        self.returncode = os.waitstatus_to_exitcode(status)
        # Popen must not try to reap it again.
        self.process.returncode = self.returncode
        self._log_file.close()
        return self.returncode

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """Ask the process to end (``sig``), then reap it."""
        if self.alive():
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass
        return self.wait(timeout)

    def output_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.005
) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - began


def get_json(port: int, path: str, timeout: float = 5.0) -> Any:
    """GET a JSON document from 127.0.0.1:``port``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"GET {path}: HTTP {response.status}")
        return json.loads(body)
    finally:
        connection.close()


@attrs.frozen
class Machine:
    """What the numbers were measured on."""

    cpu_model: str
    cores: int
    memory_mb: int
    kernel: str
    python: str
    twisted: str
    klein: str
    sqlite: str
    pinning: str
    load_generator: str

    def lines(self) -> list[str]:
        return [
            f"CPU: {self.cpu_model}, {self.cores} cores visible",
            f"Memory: {self.memory_mb} MB; kernel {self.kernel}",
            f"Python {self.python}, Twisted {self.twisted}, klein {self.klein}, "
            f"SQLite {self.sqlite}",
            f"Pinning: {self.pinning}",
            f"Load generator: {self.load_generator}",
        ]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def wrk_path() -> str | None:
    """The ``wrk`` binary, if installed."""
    return shutil.which("wrk")


def describe_machine() -> Machine:
    import sqlite3

    wrk = wrk_path()
    if wrk is not None:
        try:
            banner = subprocess.run(
                [wrk, "--version"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            banner = "wrk"
        generator = banner.splitlines()[0].split("[")[0].strip() if banner else "wrk"
        generator += " for throughput; the camera simulator (separate process) for paced latency"
    else:
        generator = (
            "wrk not installed: the camera simulator's many-camera mode in a separate "
            "process for everything (apt-get install wrk for the wrk rows)"
        )
    if taskset_available():
        pinning = (
            f"taskset: gateway and baselines on CPU {SERVER_CPU}, "
            f"load generators on CPU {LOAD_CPU}"
        )
    else:
        pinning = "none (taskset missing or fewer than 2 cores usable): numbers are noisier"
    return Machine(
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 1,
        memory_mb=_memory_mb(),
        kernel=platform.release(),
        python=platform.python_version(),
        twisted=_version("twisted"),
        klein=_version("klein"),
        sqlite=sqlite3.sqlite_version,
        pinning=pinning,
        load_generator=generator,
    )


def cpu_pressure() -> str:
    """The share of the last minute in which some runnable task waited for a
    CPU (Linux PSI): how much other programs competed for the machine."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some "):
                fields = dict(item.split("=") for item in line.split()[1:])
                return f"{float(fields['avg60']):.0f} %"
    except (OSError, ValueError, KeyError):
        pass
    return "unknown"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def run_simulator(
    directory: Path,
    mode: str,
    port: int,
    seconds: float,
    extra: Sequence[str] = (),
    image_bytes: int = 0,
    *,
    name: str,
) -> tuple[dict[str, Any], float]:
    """Run the camera simulator's ``mode`` (:mod:`bench.loadgen`) in its own
    process on the load generators' core against ``port`` for ``seconds``;
    (its result, its CPU %)."""
    argv = [
        python(),
        "-m",
        "bench.loadgen",
        mode,
        "--server",
        f"http://127.0.0.1:{port}",
        "--duration",
        str(seconds),
        *extra,
    ]
    if image_bytes:
        argv += ["--images", "full", "--image-bytes", str(image_bytes)]
    child = Child(name, argv, log=directory / f"{name}.log", cpu=LOAD_CPU, capture=True)
    result: dict[str, Any] | None = None
    while True:
        line = child.read_line(seconds + 120)
        if line is None:
            break
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    status = child.wait(30)
    if result is None or status != 0:
        raise BenchError(f"simulator {mode} failed ({status}): {child.output_tail()}")
    load_cpu = 100.0 * (child.cpu_used or 0.0) / max(result["seconds"], 1e-9)
    return result, load_cpu
