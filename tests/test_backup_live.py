"""Backing up a running gateway (twistd, the real store) while a camera
pushes plates with pictures, and restoring the backup into a fresh state
directory: every event answered before the backup started is there, with
its pictures, and the database checks."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
CAMERA = "d85b1269-8f942256"
#: The traffic stops by itself after this many plates.
MAX_PLATES = 4000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plate(plateid: int) -> bytes:
    picture = base64.b64encode(b"\xff\xd8" + plateid.to_bytes(4, "big") * 2000 + b"\xff\xd9").decode()
    result = {
        "license": f"京A{plateid:05d}",
        "plateid": plateid,
        "triggerType": 1,
        "imageFile": picture,
        "imageFileLen": len(picture),
    }
    return json.dumps({"AlarmInfoPlate": {"serialno": CAMERA, "result": {"PlateResult": result}}}).encode()


class Camera(threading.Thread):
    """Pushes plates one after the other and keeps the licenses answered."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.answered: list[str] = []
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            for plateid in range(1, MAX_PLATES + 1):
                if self.stop.is_set():
                    return
                connection.request(
                    "POST", "/plate", _plate(plateid), {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                reply = json.loads(response.read())
                assert reply["Response_AlarmInfoPlate"]["plateid"] == plateid, reply
                self.answered.append(f"京A{plateid:05d}")
        except BaseException as exc:
            self.failure = exc
        finally:
            connection.close()


def _command(function: str, *args: str) -> list[str]:
    return [
        sys.executable, "-c", f"import sys; from gateway.backup import {function}; sys.exit({function}())",
        *args,
    ]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway exited"
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the gateway did not listen")


def test_backup_under_traffic_restores_every_event_answered_before(tmp_path: Path) -> None:
    state = tmp_path / "state"
    camera_port = _free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{state}"\n'
        f'[camera_server]\nlisten = ["tcp:{camera_port}:interface=127.0.0.1"]\n'
        f'[admin]\nlisten = ["tcp:{_free_port()}:interface=127.0.0.1"]\n',
        encoding="utf-8",
    )
    log = (tmp_path / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile=", "anpr-gateway", "--config", str(config),
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    camera = Camera(camera_port)
    try:
        _wait_listening(camera_port, gateway)
        camera.start()
        deadline = time.monotonic() + 60
        while len(camera.answered) < 200 and camera.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        before = list(camera.answered)
        assert len(before) >= 200, camera.failure
        # Small steps: the copy takes many of them while the plates go on.
        backed_up = _run(
            _command("backup_main", "--config", str(config), "--step-pages", "4", str(tmp_path / "backup"))
        )
        during = len(camera.answered) - len(before)
        assert backed_up.returncode == 0, backed_up.stderr
        assert "anpr-gateway-backup: ok:" in backed_up.stdout
        # The gateway answered plates while the backup ran: it was not held.
        assert during > 0 and camera.is_alive(), camera.failure

        refused = _run(_command("restore_main", "--config", str(config), str(tmp_path / "backup")))
        assert refused.returncode == 1
        assert "in use by a running gateway" in refused.stderr
    finally:
        camera.stop.set()
        camera.join(timeout=30)
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait(timeout=30)
        log.close()
    assert camera.failure is None, camera.failure

    fresh = tmp_path / "fresh"
    restored = _run(_command("restore_main", "--state-dir", str(fresh), str(tmp_path / "backup")))
    assert restored.returncode == 0, restored.stderr
    connection = sqlite3.connect(fresh / "gateway.db")
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        licenses = {row[0] for row in connection.execute("SELECT license FROM events")}
        with_pictures = connection.execute(
            "SELECT count(*) FROM events WHERE image_full = 'present'"
        ).fetchone()[0]
    finally:
        connection.close()
    missing = [license for license in before if license not in licenses]
    assert missing == [], f"{len(missing)} answered events not in the backup"
    # Not a backup of the end: the restore is the state the backup started from, or later.
    assert len(licenses) < len(camera.answered)
    assert len(list((fresh / "images").rglob("*-full.jpg"))) == with_pictures >= len(before)
