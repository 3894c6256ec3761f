"""The camera server end to end: the real service tree on loopback, spoken to
the way cameras speak (keep-alive HTTP/1.1 and HTTPS, their headers, their
bodies). The same requests and answers run in memory in test_camera_server;
here they cross real sockets, TLS and keep-alive connections."""

from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater

from gateway.camera.commands import OpenBarrier, SendSerial
from gateway.protocol.capabilities import HeartbeatMode
from support import (
    CameraClient,
    CapturedLog,
    in_thread,
    loopback_config,
    multipart_registration,
    sample_bytes,
    sample_json,
)
from support.gateway import GatewayTestCase, plate_body, raw_exchange, tls_context, tls_listener

pytestmark = pytest.mark.e2e

VZENITH_CAMERA = "eff50e18-e3d3862b"
PARKINGCAM_CAMERA = "e10b2d6c8c07b422361457935b518642"


class SampleTests(GatewayTestCase):
    """Every manual sample, parsed and answered through the real server."""

    config = loopback_config(
        lane=[
            {
                "name": "Entrance",
                "camera": VZENITH_CAMERA,
                "barrier_channel": 2,
                "unknown_plate": "allow",
            },
            {"name": "Exit", "camera": PARKINGCAM_CAMERA, "direction": "out"},
        ]
    )

    async def test_vzenith_plate_sample_with_plateid(self) -> None:
        await self.start()
        client = self.client()
        reply = await in_thread(client.post, sample_bytes("plate_vzenith_manual_offline_record.jsonc"))
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
        reply = await in_thread(self.client().post, json.dumps(body).encode())
        answer = self.assert_strict_reply(reply.body)["Response_AlarmInfoPlate"]
        self.assertEqual(answer["ContinuePushOffline"], {"plateid": 123, "continue": 1})
        self.assertEqual(answer["info"], "no")
        self.assertNotIn("channelNum", answer)

    async def test_allowed_plate_opens_lane_barrier_channel(self) -> None:
        await self.start()
        reply = await in_thread(
            self.client().post, plate_body(VZENITH_CAMERA, "京A12345", plateid=7)
        )
        answer = self.assert_strict_reply(reply.body)["Response_AlarmInfoPlate"]
        self.assertEqual(answer["info"], "ok")
        self.assertEqual(answer["channelNum"], 2)
        self.assertEqual(answer["plateid"], 7)

    async def test_no_license_sample(self) -> None:
        await self.start()
        reply = await in_thread(self.client().post, sample_bytes("plate_vzenith_nolicense_doc_2015.json"))
        answer = self.assert_strict_reply(reply.body)["Response_AlarmInfoPlate"]
        self.assertEqual(answer["info"], "no")
        self.assertEqual(answer["content"], "retransfer_stop")

    async def test_parkingcam_plate_sample_denied_on_default_lane(self) -> None:
        await self.start()
        reply = await in_thread(self.client().post, sample_bytes("plate_parkingcam_alphadigi_manual_v1.2.json"))
        answer = self.assert_strict_reply(reply.body)["Response_AlarmInfoPlate"]
        self.assertEqual(answer["info"], "no")
        self.assertEqual(answer["content"], "retransfer_stop")
        camera = self.gateway.service.registry.get(PARKINGCAM_CAMERA)
        assert camera is not None and camera.dialect is not None
        self.assertEqual(camera.dialect.value, "parkingcam")

    async def test_parkingcam_heartbeat_sample(self) -> None:
        await self.start()
        reply = await in_thread(
            self.client().post,
            sample_bytes("heartbeat_parkingcam_alphadigi_manual_v1.2.json"),
            path="/devicemanagement/php/receivedeviceinfo.php",
        )
        answer = self.assert_strict_reply(reply.body)
        self.assertEqual(answer, {"Response_Heartbeat": {"info": "no"}})
        camera = self.gateway.service.registry.get(PARKINGCAM_CAMERA)
        assert camera is not None
        self.assertTrue(camera.online)

    async def test_parkingcam_heartbeat_carries_queued_open_and_serial(self) -> None:
        await self.start()
        registry = self.gateway.service.registry
        registry.queue(PARKINGCAM_CAMERA, OpenBarrier(channel=0, expires_at=reactor.seconds() + 30))
        registry.queue(
            PARKINGCAM_CAMERA, SendSerial(channel=1, data=b"1123456789", expires_at=reactor.seconds() + 30)
        )
        reply = await in_thread(
            self.client().post, sample_bytes("heartbeat_parkingcam_alphadigi_manual_v1.2.json")
        )
        answer = self.assert_strict_reply(reply.body)["Response_Heartbeat"]
        self.assertEqual(answer["info"], "ok")
        self.assertEqual(
            answer["serialData"],
            [{"serialChannel": 1, "data": base64.b64encode(b"1123456789").decode(), "dataLen": 10}],
        )

    async def test_io_input_sample_both_keys(self) -> None:
        await self.start()
        client = self.client()
        body = sample_json("gio_push_vzenith_manual.json")
        for raw in (json.dumps(body).encode(), json.dumps({"AlarmIoIn": body["AlarmGioIn"]}).encode()):
            reply = await in_thread(client.post, raw, path="/devicemanagement/php/gio.php")
            self.assertEqual(reply.status, 200)
            self.assert_strict_reply(reply.body)

    async def test_serial_sample_answered_with_queued_serial_bytes(self) -> None:
        await self.start()
        registry = self.gateway.service.registry
        registry.queue("cead13eb-1a198cd7", SendSerial(channel=0, data=b"\x00\x64hi", expires_at=reactor.seconds() + 30))
        reply = await in_thread(self.client().post, sample_bytes("serial_push_vzenith_manual.json"))
        answer = self.assert_strict_reply(reply.body)["Response_SerialData"]
        self.assertEqual(answer["info"], "ok")
        self.assertEqual(answer["serialData"][0]["dataLen"], 4)
        self.assertEqual(base64.b64decode(answer["serialData"][0]["data"]), b"\x00\x64hi")

    async def test_trigger_image_sample_matched_to_camera_by_address(self) -> None:
        await self.start()
        client = self.client()
        # The camera is known from an earlier push from this address.
        await in_thread(client.post, plate_body("d85b1269-8f942256", "京A12345"))
        with CapturedLog() as captured:
            reply = await in_thread(client.post, sample_bytes("triggerimage_push_vzenith_manual.json"))
        self.assertEqual(reply.status, 200)
        self.assert_strict_reply(reply.body)
        snapshot_events = [e for e in captured.events if e.get("kind") == "snapshot"]
        self.assertEqual([e["camera"] for e in snapshot_events], ["d85b1269-8f942256"])

    async def test_vzenith_registration_both_boundary_styles(self) -> None:
        await self.start()
        client = self.client()
        for serialno, boundary in (
            ("d85b1269-8f942256", "------------------------d74496d66958873e"),
            ("a1b2c3d4-e5f60718", "----------------------------3f2a9c1b7e4d"),
        ):
            body, content_type = multipart_registration(serialno, boundary=boundary)
            with CapturedLog() as captured:
                reply = await in_thread(client.post, body, content_type=content_type)
            self.assertEqual(reply.status, 200)
            self.assertEqual(
                self.assert_strict_reply(reply.body), {"Response_AlarmInfoPlate": {"info": "no"}}
            )
            camera = self.gateway.service.registry.get(serialno)
            assert camera is not None
            self.assertEqual(camera.web_port, 80)
            self.assertEqual(camera.web_password, "s3cret-pass")
            self.assertFalse(any("s3cret-pass" in text for text in captured.texts()))

    async def test_many_requests_on_one_keep_alive_connection(self) -> None:
        await self.start()
        client = self.client()
        for plateid in range(20):
            reply = await in_thread(
                client.post, plate_body(VZENITH_CAMERA, "京A12345", plateid=plateid)
            )
            self.assertEqual(reply.json()["Response_AlarmInfoPlate"]["plateid"], plateid)
        self.assertEqual(len(client.sockets), 1)

    async def test_other_methods_refused(self) -> None:
        await self.start()

        client = self.client()

        def get() -> int:
            client.conn.request("GET", "/")
            return client.conn.getresponse().status

        self.assertEqual(await in_thread(get), 405)


