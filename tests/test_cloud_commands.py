"""Every command type the upstream API documents, from its JSON on the sync feed
to what the camera finds in its next reply, and the refusals the cloud is told
of. In memory: a Clock, the real registry and camera control."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.bus import EventBus
from gateway.camera.control import CameraControl, CloudCommands
from gateway.camera.registry import Camera, CameraRegistry
from gateway.config import parse_config
from gateway.protocol.capabilities import ReplyKind
from gateway.protocol.messages import Dialect
from gateway.protocol.replies import PlateReply
from gateway.upstream.feed import COMMAND_TYPES, command_from_json

ENTRANCE = "d85b1269-8f942256"
EXIT = "e10b2d6c8c07b422"
NOW = 1_764_000_000.0


class CloudCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        config = parse_config(
            {
                "lane": [
                    {"name": "Entrance", "camera": ENTRANCE, "barrier_channel": 2},
                    {"name": "Exit", "camera": EXIT, "direction": "out"},
                ]
            }
        )
        self.registry = CameraRegistry(self.clock)
        for lane in config.lanes:
            self.registry.configure(lane.camera, lane=lane.name, heartbeat=lane.heartbeat)
        self.said: list[tuple[str, str]] = []
        self.bus = EventBus()
        self.published: list[dict[str, Any]] = []
        self.bus.subscribe(lambda topic, payload: self.published.append(dict(payload)) if topic == "command" else None)
        self.control = CameraControl(
            clock=self.clock,
            registry=self.registry,
            lanes=config.lanes,
            bus=self.bus,
            display_say=self.say_on_display,
        )
        self.commands = CloudCommands(self.control, self.clock)
        self.entrance = self.online(ENTRANCE)

    def say_on_display(self, camera: Camera, text: str) -> bool:
        # The Exit lane has a display and voice board; the Entrance lane has none.
        if camera.lane != "Exit":
            return False
        self.said.append((camera.lane, text))
        return True

    def online(self, serialno: str, dialect: Dialect = Dialect.VZENITH) -> Camera:
        camera = self.registry.seen(serialno, address="127.0.0.1", dialect=dialect)
        camera.gateway_address = ("127.0.0.1", 8080, False)
        return camera

    def submit(self, **command: Any) -> Deferred[None]:
        """The command as the cloud writes it in a sync page, checked by the
        feed's parser, then handed to the cameras."""
        wire = {"id": f"cloud-{command['type']}-1", "camera": ENTRANCE, **command}
        return Deferred.fromCoroutine(self.commands.submit(command_from_json(wire)))

    def next_reply(self, camera: Camera) -> PlateReply:
        reply = PlateReply()
        self.registry.fill_reply(camera, reply, ReplyKind.PLATE)
        return reply

    def test_every_documented_type_is_covered_here(self) -> None:
        tested = {name.removeprefix("test_").split("_")[0] for name in dir(self) if name.startswith("test_")}
        self.assertLessEqual(set(COMMAND_TYPES), tested)

    def test_open_uses_the_lane_barrier_unless_the_cloud_names_one(self) -> None:
        self.successResultOf(self.submit(type="open"))
        self.assertEqual(self.next_reply(self.entrance).open_channel, 2)
        self.successResultOf(self.submit(type="open", channel=1))
        self.assertEqual(self.next_reply(self.entrance).open_channel, 1)
        # The command keeps the cloud's id, so its result event names it.
        self.assertEqual(self.published[0]["id"], "cloud-open-1")

    def test_trigger_asks_for_a_new_recognition(self) -> None:
        self.successResultOf(self.submit(type="trigger"))
        reply = self.next_reply(self.entrance)
        self.assertTrue(reply.manual_trigger)
        self.assertIsNone(reply.open_channel)

    def test_serial_bytes_ride_in_the_reply_byte_for_byte(self) -> None:
        data = bytes(range(256))
        self.successResultOf(
            self.submit(type="serial", channel=1, data=base64.b64encode(data).decode())
        )
        self.assertEqual(self.next_reply(self.entrance).serial, [(1, data)])

    def test_display_goes_to_the_lane_board_or_else_the_camera_speaker(self) -> None:
        self.online(EXIT)
        self.successResultOf(self.submit(type="display", camera=EXIT, lines=["京A12345", "请缴费"]))
        self.assertEqual(self.said, [("Exit", "京A12345\n请缴费")])
        self.successResultOf(self.submit(type="display", lines=["请缴费"]))
        voice = self.next_reply(self.entrance).voice
        assert voice is not None
        self.assertEqual(voice.text, "请缴费")

    def test_snapshot_asks_the_camera_to_upload_a_frame(self) -> None:
        self.successResultOf(self.submit(type="snapshot"))
        request = self.next_reply(self.entrance).trigger_image
        assert request is not None
        self.assertEqual(request.port, 8080)
        self.assertTrue(self.control.snapshot_arrived(self.entrance, request.url, b"\xff\xd8jpeg"))

    def test_refusals_are_told_to_the_cloud_at_once(self) -> None:
        # The feed reports a ValueError to the cloud as "rejected".
        expired = datetime.fromtimestamp(NOW, tz=timezone.utc) - timedelta(seconds=1)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"type": "open", "camera": "ffffffff-00000000"}, "no camera"),
            ({"type": "open", "expires_at": expired.isoformat()}, "expired"),
            ({"type": "serial", "channel": 3, "data": "AA=="}, "serial channel"),
        ]
        for command, reason in cases:
            failure = self.failureResultOf(self.submit(**command), ValueError)
            self.assertIn(reason, str(failure.value))
        self.registry.configure("offline-1", lane="Side gate", heartbeat="auto")
        failure = self.failureResultOf(self.submit(type="snapshot", camera="offline-1"), ValueError)
        self.assertIn("offline", str(failure.value))
        # Nothing refused reached the camera.
        reply = self.next_reply(self.entrance)
        self.assertEqual((reply.open_channel, reply.serial), (None, []))

    def test_a_parkingcam_without_a_lane_display_cannot_speak(self) -> None:
        self.online(ENTRANCE, Dialect.PARKINGCAM)
        failure = self.failureResultOf(self.submit(type="display", lines=["请缴费"]), ValueError)
        self.assertIn("no voice output", str(failure.value))
