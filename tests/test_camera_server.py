"""The camera server in memory: every manual sample parsed and answered,
comet polls held and released on a Clock, bad input answered 400 and logged
once, bodies over the limit refused before they are read, and headers that
trickle in or piles of connections from one address cut off, on the
gateway's real parts (support.parts) with pushes through ``StubTreq`` and raw
bytes through a ``StringTransport``.

test_e2e_camera_server sends the same over real sockets, TLS and keep-alive
connections."""

from __future__ import annotations

import base64
import json
from typing import Any

from gateway.camera.commands import OpenBarrier, SendSerial
from gateway.protocol.capabilities import HeartbeatMode
from support import (
    CapturedLog,
    loopback_config,
    multipart_registration,
    sample_bytes,
    sample_json,
)
from support.camera import START, CameraServerTestCase, MemoryCamera, RawConnection
from support.gateway import plate_body

VZENITH_CAMERA = "eff50e18-e3d3862b"
PARKINGCAM_CAMERA = "e10b2d6c8c07b422361457935b518642"
COMET_CAMERA = "d85b1269-8f942256"


class SampleTests(CameraServerTestCase):
    """Every manual sample, parsed and answered by the real server."""

    config = loopback_config(
        lane=[
            {
                "name": "Entrance",
                "camera": VZENITH_CAMERA,
                "barrier_channel": 2,
                "unknown_plate": "allow",
            },
            # The camera whitelist sync would start with this camera's first
            # heartbeat (test_whitelist_sync): here only the answers count.
            {
                "name": "Exit",
                "camera": PARKINGCAM_CAMERA,
                "direction": "out",
                "sync_whitelist": False,
            },
        ]
    )

    async def test_vzenith_plate_sample_with_plateid(self) -> None:
        await self.start()
        reply = await self.camera().post(sample_bytes("plate_vzenith_manual_offline_record.jsonc"))
        self.assertEqual(reply.status, 200)
        answer = self.assert_strict_reply(reply.body)["Response_AlarmInfoPlate"]
        # "_无_" is a no-plate read: never opens, even on an allow-all lane.
        self.assertEqual(answer["info"], "no")
        self.assertEqual(answer["plateid"], 123)
        self.assertIsInstance(answer["plateid"], int)
        self.assertEqual(answer["content"], "retransfer_stop")
        self.assertNotIn("ContinuePushOffline", answer)

    async def test_offline_record_asks_for_next_and_never_opens(self) -> None:
        await self.start()
        body = sample_json("plate_vzenith_manual_offline_record.jsonc")
        result = body["AlarmInfoPlate"]["result"]["PlateResult"]
        result["isoffline"] = 1
        result["license"] = "京A12345"
        reply = await self.camera().post(json.dumps(body).encode())
        answer = self.assert_strict_reply(reply.body)["Response_AlarmInfoPlate"]
        self.assertEqual(answer["ContinuePushOffline"], {"plateid": 123, "continue": 1})
        self.assertEqual(answer["info"], "no")
        self.assertNotIn("channelNum", answer)

    async def test_allowed_plate_opens_lane_barrier_channel_and_is_kept(self) -> None:
        parts = await self.start()
        reply = await self.camera().post(plate_body(VZENITH_CAMERA, "京A12345", plateid=7))
        answer = self.assert_strict_reply(reply.body)["Response_AlarmInfoPlate"]
        self.assertEqual(answer["info"], "ok")
        self.assertEqual(answer["channelNum"], 2)
        self.assertEqual(answer["plateid"], 7)
        # Kept before the reply was sent.
        assert parts.store is not None
        (event,) = await parts.store.recent_events(type="plate")
        self.assertEqual(
            (event.camera, event.plate, event.decision_open), (VZENITH_CAMERA, "京A12345", True)
        )

    async def test_no_license_sample(self) -> None:
        await self.start()
        reply = await self.camera().post(sample_bytes("plate_vzenith_nolicense_doc_2015.json"))
        answer = self.assert_strict_reply(reply.body)["Response_AlarmInfoPlate"]
        self.assertEqual(answer["info"], "no")
        self.assertEqual(answer["content"], "retransfer_stop")

    async def test_parkingcam_plate_sample_denied_on_default_lane(self) -> None:
        parts = await self.start()
        reply = await self.camera().post(
            sample_bytes("plate_parkingcam_alphadigi_manual_v1.2.json")
        )
        answer = self.assert_strict_reply(reply.body)["Response_AlarmInfoPlate"]
        self.assertEqual(answer["info"], "no")
        self.assertEqual(answer["content"], "retransfer_stop")
        camera = parts.registry.get(PARKINGCAM_CAMERA)
        assert camera is not None and camera.dialect is not None
        self.assertEqual(camera.dialect.value, "parkingcam")

    async def test_parkingcam_heartbeat_sample(self) -> None:
        parts = await self.start()
        reply = await self.camera().post(
            sample_bytes("heartbeat_parkingcam_alphadigi_manual_v1.2.json"),
            path="/devicemanagement/php/receivedeviceinfo.php",
        )
        answer = self.assert_strict_reply(reply.body)
        self.assertEqual(answer, {"Response_Heartbeat": {"info": "no"}})
        camera = parts.registry.get(PARKINGCAM_CAMERA)
        assert camera is not None
        self.assertTrue(camera.online)

    async def test_parkingcam_heartbeat_carries_queued_open_and_serial(self) -> None:
        parts = await self.start()
        expires_at = self.clock.seconds() + 30
        parts.registry.queue(PARKINGCAM_CAMERA, OpenBarrier(channel=0, expires_at=expires_at))
        parts.registry.queue(
            PARKINGCAM_CAMERA, SendSerial(channel=1, data=b"1123456789", expires_at=expires_at)
        )
        reply = await self.camera().post(
            sample_bytes("heartbeat_parkingcam_alphadigi_manual_v1.2.json")
        )
        answer = self.assert_strict_reply(reply.body)["Response_Heartbeat"]
        self.assertEqual(answer["info"], "ok")
        self.assertEqual(
            answer["serialData"],
            [{"serialChannel": 1, "data": base64.b64encode(b"1123456789").decode(), "dataLen": 10}],
        )

    async def test_io_input_sample_both_keys(self) -> None:
        await self.start()
        camera = self.camera()
        body = sample_json("gio_push_vzenith_manual.json")
        for raw in (json.dumps(body).encode(), json.dumps({"AlarmIoIn": body["AlarmGioIn"]}).encode()):
            reply = await camera.post(raw, path="/devicemanagement/php/gio.php")
            self.assertEqual(reply.status, 200)
            self.assert_strict_reply(reply.body)

    async def test_serial_sample_answered_with_queued_serial_bytes(self) -> None:
        parts = await self.start()
        parts.registry.queue(
            "cead13eb-1a198cd7",
            SendSerial(channel=0, data=b"\x00\x64hi", expires_at=self.clock.seconds() + 30),
        )
        reply = await self.camera().post(sample_bytes("serial_push_vzenith_manual.json"))
        answer = self.assert_strict_reply(reply.body)["Response_SerialData"]
        self.assertEqual(answer["info"], "ok")
        self.assertEqual(answer["serialData"][0]["dataLen"], 4)
        self.assertEqual(base64.b64decode(answer["serialData"][0]["data"]), b"\x00\x64hi")

    async def test_expired_command_is_not_sent(self) -> None:
        parts = await self.start()
        parts.registry.queue(
            "cead13eb-1a198cd7",
            SendSerial(channel=0, data=b"late", expires_at=self.clock.seconds() + 30),
        )
        self.clock.advance(31)
        reply = await self.camera().post(sample_bytes("serial_push_vzenith_manual.json"))
        answer = self.assert_strict_reply(reply.body)["Response_SerialData"]
        self.assertNotIn("serialData", answer)

    async def test_trigger_image_sample_matched_to_camera_by_address(self) -> None:
        await self.start()
        camera = self.camera()
        # The camera is known from an earlier push from this address.
        await camera.post(plate_body("d85b1269-8f942256", "京A12345"))
        with CapturedLog() as captured:
            reply = await camera.post(sample_bytes("triggerimage_push_vzenith_manual.json"))
        self.assertEqual(reply.status, 200)
        self.assert_strict_reply(reply.body)
        snapshot_events = [e for e in captured.events if e.get("kind") == "snapshot"]
        self.assertEqual([e["camera"] for e in snapshot_events], ["d85b1269-8f942256"])

    async def test_vzenith_registration_both_boundary_styles(self) -> None:
        parts = await self.start()
        camera_client = self.camera()
        for serialno, boundary in (
            ("d85b1269-8f942256", "------------------------d74496d66958873e"),
            ("a1b2c3d4-e5f60718", "----------------------------3f2a9c1b7e4d"),
        ):
            body, content_type = multipart_registration(serialno, boundary=boundary)
            with CapturedLog() as captured:
                reply = await camera_client.post(body, content_type=content_type)
            self.assertEqual(reply.status, 200)
            self.assertEqual(
                self.assert_strict_reply(reply.body), {"Response_AlarmInfoPlate": {"info": "no"}}
            )
            camera = parts.registry.get(serialno)
            assert camera is not None
            self.assertEqual(camera.web_port, 80)
            self.assertEqual(camera.web_password, "s3cret-pass")
            self.assertFalse(any("s3cret-pass" in text for text in captured.texts()))

    async def test_other_methods_refused(self) -> None:
        await self.start()
        camera = self.camera()
        reply = camera.reply(camera.send(b"", path="/", content_type=None, method="GET"))
        self.assertEqual(reply.status, 405)


