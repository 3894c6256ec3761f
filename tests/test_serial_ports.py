"""Serial ports on real pseudo-terminals: paced, bounded, and surviving unplug and errors.

The board side of each line is a pty master read by the test; the gateway opens the pty's
slave through a symlink, the way a site points at ``/dev/serial/by-id/...``. Unplugging
removes the link and closes the master (the slave device vanishes, as a USB adapter's
does); plugging in again makes a new pty behind the same link.

File descriptors are watched by the real reactor; pacing and retries run on a ``Clock``
so their timing is exact.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from twisted.internet import reactor as _reactor

from gateway.protocol.board import (
    Line,
    SetClock,
    ShowLine,
    ShowLines,
    Speak,
    encode_frame,
)
from gateway.serial.ports import PortState, SerialPorts, SerialPortSettings, UnknownPort
from support import CapturedLog
from support.serial import PortTestCase, assert_valid_frames, settle, until

reactor: Any = _reactor


# --------------------------------------------------------------------------- helpers


def port_states(logs: CapturedLog, port: str) -> list[str]:
    """The states logged for ``port``, in order (one line per change of state)."""
    states = []
    for event in logs.events:
        text = event.get("log_format", "")
        if event.get("port") != port:
            continue
        if "open on" in text:
            states.append("open")
        elif "is {state}" in text:
            states.append(event["state"])
    return states


def sample_frames() -> list[bytes]:
    return [
        encode_frame(SetClock(datetime(2024, 5, 5, 8, 30, 0))),
        encode_frame(ShowLines([Line("京A12345"), Line("欢迎光临", line=1)], voice="欢迎光临")),
        encode_frame(Speak("一路顺风"), address=2),
        encode_frame(ShowLine("剩余车位 15", line=1)),
    ]


# --------------------------------------------------------------------------- tests


class SendingTests(PortTestCase):
    async def test_frames_arrive_byte_exact_in_order(self) -> None:
        board = self.board("led1")
        ports = self.ports(SerialPortSettings("led1", board.path, baudrate=115200, gap_ms=5))
        self.assertEqual(ports.status("led1").state, PortState.OPEN)
        frames = sample_frames()
        for frame in frames:
            ports.send("led1", frame)
        self.drain_pacing(ports, "led1")
        total = sum(map(len, frames))
        await until(lambda: board.got(total), "frames")
        assert_valid_frames(self, bytes(board.received), frames)
        status = ports.status("led1")
        self.assertEqual(
            (status.frames_written, status.bytes_written, status.frames_dropped),
            (len(frames), total, 0),
        )

    async def test_writes_are_paced_by_transmission_time_and_gap(self) -> None:
        board = self.board("led1")
        settings = SerialPortSettings("led1", board.path, baudrate=9600, gap_ms=50)
        ports = self.ports(settings)
        frames = sample_frames()[:3]
        for frame in frames:
            ports.send("led1", frame)
        # The first goes out at once; the others wait on the clock.
        self.assertEqual((ports.status("led1").frames_written, ports.status("led1").queued), (1, 2))
        await until(lambda: board.got(len(frames[0])), "1st")
        await settle()
        board.read()
        self.assertEqual(bytes(board.received), frames[0])

        # 8N1 is 10 bits a byte: the wait is the frame's time on the wire plus the gap.
        pause = len(frames[0]) * 10 / 9600 + 0.050
        self.assertAlmostEqual(settings.transmit_seconds(len(frames[0])) + 0.05, pause)
        self.clock.advance(pause - 0.001)
        self.assertEqual(ports.status("led1").frames_written, 1)
        self.clock.advance(0.001)
        self.assertEqual(ports.status("led1").frames_written, 2)
        self.clock.advance(len(frames[1]) * 10 / 9600 + 0.050)
        self.assertEqual(ports.status("led1").frames_written, 3)
        total = sum(map(len, frames))
        await until(lambda: board.got(total), "all")
        assert_valid_frames(self, bytes(board.received), frames)

    def test_transmission_time_counts_parity_and_stop_bits(self) -> None:
        even = SerialPortSettings("x", "/dev/null", baudrate=1200, parity="E", stopbits=2)
        self.assertEqual(even.bits_per_byte, 12)
        self.assertAlmostEqual(even.transmit_seconds(100), 1.0)

    async def test_bytes_read_reach_every_reader(self) -> None:
        board = self.board("ticket")
        ports = self.ports(SerialPortSettings("ticket", board.path))
        first: list[bytes] = []
        second: list[bytes] = []

        def broken(data: bytes) -> None:
            raise RuntimeError("a reader with a bug")

        ports.on_receive("ticket", first.append)
        ports.on_receive("ticket", broken)
        ports.on_receive("ticket", second.append)
        payload = bytes(range(256))  # every byte value, NUL and CR/LF included
        with CapturedLog() as logs:
            board.write(payload)
            await until(lambda: len(b"".join(second)) >= len(payload), "bytes read")
        self.assertEqual(b"".join(first), payload)
        self.assertEqual(b"".join(second), payload)
        self.assertEqual(ports.status("ticket").bytes_read, len(payload))
        # the broken reader was logged and the port stayed open
        self.assertTrue(any("log_failure" in event for event in logs.events))
        self.assertGreaterEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(ports.status("ticket").state, PortState.OPEN)

    def test_unknown_port_name(self) -> None:
        ports = self.ports(start=False)
        with self.assertRaises(UnknownPort):
            ports.send("nope", b"x")
        self.assertIn("nope", str(UnknownPort("nope")))


class AwayTests(PortTestCase):
    async def test_missing_at_start_queues_newest_and_opens_when_plugged(self) -> None:
        board = self.board("led1", plugged=False)
        settings = SerialPortSettings("led1", board.path, max_queued_frames=4, gap_ms=10,
                                      baudrate=115200)
        with CapturedLog() as logs:
            ports = self.ports(settings)
            status = ports.status("led1")
            self.assertEqual(status.state, PortState.MISSING)
            self.assertIn(board.path, status.reason or "")
            frames = [encode_frame(ShowLine(f"第{n}条")) for n in range(10)]
            for frame in frames:
                ports.send("led1", frame)
            self.clock.advance(0.5)
            self.clock.advance(1.0)
            self.assertEqual(ports.status("led1").frames_dropped, 6)
            self.assertEqual(ports.status("led1").queued, 4)
            board.plug()
            self.clock.advance(2.0)  # the next retry
            self.assertEqual(ports.status("led1").state, PortState.OPEN)
            self.drain_pacing(ports, "led1")
            await until(
                lambda: board.got(sum(map(len, frames[-4:]))),
                "the newest frames",
            )
        # a returning board gets the current state, not the backlog
        assert_valid_frames(self, bytes(board.received), frames[-4:])
        # one line when missing (whatever the number of retries), one when open
        self.assertEqual(port_states(logs, "led1"), ["missing", "open"])

    def test_retries_back_off_doubling_to_the_cap(self) -> None:
        path = self.link("absent")
        self.ports(
            SerialPortSettings("led1", path, retry_min_seconds=0.5, retry_max_seconds=10.0)
        )
        delays = []
        for _ in range(8):
            (call,) = self.clock.getDelayedCalls()
            delay = call.getTime() - self.clock.seconds()
            delays.append(delay)
            self.clock.advance(delay)
        self.assertEqual(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0])

    async def test_unplug_and_replug_resume_output(self) -> None:
        board = self.board("led1")
        ports = self.ports(
            SerialPortSettings("led1", board.path, baudrate=115200, gap_ms=5, max_queued_frames=3)
        )
        before = encode_frame(ShowLine("之前"))
        ports.send("led1", before)
        await until(lambda: board.got(len(before)), "1st")
        with CapturedLog() as logs:
            board.unplug()
            await until(lambda: ports.status("led1").state is not PortState.OPEN, "unplug seen")
            status = ports.status("led1")
            self.assertEqual(status.state, PortState.MISSING)
            self.assertEqual(status.since, self.clock.seconds())
            away = [encode_frame(ShowLine(f"离线{n}")) for n in range(5)]
            for frame in away:
                ports.send("led1", frame)
                self.clock.advance(0.2)  # retries keep failing meanwhile
            board.plug()
            self.clock.advance(10.0)
            self.assertEqual(ports.status("led1").state, PortState.OPEN)
            self.drain_pacing(ports, "led1")
            expected = [before] + away[-3:]
            await until(
                lambda: board.got(sum(map(len, expected))),
                "frames after replug",
            )
        assert_valid_frames(self, bytes(board.received), expected)
        self.assertEqual(ports.status("led1").frames_dropped, 2)
        self.assertEqual(port_states(logs, "led1"), ["missing", "open"])

    async def test_board_gone_while_writing_keeps_the_gateway_running(self) -> None:
        board = self.board("led1")
        ports = self.ports(SerialPortSettings("led1", board.path, baudrate=115200, gap_ms=1))
        master = board.master
        assert master is not None
        # The far end disappears but the link stays: the device behind it is gone.
        os.close(master)
        board.master = None
        for n in range(20):
            ports.send("led1", encode_frame(ShowLine(f"写入{n}")))
            self.clock.advance(0.01)
        await until(lambda: ports.status("led1").state is not PortState.OPEN, "failure seen")
        self.assertIsNotNone(ports.status("led1").reason)
        board.plug()  # a new device behind the same link
        self.clock.advance(10.0)
        self.assertEqual(ports.status("led1").state, PortState.OPEN)
        after = encode_frame(Speak("恢复"))
        ports.send("led1", after)
        self.drain_pacing(ports, "led1")
        await until(lambda: board.got(len(after)), "frames after the failure")
        self.assertTrue(bytes(board.received).endswith(after))
        assert_valid_frames(self, bytes(board.received))

    def test_device_that_is_not_a_serial_port_is_an_error_with_reason(self) -> None:
        path = self.link("notatty")
        with open(path, "wb"):
            pass
        with CapturedLog() as logs:
            ports = self.ports(SerialPortSettings("led1", path))
            for _ in range(4):
                self.clock.advance(10.0)
        status = ports.status("led1")
        self.assertEqual(status.state, PortState.ERROR)
        self.assertIn("configure", status.reason or "")
        self.assertEqual(port_states(logs, "led1"), ["error"])

    async def test_exclusive_lock_keeps_a_second_user_off_the_bus(self) -> None:
        board = self.board("led1")
        first = self.ports(SerialPortSettings("a", board.path))
        second = self.ports(SerialPortSettings("b", board.path))
        self.assertEqual(first.status("a").state, PortState.OPEN)
        status = second.status("b")
        self.assertEqual(status.state, PortState.ERROR)
        self.assertIn("lock", status.reason or "")
        # when the first lets go, the second gets the port on its next retry
        first.stopService()
        self.clock.advance(10.0)
        self.assertEqual(second.status("b").state, PortState.OPEN)

    def test_stop_closes_and_reports_closed(self) -> None:
        board = self.board("led1")
        ports = self.ports(SerialPortSettings("led1", board.path))
        ports.stopService()
        self.assertEqual(ports.status("led1").state, PortState.CLOSED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_two_ports_on_one_device_are_refused(self) -> None:
        same_device = [SerialPortSettings("a", "/dev/x"), SerialPortSettings("b", "/dev/x")]
        with self.assertRaises(ValueError):
            SerialPorts(reactor, same_device, clock=self.clock)
        same_name = [SerialPortSettings("a", "/dev/x"), SerialPortSettings("a", "/dev/y")]
        with self.assertRaises(ValueError):
            SerialPorts(reactor, same_name, clock=self.clock)

    def test_settings_are_checked(self) -> None:
        for bad in (
            {"baudrate": 0},
            {"parity": "X"},
            {"stopbits": 3},
            {"bytesize": 9},
            {"max_queued_frames": 0},
            {"retry_min_seconds": 5.0, "retry_max_seconds": 1.0},
        ):
            with self.assertRaises((ValueError, TypeError)):
                SerialPortSettings("p", "/dev/ttyUSB0", **bad)
        self.assertEqual(SerialPortSettings("p", "/dev/ttyUSB0", stopbits=2).stopbits, 2.0)
        defaults = SerialPortSettings("p", "/dev/ttyUSB0")
        self.assertEqual(
            (defaults.baudrate, defaults.bytesize, defaults.parity, defaults.stopbits),
            (9600, 8, "N", 1.0),
        )
        self.assertEqual((defaults.gap_ms, defaults.max_queued_frames), (50, 16))
