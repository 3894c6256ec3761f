"""The disk fills during a push storm: cameras are left holding their records
(connections closed without an answer), the degraded state is reported, and
after space returns the records the cameras send again are stored and
forwarded to the cloud, once each."""

from __future__ import annotations

import base64
import sqlite3
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater

from gateway.simulator.config import CameraConfig, fleet_configs
from gateway.simulator.fleet import CameraFleet
from support import loopback_config
from support.cloud import StubCloud
from support.simulator import SimulatorTestCase

pytestmark = pytest.mark.system

KEY = b"disk storm upstream key 32 bytes"


class DiskStormTests(SimulatorTestCase):
    async def test_records_kept_by_cameras_are_stored_and_forwarded_once(self) -> None:
        cloud = StubCloud(KEY, reactor.seconds)
        cloud.listen()
        self.addCleanup(cloud.port.stopListening)
        await self.start(
            loopback_config(
                policy={"unknown_plate": "allow", "duplicate_window_seconds": 0},
                upstream={"url": cloud.url, "secret": "whsec_" + base64.b64encode(KEY).decode(),
                          "sync_interval_seconds": 1, "max_backoff_seconds": 1, "images": "none"},
            )
        )
        store = self.gateway.store
        health: list[Any] = []
        store.add_health_observer(health.append)
        template = CameraConfig(
            serialno="template",
            servers=(f"http://127.0.0.1:{self.gateway.camera_port}",),
            plates=60,
            rate=20,
            resend=2,
            offline_records=True,
            offline_retry=0.2,
            timeout=1.0,
            no_plate_rate=0.0,
        )
        fleet = CameraFleet(reactor, fleet_configs(4, template))
        fleet.start()
        self.addCleanup(fleet.stop)
        await self.until(lambda: sum(len(c.answered_plates) for c in fleet.cameras) >= 20,
                         what="the storm under way")

        def fill(connection: sqlite3.Connection) -> None:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages}").fetchone()

        await store._run_on_store_thread(fill)
        await self.until(lambda: store.degraded, what="the store to report itself degraded")
        await self.until(
            lambda: sum(c.failures["plate"] for c in fleet.cameras) >= 4,
            what="cameras left holding their records",
        )
        self.assertTrue(self.gateway.store.health.reason)
        await deferLater(reactor, 0.5, lambda: None)
        await store._run_on_store_thread(
            lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone()
        )
        await self.until(
            lambda: all(c.produced and c.drained for c in fleet.cameras), 60, "the cameras to drain"
        )
        self.assertFalse(store.degraded)
        self.assertEqual([h.degraded for h in health][:1], [True])
        self.assertFalse(health[-1].degraded)

        events = await self.plate_events()
        answered = {
            (c.config.serialno.casefold(), plateid)
            for c in fleet.cameras
            for plateid, _ in c.answered_plates
        }
        stored = [(e.camera.casefold(), e.raw["PlateResult"]["plateid"]) for e in events]
        self.assertEqual(len(stored), len(set(stored)), "a record stored twice")
        self.assertEqual(set(stored), answered)
        self.assertEqual(len(answered), 240)  # every plate of every camera, in the end
        await self.until(
            lambda: {i for i, e in cloud.events.items() if e["type"] == "plate"} == {e.id for e in events},
            30,
            "the cloud to have every stored plate",
        )
        self.assertEqual(cloud.bad_signatures, [])
