"""Commands to cameras through the gateway's real parts (in memory, on a
Clock): delivered in the next reply (a held comet poll at once), expiring
rather than firing late, refused at once for an offline camera, snapshots
round-tripped, results recorded."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlparse

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from gateway.camera.commands import CommandState
from gateway.camera.control import CameraControl, CameraOffline, CommandFailed, UnknownCamera
from gateway.camera.registry import CameraRegistry
from gateway.config import parse_config
from gateway.protocol.capabilities import ReplyKind
from gateway.store import EventType
from support import loopback_config, multipart_registration
from support.camera import CameraServerTestCase, MemoryCamera
from support.gateway import plate_body

CAMERA = "d85b1269-8f942256"


class CommandTests(CameraServerTestCase):
    config = loopback_config(
        lane=[{"name": "Entrance", "camera": CAMERA, "barrier_channel": 2, "sync_whitelist": False}],
        camera_server={"comet_hold_seconds": 25},
    )

    async def comet_camera(self) -> MemoryCamera:
        client = self.camera()
        body, content_type = multipart_registration(CAMERA)
        await client.post(body, content_type=content_type)
        return client

    def held_poll(self, client: MemoryCamera) -> Any:
        body, content_type = multipart_registration(CAMERA)
        held = client.send(body, content_type=content_type)
        self.assertFalse(client.answered(held))
        self.assertEqual(self.parts.registry.held_polls(), 1)
        return held

    async def test_open_reaches_comet_camera_in_the_first_reply(self) -> None:
        await self.start()
        client = await self.comet_camera()
        held = self.held_poll(client)
        command = self.parts.control.open(CAMERA)
        reply = client.reply(held)
        self.assertEqual(
            reply.json(), {"Response_AlarmInfoPlate": {"info": "ok", "channelNum": 2}}
        )
        self.assertEqual(command.state, CommandState.DELIVERED)
        store = self.parts.store
        assert store is not None
        results = await store.recent_events(limit=5, type=EventType.COMMAND_RESULT)
        self.assertEqual(results[0].raw["command"]["id"], command.id)
        self.assertEqual(results[0].raw["command"]["outcome"], "delivered")

    async def test_hold_open_and_close_use_io_control(self) -> None:
        await self.start()
        client = await self.comet_camera()
        control = self.parts.control
        held = self.held_poll(client)
        control.hold_open(CAMERA)
        reply = client.reply(held)
        self.assertEqual(
            reply.json()["Response_AlarmInfoPlate"]["ivs_ioctrl"], {"io": 2, "value": 1, "delay": 500}
        )
        control.close(CAMERA)
        body, content_type = multipart_registration(CAMERA)
        reply = await client.post(body, content_type=content_type)
        self.assertEqual(reply.json()["Response_AlarmInfoPlate"]["ivs_ioctrl"]["value"], 0)

    async def test_plate_reply_carries_queued_commands(self) -> None:
        await self.start()
        client = self.camera()
        await client.post(plate_body(CAMERA, "京A12345", plateid=1))
        control = self.parts.control
        control.trigger(CAMERA)
        control.send_serial(CAMERA, 1, b"\x00\x64\xff\xff")
        reply = await client.post(plate_body(CAMERA, "京A12345", plateid=2))
        answer = reply.json()["Response_AlarmInfoPlate"]
        self.assertEqual(answer["manualTrigger"], "ok")
        self.assertEqual(base64.b64decode(answer["serialData"][0]["data"]), b"\x00\x64\xff\xff")
        self.assertEqual(answer["serialData"][0]["serialChannel"], 1)

    async def test_snapshot_round_trip(self) -> None:
        await self.start()
        client = await self.comet_camera()
        held = self.held_poll(client)
        snapshot = ensureDeferred(self.parts.control.snapshot(CAMERA))
        reply = client.reply(held)
        request = reply.json()["Response_AlarmInfoPlate"]["TriggerImage"]
        url = urlparse(request["snapImageAbsolutelyUrl"])
        # Back to the address and port the camera reached the gateway on.
        self.assertEqual((url.hostname, url.port), ("127.0.0.1", 80))
        self.assertEqual(request["port"], 80)
        jpeg = b"\xff\xd8\xff\xe0snapshot\xff\xd9"
        upload = {
            "TriggerImage": {"imageFile": base64.b64encode(jpeg).decode(), "imageFileLen": len(jpeg)},
            "ipaddr": "192.168.1.100",
        }
        answer = await self.camera().post(json.dumps(upload).encode(), path=url.path)
        self.assertEqual(answer.status, 200)
        self.assertEqual(await snapshot, jpeg)

    async def test_unknown_and_offline_cameras_are_refused_at_once(self) -> None:
        await self.start()
        control = self.parts.control
        with self.assertRaises(UnknownCamera):
            control.open("ffffffff-00000000")
        # Configured but never heard from: offline.
        with self.assertRaises(CameraOffline):
            control.open(CAMERA)
        with self.assertRaises(CameraOffline):
            await control.snapshot(CAMERA)


class ExpiryTests(SynchronousTestCase):
    """Expiry and confirmation timeouts, driven by a Clock."""

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.registry = CameraRegistry(self.clock)
        config = parse_config(
            {"lane": [{"name": "Entrance", "camera": CAMERA, "barrier_channel": 1}]}
        )
        self.control = CameraControl(
            clock=self.clock, registry=self.registry, lanes=config.lanes, expiry=30, snapshot_timeout=10
        )
        self.camera = self.registry.seen(CAMERA, address="127.0.0.1")
        self.camera.gateway_address = ("127.0.0.1", 8080, False)

    def test_open_not_delivered_in_time_is_withdrawn_never_fires(self) -> None:
        command = self.control.open(CAMERA)
        self.assertEqual(command.channel, 1)
        self.clock.advance(30)
        self.assertEqual(command.state, CommandState.EXPIRED)
        self.assertEqual(len(self.camera.commands), 0)
        from gateway.protocol.replies import PlateReply

        reply = PlateReply()
        self.registry.fill_reply(self.camera, reply, ReplyKind.PLATE)
        self.assertIsNone(reply.open_channel)

    def test_snapshot_without_upload_fails_after_timeout(self) -> None:
        waiting = ensureDeferred(self.control.snapshot(CAMERA))
        from gateway.protocol.replies import PlateReply

        reply = PlateReply()
        self.registry.fill_reply(self.camera, reply, ReplyKind.PLATE)
        self.assertIsNotNone(reply.trigger_image)
        self.clock.advance(9.9)
        self.assertNoResult(waiting)
        self.clock.advance(0.1)
        failure = self.failureResultOf(waiting, CommandFailed)
        self.assertEqual(failure.value.command.state, CommandState.FAILED)

    def test_delivered_commands_cancel_their_timers(self) -> None:
        from gateway.protocol.replies import PlateReply

        command = self.control.open(CAMERA)
        self.registry.fill_reply(self.camera, PlateReply(), ReplyKind.PLATE)
        self.assertEqual(command.state, CommandState.DELIVERED)
        self.assertEqual(self.clock.getDelayedCalls(), [])
