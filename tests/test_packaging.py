"""The installed product: a wheel that ships the twistd plugin, and twistd
running the gateway from it the way systemd does."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The project built as a wheel and installed (without dependencies, which
    this interpreter already has) into a directory of its own."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = work.glob("anpr_gateway-*.whl")
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    yield wheel


def _env(target: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Only the installed copy is importable (not the source tree).
    env["PYTHONPATH"] = str(target)
    return env


def _twistd(target: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *args]


def test_wheel_ships_plugin_without_package_init(installed: Path) -> None:
    names = zipfile.ZipFile(installed).namelist()
    assert "twisted/plugins/anpr_gateway.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "twisted/__init__.py" not in names
    assert "gateway/tap.py" in names
    assert "gateway/admin/static/index.html" in names


def test_twistd_finds_plugin_from_installed_wheel(installed: Path, tmp_path: Path) -> None:
    target = installed.parent / "site"
    result = subprocess.run(
        _twistd(target, "--help"),
        cwd=tmp_path,
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "anpr-gateway" in result.stdout
    # The plugin came from the installed copy, not from the source tree.
    probe = subprocess.run(
        [sys.executable, "-c", "import gateway; print(gateway.__file__)"],
        cwd=tmp_path,
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip().startswith(str(target))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_gateway_runs_answers_a_camera_and_stops(installed: Path, tmp_path: Path) -> None:
    target = installed.parent / "site"
    camera_port, admin_port = _free_port(), _free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[gateway]
state_dir = "{tmp_path / 'state'}"
[camera_server]
listen = ["tcp:{camera_port}:interface=127.0.0.1"]
[admin]
listen = ["tcp:{admin_port}:interface=127.0.0.1"]
[[admin.tokens]]
name = "packaging-test"
sha256 = "{hashlib.sha256(b'packaging-test-token').hexdigest()}"
role = "viewer"
[[lane]]
name = "Exit"
camera = "d85b1269-8f942256"
direction = "out"
barrier_channel = 1
unknown_plate = "allow"
""",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        _twistd(target, "--nodaemon", "--pidfile=", "anpr-gateway", "--config", str(config)),
        cwd=tmp_path,
        env=_env(target),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = json.dumps(
            {
                "AlarmInfoPlate": {
                    "serialno": "d85b1269-8f942256",
                    "result": {"PlateResult": {"license": "京A12345", "plateid": 4}},
                }
            }
        ).encode()
        reply = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{camera_port}/any/path.php",
                    data=body,
                    headers={"Content-Type": "application/Json"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    reply = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.1)
        assert reply is not None
        answer = reply["Response_AlarmInfoPlate"]
        # Commands may ride along (the lane camera's whitelist sync starts).
        assert {k: answer.get(k) for k in ("info", "channelNum", "plateid", "content")} == {
            "info": "ok",
            "channelNum": 1,
            "plateid": 4,
            "content": "retransfer_stop",
        }
        anonymous = urllib.request.Request(f"http://127.0.0.1:{admin_port}/api/cameras")
        try:
            urllib.request.urlopen(anonymous, timeout=5)
            raise AssertionError("the admin API answered without credentials")
        except urllib.error.HTTPError as error:
            assert error.code == 401
        authorised = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/api/cameras",
            headers={"Authorization": "Bearer packaging-test-token"},
        )
        cameras = None
        # The accounts are read back (and a first start's admin password
        # hashed) while the cameras are already answered: until then a
        # credential is answered 503 with Retry-After, as documented.
        while cameras is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(authorised, timeout=5) as r:
                    cameras = json.loads(r.read())["cameras"]
            except urllib.error.HTTPError as error:
                assert error.code == 503 and error.headers.get("Retry-After"), error
                time.sleep(0.1)
        assert cameras is not None
        assert [(c["serialno"], c["lane"], c["online"]) for c in cameras] == [
            ("d85b1269-8f942256", "Exit", True)
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # twistd ends a clean shutdown by re-raising the signal it received.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Server Shut Down." in output
    assert "Traceback" not in output
    assert (tmp_path / "state").is_dir()


def test_bad_configuration_stops_twistd_with_the_key_path(installed: Path, tmp_path: Path) -> None:
    target = installed.parent / "site"
    config = tmp_path / "gateway.toml"
    config.write_text("[camera_server]\ncomet_hold_seconds = 40\n", encoding="utf-8")
    result = subprocess.run(
        _twistd(target, "--nodaemon", "--pidfile=", "anpr-gateway", "--config", str(config)),
        cwd=tmp_path,
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "camera_server.comet_hold_seconds: must be between 1 and 28, got 40" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unusable_endpoint_named_in_the_error(installed: Path, tmp_path: Path) -> None:
    target = installed.parent / "site"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}"\n[camera_server]\nlisten = ["bogus:8080"]\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        _twistd(target, "--nodaemon", "--pidfile=", "anpr-gateway", "--config", str(config)),
        cwd=tmp_path,
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "camera_server.listen[1]: not a usable endpoint" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
