"""The admin API over its whole contract, against the real parts of the
gateway: a real store in a temporary directory, the real plate list, camera
registry, command control and camera server (spoken to as a camera would),
and the real bus. Requests go through ``StubTreq``; the live stream over
real loopback HTTP."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import pytest
from twisted.internet import reactor
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.tcp import Connection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gateway.admin.root import build_admin
from gateway.admin.stream import EventStream
from gateway.policy.whitelist import WhitelistEntry, parse_hours
from gateway.store import EventRecord, EventType
from support import CapturedLog, multipart_registration, sample_bytes
from support.admin import (
    BASE,
    ENTRANCE,
    EXIT,
    MACHINE_TOKEN,
    SCRAPER_TOKEN,
    STRANGER,
    AdminTestCase,
    Camera,
    Client,
    settle,
)
from support.gateway import plate_body


class CameraTests(AdminTestCase):
    async def test_lanes_first_in_config_order_then_other_cameras(self) -> None:
        await self.build(has_display=lambda lane: lane == "Exit")
        client = await self.operator()
        await self.camera_online(ENTRANCE)
        await self.camera_online(STRANGER, plateid=5)
        reply = await client.get("/api/cameras")
        self.assertEqual(reply.status, 200)
        cameras = reply.json()["cameras"]
        self.assertEqual([c["serialno"] for c in cameras], [ENTRANCE, EXIT, STRANGER])
        entrance, exit_, stranger = cameras
        self.assertEqual(entrance["lane"], "Entrance")
        self.assertTrue(entrance["online"])
        self.assertEqual(entrance["direction"], "in")
        self.assertEqual(entrance["barrier_channel"], 2)
        self.assertEqual(entrance["last_plate"]["plate"], "京A00001")
        self.assertEqual(entrance["last_plate"]["decision"]["open"], False)
        self.assertEqual(entrance["dialect"], "vzenith")
        self.assertIsNotNone(entrance["whitelist_sync"])
        self.assertEqual(
            set(entrance["whitelist_sync"]),
            {
                "plates",
                "pending_adds",
                "pending_deletes",
                "in_sync",
                "lane_plates",
                "capacity",
                "partial",
                "verified",
                "syncable",
                "kept_over",
            },
        )
        # Heard only through plate pushes so far: its list rides in plate replies.
        self.assertEqual(entrance["whitelist_sync"]["kept_over"], ["plate"])
        self.assertEqual(entrance["commands_in"], ["plate"])
        self.assertFalse(entrance["display"])
        # Configured, never heard from.
        self.assertFalse(exit_["online"])
        self.assertIsNone(exit_["last_seen"])
        self.assertIsNone(exit_["last_plate"])
        self.assertIsNone(exit_["whitelist_sync"])
        self.assertTrue(exit_["display"])
        self.assertEqual(exit_["direction"], "out")
        self.assertIsNone(stranger["lane"])
        self.assertIsNone(stranger["direction"])
        self.assertEqual(stranger["last_plate"]["plate"], "京A00001")
        for camera in cameras:
            self.assertNotIn("web_password", json.dumps(camera))

    async def test_registration_password_never_shown(self) -> None:
        await self.build()
        client = await self.operator()
        camera = Camera(self.camera_server)
        body, content_type = multipart_registration(ENTRANCE, password="cam-secret-77")
        await camera.post(body, content_type=content_type)
        reply = await client.get("/api/cameras")
        self.assertNotIn(b"cam-secret-77", reply.body)
        self.assertTrue(reply.json()["cameras"][0]["online"])

    async def test_open_reaches_the_camera_in_its_next_reply(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        with CapturedLog() as captured:
            reply = await client.post(f"/api/cameras/{ENTRANCE}/open", {"channel": 1})
        self.assertEqual(reply.status, 202)
        command = reply.json()["command"]
        self.assertEqual(
            (command["type"], command["camera"], command["state"]), ("open", ENTRANCE, "queued")
        )
        self.assertEqual(command["channel"], 1)
        answer = await camera.post(plate_body(ENTRANCE, "京A00002", plateid=2))
        self.assertEqual(answer["Response_AlarmInfoPlate"]["channelNum"], 1)
        logged = [e for e in captured.events if e.get("action") == "open the barrier"]
        self.assertEqual([(e["user"], e["serialno"]) for e in logged], [("olga", ENTRANCE)])

    async def test_open_without_body_uses_the_lane_channel(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        reply = await client.post(f"/api/cameras/{ENTRANCE}/open")
        self.assertEqual(reply.status, 202)
        self.assertEqual(reply.json()["command"]["channel"], 2)
        answer = await camera.post(plate_body(ENTRANCE, "京A00002", plateid=2))
        self.assertEqual(answer["Response_AlarmInfoPlate"]["channelNum"], 2)

    async def test_command_refusals(self) -> None:
        await self.build()
        client = await self.operator()
        unknown = await client.post("/api/cameras/ffff-0000/open")
        self.assertEqual(unknown.status, 404)
        self.assertIn("ffff-0000", unknown.json()["error"])
        offline = await client.post(f"/api/cameras/{EXIT}/open")
        self.assertEqual(offline.status, 409)
        self.assertIn("offline", offline.json()["error"])
        await self.camera_online()
        for channel in (4, -1, "1", True):
            bad = await client.post(f"/api/cameras/{ENTRANCE}/open", {"channel": channel})
            self.assertEqual(bad.status, 400, channel)
            self.assertIn("channel", bad.json()["errors"])
        not_json = await client.post(
            f"/api/cameras/{ENTRANCE}/open",
            data=b"channel=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(not_json.status, 415)

    async def test_close_hold_open_and_trigger(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        hold = await client.post(f"/api/cameras/{ENTRANCE}/hold-open")
        self.assertEqual((hold.status, hold.json()["command"]["value"]), (202, 1))
        answer = await camera.post(plate_body(ENTRANCE, "京A00002", plateid=2))
        self.assertEqual(answer["Response_AlarmInfoPlate"]["ivs_ioctrl"]["value"], 1)
        close = await client.post(f"/api/cameras/{ENTRANCE}/close", {"channel": 0})
        self.assertEqual((close.status, close.json()["command"]["io"]), (202, 0))
        trigger = await client.post(f"/api/cameras/{ENTRANCE}/trigger")
        self.assertEqual((trigger.status, trigger.json()["command"]["type"]), (202, "trigger"))
        answer = await camera.post(plate_body(ENTRANCE, "京A00002", plateid=3))
        self.assertEqual(answer["Response_AlarmInfoPlate"]["ivs_ioctrl"]["value"], 0)
        self.assertEqual(answer["Response_AlarmInfoPlate"]["manualTrigger"], "ok")

    async def test_the_lane_card_is_told_what_each_camera_can_carry_out(self) -> None:
        await self.build()
        client = await self.operator()
        await self.camera_online(ENTRANCE)
        # An older Vzenith firmware (no plateid, isoffline, gioouts): trigger only.
        legacy = Camera(self.camera_server)
        await legacy.post(plate_body(STRANGER, "京A00009"))
        cameras = {c["serialno"]: c for c in (await client.get("/api/cameras")).json()["cameras"]}
        everything = {"close": True, "hold_open": True, "trigger": True, "snapshot": True}
        self.assertEqual(cameras[ENTRANCE]["can"], everything)
        self.assertEqual(
            cameras[STRANGER]["can"],
            {"close": False, "hold_open": False, "trigger": True, "snapshot": True},
        )
        # Never heard from: offered (and disabled on the page while offline).
        self.assertEqual(cameras[EXIT]["can"], everything)
        refused = await client.post(f"/api/cameras/{STRANGER}/hold-open")
        self.assertEqual(refused.status, 409)

    async def test_serial_hex_and_text(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        hexed = await client.post(
            f"/api/cameras/{ENTRANCE}/serial", {"channel": 1, "hex": "00 64 ff"}
        )
        self.assertEqual(hexed.status, 202)
        self.assertEqual(hexed.json()["command"]["bytes"], 3)
        text = await client.post(f"/api/cameras/{ENTRANCE}/serial", {"channel": 0, "text": "欢迎"})
        self.assertEqual(text.status, 202)
        answer = await camera.post(plate_body(ENTRANCE, "京A00002", plateid=2))
        serial = answer["Response_AlarmInfoPlate"]["serialData"]
        self.assertEqual(
            [(s["serialChannel"], base64.b64decode(s["data"])) for s in serial],
            [(1, b"\x00\x64\xff"), (0, "欢迎".encode("gbk"))],
        )
        for body, field in (
            ({"channel": 2, "hex": "00"}, "channel"),
            ({"channel": 0, "hex": "0g"}, "hex"),
            ({"channel": 0, "hex": "00", "text": "a"}, "hex"),
            ({"channel": 0}, "hex"),
            ({"channel": 0, "hex": ""}, "hex"),
            ({"channel": 0, "text": "😀"}, "text"),
            ({"channel": 0, "hex": "00" * 1025}, "hex"),
        ):
            bad = await client.post(f"/api/cameras/{ENTRANCE}/serial", body)
            self.assertEqual(bad.status, 400, body)
            self.assertIn(field, bad.json()["errors"], body)

    async def test_display_test_on_a_lane_display_else_the_camera_voice(self) -> None:
        shown: list[tuple[str, str]] = []

        class NoDisplay(KeyError):
            pass

        def display_test(lane: str, text: str) -> None:
            if lane != "Entrance":
                raise NoDisplay(lane)
            shown.append((lane, text))

        await self.build(display_test=display_test)
        client = await self.operator()
        # The display is the gateway's own: it works while the camera is away.
        reply = await client.post(f"/api/cameras/{ENTRANCE}/display", {"text": "Welcome\n欢迎"})
        self.assertEqual(reply.status, 202)
        self.assertEqual(reply.json()["via"], "display")
        self.assertEqual(shown, [("Entrance", "Welcome\n欢迎")])
        # No display on the Exit lane, and its camera offline.
        self.assertEqual(
            (await client.post(f"/api/cameras/{EXIT}/display", {"text": "hi"})).status, 409
        )
        # A ParkingCam camera cannot speak.
        camera = Camera(self.camera_server)
        await camera.post(
            sample_bytes("heartbeat_parkingcam_alphadigi_manual_v1.2.json").replace(
                b"e10b2d6c8c07b422361457935b518642", EXIT.encode()
            )
        )
        cannot = await client.post(f"/api/cameras/{EXIT}/display", {"text": "hi"})
        self.assertEqual(cannot.status, 409)
        self.assertIn("cannot speak", cannot.json()["error"])
        # A Vzenith camera in no lane speaks itself.
        await self.camera_online(STRANGER, plateid=9)
        spoken = await client.post(f"/api/cameras/{STRANGER}/display", {"text": "hi"})
        self.assertEqual((spoken.status, spoken.json()["via"]), (202, "camera"))
        self.assertEqual(spoken.json()["command"]["type"], "say")
        self.assertEqual(
            (await client.post(f"/api/cameras/{ENTRANCE}/display", {"text": " "})).status, 400
        )
        self.assertEqual(
            (await client.post("/api/cameras/nobody/display", {"text": "x"})).status, 404
        )

    async def test_resync_whitelist(self) -> None:
        await self.build()
        client = await self.operator()
        await self.camera_online()
        reply = await client.post(f"/api/cameras/{ENTRANCE}/resync-whitelist")
        self.assertEqual(reply.status, 202)
        self.assertEqual(reply.json()["camera"], ENTRANCE)
        # The Exit lane keeps no copy of the list.
        self.assertEqual((await client.post(f"/api/cameras/{EXIT}/resync-whitelist")).status, 409)
        self.assertEqual((await client.post("/api/cameras/nobody/resync-whitelist")).status, 404)

    async def test_snapshot_returns_the_camera_upload(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        waiting = client.stub.request(
            "POST",
            f"{BASE}/api/cameras/{ENTRANCE}/snapshot",
            headers={"X-CSRF-Token": [client.csrf or ""]},
        )
        client.stub.flush()
        answer = await camera.post(plate_body(ENTRANCE, "京A00002", plateid=2))
        url = urlparse(answer["Response_AlarmInfoPlate"]["TriggerImage"]["snapImageAbsolutelyUrl"])
        jpeg = b"\xff\xd8\xff\xe0snapshot\xff\xd9"
        upload = {
            "TriggerImage": {
                "imageFile": base64.b64encode(jpeg).decode(),
                "imageFileLen": len(jpeg),
            },
            "ipaddr": "192.168.1.100",
        }
        await camera.post(json.dumps(upload).encode(), path=url.path)
        response = await settle(client.stub, waiting)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["image/jpeg"])
        self.assertEqual(await settle(client.stub, client.stub.content(response)), jpeg)

    @pytest.mark.e2e
    async def test_page_leaving_during_a_snapshot_leaves_the_command_to_end(self) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        await self.build()
        await self.camera_online()
        port = await self.listen()
        page = _StreamReader()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), page)
        assert page.transport is not None
        page.transport.write(
            f"POST /api/cameras/{ENTRANCE}/snapshot HTTP/1.1\r\nHost: gateway.test\r\n"
            f"Authorization: Bearer {MACHINE_TOKEN}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        camera = self.registry.get(ENTRANCE)
        assert camera is not None
        await self.until(lambda: len(camera.commands) == 1, "the snapshot command")
        (command,) = camera.commands
        page.transport.loseConnection()
        await page.lost
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(command.state.value, "queued")
        # Still delivered to the camera, and it ends on its own time-out.
        camera_client = Camera(self.camera_server)
        answer = await camera_client.post(plate_body(ENTRANCE, "京A00002", plateid=2))
        self.assertIn("TriggerImage", answer["Response_AlarmInfoPlate"])
        self.clock.advance(self.control.snapshot_timeout)
        self.assertEqual(command.state.value, "failed")
        self.assertEqual(page.data, b"")

    async def test_snapshot_times_out_with_504_and_offline_is_409(self) -> None:
        await self.build()
        client = await self.operator()
        offline = await client.post(f"/api/cameras/{EXIT}/snapshot")
        self.assertEqual(offline.status, 409)
        await self.camera_online()
        waiting = client.stub.request(
            "POST",
            f"{BASE}/api/cameras/{ENTRANCE}/snapshot",
            headers={"X-CSRF-Token": [client.csrf or ""]},
        )
        client.stub.flush()
        self.clock.advance(self.control.snapshot_timeout)
        response = await settle(client.stub, waiting)
        self.assertEqual(response.code, 504)
        body = json.loads(await settle(client.stub, client.stub.content(response)))
        self.assertIn("no image", body["error"])


async def commit(
    store: Any, record: EventRecord, images: tuple[tuple[str, bytes], ...] = ()
) -> None:
    await store.commit_event(record, images)


def plate_record(
    event_id: str,
    plate: str,
    *,
    camera: str = ENTRANCE,
    lane: str = "Entrance",
    opened: bool = False,
    reason: str = "unknown",
    minute: int = 0,
) -> EventRecord:
    return EventRecord(
        id=event_id,
        type=EventType.PLATE,
        received_at=datetime(2025, 3, 1, 8, minute, tzinfo=timezone.utc),
        camera=camera,
        lane=lane,
        plate=plate,
        license=plate,
        decision_open=opened,
        decision_reason=reason,
        decision_source="local",
        raw={"PlateResult": {"license": plate}},
    )


class EventTests(AdminTestCase):
    async def fill(self) -> None:
        store = self.store
        await commit(
            store,
            plate_record(
                "p-event00000000001", "京A11111", opened=True, reason="whitelist", minute=1
            ),
            (("full", b"\xff\xd8full-1\xff\xd9"), ("crop", b"\xff\xd8crop-1\xff\xd9")),
        )
        await commit(
            store,
            plate_record("p-event00000000002", "京B22222", camera=EXIT, lane="Exit", minute=2),
        )
        await commit(
            store, plate_record("p-event00000000003", "京A11112", reason="blacklist", minute=3)
        )
        await commit(
            store,
            EventRecord(
                id="io-event00000000001",
                type=EventType.IO,
                received_at=datetime(2025, 3, 1, 8, 4, tzinfo=timezone.utc),
                camera=ENTRANCE,
                lane="Entrance",
                raw={"kind": "IoInput"},
            ),
        )

    async def test_filters_and_paging(self) -> None:
        await self.build()
        await self.fill()
        client = await self.operator()
        everything = (await client.get("/api/events")).json()
        self.assertEqual(
            [e["id"] for e in everything["events"]],
            [
                "io-event00000000001",
                "p-event00000000003",
                "p-event00000000002",
                "p-event00000000001",
            ],
        )
        self.assertIsNone(everything["next_before"])

        async def ids(query: str) -> list[str]:
            reply = await client.get("/api/events?" + query)
            self.assertEqual(reply.status, 200, reply.body)
            return [e["id"] for e in reply.json()["events"]]

        self.assertEqual(
            await ids("plate=" + quote("京A1111")), ["p-event00000000003", "p-event00000000001"]
        )
        self.assertEqual(await ids("lane=Exit"), ["p-event00000000002"])
        self.assertEqual(
            await ids(f"camera={ENTRANCE}&type=plate"), ["p-event00000000003", "p-event00000000001"]
        )
        self.assertEqual(await ids("open=true"), ["p-event00000000001"])
        self.assertEqual(
            await ids("open=false&type=plate"), ["p-event00000000003", "p-event00000000002"]
        )
        self.assertEqual(await ids("reason=blacklist"), ["p-event00000000003"])
        self.assertEqual(
            await ids("since=2025-03-01T08:02:00Z&until=2025-03-01T08:04:00Z"),
            ["p-event00000000003", "p-event00000000002"],
        )
        first = (await client.get("/api/events?limit=2")).json()
        self.assertEqual(
            [e["id"] for e in first["events"]], ["io-event00000000001", "p-event00000000003"]
        )
        second = (await client.get(f"/api/events?limit=2&before={first['next_before']}")).json()
        self.assertEqual(
            [e["id"] for e in second["events"]], ["p-event00000000002", "p-event00000000001"]
        )
        self.assertIsNone(second["next_before"])
        for bad in (
            "limit=0",
            "limit=501",
            "limit=x",
            "open=maybe",
            "type=parade",
            "since=yesterday",
            "before=-3",
        ):
            reply = await client.get("/api/events?" + bad)
            self.assertEqual(reply.status, 400, bad)
            self.assertIn("error", reply.json())

    async def test_one_event_is_exactly_the_recorder_summary(self) -> None:
        from gateway.camera.recorder import event_summary

        await self.build()
        await self.fill()
        client = await self.operator()
        reply = await client.get("/api/events/p-event00000000001")
        self.assertEqual(reply.status, 200)
        stored = await self.store.get_event("p-event00000000001")
        self.assertEqual(reply.json(), json.loads(json.dumps(event_summary(stored))))
        self.assertEqual(reply.json()["images"], ["full", "crop"])
        self.assertEqual((await client.get("/api/events/p-event00000000404")).status, 404)

    async def test_images_and_no_path_traversal(self) -> None:
        await self.build()
        await self.fill()
        client = await self.operator()
        full = await client.get("/api/events/p-event00000000001/image/full")
        self.assertEqual((full.status, full.body), (200, b"\xff\xd8full-1\xff\xd9"))
        self.assertEqual(full.header("content-type"), "image/jpeg")
        self.assertEqual(
            (await client.get("/api/events/p-event00000000001/image/crop")).body,
            b"\xff\xd8crop-1\xff\xd9",
        )
        self.assertEqual(
            (await client.get("/api/events/p-event00000000002/image/full")).status, 404
        )
        secret = self.state_dir / "secret.jpg"
        secret.write_bytes(b"not for you")
        for path in (
            "/api/events/p-event00000000001/image/thumb",
            "/api/events/..%2Fsecret/image/full",
            "/api/events/..%2F..%2Fsecret.jpg/image/full",
            "/api/events/p-event00000000001/image/..%2F..%2Fsecret.jpg",
            "/api/events/p-event00000000001/image/full%00",
            "/api/events/%2E%2E/image/full",
            "/api/events/p-event00000000001%2F..%2Fev-2/image/full",
            "/api/events/" + "a" * 200 + "/image/full",
        ):
            reply = await client.get(path)
            self.assertEqual(reply.status, 404, path)
            self.assertNotIn(b"not for you", reply.body)

    async def test_store_not_open_is_503(self) -> None:
        await self.build()
        # As while the store opens at start.
        self.api = build_admin(**{**self.api_arguments, "store": lambda: None})
        client = await self.operator()
        reply = await client.get("/api/events")
        self.assertEqual(reply.status, 503)
        self.assertIn("not open", reply.json()["error"])
        self.assertEqual((await client.get("/api/whitelist")).status, 503)
        self.assertEqual((await client.post("/api/whitelist", {"plate": "京A1"})).status, 503)
        status = (await client.get("/api/status")).json()
        self.assertFalse(status["store"]["open"])
        self.assertIsNone(status["upstream"]["outbox_depth"])
        cameras = (await client.get("/api/cameras")).json()["cameras"]
        self.assertIsNone(cameras[0]["last_plate"])


SCRIPTY = "<script>alert('x')</script>\"&</p>"


class WhitelistTests(AdminTestCase):
    async def test_add_read_change_delete(self) -> None:
        await self.build()
        client = await self.operator()
        with CapturedLog() as captured:
            added = await client.post(
                "/api/whitelist",
                {
                    "plate": "京a·12345",
                    "valid_from": "2025-01-01",
                    "valid_until": "2025-12-31",
                    "lanes": ["entrance"],
                    "hours": "Mon-Fri 07:00-19:00",
                    "note": SCRIPTY,
                },
            )
        self.assertEqual(added.status, 201, added.body)
        entry = added.json()
        self.assertEqual(
            entry,
            {
                "plate": "京A12345",
                "enabled": True,
                "blacklist": False,
                "valid_from": "2025-01-01T00:00:00+08:00",
                "valid_until": "2025-12-31T23:59:59.999999+08:00",
                "lanes": ["Entrance"],
                "hours": "Mon-Fri 07:00-19:00",
                "note": SCRIPTY,
                "source": "admin",
            },
        )
        # Stored and returned verbatim (JSON, no HTML escaping): escaping is
        # the page's job.
        self.assertIn(b"<script>alert('x')</script>", added.body)
        logged = [e for e in captured.events if e.get("user") == "olga" and "count" in e]
        self.assertEqual([e["count"] for e in logged], [1])
        # Live in the policy at once, and stored.
        self.assertIsNotNone(self.whitelist.policy.index.get("京A12345"))
        rows = await self.store.whitelist_entries()
        self.assertEqual(
            [(r.plate, r.note, r.source) for r in rows], [("京A12345", SCRIPTY, "admin")]
        )

        listed = (await client.get("/api/whitelist")).json()
        self.assertEqual((listed["total"], listed["entries"]), (1, [entry]))
        again = await client.post("/api/whitelist", {"plate": "京A12345"})
        self.assertEqual(again.status, 409)

        changed = await client.request(
            "PUT",
            "/api/whitelist/" + quote("京A12345"),
            json_body={"blacklist": True, "note": "banned"},
        )
        self.assertEqual(changed.status, 200, changed.body)
        self.assertEqual((changed.json()["blacklist"], changed.json()["lanes"]), (True, []))
        changed_entry = self.whitelist.policy.index.get("京A12345")
        assert changed_entry is not None
        self.assertTrue(changed_entry.blacklist)
        mismatch = await client.request(
            "PUT", "/api/whitelist/" + quote("京A12345"), json_body={"plate": "京A99999"}
        )
        self.assertEqual(mismatch.status, 400)
        self.assertIn("plate", mismatch.json()["errors"])

        deleted = await client.request("DELETE", "/api/whitelist/" + quote("京A12345"))
        self.assertEqual(deleted.status, 204)
        self.assertIsNone(self.whitelist.policy.index.get("京A12345"))
        self.assertEqual(await self.store.whitelist_entries(), [])
        gone = await client.request("DELETE", "/api/whitelist/" + quote("京A12345"))
        self.assertEqual(gone.status, 404)

    async def test_validation_names_each_field(self) -> None:
        await self.build()
        client = await self.operator()
        reply = await client.post(
            "/api/whitelist",
            {
                "plate": "··",
                "enabled": "yes",
                "valid_from": "2025-13-01",
                "valid_until": 20250101,
                "lanes": ["Parking level 9"],
                "hours": "someday",
                "note": 5,
                "colour": "red",
            },
        )
        self.assertEqual(reply.status, 400)
        errors = reply.json()["errors"]
        self.assertEqual(
            set(errors),
            {"plate", "enabled", "valid_from", "valid_until", "lanes", "hours", "note", "colour"},
        )
        self.assertIn("Entrance", errors["lanes"])
        order = await client.post(
            "/api/whitelist",
            {
                "plate": "京A1",
                "valid_from": "2025-02-01",
                "valid_until": "2025-01-01",
            },
        )
        self.assertEqual(order.json()["errors"], {"valid_until": "before valid_from"})
        self.assertEqual(await self.store.whitelist_entries(), [])

    async def test_search_and_paging(self) -> None:
        await self.build()
        await self.whitelist.upsert(
            [WhitelistEntry(plate=f"京A{n:05d}") for n in range(30)]
            + [WhitelistEntry(plate="粤B00001")]
        )
        client = await self.operator()
        page = (await client.get("/api/whitelist?limit=10&offset=25")).json()
        self.assertEqual(page["total"], 31)
        self.assertEqual(
            [e["plate"] for e in page["entries"]][:5],
            ["京A00025", "京A00026", "京A00027", "京A00028", "京A00029"],
        )
        found = (await client.get("/api/whitelist?q=" + quote("a0001"))).json()
        self.assertEqual([e["plate"] for e in found["entries"]], [f"京A0001{n}" for n in range(10)])
        self.assertEqual(found["total"], 10)
        self.assertEqual((await client.get("/api/whitelist?limit=0")).status, 400)

    async def test_csv_round_trip(self) -> None:
        await self.build()
        client = await self.operator()
        shanghai = self.tz
        entries = [
            WhitelistEntry(plate="京A12345", note=SCRIPTY, lanes=frozenset({"Entrance"})),
            WhitelistEntry(
                plate="粤B54321",
                blacklist=True,
                valid_from=datetime(2025, 1, 1, tzinfo=shanghai),
                valid_until=datetime(2025, 6, 30, 18, 30, tzinfo=shanghai),
                hours=parse_hours("Mon-Fri 07:00-19:00; Sat 08:00-12:00"),
            ),
            WhitelistEntry(plate="沪C00001", enabled=False, note='line one\nline two, "quoted"'),
        ]
        await self.whitelist.upsert(entries)
        exported = await client.get("/api/whitelist/export")
        self.assertEqual(exported.status, 200)
        self.assertEqual(exported.header("content-type"), "text/csv; charset=utf-8")
        self.assertEqual(
            exported.header("content-disposition"), "attachment; filename=whitelist.csv"
        )
        self.assertTrue(exported.body.startswith(b"\xef\xbb\xbf"))
        before = sorted(self.whitelist.entries(), key=lambda e: e.plate)

        await self.whitelist.delete([e.plate for e in entries])
        self.assertEqual(self.whitelist.entries(), ())
        imported = await client.post(
            "/api/whitelist/import", data=exported.body, headers={"Content-Type": "text/csv"}
        )
        self.assertEqual(imported.status, 200, imported.body)
        self.assertEqual(imported.json(), {"accepted": 3, "rejected": []})
        after = sorted(self.whitelist.entries(), key=lambda e: e.plate)
        self.assertEqual(after, before)

    async def test_import_reports_rejected_rows_and_keeps_good_ones(self) -> None:
        await self.build()
        client = await self.operator()
        csv = (
            "plate,enabled,valid_until,note\n"
            "京A11111,1,,ok\n"
            "京A22222,maybe,,bad flag\n"
            ",1,,no plate\n"
            "京A33333,1,2025-02-30,bad date\n"
        )
        reply = await client.post(
            "/api/whitelist/import",
            data=csv.encode("gb18030"),
            headers={"Content-Type": "text/csv"},
        )
        self.assertEqual(reply.status, 200)
        result = reply.json()
        self.assertEqual(result["accepted"], 1)
        self.assertEqual(
            [(r["line"], r["column"]) for r in result["rejected"]],
            [(3, "enabled"), (4, "plate"), (5, "valid_until")],
        )
        self.assertEqual([e.plate for e in self.whitelist.entries()], ["京A11111"])
        self.assertEqual(self.whitelist.entries()[0].source, "admin")
        header = await client.post(
            "/api/whitelist/import",
            data=b"plaet,note\nX1,y\n",
            headers={"Content-Type": "text/csv"},
        )
        self.assertEqual(header.json()["accepted"], 0)
        self.assertEqual(header.json()["rejected"][0]["line"], 1)
        form = await client.post(
            "/api/whitelist/import",
            data=b"--x\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
        self.assertEqual(form.status, 415)


class StatusTests(AdminTestCase):
    async def test_status_shape(self) -> None:
        ports = [
            {
                "name": "lane-display",
                "device": "/dev/ttyUSB0",
                "state": "open",
                "reason": None,
                "since": 1.0,
                "bytes_written": 10,
                "frames_dropped": 0,
            }
        ]
        await self.build(
            serial_status=lambda: ports,
            upstream_status=lambda: {"state": "backing_off", "last_error": "connection refused"},
        )
        client = await self.operator()
        await self.camera_online()
        status = (await client.get("/api/status")).json()
        self.assertEqual(status["gateway"], "site-7")
        self.assertIsInstance(status["uptime_seconds"], float)
        store = status["store"]
        self.assertEqual(
            set(store) - {"open"},
            {
                "db_bytes",
                "image_bytes",
                "image_files",
                "images_lost",
                "events",
                "free_disk_bytes",
                "degraded",
                "reason",
                "image_retention_days",
                "image_max_bytes",
                "event_retention_days",
                "max_db_bytes",
                "db_live_bytes",
                "events_expired",
                "events_dropped",
                "events_dropped_unsent",
                "integrity",
                "replaced",
                "log_damaged",
                "open_problem",
                "quarantined",
            },
        )
        # Nothing replaced, no damaged log, and it opened: nothing to say.
        self.assertEqual(
            (store["replaced"], store["log_damaged"], store["open_problem"]), (None, None, None)
        )
        self.assertEqual(store["quarantined"], {"rows": 0, "latest": None})
        self.assertGreater(store["db_bytes"], 0)
        self.assertGreater(store["db_live_bytes"], 0)
        self.assertEqual(
            (store["event_retention_days"], store["events_expired"], store["events_dropped"]),
            (400, 0, 0),
        )
        # A new database: nothing to check at its first start.
        self.assertEqual(store["integrity"], {"state": "clean", "detail": None, "at": None})
        self.assertGreater(store["free_disk_bytes"], 0)
        # The plate, and the camera coming online.
        kept = await self.store.recent_events(limit=100)
        self.assertEqual(sorted(e.type.value for e in kept), ["camera_online", "plate"])
        self.assertEqual(store["events"], 2)
        self.assertFalse(store["degraded"])
        self.assertEqual(store["image_retention_days"], 30)
        self.assertEqual(
            status["upstream"],
            {
                "configured": True,
                "state": "backing_off",
                "last_error": "connection refused",
                "outbox_depth": 0,
                "dead_letters": 0,
                "dropped": 0,
            },
        )
        self.assertEqual(status["dead_letters"], [])
        self.assertEqual(status["serial_ports"], ports)
        self.assertEqual(status["cameras"], {"known": 2, "online": 1, "comet_polls_held": 0})

    async def test_standalone_and_async_upstream(self) -> None:
        await self.build()
        client = await self.operator()
        status = (await client.get("/api/status")).json()
        upstream = status["upstream"]
        self.assertEqual((upstream["configured"], upstream["state"]), (False, None))
        self.assertEqual(status["mqtt"], {"configured": False})

    async def test_the_mqtt_link_beside_the_cloud_link(self) -> None:
        async def link() -> dict[str, Any]:
            return {"state": "down", "last_error": "Not authorized", "queued": 12}

        await self.build(mqtt_status=link)
        client = await self.operator()
        mqtt = (await client.get("/api/status")).json()["mqtt"]
        self.assertEqual(
            mqtt, {"configured": True, "state": "down", "last_error": "Not authorized", "queued": 12}
        )

    async def test_dead_letter_listed_and_replayed_by_an_admin_only(self) -> None:
        replays: list[bool] = []

        async def link() -> dict[str, Any]:
            return {"state": "up", "last_error": None}

        await self.build(on_replay=lambda: replays.append(True), upstream_status=link)
        record = plate_record("p-event00000000009", "京A99999")
        await self.store.commit_event(record, outbox=True)
        await self.store.outbox_dead_letter("p-event00000000009", 422, '{"error": "unknown lane"}')
        operator = await self.operator()
        status = (await operator.get("/api/status")).json()
        self.assertEqual(status["upstream"]["state"], "up")
        self.assertEqual(status["upstream"]["dead_letters"], 1)
        (letter,) = status["dead_letters"]
        self.assertEqual(
            (letter["event_id"], letter["status"], letter["camera"]),
            ("p-event00000000009", 422, ENTRANCE),
        )
        self.assertEqual(letter["body"], '{"error": "unknown lane"}')
        self.assertEqual(
            (await operator.post("/api/dead-letters/p-event00000000009/replay")).status, 403
        )
        admin = Client(self.api)
        await admin.login("ada")
        replayed = await admin.post("/api/dead-letters/p-event00000000009/replay")
        self.assertEqual(replayed.status, 202)
        self.assertEqual(replays, [True])
        self.assertEqual(await self.store.outbox_depth(), 1)
        self.assertEqual(
            (await admin.post("/api/dead-letters/p-event00000000009/replay")).status, 404
        )
        self.assertEqual((await admin.post("/api/dead-letters/..%2Fx/replay")).status, 404)


class PageTests(AdminTestCase):
    async def test_page_and_static_files_need_no_login_and_no_traversal(self) -> None:
        static = Path(self.mktemp())
        static.mkdir(parents=True)
        (static / "index.html").write_text("<!doctype html><title>Gate</title>", encoding="utf-8")
        (static / "app.js").write_text("console.log('hi')", encoding="utf-8")
        (static.parent / "outside.txt").write_text("private", encoding="utf-8")
        await self.build(static_dir=static)
        anonymous = Client(self.api)
        page = await anonymous.get("/")
        self.assertEqual(page.status, 200)
        self.assertIn(b"<title>Gate</title>", page.body)
        self.assertIn("frame-ancestors 'none'", page.header("content-security-policy") or "")
        script = await anonymous.get("/static/app.js")
        self.assertEqual((script.status, script.body), (200, b"console.log('hi')"))
        self.assertEqual(script.header("x-content-type-options"), "nosniff")
        for path in (
            "/static/../outside.txt",
            "/static/%2E%2E/outside.txt",
            "/static/..%2Foutside.txt",
            "/static/",
            "/static/nothing.js",
        ):
            reply = await anonymous.get(path)
            self.assertNotEqual(reply.status, 200, path)
            self.assertNotIn(b"private", reply.body)
        self.assertEqual((await anonymous.get("/api/status")).status, 401)

    async def test_missing_page_is_a_clear_404(self) -> None:
        empty = Path(self.mktemp())
        empty.mkdir(parents=True)
        await self.build(static_dir=empty)
        reply = await Client(self.api).get("/")
        self.assertEqual(reply.status, 404)
        self.assertIn("not installed", reply.json()["error"])

    async def test_shipped_page_is_served(self) -> None:
        from gateway.admin.page import STATIC_DIR

        await self.build()
        reply = await Client(self.api).get("/")
        if (STATIC_DIR / "index.html").is_file():
            self.assertEqual(reply.status, 200)
            self.assertTrue((reply.header("content-type") or "").startswith("text/html"))
        else:
            self.assertEqual(reply.status, 404)

    async def test_unknown_paths_and_methods_answer_json(self) -> None:
        await self.build()
        client = await self.operator()
        missing = await client.get("/api/nothing")
        self.assertEqual((missing.status, missing.json()), (404, {"error": "not found"}))
        wrong = await client.request("DELETE", "/api/status")
        self.assertEqual(wrong.status, 405)
        self.assertIn("GET", wrong.header("allow") or "")


class _StreamReader(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)

    @property
    def tcp(self) -> Connection:
        """The loopback TCP connection the reader was connected over."""
        assert isinstance(self.transport, Connection)
        return self.transport

    def ended(self) -> bool:
        """Whether the chunked response has ended."""
        return self.data.endswith(b"\r\n0\r\n\r\n")


@pytest.mark.e2e
class StreamTests(AdminTestCase):
    """``/api/stream`` over real loopback HTTP."""

    async def open_stream(self, port: int, credentials: str) -> _StreamReader:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        reader = _StreamReader()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), reader)
        self.addCleanup(lambda: reader.tcp.abortConnection() if reader.tcp.connected else None)
        reader.tcp.write(
            b"GET /api/stream HTTP/1.1\r\nHost: gateway.test\r\nAccept: text/event-stream\r\n"
            + credentials.encode()
            + b"\r\n\r\n"
        )
        await self.until(lambda: b": connected" in reader.data, "the stream to open")
        return reader

    async def test_bus_messages_keepalives_and_disconnect(self) -> None:
        await self.build()
        port = await self.listen()
        before = len(self.bus)
        reader = await self.open_stream(port, f"Authorization: Bearer {SCRAPER_TOKEN}")
        head = reader.data.split(b"\r\n\r\n", 1)[0].lower()
        self.assertIn(b"200 ok", head.split(b"\r\n")[0])
        self.assertIn(b"content-type: text/event-stream", head)
        self.assertEqual(len(self.bus), before + 1)
        self.bus.publish("camera", {"serialno": ENTRANCE, "note": "line\nbreak <b>"})
        self.bus.publish("internal", {"not": "streamed"})
        self.bus.publish("event", {"id": "ev-1", "plate": "京A12345"})
        await self.until(lambda: b"ev-1" in reader.data, "the event message")
        messages = reader.data.split(b"\r\n\r\n", 1)[1]
        self.assertIn(
            b'event: camera\ndata: {"serialno":"'
            + ENTRANCE.encode()
            + b'","note":"line\\nbreak <b>"}\n\n',
            messages,
        )
        self.assertIn('event: event\ndata: {"id":"ev-1","plate":"京A12345"}\n\n'.encode(), messages)
        self.assertNotIn(b"internal", messages)
        self.clock.advance(15)
        await self.until(lambda: b": keepalive\n\n" in reader.data, "a keepalive")
        self.assertEqual(len(self.keepalive_timers()), 1)
        reader.tcp.loseConnection()
        await self.until(
            lambda: len(self.bus) == before and not self.api.stream.streams, "the unsubscription"
        )
        self.assertEqual(self.keepalive_timers(), [])

    def keepalive_timers(self) -> list[DelayedCall]:
        return [
            call
            for call in self.clock.calls
            if isinstance(getattr(call.func, "__self__", None), EventStream)
        ]

    async def test_logout_ends_the_stream_at_once(self) -> None:
        await self.build()
        port = await self.listen()
        client = await self.operator()
        cookie = (await client.login("olga")).header("set-cookie") or ""
        session = cookie.split(";")[0]
        reader = await self.open_stream(port, f"Cookie: {session}")
        self.assertEqual(len(self.api.stream.streams), 1)
        await client.post("/api/logout")
        # Not at the next keepalive: no time passes.
        await self.until(lambda: not self.api.stream.streams, "the stream to end")
        # The chunked response ends properly.
        await self.until(reader.ended, "the end of the response")
        self.assertEqual(self.keepalive_timers(), [])

    async def test_one_credential_cannot_take_every_stream(self) -> None:
        await self.build()
        port = await self.listen()
        share = self.api.stream.max_streams_per_holder
        self.assertLess(share, self.api.stream.max_streams)
        for _ in range(share):
            await self.open_stream(port, f"Authorization: Bearer {SCRAPER_TOKEN}")
        refused = await Client(self.api, token=SCRAPER_TOKEN).get("/api/stream")
        self.assertEqual(refused.status, 503)
        self.assertIn("this user has too many live streams", refused.json()["error"])
        # Another credential still gets one.
        await self.open_stream(port, f"Authorization: Bearer {MACHINE_TOKEN}")
        self.assertEqual(len(self.api.stream.streams), share + 1)

    async def test_streams_end_when_the_gateway_stops(self) -> None:
        await self.build()
        port = await self.listen()
        before = len(self.bus)
        readers = [
            await self.open_stream(port, f"Authorization: Bearer {SCRAPER_TOKEN}") for _ in range(2)
        ]
        self.assertEqual(len(self.api.stream.streams), 2)
        self.api.end_streams()
        for reader in readers:
            await self.until(reader.ended, "the end of the response")
        self.assertEqual(
            (self.api.stream.streams, len(self.bus), self.keepalive_timers()), (set(), before, [])
        )

    async def test_a_client_that_stops_reading_is_dropped(self) -> None:
        await self.build()
        port = await self.listen()
        before = len(self.bus)
        reader = await self.open_stream(port, f"Authorization: Bearer {SCRAPER_TOKEN}")
        reader.tcp.pauseProducing()  # reads nothing more from the socket
        payload = {"id": "x" * 32768}
        for _ in range(2000):  # bounded: at most 2000 * 4 * 32 KiB
            if not self.api.stream.streams:
                break
            for _ in range(4):
                self.bus.publish("event", payload)
            await deferLater(reactor, 0.001, lambda: None)
        self.assertEqual(self.api.stream.streams, set())
        self.assertEqual(len(self.bus), before)
        reader.tcp.resumeProducing()
        await reader.lost

    async def test_a_reading_client_gets_every_message_in_order(self) -> None:
        await self.build()
        port = await self.listen()
        reader = await self.open_stream(port, f"Authorization: Bearer {SCRAPER_TOKEN}")
        filler = "y" * 8000
        for batch in range(20):
            for number in range(10):
                self.bus.publish("event", {"n": batch * 10 + number, "filler": filler})
            await deferLater(reactor, 0.001, lambda: None)
        await self.until(lambda: b'"n":199,' in reader.data, "the last message")
        self.assertEqual(len(self.api.stream.streams), 1)
        numbers = [
            json.loads(line[len(b"data: ") :])["n"]
            for line in reader.data.split(b"\n")
            if line.startswith(b"data: ")
        ]
        self.assertEqual(numbers, list(range(200)))

    async def test_stream_needs_credentials(self) -> None:
        await self.build()
        reply = await Client(self.api).get("/api/stream")
        self.assertEqual(reply.status, 401)
        self.assertEqual(len(self.api.stream.streams), 0)


class AttentionTests(AdminTestCase):
    """Alerts from what happens on site, until an operator acknowledges them."""

    async def test_a_refused_car_calls_until_acknowledged_by_an_operator(self) -> None:
        await self.build()
        operator = await self.operator()
        viewer = Client(self.api)
        await viewer.login("vera")
        empty = await viewer.get("/api/attention")
        self.assertEqual(empty.status, 200)
        self.assertEqual(empty.json()["alerts"], [])
        self.assertEqual(
            empty.json()["sounds"],
            {
                "blacklist": "alarm",
                "refused": "chime",
                "camera_offline": "beep",
                "display_fault": "beep",
                "cloud_down": "beep",
            },
        )
        published: list[Any] = []
        self.bus.subscribe(lambda topic, payload: published.append(payload) if topic == "attention" else None)
        await self.camera_online()  # 京A00001, unknown: refused
        (alert,) = (await viewer.get("/api/attention")).json()["alerts"]
        self.assertEqual(
            (alert["kind"], alert["plate"], alert["lane"], alert["reason"]),
            ("refused", "京A00001", "Entrance", "unknown"),
        )
        self.assertEqual(published[-1]["alert"]["id"], alert["id"])
        path = f"/api/attention/{alert['id']}/acknowledge"
        # A viewer may see it, not acknowledge it; nor may a page without its CSRF token.
        self.assertEqual((await viewer.post(path, {})).status, 403)
        self.assertEqual((await operator.post(path, {}, csrf=False)).status, 403)
        self.assertEqual(len((await viewer.get("/api/attention")).json()["alerts"]), 1)
        acknowledged = await operator.post(path, {})
        self.assertEqual(acknowledged.status, 200)
        self.assertEqual(acknowledged.json()["by"], "olga")
        self.assertEqual(published[-1], {"acknowledged": alert["id"]})
        self.assertEqual((await viewer.get("/api/attention")).json()["alerts"], [])
        self.assertEqual((await operator.post(path, {})).status, 404)
        audit = await self.store.audit_entries()
        self.assertEqual(
            (audit[0].who, audit[0].action, audit[0].target), ("olga", "acknowledge_alert", "event:" + alert["event_id"])
        )
        self.assertEqual((await Client(self.api).get("/api/attention")).status, 401)

    async def test_each_kind_and_the_same_trouble_counted_once(self) -> None:
        await self.build()
        client = await self.operator()
        await client.post(
            "/api/whitelist", {"plate": "京B66666", "blacklist": True, "note": "stolen"}
        )
        camera = Camera(self.camera_server)
        await camera.post(plate_body(ENTRANCE, "京B66666", plateid=7))
        # What the gateway's parts publish: a camera offline, a port failing
        # (twice: one alert), the cloud link going down.
        self.bus.publish("camera", {"serialno": EXIT, "lane": "Exit", "online": False})
        for _ in range(2):
            self.bus.publish(
                "status",
                {"serial_port": {"name": "led1", "state": "missing", "reason": "unplugged"}},
            )
        self.bus.publish("status", {"upstream": "backing_off", "last_error": "timed out"})
        self.bus.publish("status", {"upstream": "backing_off", "last_error": "timed out"})
        alerts = (await client.get("/api/attention")).json()["alerts"]
        self.assertEqual(
            [(a["kind"], a["count"]) for a in alerts],
            [("blacklist", 1), ("camera_offline", 1), ("display_fault", 2), ("cloud_down", 1)],
        )
        self.assertEqual(alerts[2]["detail"], "led1: missing (unplugged)")
        # A repeat read or an offline record calls for nobody.
        await camera.post(plate_body(ENTRANCE, "京C77777", plateid=8, isoffline=1))
        self.assertEqual(len((await client.get("/api/attention")).json()["alerts"]), 4)

    async def test_a_kind_switched_off_raises_nothing(self) -> None:
        from support.admin import default_settings

        await self.build(settings=default_settings(attention={"refused": "off"}))
        client = await self.operator()
        await self.camera_online()
        reply = await client.get("/api/attention")
        self.assertEqual(reply.json()["alerts"], [])
        self.assertEqual(reply.json()["sounds"]["refused"], "off")


class AttentionBoundTests(SynchronousTestCase):
    def test_the_oldest_alerts_go_past_the_bound_and_every_page_is_told(self) -> None:
        from gateway.admin.attention import MAX_ALERTS, AttentionFeed
        from gateway.admin.settings import AttentionSettings
        from gateway.bus import EventBus

        bus = EventBus()
        told: list[Any] = []
        bus.subscribe(lambda topic, payload: told.append(payload) if topic == "attention" else None)
        feed = AttentionFeed(clock=Clock(), bus=bus, settings=AttentionSettings())
        for n in range(MAX_ALERTS + 5):
            bus.publish("camera", {"serialno": f"cam-{n}", "lane": None, "online": False})
        alerts = feed.alerts()
        self.assertEqual(len(alerts), MAX_ALERTS)
        self.assertEqual(alerts[0].detail, "cam-5")
        dropped = [payload for payload in told if payload.get("dropped")]
        self.assertEqual(len(dropped), 5)


class OccupancyApiTests(AdminTestCase):
    LANES = [
        {"name": "Entrance", "camera": ENTRANCE, "unknown_plate": "allow", "sync_whitelist": False},
        {
            "name": "Exit", "camera": EXIT, "direction": "out", "unknown_plate": "allow",
            "sync_whitelist": False,
        },
    ]

    async def test_entry_exit_and_an_operators_correction(self) -> None:
        await self.build(
            lanes=self.LANES,
            occupancy={"capacity": 20, "areas": [{"name": "Garage", "lanes": ["Exit"], "capacity": 4}]},
        )
        viewer = Client(self.api)
        await viewer.login("vera")
        operator = await self.operator()
        first = await viewer.get("/api/occupancy")
        self.assertEqual(first.status, 200)
        self.assertEqual(
            {key: first.json()[key] for key in ("capacity", "inside", "free")},
            {"capacity": 20, "inside": 0, "free": 20},
        )
        self.assertEqual(first.json()["areas"][0]["name"], "Garage")
        camera = Camera(self.camera_server)
        await camera.post(plate_body(ENTRANCE, "京A12345", plateid=1))
        await camera.post(plate_body(ENTRANCE, "京A54321", plateid=2))
        self.assertEqual((await viewer.get("/api/occupancy")).json()["inside"], 2)
        await camera.post(plate_body(EXIT, "京A12345", plateid=3))
        now = (await viewer.get("/api/occupancy")).json()
        self.assertEqual((now["inside"], now["free"]), (1, 19))
        # The garage's exit saw a car it never saw enter: flagged, nothing negative.
        self.assertEqual(now["areas"][0]["inside"], 0)

        body = {"inside": 5, "reason": "counted on the walk round"}
        self.assertEqual((await viewer.post("/api/occupancy/correct", body)).status, 403)
        self.assertEqual((await operator.post("/api/occupancy/correct", body, csrf=False)).status, 403)
        machine = Client(self.api, token=SCRAPER_TOKEN)
        self.assertEqual((await machine.post("/api/occupancy/correct", body)).status, 403)
        missing = await operator.post("/api/occupancy/correct", {"inside": -1, "reason": " "})
        self.assertEqual(missing.status, 400)
        self.assertEqual(set(missing.json()["errors"]), {"inside", "reason"})
        unknown = await operator.post("/api/occupancy/correct", {**body, "area": "Roof"})
        self.assertEqual((unknown.status, list(unknown.json()["errors"])), (400, ["area"]))
        corrected = await operator.post("/api/occupancy/correct", body)
        self.assertEqual(corrected.status, 200)
        self.assertEqual(
            {key: corrected.json()[key] for key in ("inside", "free", "correction")},
            {"inside": 5, "free": 15, "correction": 4},
        )
        (event,) = await self.store.recent_events(limit=1, type=EventType.OCCUPANCY)
        self.assertEqual(
            {key: event.raw[key] for key in ("inside", "previous", "operator", "reason")},
            {"inside": 5, "previous": 1, "operator": "olga", "reason": "counted on the walk round"},
        )
        audit = await self.store.audit_entries()
        self.assertEqual((audit[0].action, audit[0].reason), ("correct_occupancy", "counted on the walk round"))
        garage = await operator.post(
            "/api/occupancy/correct", {"area": "garage", "inside": 2, "reason": "two in"}
        )
        self.assertEqual((garage.json()["area"], garage.json()["inside"]), ("Garage", 2))

        self.clock.advance(1.0)  # the sessions are written
        sessions = (await viewer.get("/api/occupancy/sessions?area=")).json()["sessions"]
        self.assertEqual(
            sorted((s["plate"], s["state"], s["flagged"]) for s in sessions),
            [("京A12345", "closed", False), ("京A54321", "inside", False)],
        )
        garage_sessions = (await viewer.get("/api/occupancy/sessions?area=Garage")).json()
        self.assertEqual(
            [(s["plate"], s["state"], s["entered_at"], s["flagged"]) for s in garage_sessions["sessions"]],
            [("京A12345", "no_entry", None, True)],
        )
        flagged = await viewer.get("/api/occupancy/sessions?state=no_entry&limit=1")
        self.assertEqual(len(flagged.json()["sessions"]), 1)
        self.assertIsNotNone(flagged.json()["next_before"])
        self.assertEqual((await viewer.get("/api/occupancy/sessions?state=parked")).status, 400)
        for path in ("/api/occupancy", "/api/occupancy/sessions"):
            self.assertEqual((await Client(self.api).get(path)).status, 401)

    async def test_the_count_is_in_the_metrics(self) -> None:
        await self.build(lanes=self.LANES, occupancy={"capacity": 3})
        self.metrics.watch_occupancy(
            lambda: [c.to_json() | {"area": c.area} for c in self.parts.occupancy.counts()]
        )
        await Camera(self.camera_server).post(plate_body(ENTRANCE, "京A12345", plateid=1))
        reply = await Client(self.api, token=SCRAPER_TOKEN).get("/metrics")
        text = reply.body.decode()
        self.assertIn('anpr_gateway_occupancy_inside{area=""} 1.0', text)
        self.assertIn('anpr_gateway_occupancy_capacity{area=""} 3.0', text)
        self.assertIn('anpr_gateway_occupancy_free{area=""} 2.0', text)


class AdminSiteTests(AdminTestCase):
    """The admin listener's site: bodies bounded by route before they are
    read, the CSV import at field scale."""

    async def test_an_unauthenticated_50_mb_post_is_refused_before_it_is_read(self) -> None:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        await self.build()
        looked_at: list[str] = []
        check_token = self.users.check_token

        def counting(token: str) -> Any:
            looked_at.append(token)
            return check_token(token)

        self.patch(self.users, "check_token", counting)
        before = await self.store.whitelist_entries()
        for path in ("/api/whitelist/import", "/api/login", "/api/cameras/x/open", "/nowhere"):
            peer = IPv4Address("TCP", "192.0.2.9", 40000)
            protocol = self.api.site().buildProtocol(peer)
            protocol.callLater = self.clock.callLater
            transport = StringTransport(peerAddress=peer)
            protocol.makeConnection(transport)
            protocol.dataReceived(
                f"POST {path} HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: text/csv\r\n"
                "Authorization: Bearer not-a-token\r\nContent-Length: 52428800\r\n\r\n".encode()
            )
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "), path)
            self.assertTrue(transport.disconnecting, path)
            answered = len(transport.value())
            protocol.dataReceived(b"x" * 1_000_000)  # thrown away
            self.assertEqual(len(transport.value()), answered, path)
        self.assertEqual(looked_at, [])
        self.assertEqual(await self.store.whitelist_entries(), before)

    async def test_only_the_expected_routes_are_open_and_only_the_import_reads_more(self) -> None:
        await self.build()
        routes = self.api.routes()
        self.assertEqual(len(routes), 52)
        opened = sorted(route.url for route in routes if route.access.role is None)
        self.assertEqual(opened, ["/", "/api/login", "/api/logout", "/static/<path:name>", "/wall"])
        public = [route.url for route in routes if route.access.reason and route.access.role]
        self.assertEqual(public, ["/metrics"])
        admins = [route.url for route in routes if route.access.role == "admin"]
        self.assertEqual(
            sorted(admins),
            [
                "/api/audit",
                "/api/dead-letters/<event_id>/replay",
                "/api/store/damage/acknowledge",
                "/api/tokens",
                "/api/tokens",
                "/api/tokens/<name>",
                "/api/users",
                "/api/users",
                "/api/users/<name>",
                "/api/users/<name>",
            ],
        )
        larger = {route.url: route.access.max_body for route in routes}
        self.assertEqual(
            {url: size for url, size in larger.items() if size != 64 * 1024},
            {"/api/whitelist/import": 32 * 1024 * 1024},
        )
        for route in routes:
            # Everyone signed in with a password may change their own.
            if route.url == "/api/session/password":
                self.assertEqual(route.access.role, "viewer")
                continue
            if route.methods & {"POST", "PUT", "DELETE"} and route.access.role is not None:
                self.assertIn(route.access.role, ("operator", "admin"), route.url)


@pytest.mark.e2e
class FieldScaleImportTests(AdminTestCase):
    async def test_a_100_000_plate_csv_is_imported_through_the_admin_site(self) -> None:
        from gateway.policy.csvformat import format_whitelist_csv

        await self.build()
        port = await self.listen()
        entries = [
            WhitelistEntry(plate=f"京A{n:05d}", note=f"tenant {n}, bay {n % 400}")
            for n in range(100_000)
        ]
        body = format_whitelist_csv(entries, self.codec).encode("utf-8")
        self.assertGreater(len(body), 64 * 1024 * 40)  # a few MB: over the JSON limit
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        page = _StreamReader()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), page)
        assert page.transport is not None
        page.transport.write(
            b"POST /api/whitelist/import HTTP/1.1\r\nHost: gateway.test\r\n"
            + f"Authorization: Bearer {MACHINE_TOKEN}\r\nContent-Type: text/csv\r\n".encode()
            + f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await page.lost
        head, _, rest = page.data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), page.data[:300])
        self.assertIn(b'"accepted": 100000', rest)
        self.assertIn(b'"rejected": []', rest)
        self.assertEqual(len(self.whitelist.entries()), 100_000)
