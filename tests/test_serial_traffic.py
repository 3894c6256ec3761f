"""Serial boards misbehaving under traffic: a board that stops reading (its
line full), then is unplugged and plugged back, while cameras keep pushing
plates. The plates are answered within the camera's timeout throughout (the
serial port never blocks the reactor), and the board shows the current state
when it comes back."""

from __future__ import annotations

import os

import pytest
from twisted.internet import reactor

from gateway.protocol.board import ShowLines, decode_frame, split_frames
from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.config import CameraConfig
from support import loopback_config
from support.serial import PtyBoard
from support.simulator import SimulatorTestCase

pytestmark = pytest.mark.e2e

CAMERA = "d85b1269-8f942256"


def plates_shown(data: bytes | bytearray) -> list[str]:
    split = split_frames(bytes(data))
    assert (split.skipped, split.rest) == (0, b""), "bytes outside valid frames"
    shown: list[str] = []
    for frame in split.frames:
        command = decode_frame(frame).command
        if isinstance(command, ShowLines):
            shown.extend(line.text for line in command.lines)
    return shown


class SerialTrafficTests(SimulatorTestCase):
    async def test_slow_then_unplugged_board_never_delays_a_plate(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        board = PtyBoard(os.path.join(directory, "led"))
        self.addCleanup(board.close)
        await self.start(
            loopback_config(
                lane=[{"name": "Entrance", "camera": CAMERA, "unknown_plate": "allow",
                       "sync_whitelist": False,
                       "display": {"via": "serial", "port": "led", "dwell_seconds": 60}}],
                serial={"led": {"device": board.path, "exclusive": False, "gap_ms": 0,
                                "retry_min_seconds": 0.1, "retry_max_seconds": 0.2}},
                policy={"duplicate_window_seconds": 0},
            )
        )
        ports = self.gateway.service.ports
        await self.until(lambda: ports.status("led").state.value == "open", what="the port")
        camera = SimulatedCamera(
            reactor,
            CameraConfig(
                serialno=CAMERA, servers=(f"http://127.0.0.1:{self.gateway.camera_port}",),
                timeout=1.0, no_plate_rate=0.0,
            ),
        )
        camera.start()
        self.addCleanup(camera.stop)

        # The board stops reading: its line fills up while plates keep coming.
        for number in range(40):
            camera.read_plate(f"京A{number:05d}")
        await self.until(lambda: len(camera.answered_plates) == 40, 30, "forty plates answered")
        # Unplugged in the middle of traffic, and plugged back.
        board.unplug()
        for number in range(40, 60):
            camera.read_plate(f"京A{number:05d}")
        await self.until(lambda: len(camera.answered_plates) == 60, 30, "sixty plates answered")
        board.plug()
        await self.until(
            lambda: board.got(1) and "京A00059" in plates_shown(board.received),
            15,
            "the board showing the latest plate after it came back",
        )
        # No plate waited on the serial line: none timed out at the camera.
        self.assertEqual(camera.failures["plate"], 0)
        self.assertEqual(len(camera.relay_pulses), 60)
        status = ports.status("led").to_dict()
        self.assertEqual(status["state"], "open")