class CometTests(CameraServerTestCase):
    config = loopback_config(camera_server={"comet_hold_seconds": 25})

    async def become_comet(self, camera: MemoryCamera) -> None:
        body, content_type = multipart_registration(COMET_CAMERA)
        first = await camera.post(body, content_type=content_type)
        self.assertEqual(first.json(), {"Response_AlarmInfoPlate": {"info": "no"}})

    def poll(self, camera: MemoryCamera) -> Any:
        body, content_type = multipart_registration(COMET_CAMERA)
        return camera.send(body, content_type=content_type)

    async def test_held_poll_released_by_queued_command(self) -> None:
        parts = await self.start()
        camera = self.camera()
        await self.become_comet(camera)
        held = self.poll(camera)
        self.clock.advance(10)
        self.assertFalse(camera.answered(held))
        self.assertEqual(parts.registry.held_polls(), 1)
        parts.registry.queue(
            COMET_CAMERA, OpenBarrier(channel=1, expires_at=self.clock.seconds() + 30)
        )
        reply = camera.reply(held)
        self.assertEqual(
            self.assert_strict_reply(reply.body),
            {"Response_AlarmInfoPlate": {"info": "ok", "channelNum": 1}},
        )
        self.assertEqual(parts.registry.held_polls(), 0)

    async def test_held_poll_answered_idle_at_deadline(self) -> None:
        parts = await self.start()
        camera = self.camera()
        await self.become_comet(camera)
        held = self.poll(camera)
        self.clock.advance(24.9)
        self.assertFalse(camera.answered(held))
        self.assertEqual(parts.registry.held_polls(), 1)
        self.clock.advance(0.1)
        # Released by the hold deadline, with the idle answer.
        self.assertEqual(camera.reply(held).json(), {"Response_AlarmInfoPlate": {"info": "no"}})
        self.assertEqual(parts.registry.held_polls(), 0)

    async def test_dropped_poll_frees_slot_and_shortens_later_holds(self) -> None:
        parts = await self.start()
        body, content_type = multipart_registration(COMET_CAMERA)
        request = (
            f"POST /devicemanagement/php/receivedeviceinfo.php HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        # Answered at once; the poll that follows at once is held.
        await self.become_comet(self.camera())
        for held_for, limit, mode in ((6.0, 5.0, HeartbeatMode.COMET), (0.3, 5.0, HeartbeatMode.COMMON)):
            connection = self.connection()
            connection.send(request)
            self.assertEqual(parts.registry.held_polls(), 1)
            self.clock.advance(held_for)
            connection.drop()
            self.assertEqual(parts.registry.held_polls(), 0)
            self.assertEqual(connection.received, b"")
            # Given up after 6 s: a comet camera with a shorter timeout, held
            # less from now on. Given up within the 5 s push timeout: a common
            # heartbeat, answered at once from now on.
            camera = parts.registry.get(COMET_CAMERA)
            assert camera is not None
            self.assertEqual((camera.hold_limit, camera.heartbeat), (limit, mode))
        answered = await self.camera().post(body, content_type=content_type)
        self.assertEqual(answered.json(), {"Response_AlarmInfoPlate": {"info": "no"}})


class BadInputTests(CameraServerTestCase):
    """Nothing a camera (or anything else) sends produces a 500 or a
    traceback, and the next good request is served."""

    config = loopback_config(camera_server={"max_body_bytes": 1048576})

    async def assert_bad_then_good(
        self, body: bytes, *, content_type: str | None = "application/Json", status: int = 400
    ) -> dict[str, Any]:
        camera = self.camera()
        with CapturedLog() as captured:
            bad = await camera.post(body, content_type=content_type)
        self.assertEqual(bad.status, status, bad.body)
        reason = bad.json()["error"]
        self.assertNotIn("\n", reason)
        self.assertEqual(captured.failures(), [])
        warnings = [e for e in captured.events if e.get("log_namespace") == "gateway.camera.server"]
        self.assertEqual(len(warnings), 1, "logged once")
        self.assertEqual(warnings[0]["peer"], "127.0.0.1")
        good = await camera.post(plate_body(VZENITH_CAMERA, "京A12345", plateid=1))
        self.assertEqual(good.status, 200)
        self.assertEqual(good.json()["Response_AlarmInfoPlate"]["plateid"], 1)
        result: dict[str, Any] = bad.json()
        return result

    async def test_repeated_bad_requests_are_logged_once_a_minute_with_a_count(self) -> None:
        await self.start()
        camera = self.camera()
        with CapturedLog() as captured:
            for _ in range(5):
                self.assertEqual((await camera.post(b'{"AlarmInfoPlate":')).status, 400)
            self.clock.advance(60)
            self.assertEqual((await camera.post(b"[]")).status, 400)
        lines = [text for text in captured.texts() if "Bad request from 127.0.0.1" in text]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("(4 more from it in the last minute)", lines[1])

    async def test_truncated_json(self) -> None:
        await self.start()
        body = sample_bytes("plate_parkingcam_alphadigi_manual_v1.2.json")
        await self.assert_bad_then_good(body[: len(body) // 2])

    async def test_empty_body(self) -> None:
        await self.start()
        await self.assert_bad_then_good(b"")

    async def test_unknown_top_level_key(self) -> None:
        await self.start()
        error = await self.assert_bad_then_good(b'{"SomethingElse": {"a": 1}}')
        self.assertIn("SomethingElse", error["error"])

    async def test_json_that_is_not_an_object(self) -> None:
        await self.start()
        await self.assert_bad_then_good(b'["AlarmInfoPlate"]')

    async def test_multipart_without_serialno(self) -> None:
        await self.start()
        body, content_type = multipart_registration("x")
        body = body.replace(b'name="serialno"', b'name="serial_number"')
        error = await self.assert_bad_then_good(body, content_type=content_type)
        self.assertIn("serialno", error["error"])

    async def test_wrong_types_everywhere(self) -> None:
        await self.start()
        camera = self.camera()
        templates = [
            sample_json("plate_parkingcam_alphadigi_manual_v1.2.json"),
            sample_json("gio_push_vzenith_manual.json"),
            sample_json("serial_push_vzenith_manual.json"),
            sample_json("triggerimage_push_vzenith_manual.json"),
            sample_json("heartbeat_parkingcam_alphadigi_manual_v1.2.json"),
        ]
        weird: list[Any] = ["x", 1.5, -1, None, [], {}, True, "9" * 40, {"a": [1]}]

        def variants(value: Any) -> Any:
            if isinstance(value, dict):
                for key in value:
                    for replacement in weird:
                        yield {**value, key: replacement}
                    for inner in variants(value[key]):
                        yield {**value, key: inner}

        statuses = set()
        with CapturedLog() as captured:
            for template in templates:
                for variant in variants(template):
                    reply = await camera.post(json.dumps(variant).encode())
                    statuses.add(reply.status)
                    if reply.status == 200:
                        self.assert_strict_reply(reply.body)
        self.assertLessEqual(statuses, {200, 400})
        self.assertEqual(captured.failures(), [])
        good = await camera.post(plate_body(VZENITH_CAMERA, "京A1", plateid=5))
        self.assertEqual(good.status, 200)

    async def test_gbk_body_is_understood(self) -> None:
        await self.start()
        body = plate_body("QFX2182310150262", "粤B12345", plateid=3).decode().encode("gb18030")
        reply = await self.camera().post(body)
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json()["Response_AlarmInfoPlate"]["plateid"], 3)

    def assert_refused_413(self, connection: RawConnection) -> None:
        self.assertTrue(connection.received.startswith(b"HTTP/1.1 413 "), connection.received[:80])
        self.assertIn(b"1048576", connection.received)
        self.assertTrue(connection.closed)

    async def test_body_over_limit_refused_before_it_is_sent(self) -> None:
        await self.start()
        connection = self.connection()
        with CapturedLog() as captured:
            # Only the headers go out: the 413 comes before any of the body.
            connection.send(
                b"POST /devicemanagement/php/plateresult.php HTTP/1.1\r\n"
                b"Host: 127.0.0.1\r\nContent-Type: application/Json\r\n"
                b"Content-Length: 52428800\r\n\r\n"
            )
        self.assert_refused_413(connection)
        self.assertEqual(captured.failures(), [])
        self.assertTrue(any("over 1048576 bytes" in text for text in captured.texts()))
        good = await self.camera().post(plate_body(VZENITH_CAMERA, "京A12345", plateid=9))
        self.assertEqual(good.status, 200)

    async def test_chunked_body_over_limit_refused(self) -> None:
        await self.start()
        connection = self.connection()
        chunk = b"x" * 65536
        connection.send(b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        while not connection.closed:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            self.assertLessEqual(sent, 1048576 + len(chunk), "read past the limit")
        self.assert_refused_413(connection)
        good = await self.camera().post(plate_body(VZENITH_CAMERA, "京A12345", plateid=9))
        self.assertEqual(good.status, 200)

    async def test_large_image_body_under_limit_accepted(self) -> None:
        await self.start()
        image = b"\xff\xd8" + b"\x00" * 600_000 + b"\xff\xd9"
        encoded = base64.b64encode(image).decode()
        body = plate_body(
            VZENITH_CAMERA, "京A12345", plateid=11, imageFile=encoded, imageFileLen=len(encoded)
        )
        reply = await self.camera().post(body)
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json()["Response_AlarmInfoPlate"]["plateid"], 11)


class ConnectionTests(CameraServerTestCase):
    """What the listener does with hostile connections, before any request."""

    config = loopback_config(
        camera_server={"max_connections_per_address": 8, "header_timeout_seconds": 1},
        lane=[{"name": "Entrance", "camera": VZENITH_CAMERA, "unknown_plate": "allow",
               "sync_whitelist": False}],
    )

    def request(self, body: bytes) -> bytes:
        return (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/Json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        ) + body

    async def test_idle_pile_from_one_address_does_not_stop_a_camera(self) -> None:
        await self.start()
        factory = self.parts.camera_server.listening_factory()
        with CapturedLog() as captured:
            pile = [
                self.connection(factory, peer="10.0.0.9", port=50000 + n) for n in range(200)
            ]
        # The ones over the limit are closed at once; the first 8 are kept.
        self.assertEqual([c.refused for c in pile], [False] * 8 + [True] * 192)
        self.assertEqual(
            sum("Refusing connections from 10.0.0.9" in text for text in captured.texts()), 1
        )
        camera = self.connection(factory, peer="10.0.0.2")
        camera.send(self.request(plate_body(VZENITH_CAMERA, "京A12345", plateid=2)))
        self.assertTrue(camera.received.startswith(b"HTTP/1.1 200 "), camera.received[:80])
        # One of the pile goes: the address may open one again.
        pile[0].drop()
        self.assertFalse(self.connection(factory, peer="10.0.0.9").refused)

    async def test_headers_that_trickle_in_get_the_connection_closed(self) -> None:
        await self.start()
        connection = self.connection()
        with CapturedLog() as captured:
            connection.send(b"POST / HTTP/1.1\r\n")
            for _ in range(9):
                connection.send(b"X-Slow: 1\r\n")
                self.clock.advance(0.1)
                self.assertFalse(connection.closed)
            connection.send(b"X-Slow: 1\r\n")
            self.clock.advance(0.2)  # past the 1 s for the headers
        self.assertTrue(connection.closed, "the trickling connection was never closed")
        self.assertEqual(connection.received, b"")
        self.assertTrue(any("took too long" in text for text in captured.texts()))
        reply = await self.camera().post(plate_body(VZENITH_CAMERA, "京A12345", plateid=3))
        self.assertEqual(reply.status, 200)

    async def test_headers_in_time_are_served_on_the_same_connection(self) -> None:
        await self.start()
        connection = self.connection()
        connection.send(b"POST / HTTP/1.1\r\n")
        self.clock.advance(0.9)
        connection.send(self.request(plate_body(VZENITH_CAMERA, "京A12345", plateid=4))[17:])
        self.clock.advance(5)
        self.assertFalse(connection.closed)
        self.assertTrue(connection.received.startswith(b"HTTP/1.1 200 "), connection.received[:80])


class LaneAddressTests(CameraServerTestCase):
    """With ``[[lane]] address``, only pushes from there are the lane's camera."""

    config = loopback_config(
        lane=[{"name": "Entrance", "camera": VZENITH_CAMERA, "address": "10.0.0.64",
               "unknown_plate": "allow", "sync_whitelist": False}],
        policy={"unknown_plate": "deny"},
    )

    def request(self, body: bytes) -> bytes:
        return (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/Json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        ) + body

    def push(self, peer: str, plateid: int) -> dict[str, Any]:
        connection = self.connection(peer=peer)
        connection.send(self.request(plate_body(VZENITH_CAMERA, "京A12345", plateid=plateid)))
        head, _, body = connection.received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        return json.loads(body)

    async def test_an_impostor_gets_nothing_of_the_lane(self) -> None:
        await self.start()
        registry = self.parts.registry
        with CapturedLog() as captured:
            for plateid in (1, 2):
                reply = self.push("10.0.0.99", plateid)
                # Decided as a camera in no lane: the site's rule denies.
                self.assertEqual(reply["Response_AlarmInfoPlate"]["info"], "no")
        self.assertEqual(
            sum("claims the serial number" in text for text in captured.texts()), 1
        )
        lane_camera = registry.get(VZENITH_CAMERA)
        assert lane_camera is not None
        self.assertFalse(lane_camera.online)  # configured, never heard from
        impostor = registry.get(f"{VZENITH_CAMERA}@10.0.0.99")
        assert impostor is not None and impostor.lane is None
        # An open for the lane's camera is not the impostor's to take.
        self.parts.registry.queue(VZENITH_CAMERA, OpenBarrier(channel=0, expires_at=START + 30))
        self.assertEqual(self.push("10.0.0.99", 3)["Response_AlarmInfoPlate"]["info"], "no")
        # From its own address the camera is the lane's: the lane allows.
        reply = self.push("10.0.0.64", 4)["Response_AlarmInfoPlate"]
        self.assertEqual((reply["info"], reply["channelNum"]), ("ok", 0))
        self.assertTrue(lane_camera.online)
