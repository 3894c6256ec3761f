"""A few huge pushes cannot take the gateway down: under a 1 GiB address-space
limit, with the cloud down, 29 plate pushes each carrying a 7.5 MB text field
are answered and kept (their raw records cut, and saying so), the gateway
stays up while its outbox retries, survives a kill -9 and a clean restart
without being killed again, and delivers every one of them once the cloud
answers."""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from support import CameraClient, in_thread
from support.cloud import StubCloud
from support.gateway import plate_body

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
CLOUD_KEY = b"memory bound upstream key, 32 by"
#: The box's memory, as an address-space limit on the gateway process.
ADDRESS_SPACE = 1024 * 1024 * 1024
PUSHES = 29
FIELD = 7_500_000
CAMERA = "d85b1269-8f942256"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


class MemoryBoundTests(TestCase):
    timeout = 300

    def gateway(self, config: Path) -> subprocess.Popen[bytes]:
        # Few malloc arenas: each thread's arena reserves address space the
        # limit counts, though it is never used.
        env = dict(os.environ, PYTHONPATH=str(REPO), MALLOC_ARENA_MAX="2")
        log = open(config.parent / "gateway.log", "ab")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            [
                sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "--nodaemon", "--pidfile=", "anpr-gateway", "--config", str(config),
            ],
            cwd=config.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_memory,
        )

        def kill_if_running() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

        self.addCleanup(kill_if_running)
        return process

    def log_tail(self, config: Path) -> str:
        return (config.parent / "gateway.log").read_text(errors="replace")[-3000:]

    async def until(self, condition: Any, seconds: float, what: str) -> None:
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def listening(self, port: int, process: subprocess.Popen[bytes], config: Path) -> None:
        def up() -> bool:
            assert process.poll() is None, f"the gateway exited:\n{self.log_tail(config)}"
            with socket.socket() as sock:
                sock.settimeout(0.2)
                return sock.connect_ex(("127.0.0.1", port)) == 0

        await self.until(up, 30, "the gateway to listen")

    async def stays_up(self, process: subprocess.Popen[bytes], config: Path, seconds: float) -> None:
        """The gateway is still running ``seconds`` later (its outbox retrying)."""
        for _ in range(int(seconds / 0.1)):
            await deferLater(reactor, 0.1, lambda: None)
            self.assertIsNone(process.poll(), f"the gateway died:\n{self.log_tail(config)}")

    def stop(self, process: subprocess.Popen[bytes], config: Path) -> None:
        """A clean stop: twistd shuts down and ends as told (by SIGTERM)."""
        process.send_signal(signal.SIGTERM)
        self.assertIn(process.wait(timeout=60), (0, -signal.SIGTERM), self.log_tail(config))
        self.assertTrue(self.log_tail(config).rstrip().endswith("Server Shut Down."))

    async def test_huge_pushes_under_a_memory_limit_are_kept_and_delivered(self) -> None:
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        port, cloud_port = free_port(), free_port()
        config = work / "gateway.toml"
        config.write_text(
            f"""
[gateway]
state_dir = "{work / 'state'}"
[camera_server]
listen = ["tcp:{port}:interface=127.0.0.1"]
[admin]
listen = []
[policy]
unknown_plate = "allow"
duplicate_window_seconds = 0
[upstream]
url = "http://127.0.0.1:{cloud_port}"
secret = "whsec_{base64.b64encode(CLOUD_KEY).decode()}"
images = "none"
sync_interval_seconds = 1
max_backoff_seconds = 1
""",
            encoding="utf-8",
        )
        process = self.gateway(config)
        await self.listening(port, process, config)

        client = CameraClient(port, timeout=60)
        self.addCleanup(client.close)
        for plateid in range(PUSHES):
            body = plate_body(CAMERA, f"京A{plateid:05d}", plateid=plateid, userData="x" * FIELD)
            reply = await in_thread(client.post, body)
            self.assertEqual(reply.status, 200, self.log_tail(config))
            self.assertIn("Response_AlarmInfoPlate", reply.json())
        client.close()
        await self.stays_up(process, config, 3)

        # A crash, and the restart systemd makes: it is not killed again.
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process = self.gateway(config)
        await self.listening(port, process, config)
        await self.stays_up(process, config, 3)
        self.stop(process, config)
        process = self.gateway(config)
        await self.listening(port, process, config)
        await self.stays_up(process, config, 2)

        cloud = StubCloud(CLOUD_KEY, reactor.seconds)
        cloud.listen(cloud_port)
        self.addCleanup(cloud.port.stopListening)
        await self.until(
            lambda: len(cloud.events) >= PUSHES or process.poll() is not None,
            120,
            "the cloud to have every plate",
        )
        self.assertIsNone(process.poll(), self.log_tail(config))
        self.assertEqual(cloud.bad_signatures, [])
        plates = sorted(event["license"] for event in cloud.events.values())
        self.assertEqual(plates, sorted(f"京A{n:05d}" for n in range(PUSHES)))
        for event in cloud.events.values():
            raw = event["raw"]
            self.assertLessEqual(len(json.dumps(raw, ensure_ascii=False).encode()), 65_536)
            (cut,) = raw["recordCut"]["parts"]
            self.assertEqual((cut["path"], cut["size"]), ("PlateResult.userData", FIELD))
        self.stop(process, config)
