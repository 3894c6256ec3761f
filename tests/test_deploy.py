"""The site installation: systemd/install.sh into a temporary root, then the
unit's own ExecStart command run the way systemd runs it (notify socket,
watchdog, journal lines on stdout), answering a camera, and stopped by SIGTERM.

The install reuses this interpreter's packages (``--reuse-site-packages``)
instead of downloading the dependencies again; everything else (the virtualenv,
the wheel, the plugin cache, the files, the unit) is the real installation.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "systemd" / "install.sh"
UNIT_NAME = "anpr-gateway.service"
# Where the unit expects things, and where they are under the test root.
TARGET_PATHS = ("/opt/anpr-gateway", "/etc/anpr-gateway", "/var/lib/anpr-gateway")


@attrs.frozen
class Installed:
    root: Path
    wheel: Path
    output: str
    #: The configuration file as the first install left it.
    first_config: str

    @property
    def prefix(self) -> Path:
        return self.root / "opt/anpr-gateway"

    @property
    def config(self) -> Path:
        return self.root / "etc/anpr-gateway/gateway.toml"

    @property
    def state(self) -> Path:
        return self.root / "var/lib/anpr-gateway"

    @property
    def unit(self) -> Path:
        return self.root / "etc/systemd/system" / UNIT_NAME

    def site_packages(self) -> Path:
        (path,) = (self.prefix / "current").glob("lib/python3*/site-packages")
        return path

    def map(self, text: str) -> str:
        """A path of the target machine, as it is under the test root."""
        for path in TARGET_PATHS:
            text = text.replace(path, f"{self.root}{path}")
        return text


def _install(root: Path, wheel: Path) -> str:
    result = subprocess.run(
        [
            "bash",
            str(INSTALL),
            "--root",
            str(root),
            "--wheel",
            str(wheel),
            "--python",
            sys.executable,
            "--reuse-site-packages",
            sysconfig.get_paths()["purelib"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k not in ("ANPR_ROOT", "PYTHONPATH")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("deploy")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = work.glob("anpr_gateway-*.whl")
    root = work / "root"
    output = _install(root, wheel)
    first_config = (root / "etc/anpr-gateway/gateway.toml").read_text()
    yield Installed(root=root, wheel=wheel, output=output, first_config=first_config)


def _run(installed: Installed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=60, cwd=installed.root, env=_clean_env()
    )


def _clean_env() -> dict[str, str]:
    # Nothing of the test's own environment may leak into the service.
    drop = {"PYTHONPATH", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "ANPR_ROOT"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_install_lays_out_the_site(installed: Installed) -> None:
    assert (installed.prefix / "current/bin/python").exists()
    assert (installed.prefix / "current/bin/twistd").exists()
    # The commands docs/operations.md tells the installer to run.
    assert (installed.prefix / "current/bin/anpr-gateway-check-config").exists()
    assert (installed.prefix / "current/bin/anpr-gateway-make-cert").exists()
    assert installed.unit.read_text() == (REPO / "systemd" / UNIT_NAME).read_text()
    # A first install starts from the commented reference, readable by the
    # service's group only.
    assert installed.first_config == (REPO / "etc/gateway.toml").read_text()
    assert installed.config.stat().st_mode & 0o777 == 0o640
    assert installed.config.parent.stat().st_mode & 0o777 == 0o750
    assert installed.state.is_dir()
    assert (installed.prefix / "current/docs/cameras.md").is_file()
    assert (installed.prefix / "current/gateway.toml.reference").is_file()
    # Under --root, the machine itself is left alone: what would change is said.
    assert "would run: useradd --system" in installed.output
    assert "would run: usermod --append --groups dialout anpr-gateway" in installed.output
    assert "would run: systemctl enable anpr-gateway.service" in installed.output
    # The gateway came from the wheel, into the virtualenv's own site-packages.
    probe = _run(
        installed, str(installed.prefix / "current/bin/python"), "-c", "import gateway; print(gateway.__file__)"
    )
    assert probe.stdout.strip().startswith(str(installed.site_packages())), probe


def test_plugin_cache_written_at_install_and_not_rewritten(installed: Installed) -> None:
    cache = installed.site_packages() / "twisted/plugins/dropin.cache"
    assert b"anpr_gateway" in cache.read_bytes()
    before = cache.stat().st_mtime_ns
    result = _run(installed, str(installed.prefix / "current/bin/twistd"), "--help")
    assert result.returncode == 0, result.stderr
    assert "anpr-gateway" in result.stdout
    # twistd found the cache fresh: the service user (who cannot write to
    # /opt) never needs to write it.
    assert cache.stat().st_mtime_ns == before


def test_unit_passes_systemd_analyze_verify(installed: Installed) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the unit was NOT verified")
    # verify also checks that ExecStart's program exists and is executable: the
    # unit is checked with its paths pointing at the test installation.
    directory = Path(tempfile.mkdtemp(prefix="unit"))
    try:
        unit = directory / UNIT_NAME
        unit.write_text(installed.map(installed.unit.read_text()))
        result = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
        )
    finally:
        shutil.rmtree(directory)
    # Unknown keys and bad values are only warnings: any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_reinstall_keeps_configuration_and_state(installed: Installed) -> None:
    site_config = installed.config.read_text() + "\n# edited for this site\n"
    installed.config.write_text(site_config)
    (installed.state / "images").mkdir(exist_ok=True)
    kept = installed.state / "images" / "kept.jpg"
    kept.write_bytes(b"\xff\xd8 a car")
    output = _install(installed.root, installed.wheel)
    assert "keeping the configuration" in output
    assert installed.config.read_text() == site_config
    assert kept.read_bytes() == b"\xff\xd8 a car"
    result = _run(installed, str(installed.prefix / "current/bin/twistd"), "--help")
    assert "anpr-gateway" in result.stdout


class FakeSystemd:
    """The notify socket systemd gives a Type=notify service."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="sdn")  # AF_UNIX names are short
        self.path = os.path.join(self.directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[dict[str, str]] = []

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(4096)
                self.received.append(
                    dict(line.split("=", 1) for line in data.decode().split("\n") if line)
                )
                self.sock.settimeout(0)
        except (TimeoutError, BlockingIOError):
            pass

    def first(self, key: str) -> dict[str, str] | None:
        """The first message received so far with ``key``."""
        self._receive(0)
        return next((message for message in self.received if key in message), None)

    def wait_for(self, key: str, process: subprocess.Popen[bytes], timeout: float) -> dict[str, str]:
        """The first message with ``key``, waiting at most ``timeout`` seconds
        while the process runs."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.first(key)
            if message is not None:
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                raise AssertionError(
                    f"no {key} on the notify socket (received {self.received}, "
                    f"process exit status {process.poll()}); "
                    "is SystemdNotifier in the service tree (gateway/tap.py)?"
                )
            self._receive(min(remaining, 0.5))

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unit_setting(unit: str, key: str) -> str:
    (value,) = re.findall(rf"^{key}=(.*)$", unit, flags=re.MULTILINE)
    return value


def test_service_runs_as_the_unit_says(installed: Installed, tmp_path: Path) -> None:
    camera_port, admin_port = _free_port(), _free_port()
    installed.config.write_text(
        f"""
[gateway]
state_dir = "{installed.state}"
[camera_server]
listen = ["tcp:{camera_port}:interface=127.0.0.1"]
[admin]
listen = ["tcp:{admin_port}:interface=127.0.0.1"]
[[lane]]
name = "Exit"
camera = "d85b1269-8f942256"
direction = "out"
barrier_channel = 1
unknown_plate = "allow"
""",
        encoding="utf-8",
    )
    unit = installed.unit.read_text()
    command = shlex.split(installed.map(_unit_setting(unit, "ExecStart")))
    assert command[0] == str(installed.prefix / "current/bin/twistd")
    assert "--logger" in command and "gateway.journal.observer" in command
    working_directory = installed.map(_unit_setting(unit, "WorkingDirectory"))
    assert _unit_setting(unit, "Type") == "notify"
    watchdog_seconds = int(_unit_setting(unit, "WatchdogSec"))

    systemd = FakeSystemd()
    journal = tmp_path / "journal"
    errors = tmp_path / "stderr"
    env = _clean_env()
    env["NOTIFY_SOCKET"] = systemd.path
    # The unit's watchdog period, shortened so that pings come within the test.
    env["WATCHDOG_USEC"] = "2000000"
    with journal.open("wb") as out, errors.open("wb") as err:
        process = subprocess.Popen(
            command, cwd=working_directory, env=env, stdout=out, stderr=err
        )
    try:
        ready = systemd.wait_for("READY", process, timeout=60)
        assert ready["READY"] == "1"
        # READY comes once the camera and admin listeners listen.
        assert f"127.0.0.1:{camera_port}" in ready["STATUS"]
        assert f"127.0.0.1:{admin_port}" in ready["STATUS"]
        assert watchdog_seconds > 0
        systemd.wait_for("WATCHDOG", process, timeout=10)

        body = json.dumps(
            {
                "AlarmInfoPlate": {
                    "serialno": "d85b1269-8f942256",
                    "result": {"PlateResult": {"license": "京A12345", "plateid": 9}},
                }
            }
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{camera_port}/devicemanagement/php/plateresult.php",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        # Ready means ready: the first request is answered, no retry loop.
        with urllib.request.urlopen(request, timeout=10) as response:
            reply = json.loads(response.read())
        # The barrier decision (a reply may carry more: display output, commands).
        answer = reply["Response_AlarmInfoPlate"]
        assert {key: answer.get(key) for key in ("info", "channelNum", "plateid", "content")} == {
            "info": "ok",
            "channelNum": 1,
            "plateid": 9,
            "content": "retransfer_stop",
        }, reply
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
            raise
        finally:
            # Every datagram the process sent is queued by now.
            stopping = systemd.first("STOPPING")
            systemd.close()
    assert stopping is not None and stopping["STOPPING"] == "1", systemd.received
    # twistd ends a clean shutdown by re-raising the signal it received.
    assert process.returncode in (0, -signal.SIGTERM)

    lines = journal.read_text(encoding="utf-8").splitlines()
    # Every line is for journald: a <N> priority prefix, no timestamp.
    assert lines and all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\d", line) for line in lines)
    assert any(line.startswith("<6>") and "Serving: " in line for line in lines), lines
    assert lines[-1].startswith("<6>") and lines[-1].endswith("Server Shut Down.")
    assert "Traceback" not in journal.read_text(encoding="utf-8") + errors.read_text()
    # The event went to the state directory the unit gives the service.
    assert (installed.state / "gateway.db").is_file()
