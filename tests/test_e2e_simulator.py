"""The gateway and the camera simulator together on loopback: comet polls
held and released, offline uploads with the duplicate an interruption
causes, re-sends after a dropped connection, both dialects with images and
serial data both ways, many cameras, commands and the camera whitelist sync."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from gateway.camera.commands import CommandState
from gateway.camera.events import CameraEvent, EventNotKept
from gateway.policy.whitelist import WhitelistEntry
from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.config import CameraConfig, fleet_configs
from gateway.simulator.fleet import CameraFleet
from gateway.store import EventType
from support import loopback_config, start_gateway
from support.simulator import PARKINGCAM, VZENITH, SimulatorTestCase

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CometAndCommandTests(SimulatorTestCase):
    config = loopback_config(
        lane=[{"name": "Entrance", "camera": VZENITH, "barrier_channel": 1, "sync_whitelist": False}],
    )

    async def test_open_reaches_a_held_comet_poll_in_the_first_reply(self) -> None:
        await self.start()
        camera = self.camera(heartbeat="comet")
        registry = self.gateway.service.registry
        await self.until(lambda: registry.held_polls() == 1, what="a held comet poll")
        command = self.gateway.service.control.open(VZENITH)
        await self.until(lambda: camera.relay_pulses, what="the relay pulse")
        pulse = camera.relay_pulses[0]
        self.assertEqual((pulse.channel, pulse.source), (1, "comet"))
        self.assertEqual(command.state, CommandState.DELIVERED)
        # The camera polls again at once and is held again.
        await self.until(lambda: registry.held_polls() == 1, what="the next held poll")
        self.assertEqual(len(camera.relay_pulses), 1)

    async def test_snapshot_returns_the_cameras_jpeg(self) -> None:
        await self.start()
        camera = self.camera(heartbeat="comet")
        await self.until(lambda: self.gateway.service.registry.held_polls() == 1)
        image = await ensureDeferred(self.gateway.service.control.snapshot(VZENITH))
        self.assertTrue(image.startswith(b"\xff\xd8") and image.endswith(b"\xff\xd9"))
        self.assertEqual(camera.snapshots_requested, 1)

    async def test_expired_open_is_never_delivered(self) -> None:
        await self.start()
        camera = self.camera(heartbeat="common", heartbeat_interval=1.0)
        await self.until(lambda: camera.replies["heartbeat"] >= 1, what="a first heartbeat")
        control = self.gateway.service.control
        control.expiry = 0.2
        command = control.open(VZENITH)
        await self.until(lambda: command.state is CommandState.EXPIRED, what="expiry")
        beats = camera.replies["heartbeat"]
        await self.until(lambda: camera.replies["heartbeat"] > beats + 1, what="later heartbeats")
        self.assertEqual(camera.relay_pulses, [])


class FlakyRecorder:
    """A store boundary that fails the first ``failures`` events (as a full
    disk would), then keeps everything."""

    def __init__(self, real: Any, failures: int) -> None:
        self.real = real
        self.failures = failures

    async def record(self, event: CameraEvent) -> CameraEvent:
        if event.kind == "plate" and self.failures > 0:
            self.failures -= 1
            raise EventNotKept("disk full")
        result: CameraEvent = await self.real.record(event)
        return result


class DeliveryTests(SimulatorTestCase):
    config = loopback_config(
        lane=[{"name": "Entrance", "camera": VZENITH, "unknown_plate": "allow", "sync_whitelist": False}],
    )

    async def test_resend_after_a_dropped_connection_is_kept_once(self) -> None:
        await self.start()
        server = self.gateway.service.camera_server
        server.recorder = FlakyRecorder(server.recorder, failures=1)
        camera = self.camera(resend=2, plates=1, rate=50, no_plate_rate=0.0)
        await self.until(lambda: camera.answered_plates, what="an answered plate")
        self.assertEqual(camera.failures["plate"], 1)
        self.assertEqual(camera.pushes["plate_resend"], 1)
        events = await self.plate_events()
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0].raw["PlateResult"]["plateid"], camera.answered_plates[0][0])
        # The answer of the re-send opened the barrier, once.
        self.assertEqual([p.source for p in camera.relay_pulses], ["plate"])

    async def test_offline_upload_with_interruption_stores_each_record_once(self) -> None:
        port = free_port()
        records = 2000
        camera = SimulatedCamera(
            reactor,
            CameraConfig(
                serialno=VZENITH,
                servers=(f"http://127.0.0.1:{port}",),
                offline_records=True,
                plates=records,
                rate=2000,
                timeout=1.0,
                offline_retry=0.2,
                no_plate_rate=0.0,
            ),
        )
        camera.start()
        self.addCleanup(camera.stop)
        await self.until(lambda: camera.offline_stored == records, what="records kept offline")
        config = loopback_config(
            lane=[{"name": "Entrance", "camera": VZENITH, "unknown_plate": "allow", "sync_whitelist": False}],
            camera_server={"listen": [f"tcp:{port}:interface=127.0.0.1"]},
        )
        await self.start(config)
        await self.until(lambda: camera.offline_delivered >= records // 4, 30, "upload under way")
        await self.until(lambda: camera.uploading, 10, "an offline record in flight")
        camera.read_plate("京L00001")  # a live read interrupts the upload
        await self.until(lambda: camera.offline_pending == 0, 60, "the upload to finish")
        events = await self.plate_events()
        offline = [e for e in events if e.offline]
        self.assertEqual(len(offline), records)
        self.assertEqual(len({e.id for e in offline}), records)
        self.assertTrue(all(e.decision_open is False for e in offline))
        self.assertTrue(all(e.decision_reason == "offline_record" for e in offline))
        live = [e for e in events if not e.offline]
        self.assertEqual([e.license for e in live], ["京L00001"])
        # Only the live read opened the barrier.
        self.assertEqual([p.source for p in camera.relay_pulses], ["plate"])
        self.assertGreaterEqual(camera.offline_interrupted, 1)
        self.assertGreater(camera.pushes["offline"], records)  # the interrupted one came twice


class DialectsImagesSerialTests(SimulatorTestCase):
    config = loopback_config(
        lane=[
            {"name": "Entrance", "camera": VZENITH, "unknown_plate": "allow", "sync_whitelist": False},
            {"name": "Exit", "camera": PARKINGCAM, "direction": "out", "unknown_plate": "allow", "sync_whitelist": False},
        ],
    )

    async def test_both_dialects_with_images_and_serial_both_ways(self) -> None:
        await self.start()
        vzenith = self.camera(
            serialno=VZENITH, plates=3, rate=20, images="both", no_plate_rate=0.0,
            serial_in=(b"\x01\x02\x00\x03",), heartbeat="comet",
        )
        parkingcam = self.camera(
            serialno=PARKINGCAM, dialect="parkingcam", plates=3, rate=20, images="full",
            no_plate_rate=0.0, heartbeat="common", heartbeat_interval=0.3,
        )
        await self.until(
            lambda: len(vzenith.answered_plates) == 3 and len(parkingcam.answered_plates) == 3,
            what="all plates answered",
        )
        events = await self.plate_events()
        by_camera = {VZENITH: [], PARKINGCAM: []}  # type: dict[str, list[Any]]
        for event in events:
            by_camera[event.camera].append(event)
        self.assertEqual(len(by_camera[VZENITH]), 3)
        self.assertEqual(len(by_camera[PARKINGCAM]), 3)
        store = self.gateway.store

        async def jpeg(event_id: str, kind: str) -> bool:
            image = await store.read_image(event_id, kind)
            return image is not None and image.startswith(b"\xff\xd8")

        for event in by_camera[VZENITH]:
            self.assertTrue(await jpeg(event.id, "full"))
            self.assertTrue(await jpeg(event.id, "crop"))
        for event in by_camera[PARKINGCAM]:
            self.assertTrue(await jpeg(event.id, "full"))
            self.assertEqual(event.raw["dialect"], "parkingcam")
        self.assertEqual(len(vzenith.relay_pulses), 3)
        self.assertEqual(len(parkingcam.relay_pulses), 3)
        # Camera -> gateway: the serial push is recorded, truncation flagged.
        await self.until(lambda: vzenith.replies["serial"] >= 1, what="the serial push")
        serial = await store.recent_events(limit=5, type=EventType.SERIAL)
        self.assertEqual(len(serial), 1)
        self.assertTrue(serial[0].raw["truncated"])
        # Gateway -> camera: serial bytes through the camera's own port.
        control = self.gateway.service.control
        control.send_serial(VZENITH, 0, b"\x00\x64\xff\xff\x30")
        control.send_serial(PARKINGCAM, 1, b"hello")
        await self.until(lambda: bytes(vzenith.serial_written[0]) == b"\x00\x64\xff\xff\x30")
        await self.until(lambda: bytes(parkingcam.serial_written[1]) == b"hello")

    async def test_many_cameras(self) -> None:
        await self.start(loopback_config())
        port = self.gateway.camera_port
        template = CameraConfig(
            serialno="template", servers=(f"http://127.0.0.1:{port}",), plates=5, rate=50,
            no_plate_rate=0.0, heartbeat="comet",
        )
        fleet = CameraFleet(reactor, fleet_configs(20, template))
        fleet.start()
        self.addCleanup(fleet.stop)
        await self.until(
            lambda: all(len(c.answered_plates) == 5 for c in fleet.cameras), 30, "every plate"
        )
        events = await self.plate_events()
        self.assertEqual(len(events), 100)
        self.assertEqual(len({e.camera for e in events}), 20)
        registry = self.gateway.service.registry
        await self.until(lambda: registry.held_polls() == 20, what="20 held comet polls")


class WhitelistSyncTests(SimulatorTestCase):
    dialect = "vzenith"
    serialno = VZENITH

    async def test_camera_holds_the_lane_list_and_opens_by_itself_when_the_gateway_is_down(
        self,
    ) -> None:
        config = loopback_config(lane=[{"name": "Entrance", "camera": self.serialno}])
        gateway = await start_gateway(config, self.mktemp())
        self.gateway = gateway
        heartbeat = {"heartbeat": "comet"} if self.dialect == "vzenith" else {
            "heartbeat": "common", "heartbeat_interval": 0.2,
        }
        camera = self.camera(
            serialno=self.serialno, dialect=self.dialect, timeout=1.0, **heartbeat
        )
        whitelist = gateway.service.plate_list
        until = datetime(2031, 3, 31, 23, 0, tzinfo=timezone.utc)
        await whitelist.upsert(
            [WhitelistEntry(plate=f"京A{n:05d}", source="admin") for n in range(23)]
        )
        await self.until(lambda: len(camera.whitelist) == 23, 30, "23 plates in the camera")
        await whitelist.delete([f"京A{n:05d}" for n in range(4)])
        await whitelist.upsert(
            [
                WhitelistEntry(plate="京A00010", source="admin", valid_until=until),
                WhitelistEntry(
                    plate="京A00011", source="admin",
                    valid_from=until - timedelta(days=365), valid_until=until,
                ),
            ]
        )
        expected = {f"京A{n:05d}" for n in range(4, 23)}
        sync = gateway.service.camera_sync
        local = until.astimezone(whitelist.codec.tz).replace(tzinfo=None)

        def synced() -> bool:
            state = sync.state(self.serialno)
            return (
                set(camera.whitelist) == expected
                and state is not None
                and state.in_sync
                and camera.whitelist["京A00010"].overdue_time == local
                and camera.whitelist["京A00011"].overdue_time == local
            )

        await self.until(synced, 30, "the camera list to equal the lane list")
        self.assertEqual(camera.whitelist["京A00011"].enable_time, local - timedelta(days=365))
        forever = None if self.dialect == "vzenith" else datetime(2099, 12, 31, 23, 59, 59)
        self.assertEqual(camera.whitelist["京A00012"].overdue_time, forever)
        self.assertEqual(camera.whitelist_ignored_rows, 0)
        if self.dialect == "vzenith":
            state = sync.state(self.serialno)
            assert state is not None
            self.assertLessEqual(state.largest_reply, 5)

        # The gateway goes away: the camera decides by itself.
        await gateway.stop()
        camera.read_plate("京A00012")
        await self.until(lambda: camera.relay_pulses, 10, "a local opening")
        self.assertEqual(
            [(p.source, p.plate) for p in camera.relay_pulses], [("local", "京A00012")]
        )
        camera.read_plate("京Z99999")
        await self.until(lambda: camera.failures["plate"] >= 2, 10, "the second read to fail")
        self.assertEqual(len(camera.relay_pulses), 1)


class ParkingCamWhitelistSyncTests(WhitelistSyncTests):
    dialect = "parkingcam"
    serialno = PARKINGCAM
