"""One changed byte inside one stored row (it passes SQLite's own checks):
after a restart the other queued events reach the cloud, the damaged one is
in the quarantine table and on the status page, and the event list answers."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from support import CameraClient, in_thread, loopback_config, start_gateway
from support.cloud import SECRET, SECRET_BYTES, StubCloud
from support.gateway import plate_body

pytestmark = pytest.mark.e2e

TOKEN = "damaged-row-viewer-token-0123456789"
CAMERA = "d85b1269-8f942256"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flip_a_byte_of(state: Path, event_id: str) -> None:
    """Change one byte in the middle of the event's kept push, in the file."""
    database = sqlite3.connect(state / "gateway.db")
    try:
        (blob,) = database.execute("SELECT raw_z FROM events WHERE id = ?", (event_id,)).fetchone()
    finally:
        database.close()
    changed = 0
    for name in ("gateway.db", "gateway.db-wal"):
        path = state / name
        if not path.exists():
            continue
        data = bytearray(path.read_bytes())
        at = data.find(blob)
        while at >= 0:
            data[at + len(blob) // 2] ^= 0x01
            changed += 1
            at = data.find(blob, at + 1)
        path.write_bytes(bytes(data))
    assert changed, "the row's bytes are not in the files"


def get_json(port: int, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


class DamagedRowTests(TestCase):
    timeout = 120

    async def until(self, condition: Any, seconds: float, what: str) -> None:
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def test_one_flipped_byte_costs_one_event_and_the_rest_goes_on(self) -> None:
        cloud_port = free_port()
        state = Path(self.mktemp()).resolve()
        config = loopback_config(
            admin={
                "tokens": [
                    {"name": "wall", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "role": "viewer"}
                ]
            },
            upstream={
                "url": f"http://127.0.0.1:{cloud_port}",
                "secret": SECRET,
                "sync_interval_seconds": 1,
                "max_backoff_seconds": 1,
            },
        )
        # The cloud is down: 31 plates queue in the outbox.
        gateway = await start_gateway(config, str(state))
        client = CameraClient(gateway.camera_port)
        try:
            for plateid in range(31):
                reply = await in_thread(client.post, plate_body(CAMERA, f"京A{plateid:05d}", plateid=plateid))
                self.assertEqual(reply.status, 200)
        finally:
            client.close()
        queued = [record.id for record in reversed(await gateway.store.recent_events(100))]
        self.assertEqual(len(queued), 31)
        self.assertEqual(await gateway.store.outbox_depth(), 31)
        await gateway.stop()

        damaged = queued[15]
        flip_a_byte_of(state, damaged)
        database = sqlite3.connect(state / "gateway.db")
        try:
            self.assertEqual(database.execute("PRAGMA quick_check").fetchone()[0], "ok")
        finally:
            database.close()

        cloud = StubCloud(SECRET_BYTES, reactor.seconds)
        cloud.listen(cloud_port)
        self.addCleanup(cloud.port.stopListening)
        gateway = await start_gateway(config, str(state))
        self.addCleanup(gateway.stop)
        await self.until(lambda: len(cloud.events) >= 30, 60, "the other events to reach the cloud")
        self.assertEqual(list(cloud.events), [event_id for event_id in queued if event_id != damaged])
        self.assertEqual(cloud.bad_signatures, [])

        status, events = await in_thread(get_json, gateway.admin_port, "/api/events?limit=500")
        self.assertEqual(status, 200)
        self.assertEqual(len(events["events"]), 30)
        self.assertNotIn(damaged, [event["id"] for event in events["events"]])

        async def link_up() -> dict[str, Any]:
            for _ in range(200):
                _, page = await in_thread(get_json, gateway.admin_port, "/api/status")
                if page["upstream"]["state"] == "up" and page["upstream"]["outbox_depth"] == 0:
                    return dict(page)
                await deferLater(reactor, 0.05, lambda: None)
            self.fail("the link never showed up with an empty outbox")

        page = await link_up()
        quarantined = page["store"]["quarantined"]
        self.assertEqual(quarantined["rows"], 1)
        self.assertEqual(quarantined["latest"]["event_id"], damaged)
        self.assertTrue(quarantined["latest"]["queued"])
        self.assertIn("compressed raw record is damaged", quarantined["latest"]["reason"])
        database = sqlite3.connect(state / "gateway.db")
        try:
            ((kept,),) = database.execute("SELECT id FROM quarantine").fetchall()
        finally:
            database.close()
        self.assertEqual(kept, damaged)
