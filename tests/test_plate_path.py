"""The durable plate path: every answered push is on disk first, re-sent
pushes are answered as the first time and kept once, repeat reads do not
pulse the barrier twice, offline records never open, and an event that
cannot be kept is not acknowledged (the connection is closed without an
answer). In memory on the gateway's parts (real SQLite, pushes through
StubTreq); a push before the store opens goes to the real service tree on
loopback (e2e)."""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.web.client import ResponseNeverReceived

from gateway.camera.server import STARTUP_HOLD_SECONDS
from gateway.store import EventType, Store, plate_event_id
from support import in_thread, loopback_config, multipart_registration
from support.camera import CameraServerTestCase, MemoryCamera, RawConnection
from support.gateway import GatewayTestCase, plate_body
from support.parts import GatewayParts, build_parts, parts_config
from support.threads import global_reactor

ENTRANCE = "d85b1269-8f942256"


def timed_plate(license: str, plateid: int | None, sec: int, **fields: Any) -> bytes:
    time_stamp = {"Timeval": {"sec": sec, "usec": 0}}
    if plateid is not None:
        fields["plateid"] = plateid
    return plate_body(ENTRANCE, license, timeStamp=time_stamp, **fields)


class PlatePathTests(CameraServerTestCase):
    config = loopback_config(
        lane=[
            {
                "name": "Entrance",
                "camera": ENTRANCE,
                "barrier_channel": 1,
                "unknown_plate": "allow",
            }
        ],
        policy={"duplicate_window_seconds": 60},
    )

    @property
    def store(self) -> Store:
        store = self.parts.store
        assert store is not None
        return store

    async def push(self, body: bytes, client: MemoryCamera | None = None) -> dict[str, Any]:
        reply = await (client or self.camera()).post(body)
        self.assertEqual(reply.status, 200)
        answer: dict[str, Any] = reply.json()["Response_AlarmInfoPlate"]
        return answer

    async def test_answered_plate_is_on_disk_with_its_decision(self) -> None:
        await self.start()
        answer = await self.push(timed_plate("京A12345", 41, 1_700_000_000))
        self.assertEqual((answer["info"], answer["channelNum"]), ("ok", 1))
        event = await self.store.get_event(
            plate_event_id(ENTRANCE, 41, "京A12345", 1_700_000_000, 0)
        )
        assert event is not None
        self.assertEqual(event.type, EventType.PLATE)
        self.assertEqual(
            (event.lane, event.camera, event.license), ("Entrance", ENTRANCE, "京A12345")
        )
        self.assertEqual((event.decision_open, event.decision_reason), (True, "unknown"))
        self.assertEqual(event.camera_time.timestamp(), 1_700_000_000)  # type: ignore[union-attr]
        self.assertEqual(event.raw["PlateResult"]["plateid"], 41)

    async def test_resent_push_answered_the_same_and_kept_once(self) -> None:
        await self.start()
        body = timed_plate("京A12345", 42, 1_700_000_100)
        first = await self.push(body)
        again = await self.push(body)
        decision = ("info", "channelNum", "plateid", "content")
        self.assertEqual({k: first.get(k) for k in decision}, {k: again.get(k) for k in decision})
        self.assertEqual(first["info"], "ok")
        events = await self.store.recent_events(limit=10, type=EventType.PLATE)
        self.assertEqual(len(events), 1)

    async def test_repeat_read_recorded_without_second_pulse(self) -> None:
        await self.start()
        first = await self.push(timed_plate("京A12345", 50, 1_700_000_200, triggerType=1))
        second = await self.push(timed_plate("京A12345", 51, 1_700_000_201, triggerType=8))
        self.assertEqual(first["info"], "ok")
        self.assertEqual(second["info"], "no")
        self.assertNotIn("channelNum", second)
        self.assertEqual(second["plateid"], 51)
        events = await self.store.recent_events(limit=10, type=EventType.PLATE)
        newest, oldest = events
        self.assertEqual((oldest.repeat, oldest.decision_reason), (False, "unknown"))
        self.assertEqual((newest.repeat, newest.decision_reason), (True, "duplicate"))
        self.assertFalse(newest.decision_open)
        # Another plate on the same lane is no repeat.
        other = await self.push(timed_plate("京B54321", 52, 1_700_000_202))
        self.assertEqual(other["info"], "ok")

    async def test_offline_records_kept_with_camera_time_never_opening(self) -> None:
        await self.start()
        client = self.camera()
        for plateid in range(100, 130):
            answer = await self.push(
                timed_plate("京A12345", plateid, 1_600_000_000 + plateid, isoffline=1), client
            )
            self.assertEqual(answer["ContinuePushOffline"], {"plateid": plateid, "continue": 1})
            self.assertEqual(answer["info"], "no")
        # A live read interrupts the upload; the interrupted record comes again.
        await self.push(timed_plate("京C00001", 500, 1_700_000_300), client)
        again = await self.push(timed_plate("京A12345", 129, 1_600_000_129, isoffline=1), client)
        self.assertEqual(again["ContinuePushOffline"], {"plateid": 129, "continue": 1})
        events = await self.store.recent_events(limit=100, type=EventType.PLATE)
        offline = [e for e in events if e.offline]
        self.assertEqual(len(offline), 30)
        self.assertTrue(all(e.decision_reason == "offline_record" for e in offline))
        self.assertTrue(all(e.decision_open is False for e in offline))
        self.assertEqual(
            sorted(e.camera_time.timestamp() for e in offline),  # type: ignore[union-attr]
            [1_600_000_000 + p for p in range(100, 130)],
        )

    async def test_images_written_under_the_event_id(self) -> None:
        await self.start()
        full = b"\xff\xd8full-frame\xff\xd9"
        crop = b"\xff\xd8plate-crop\xff\xd9"
        body = timed_plate(
            "京A12345",
            60,
            1_700_000_400,
            imageFile=base64.b64encode(full).decode(),
            imageFileLen=len(full),
            imageFragmentFile=base64.b64encode(crop).decode(),
            imageFragmentFileLen=len(crop),
        )
        await self.push(body)
        event_id = plate_event_id(ENTRANCE, 60, "京A12345", 1_700_000_400, 0)
        self.assertEqual(await self.store.read_image(event_id, "full"), full)
        self.assertEqual(await self.store.read_image(event_id, "crop"), crop)
        path = await self.store.event_image_path(event_id, "full")
        assert path is not None
        self.assertIn(event_id, path.name)
        event = await self.store.get_event(event_id)
        assert event is not None
        stored = json.dumps(event.raw)
        self.assertNotIn(base64.b64encode(full).decode(), stored)
        self.assertNotIn(base64.b64encode(crop).decode(), stored)
        self.assertEqual(event.raw["PlateResult"]["imageFileLen"], len(full))

    async def test_io_serial_and_registration_events(self) -> None:
        await self.start()
        client = self.camera()
        gio = {
            "AlarmGioIn": {
                "serialno": ENTRANCE,
                "result": {"TriggerResult": {"source": 1, "value": 1}},
            }
        }
        await client.post(json.dumps(gio).encode())
        serial = {
            "SerialData": {"serialno": ENTRANCE, "serialChannel": 0, "data": "AQ==", "dataLen": 5}
        }
        await client.post(json.dumps(serial).encode())
        body, content_type = multipart_registration(ENTRANCE, password="never-stored")
        await client.post(body, content_type=content_type)
        events = await self.store.recent_events(limit=10)
        kinds = [e.type for e in events]
        self.assertIn(EventType.IO, kinds)
        self.assertIn(EventType.SERIAL, kinds)
        self.assertIn(EventType.CAMERA_ONLINE, kinds)
        (serial_event,) = [e for e in events if e.type == EventType.SERIAL]
        # The firmware cut the data at its first NUL: flagged, not padded.
        self.assertTrue(serial_event.raw["truncated"])
        self.assertEqual(base64.b64decode(serial_event.raw["data"]), b"\x01")
        everything = json.dumps([e.raw for e in events])
        self.assertNotIn("never-stored", everything)

    async def test_full_disk_leaves_the_camera_holding_its_record(self) -> None:
        await self.start()
        client = self.camera()
        await self.push(timed_plate("京A00001", 1, 1_700_000_500), client)

        def cap(connection: sqlite3.Connection) -> None:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages}").fetchone()

        await self.store._run_on_store_thread(cap)
        # Random text: the kept push is compressed, so the note must not compress.
        note = base64.b64encode(os.urandom(150_000)).decode()
        big = timed_plate("京A00002", 2, 1_700_000_501, note=note)

        # No answer: the connection is closed, and the camera keeps its record.
        with self.assertRaises(ResponseNeverReceived):
            await self.camera().post(big)
        self.assertTrue(self.store.degraded)
        # Space comes back: the camera's re-sent record is kept, once.
        await self.store._run_on_store_thread(
            lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone()
        )
        answer = await self.push(big)
        self.assertEqual(answer["plateid"], 2)
        self.assertFalse(self.store.degraded)
        event = await self.store.get_event(
            plate_event_id(ENTRANCE, 2, "京A00002", 1_700_000_501, 0)
        )
        self.assertIsNotNone(event)


