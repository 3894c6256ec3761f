"""The camera serial bridge on real ptys: camera pushes to a local port, port answers back
to the camera's next reply, the NUL-truncation bug flagged and never padded."""

from __future__ import annotations

import base64
import json
from typing import Any

from gateway.camera.commands import SendSerial, SerialReply
from gateway.camera.registry import CameraRegistry
from gateway.protocol.capabilities import ReplyKind
from gateway.protocol.messages import SerialData
from gateway.protocol.replies import serial_data_reply
from gateway.serial.bridge import SerialBridge, SerialBridgeSettings
from gateway.serial.ports import SerialPortSettings
from support import CapturedLog
from support.serial import PortTestCase, until

CAMERA = "d85b1269-8f942256"


def push(data: bytes, *, channel: int = 0, declared: int | None = None) -> SerialData:
    """A SerialData push as the parser makes it (``truncated`` when dataLen says more)."""
    length = len(data) if declared is None else declared
    return SerialData(
        serialno=CAMERA,
        serial_channel=channel,
        data=data,
        declared_length=length,
        truncated=length > len(data),
    )


class BridgeTests(PortTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ticket = self.board("ticket", frames=False)
        self.serial_ports = self.ports(
            SerialPortSettings("ticket", self.ticket.path, baudrate=115200, gap_ms=1)
        )
        self.bridge = self.make_bridge()

    def make_bridge(self, **settings: Any) -> SerialBridge:
        return SerialBridge(
            clock=self.clock,
            ports=self.serial_ports,
            bridges=[SerialBridgeSettings(lane="Entry", camera=CAMERA, to_port="ticket", **settings)],
        )

    def flush(self) -> None:
        for _ in range(100):
            if self.serial_ports.status("ticket").queued == 0:
                return
            self.clock.advance(0.01)

    async def test_camera_bytes_reach_the_port_byte_for_byte(self) -> None:
        payload = bytes(range(1, 256)) + b"\r\n"
        self.assertTrue(self.bridge.from_camera(push(payload), CAMERA.upper()))
        self.assertTrue(self.bridge.from_camera(push(b"\x02PAY 500\x03")))
        self.flush()
        expected = payload + b"\x02PAY 500\x03"
        await until(lambda: self.ticket.got(len(expected)), "bridged bytes")
        self.assertEqual(bytes(self.ticket.received), expected)
        self.assertEqual(self.bridge.status()[0].bytes_to_port, len(expected))

    async def test_truncated_push_is_flagged_and_never_padded(self) -> None:
        with CapturedLog() as logs:
            # The camera received b"\x02A\x00B\x03" but its firmware cut the data at the NUL.
            self.bridge.from_camera(push(b"\x02A", declared=5))
            self.bridge.from_camera(push(b"\x02C", declared=5))  # within the minute: counted
            self.flush()
            await until(lambda: self.ticket.got(4), "the bytes that did arrive")
        self.assertEqual(bytes(self.ticket.received), b"\x02A\x02C")
        warnings = [e for e in logs.events if "cuts serial data" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["received"], warnings[0]["declared"]), (2, 5))
        self.assertEqual(self.bridge.status()[0].pushes_truncated, 2)
        self.clock.advance(61)
        with CapturedLog() as logs:
            self.bridge.from_camera(push(b"", declared=3))
        (warning,) = [e for e in logs.events if "cuts serial data" in e.get("log_format", "")]
        self.assertIn("1 more", warning["more"])

    def test_other_camera_port_or_camera_is_not_bridged(self) -> None:
        self.assertFalse(self.bridge.from_camera(push(b"x", channel=1)))
        self.assertFalse(self.bridge.from_camera(push(b"x"), "another-camera"))
        self.assertEqual(self.serial_ports.status("ticket").queued, 0)

    async def test_port_answers_wait_for_the_camera_and_are_announced_once(self) -> None:
        announced: list[str] = []
        self.bridge.on_pending(announced.append)
        self.ticket.write(b"\x06OK")
        await until(lambda: self.bridge.status()[0].bytes_pending >= 3, "answer read")
        self.ticket.write(b"\x00\xff")
        await until(lambda: self.bridge.status()[0].bytes_pending >= 5, "rest read")
        self.assertEqual(announced, [])  # the answer is still settling
        self.clock.advance(0.05)
        self.assertEqual(announced, [CAMERA])
        self.assertEqual(self.bridge.drain(CAMERA.upper()), [(0, b"\x06OK\x00\xff")])
        self.assertEqual(self.bridge.drain(CAMERA), [])

    async def test_waiting_bytes_are_bounded_newest_kept(self) -> None:
        self.bridge = self.make_bridge(max_pending_bytes=8, camera_channel=1)
        # Two bridges read the port now; only the new one is looked at.
        self.ticket.write(b"0123456789ABCDEF")
        await until(lambda: self.bridge.status()[0].bytes_from_port >= 16, "all read")
        self.assertEqual(self.bridge.drain(CAMERA), [(1, b"89ABCDEF")])
        self.assertEqual(self.bridge.status()[0].bytes_dropped, 8)

    async def test_wired_to_the_registry_answers_ride_in_the_next_reply(self) -> None:
        registry = CameraRegistry(self.clock, comet_hold=20.0)

        # The service tree's wiring: waiting bytes become a SendSerial for that camera,
        # which releases a held comet poll and goes into whatever reply comes next.
        def deliver(camera: str) -> None:
            for channel, data in self.bridge.drain(camera):
                registry.queue(
                    camera,
                    SendSerial(channel=channel, data=data, expires_at=self.clock.seconds() + 30),
                )

        self.bridge.on_pending(deliver)
        self.ticket.write(b"\x02TICKET 0001\x03")
        await until(lambda: self.bridge.status()[0].bytes_pending >= 13, "ticket answer")
        self.clock.advance(0.05)
        camera = registry.get(CAMERA)
        assert camera is not None
        reply = SerialReply()
        registry.fill_reply(camera, reply, ReplyKind.SERIAL)
        body = json.loads(serial_data_reply(reply.serial))
        (item,) = body["Response_SerialData"]["serialData"]
        self.assertEqual(base64.b64decode(item["data"]), b"\x02TICKET 0001\x03")
        self.assertEqual((item["serialChannel"], item["dataLen"]), (0, 13))

    def test_configuration_mistakes_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            SerialBridge(
                clock=self.clock,
                ports=self.serial_ports,
                bridges=[SerialBridgeSettings(lane="A", camera="cam", to_port="nope")],
            )
        with self.assertRaises(ValueError):
            SerialBridge(
                clock=self.clock,
                ports=self.serial_ports,
                bridges=[
                    SerialBridgeSettings(lane="A", camera="cam1", to_port="ticket"),
                    SerialBridgeSettings(lane="B", camera="cam2", to_port="ticket"),
                ],
            )
