"""No push is lost to start-up: a push that comes from the first instant the
camera port accepts is held until the store is open and the plate list
loaded, then decided on that list (a real twistd, on loopback)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from support.gateway import plate_body

CAMERA = "d85b1269-8f942256"
PLATES = 20_000
PUSHES = 5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connect_when_accepting(port: int, deadline: float) -> socket.socket:
    """The first connection the port accepts (bounded by ``deadline``)."""
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def push(sock: socket.socket, plate: str, plateid: int) -> tuple[int, dict[str, Any]]:
    """A plate push on an open connection, and its answer."""
    connection = http.client.HTTPConnection("127.0.0.1", timeout=10)
    connection.sock = sock
    try:
        connection.request(
            "POST",
            "/devicemanagement/php/plateresult.php",
            body=plate_body(CAMERA, plate, plateid=plateid),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.system
def test_pushes_from_the_first_instant_are_held_and_decided(tmp_path: Path) -> None:
    csv_path = tmp_path / "plates.csv"
    csv_path.write_text(
        "plate\n" + "".join(f"京B{n:05d}\n" for n in range(PLATES)), encoding="utf-8"
    )
    port = free_port()
    config = tmp_path / "site.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[camera_server]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        "[admin]\nlisten = []\n"
        f'[policy]\nwhitelist_csv = "{csv_path}"\n'
        f'[[lane]]\nname = "Entrance"\ncamera = "{CAMERA}"\n'
    )
    log_path = tmp_path / "twistd.log"
    with open(log_path, "wb") as log:
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "--nodaemon",
                "--pidfile=",
                "anpr-gateway",
                "--config",
                str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    try:
        deadline = time.monotonic() + 60
        first = connect_when_accepting(port, deadline)
        sockets = [first] + [connect_when_accepting(port, deadline) for _ in range(PUSHES - 1)]
        with ThreadPoolExecutor(PUSHES) as pool:
            answers = list(
                pool.map(lambda n: push(sockets[n], f"京B{n * 1000:05d}", n + 1), range(PUSHES))
            )
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
    output = log_path.read_text("utf-8", "replace")
    # Every push answered, each decided on the loaded list: listed plates open.
    assert [status for status, _ in answers] == [200] * PUSHES, output
    assert [answer["Response_AlarmInfoPlate"]["info"] for _, answer in answers] == ["ok"] * PUSHES
    assert "pushes held while the gateway started" in output, output
    assert "closed without an answer" not in output