class StartUpHoldTests(CameraServerTestCase):
    """A push that comes while the gateway starts is held, not refused."""

    def parts_with_list(self) -> GatewayParts:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        csv_path = directory / "plates.csv"
        csv_path.write_text("plate\n京A10000\n京A10001\n京A10002\n", encoding="utf-8")
        config = loopback_config(
            lane=[{"name": "Entrance", "camera": ENTRANCE}],
            policy={"whitelist_csv": str(csv_path)},
        )
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        parts = build_parts(parts_config(config, str(directory / "state")), self.clock)
        self.addCleanup(lambda: Deferred.fromCoroutine(parts.stop()))
        return parts

    async def test_pushes_before_the_list_is_loaded_are_held_then_decided(self) -> None:
        parts = self.parts_with_list()
        camera = MemoryCamera(parts)
        sent = [camera.send(timed_plate(f"京A1000{n}", n, 1_700_000_000 + n)) for n in range(3)]
        self.clock.advance(STARTUP_HOLD_SECONDS - 0.5)
        self.assertFalse(any(camera.answered(push) for push in sent))

        await parts.start()  # the store opens, the list (from the CSV) loads

        for push in sent:
            reply = camera.reply(push)
            self.assertEqual(reply.status, 200)
            # Decided on the loaded list: the listed plate opens.
            self.assertEqual(reply.json()["Response_AlarmInfoPlate"]["info"], "ok")
        store = parts.store
        assert store is not None
        kept = await store.recent_events(limit=10, type=EventType.PLATE)
        self.assertEqual(
            sorted((e.decision_open, e.decision_reason) for e in kept), [(True, "whitelist")] * 3
        )

    async def test_a_push_not_served_in_time_is_closed_for_the_camera_to_keep(self) -> None:
        parts = self.parts_with_list()
        connection = RawConnection(parts.camera_server.listening_factory())
        self.addCleanup(connection.drop)
        body = timed_plate("京A12345", 1, 1_700_000_000)
        connection.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        self.clock.advance(STARTUP_HOLD_SECONDS - 0.1)
        self.assertFalse(connection.closed)
        self.assertEqual(parts.camera_server.holding, 1)
        self.clock.advance(0.2)
        # Closed without an answer, well inside the camera's 5 s.
        self.assertTrue(connection.closed)
        self.assertEqual(connection.received, b"")
        # And forgotten: a store that never opens does not accumulate pushes.
        self.assertEqual(parts.camera_server.holding, 0)


@pytest.mark.e2e
class StoreNotOpenTests(GatewayTestCase):
    async def test_push_before_store_opens_gets_no_answer(self) -> None:
        from gateway.config import parse_config
        from gateway.tap import build_service

        config = parse_config({**loopback_config(), "gateway": {"state_dir": self.mktemp()}})
        service = build_service(config, global_reactor)
        # The store service is not started: listeners only.
        for child in list(service):
            if child.name.startswith("camera-listener"):
                child.startService()
                self.addCleanup(child.stopService)
        (listener,) = [c for c in service if c.name.startswith("camera-listener")]
        port = (await listener._waitingForPort).getHost().port

        def push() -> str:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            body = timed_plate("京A12345", 1, 1_700_000_000)
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            try:
                return repr(sock.recv(100))
            except OSError as error:
                return type(error).__name__
            finally:
                sock.close()

        outcome = await in_thread(push)
        self.assertIn(outcome, ("b''", "ConnectionResetError"))
        await deferLater(reactor, 0, lambda: None)