class TlsSampleTests(SampleTests):
    """The same samples and answers over HTTPS."""

    tls = True


class TlsTests(GatewayTestCase):
    async def test_http_and_https_listeners_side_by_side(self) -> None:
        config = loopback_config(
            camera_server={"listen": ["tcp:0:interface=127.0.0.1", tls_listener(self.mktemp())]}
        )
        gateway = await self.start(config)
        plain = self.client()
        secure = CameraClient(gateway.camera_ports[1], tls=tls_context())
        self.addCleanup(secure.close)
        for plateid in (1, 2):
            for client in (plain, secure):
                reply = await in_thread(
                    client.post, plate_body(VZENITH_CAMERA, "京A12345", plateid=plateid)
                )
                self.assertEqual(reply.json()["Response_AlarmInfoPlate"]["plateid"], plateid)
        self.assertEqual(len(secure.sockets), 1)

    async def test_plain_http_to_tls_listener_gets_no_answer(self) -> None:
        gateway = await self.start(
            loopback_config(camera_server={"listen": [tls_listener(self.mktemp())]})
        )
        response = await in_thread(
            raw_exchange,
            gateway.camera_port,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        )
        self.assertFalse(response.startswith(b"HTTP/1.1 200"))


class CometTests(GatewayTestCase):
    config = loopback_config(camera_server={"comet_hold_seconds": 1})

    async def become_comet(self, client: CameraClient, serialno: str) -> None:
        body, content_type = multipart_registration(serialno)
        first = await in_thread(client.post, body, content_type=content_type)
        self.assertEqual(first.json(), {"Response_AlarmInfoPlate": {"info": "no"}})

    async def test_held_poll_released_by_queued_command(self) -> None:
        await self.start(loopback_config(camera_server={"comet_hold_seconds": 25}))
        client = self.client()
        serialno = "d85b1269-8f942256"
        await self.become_comet(client, serialno)
        body, content_type = multipart_registration(serialno)
        held = in_thread(client.post, body, content_type=content_type)
        registry = self.gateway.service.registry
        for _ in range(200):  # until the poll is being held (bounded: 2 s)
            if registry.held_polls():
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(registry.held_polls(), 1)
        registry.queue(serialno, OpenBarrier(channel=1, expires_at=reactor.seconds() + 30))
        reply = await held
        self.assertEqual(
            self.assert_strict_reply(reply.body),
            {"Response_AlarmInfoPlate": {"info": "ok", "channelNum": 1}},
        )
        self.assertEqual(registry.held_polls(), 0)

    async def test_held_poll_answered_idle_at_deadline(self) -> None:
        await self.start()
        client = self.client()
        serialno = "d85b1269-8f942256"
        await self.become_comet(client, serialno)
        body, content_type = multipart_registration(serialno)
        registry = self.gateway.service.registry
        reply_d = in_thread(client.post, body, content_type=content_type)
        for _ in range(200):  # bounded: the poll is held (not answered at once)
            if registry.held_polls():
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(registry.held_polls(), 1)
        reply = await reply_d
        # Released by the hold deadline, with the idle answer.
        self.assertEqual(reply.json(), {"Response_AlarmInfoPlate": {"info": "no"}})
        self.assertEqual(registry.held_polls(), 0)

    async def test_dropped_poll_frees_slot(self) -> None:
        await self.start(loopback_config(camera_server={"comet_hold_seconds": 25}))
        client = self.client()
        serialno = "d85b1269-8f942256"
        await self.become_comet(client, serialno)
        body, content_type = multipart_registration(serialno)

        def send_and_drop() -> None:
            sock = socket.create_connection(("127.0.0.1", self.gateway.camera_port), timeout=5)
            head = (
                f"POST /devicemanagement/php/receivedeviceinfo.php HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            sock.sendall(head + body)
            time.sleep(0.3)
            sock.close()

        await in_thread(send_and_drop)
        registry = self.gateway.service.registry
        for _ in range(200):
            if not registry.held_polls():
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(registry.held_polls(), 0)
        camera = registry.get(serialno)
        assert camera is not None
        # Given up within the push timeout: a common heartbeat, answered at
        # once from now on.
        self.assertEqual(camera.heartbeat, HeartbeatMode.COMMON)


class BadInputTests(GatewayTestCase):
    """Nothing a camera (or anything else) sends produces a 500 or a
    traceback, and the next good request is served."""

    config = loopback_config(camera_server={"max_body_bytes": 1048576})

    async def assert_bad_then_good(self, body: bytes, *, content_type: str | None = "application/Json", status: int = 400) -> dict[str, Any]:
        client = self.client()
        with CapturedLog() as captured:
            bad = await in_thread(client.post, body, content_type=content_type)
        self.assertEqual(bad.status, status, bad.body)
        reason = bad.json()["error"]
        self.assertNotIn("\n", reason)
        self.assertEqual(captured.failures(), [])
        warnings = [e for e in captured.events if e.get("log_namespace") == "gateway.camera.server"]
        self.assertEqual(len(warnings), 1, "logged once")
        self.assertEqual(warnings[0]["peer"], "127.0.0.1")
        good = await in_thread(client.post, plate_body(VZENITH_CAMERA, "京A12345", plateid=1))
        self.assertEqual(good.status, 200)
        self.assertEqual(good.json()["Response_AlarmInfoPlate"]["plateid"], 1)
        return bad.json()

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
        client = self.client()
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
                    reply = await in_thread(client.post, json.dumps(variant).encode())
                    statuses.add(reply.status)
                    if reply.status == 200:
                        self.assert_strict_reply(reply.body)
        self.assertLessEqual(statuses, {200, 400})
        self.assertEqual(captured.failures(), [])
        good = await in_thread(client.post, plate_body(VZENITH_CAMERA, "京A1", plateid=5))
        self.assertEqual(good.status, 200)

    async def test_gbk_body_is_understood(self) -> None:
        await self.start()
        body = plate_body("QFX2182310150262", "粤B12345", plateid=3).decode().encode("gb18030")
        reply = await in_thread(self.client().post, body)
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json()["Response_AlarmInfoPlate"]["plateid"], 3)

    async def test_body_over_limit_refused_before_it_is_sent(self) -> None:
        await self.start()
        # Only the headers go out: a 413 that arrives without the body having
        # been sent proves the body is never buffered.
        head = (
            b"POST /devicemanagement/php/plateresult.php HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Type: application/Json\r\n"
            b"Content-Length: 52428800\r\n\r\n"
        )
        with CapturedLog() as captured:
            response = await in_thread(raw_exchange, self.gateway.camera_port, head)
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "), response[:80])
        self.assertIn(b"1048576", response)
        self.assertEqual(captured.failures(), [])
        good = await in_thread(self.client().post, plate_body(VZENITH_CAMERA, "京A12345", plateid=9))
        self.assertEqual(good.status, 200)

    async def test_chunked_body_over_limit_refused(self) -> None:
        await self.start()
        chunk = b"x" * 65536
        request = (
            b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 20
        )
        response = await in_thread(raw_exchange, self.gateway.camera_port, request)
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "), response[:80])
        good = await in_thread(self.client().post, plate_body(VZENITH_CAMERA, "京A12345", plateid=9))
        self.assertEqual(good.status, 200)

    async def test_large_image_body_under_limit_accepted(self) -> None:
        await self.start()
        image = b"\xff\xd8" + b"\x00" * 600_000 + b"\xff\xd9"
        encoded = base64.b64encode(image).decode()
        body = plate_body(
            VZENITH_CAMERA, "京A12345", plateid=11, imageFile=encoded, imageFileLen=len(encoded)
        )
        reply = await in_thread(self.client().post, body)
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json()["Response_AlarmInfoPlate"]["plateid"], 11)
