"""Lane displays end to end: an allowed plate greets the driver on the lane's
LED board and voice, through the camera's own serial port on one lane and a
serial port of the gateway (a pty standing in for the RS-485 adapter) on the
other; the camera serial bridge carries bytes both ways. Every byte a board
received is a valid frame."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet import reactor

from gateway.protocol.board import ShowLines, Speak, decode_frame, split_frames
from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.config import CameraConfig
from support import loopback_config
from support.serial import PtyBoard
from support.simulator import SimulatorTestCase

pytestmark = pytest.mark.e2e

ENTRANCE = "d85b1269-8f942256"
EXIT = "a1b2c3d4-e5f60718"


def frames(data: bytes | bytearray) -> list[Any]:
    """Decode every frame; fail on any byte outside a valid frame."""
    split = split_frames(bytes(data))
    assert (split.skipped, split.rest) == (0, b""), "bytes outside valid frames"
    return [decode_frame(frame).command for frame in split.frames]


def texts(commands: list[Any]) -> list[str]:
    out: list[str] = []
    for command in commands:
        if isinstance(command, ShowLines):
            out.extend(line.text for line in command.lines)
            if command.voice:
                out.append(f"voice:{command.voice}")
        elif isinstance(command, Speak):
            out.append(f"voice:{command.text}")
    return out


class DisplayTests(SimulatorTestCase):
    async def test_welcome_on_camera_board_and_local_board(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        board = PtyBoard(os.path.join(directory, "led-exit"))
        self.addCleanup(board.close)
        ticket = PtyBoard(os.path.join(directory, "ticket"), frames=False)
        self.addCleanup(ticket.close)
        config = loopback_config(
            lane=[
                {
                    "name": "Entrance", "camera": ENTRANCE, "unknown_plate": "allow",
                    "sync_whitelist": False,
                    "display": {"via": "camera", "camera_channel": 0},
                    "serial_bridge": {"to_port": "ticket", "camera_channel": 1},
                },
                {
                    "name": "Exit", "camera": EXIT, "direction": "out",
                    "unknown_plate": "allow", "sync_whitelist": False,
                    "display": {"via": "serial", "port": "led"},
                },
            ],
            serial={
                "led": {"device": board.path, "exclusive": False},
                "ticket": {"device": ticket.path, "exclusive": False},
            },
        )
        await self.start(config)
        ports = self.gateway.service.ports
        await self.until(lambda: ports.status("led").state.value == "open", what="the led port")
        entrance = self.camera(
            serialno=ENTRANCE, heartbeat="comet", serial_in=(b"CARD1234",), serial_in_channel=1
        )
        exit_camera = SimulatedCamera(
            reactor,
            CameraConfig(
                serialno=EXIT, servers=(f"http://127.0.0.1:{self.gateway.camera_port}",),
                heartbeat="comet", ipaddr="192.168.1.101",
            ),
        )
        exit_camera.start()
        self.addCleanup(exit_camera.stop)

        entrance.read_plate("京A12345")
        exit_camera.read_plate("粤B54321")
        await self.until(
            lambda: "京A12345" in texts(frames(entrance.serial_written[0])),
            what="the plate on the entrance board",
        )
        shown = texts(frames(entrance.serial_written[0]))
        self.assertTrue(any(t.startswith("voice:") and "欢迎光临" in t for t in shown))
        self.assertEqual([p.source for p in entrance.relay_pulses], ["plate"])

        await self.until(
            lambda: board.got(1) and "粤B54321" in texts(frames(board.received)),
            what="the plate on the exit board",
        )
        shown = texts(frames(board.received))
        self.assertTrue(any(t.startswith("voice:") and "一路顺风" in t for t in shown), shown)
        self.assertEqual([p.source for p in exit_camera.relay_pulses], ["plate"])

        # Camera serial bridge: the camera's port 1 -> the local port, and back.
        ticket.write(b"TICKET-OK\r\n")
        await self.until(
            lambda: bytes(entrance.serial_written[1]).endswith(b"TICKET-OK\r\n"),
            what="the ticket machine's answer at the camera",
        )
        # ... and the camera's own serial data (a card reader) -> the local port.
        await self.until(lambda: ticket.got(1) and b"CARD1234" in ticket.received,
                         what="the card reader's bytes at the local port")
        # Everything each board received decodes (the ticket line is raw).
        frames(entrance.serial_written[0])
        frames(board.received)
