"""Serial lines for the tests: a pty pair standing in for a board or a device
(the gateway opens the slave through a symlink, as a site points at
``/dev/serial/by-id/...``), a test case with a Clock for pacing and retries,
and the check that every byte a board got is a valid frame.

File descriptors are watched by the real reactor, so reading what a board
got waits (bounded) for the reactor to move the bytes."""

from __future__ import annotations

import errno
import os
import tempfile
from typing import Any, Callable

from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from gateway.protocol.board import decode_frame, split_frames
from gateway.serial.ports import SerialPorts, SerialPortSettings

reactor: Any = _reactor



class PtyBoard:
    """The far end of a serial line: a pty master; its slave is reachable at ``path``.

    ``frames``: what arrives must be board frames only (checked when the test ends);
    False for a device that speaks raw bytes.
    """

    def __init__(self, path: str, *, plugged: bool = True, frames: bool = True) -> None:
        self.path = path
        self.frames = frames
        self.master: int | None = None
        self.received = bytearray()
        if plugged:
            self.plug()

    def plug(self) -> None:
        master, slave = os.openpty()
        try:
            link = self.path + ".new"
            os.symlink(os.ttyname(slave), link)
            os.replace(link, self.path)
        finally:
            # Only the gateway holds the slave from now on, as with a real device.
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master

    def unplug(self) -> None:
        self.read()
        if os.path.lexists(self.path):
            os.unlink(self.path)
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def read(self) -> bytes:
        """Whatever arrived since the last read (also kept in ``received``)."""
        chunks = []
        while self.master is not None:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.EIO:  # nobody holds the slave open right now
                    break
                raise
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        self.received += data
        return data

    def got(self, count: int) -> bool:
        """True once at least ``count`` bytes have arrived in all."""
        self.read()
        return len(self.received) >= count

    def write(self, data: bytes) -> None:
        assert self.master is not None
        os.write(self.master, data)

    def close(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None
        if os.path.lexists(self.path):
            os.unlink(self.path)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Let the reactor run until ``predicate()`` holds (a bounded wait, not a timing
    assertion: it only fails when the thing never happens)."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await deferLater(reactor, 0.005, lambda: None)


async def settle(rounds: int = 5) -> None:
    """Let the reactor run a few short rounds (for checks that something did NOT happen)."""
    for _ in range(rounds):
        await deferLater(reactor, 0.01, lambda: None)


def assert_valid_frames(test: TestCase, data: bytes, expected: list[bytes] | None = None) -> None:
    """Every byte a board received belongs to a CRC-valid frame that decodes."""
    split = split_frames(data)
    test.assertEqual((split.skipped, split.rest), (0, b""), "bytes outside valid frames")
    for frame in split.frames:
        decode_frame(frame)  # raises on anything invalid
    if expected is not None:
        test.assertEqual(list(split.frames), expected)


class PortTestCase(TestCase):
    """A scratch directory for device links, a Clock, and clean-up of ports and ptys."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="anpr-serial-")
        self.clock = Clock()
        self.boards: list[PtyBoard] = []
        self.services: list[Any] = []

    def tearDown(self) -> None:
        for service in self.services:
            if service.running:
                service.stopService()
        for board in self.boards:
            board.read()
            board.close()
        # Every byte any board of the test received is a valid, decodable frame.
        for board in self.boards:
            if board.frames:
                assert_valid_frames(self, bytes(board.received))
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def link(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def board(self, name: str, *, plugged: bool = True, frames: bool = True) -> PtyBoard:
        board = PtyBoard(self.link(name), plugged=plugged, frames=frames)
        self.boards.append(board)
        return board

    def ports(self, *settings: SerialPortSettings, start: bool = True) -> SerialPorts:
        fds: IReactorFDSet = reactor
        clock: IReactorTime = self.clock
        ports = SerialPorts(fds, settings, clock=clock)
        self.services.append(ports)
        if start:
            ports.startService()
        return ports

    def drain_pacing(self, ports: SerialPorts, name: str, step: float = 0.5) -> None:
        """Advance the clock until the port's queue is written out."""
        for _ in range(1000):
            if ports.status(name).queued == 0:
                return
            self.clock.advance(step)
        raise AssertionError("queue never drained")
