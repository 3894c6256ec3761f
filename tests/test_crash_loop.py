"""kill -9 at random moments: the gateway process is killed while simulated
cameras push plates (with images), restarted, killed again; at the end every
plate any camera got an answer for is on disk exactly once, and the database
is intact. Cameras keep what was not answered and send it again (re-sends,
then offline records), as real ones do."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from gateway.simulator.config import CameraConfig, fleet_configs
from gateway.simulator.fleet import CameraFleet
from support.cloud import StubCloud

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
# A CI-sized run; `pytest --long` (or ANPR_CRASH_CYCLES=20) for the long one.
CYCLES = int(os.environ.get("ANPR_CRASH_CYCLES", "5"))
CLOUD_KEY = b"crash loop upstream key, 32 byte"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CrashLoopTests(TestCase):
    timeout = 180

    def gateway(self, config: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.log_path = config.parent / "gateway.log"
        log = open(self.log_path, "ab")
        self.addCleanup(log.close)
        return subprocess.Popen(
            [
                sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "--nodaemon", "--pidfile=", "anpr-gateway", "--config", str(config),
            ],
            cwd=config.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def until(self, condition: Any, seconds: float, what: str) -> None:
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def listening(self, port: int, process: subprocess.Popen[bytes]) -> None:
        def up() -> bool:
            assert process.poll() is None, "the gateway exited"
            with socket.socket() as sock:
                sock.settimeout(0.2)
                return sock.connect_ex(("127.0.0.1", port)) == 0

        await self.until(up, 20, "the gateway to listen")

    async def test_answered_plates_survive_kill_9_exactly_once(self) -> None:
        await self.crash_loop(cloud=None)

    async def test_the_cloud_gets_every_answered_event_once_in_camera_order(self) -> None:
        cloud = StubCloud(CLOUD_KEY, reactor.seconds)
        cloud.listen()
        self.addCleanup(cloud.port.stopListening)
        await self.crash_loop(cloud=cloud)

    async def crash_loop(self, cloud: StubCloud | None) -> None:
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        state = work / "state"
        port = free_port()
        config = work / "gateway.toml"
        upstream = (
            f"""
[upstream]
url = "{cloud.url}"
secret = "whsec_{base64.b64encode(CLOUD_KEY).decode()}"
images = "crop"
sync_interval_seconds = 1
max_backoff_seconds = 1
"""
            if cloud is not None
            else ""
        )
        config.write_text(
            f"""
[gateway]
state_dir = "{state}"
[camera_server]
listen = ["tcp:{port}:interface=127.0.0.1"]
[admin]
listen = []
[policy]
unknown_plate = "allow"
duplicate_window_seconds = 0
{upstream}""",
            encoding="utf-8",
        )
        template = CameraConfig(
            serialno="template",
            servers=(f"http://127.0.0.1:{port}",),
            plates=120,
            rate=15,
            images="crop",
            resend=2,
            offline_records=True,
            offline_retry=0.2,
            timeout=1.0,
            no_plate_rate=0.0,
        )
        fleet = CameraFleet(reactor, fleet_configs(4, template))
        rng = random.Random(os.environ.get("ANPR_CRASH_SEED", "4"))
        process = self.gateway(config)

        def kill_if_running() -> None:
            if process.poll() is None:
                process.kill()

        self.addCleanup(kill_if_running)
        await self.listening(port, process)
        fleet.start()
        self.addCleanup(fleet.stop)
        for _ in range(CYCLES):
            await deferLater(reactor, rng.uniform(0.3, 1.5), lambda: None)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            await deferLater(reactor, rng.uniform(0.0, 0.5), lambda: None)
            process = self.gateway(config)
            await self.listening(port, process)
        # Let the cameras finish and send everything they kept.
        await self.until(
            lambda: all(c.produced and c.drained for c in fleet.cameras), 120, "the cameras to drain"
        )
        if cloud is not None:
            # The outbox drains to the cloud after the last restart.
            await self.until(
                lambda: sum(1 for e in cloud.events.values() if e["type"] == "plate")
                >= sum(len(c.answered_plates) for c in fleet.cameras),
                120,
                "the cloud to have every plate",
            )
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            tail = self.log_path.read_text(errors="replace")[-4000:]
            self.fail(f"the gateway did not stop within 60 s of SIGTERM; its log ends:\n{tail}")

        database = sqlite3.connect(state / "gateway.db")
        self.addCleanup(database.close)
        self.assertEqual(database.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        rows = database.execute(
            "SELECT id, camera, raw, raw_z, image_crop FROM events WHERE type = 'plate'"
        ).fetchall()
        stored: dict[tuple[str, int], int] = {}
        for _id, camera, raw, raw_z, _image in rows:
            # The kept push: compressed since schema step 5.
            plateid = json.loads(zlib.decompress(raw_z) if raw_z else raw)["PlateResult"]["plateid"]
            stored[(camera.casefold(), plateid)] = stored.get((camera.casefold(), plateid), 0) + 1
        answered = {
            (camera.config.serialno.casefold(), plateid)
            for camera in fleet.cameras
            for plateid, _license in camera.answered_plates
        }
        self.assertGreater(len(answered), 100)
        missing = answered - set(stored)
        self.assertEqual(missing, set(), "answered plates lost")
        self.assertEqual({k: n for k, n in stored.items() if n != 1}, {}, "stored twice")
        # Every plate the cameras produced reached the gateway in the end.
        produced = sum(len({p for p, _ in c.answered_plates}) for c in fleet.cameras)
        self.assertEqual(len(stored), produced)
        quarantined = [name for name in os.listdir(state) if ".corrupt-" in name]
        self.assertEqual(quarantined, [])
        if cloud is None:
            return
        self.assertEqual(cloud.bad_signatures, [])
        stored_ids = {
            row[0]: (row[1], row[2])
            for row in database.execute(
                "SELECT id, camera, seq FROM events WHERE type = 'plate'"
            ).fetchall()
        }
        at_cloud = [i for i in cloud.arrivals if cloud.events[i]["type"] == "plate"]
        self.assertEqual(set(at_cloud), set(stored_ids), "the cloud has exactly the stored plates")
        # In each camera's order: the order they were committed in.
        for camera in {c for c, _ in stored_ids.values()}:
            arrived = [i for i in at_cloud if stored_ids[i][0] == camera]
            self.assertEqual(arrived, sorted(arrived, key=lambda i: stored_ids[i][1]))
