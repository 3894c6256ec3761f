"""Serial lines for the tests: a pty pair standing in for a board or a device
(the gateway opens the slave through a symlink, as a site points at
``/dev/serial/by-id/...``), a test case with a Clock for pacing and retries,
and the check that every byte a board got is a valid frame.

The gateway's ports register their file descriptors with a
:class:`PortDescriptors` of the test instead of the reactor, and the test
dispatches their reads and writes (as a reactor iteration would) when it
waits for something: :func:`until` sleeps in ``select`` until a port or a
board has bytes to move, and never on a timer."""

from __future__ import annotations

import errno
import os
import select
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from gateway.protocol.board import decode_frame, split_frames
from gateway.serial.ports import SerialPorts, SerialPortSettings

log = Logger()



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
        # Nobody holds the slave open (reads say EIO at once): nothing to wait for.
        self.hung_up = False
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
        self.hung_up = False

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
                    self.hung_up = True
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


@implementer(IReactorFDSet)
class PortDescriptors:
    """The file descriptors of the serial ports under test (an
    ``IReactorFDSet``), and the boards at the far ends of their lines.

    :meth:`dispatch` does for them what a reactor iteration does: wait in
    ``select`` until one can move bytes, then read, write, and report a lost
    connection (an unplugged device) to the descriptor, as the reactor would.
    """

    def __init__(self, boards: list[PtyBoard]) -> None:
        self.boards = boards
        self.readers: set[Any] = set()
        self.writers: set[Any] = set()

    # -- IReactorFDSet ----------------------------------------------------------

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)
        # A port (re)opened: the board behind it has a listener again.
        for board in self.boards:
            board.hung_up = False

    def addWriter(self, writer: Any) -> None:
        self.writers.add(writer)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)

    def removeWriter(self, writer: Any) -> None:
        self.writers.discard(writer)

    def removeAll(self) -> list[Any]:
        gone = list(self.readers | self.writers)
        self.readers.clear()
        self.writers.clear()
        return gone

    def getReaders(self) -> list[Any]:
        return list(self.readers)

    def getWriters(self) -> list[Any]:
        return list(self.writers)

    # -- for the tests ----------------------------------------------------------

    def dispatch(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for a port or a board to be ready,
        then move what can move; whether anything was ready."""
        readers = {_fileno(d): d for d in self.readers if _fileno(d) >= 0}
        writers = {_fileno(d): d for d in self.writers if _fileno(d) >= 0}
        boards = {
            board.master: board
            for board in self.boards
            if board.master is not None and not board.hung_up
        }
        readable, writable, _ = select.select(
            [*readers, *boards], list(writers), [], max(0.0, timeout)
        )
        for fd in readable:
            if fd in boards:
                boards[fd].read()
        for fd in readable:
            reader = readers.get(fd)
            if reader is not None and reader in self.readers:
                self._do(reader, reader.doRead)
        for fd in writable:
            writer = writers.get(fd)
            if writer is not None and writer in self.writers:
                self._do(writer, writer.doWrite)
        return bool(readable or writable)

    def _do(self, selectable: Any, method: Callable[[], Any]) -> None:
        try:
            why = method()
        except Exception:
            why = sys.exc_info()[1]
            log.failure("Error in {selectable!r}", selectable=selectable)
        if why:
            self.removeReader(selectable)
            self.removeWriter(selectable)
            selectable.connectionLost(Failure(why))


def _fileno(descriptor: Any) -> int:
    try:
        return int(descriptor.fileno())
    except Exception:  # a closed port has no descriptor
        return -1


_current: list[PortDescriptors] = []


def _descriptors() -> PortDescriptors:
    assert _current, "until() and settle() wait on a PortTestCase's ports"
    return _current[-1]


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Move the bytes of the test's ports and boards until ``predicate()``
    holds: between checks, wait in ``select`` for the next port or board
    that can move bytes (bounded by ``timeout``: it only fails when the
    thing never happens)."""
    descriptors = _descriptors()
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"gave up waiting for {what}")
        descriptors.dispatch(remaining)


async def settle() -> None:
    """Move everything that can move now, then give bytes still in the
    kernel's pty buffers 50 ms to reach the boards (for checks that something
    did NOT happen)."""
    descriptors = _descriptors()
    while descriptors.dispatch(0):
        pass
    descriptors.dispatch(0.05)


def assert_valid_frames(test: TestCase, data: bytes, expected: list[bytes] | None = None) -> None:
    """Every byte a board received belongs to a CRC-valid frame that decodes."""
    split = split_frames(data)
    test.assertEqual((split.skipped, split.rest), (0, b""), "bytes outside valid frames")
    for frame in split.frames:
        decode_frame(frame)  # raises on anything invalid
    if expected is not None:
        test.assertEqual(list(split.frames), expected)


class PortTestCase(TestCase):
    """A scratch directory for device links, a Clock, the ports' descriptors
    (dispatched by :func:`until`), and clean-up of ports and ptys."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="anpr-serial-")
        self.clock = Clock()
        self.boards: list[PtyBoard] = []
        self.services: list[Any] = []
        self.descriptors = PortDescriptors(self.boards)
        _current.append(self.descriptors)
        self.addCleanup(_current.remove, self.descriptors)

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
        fds: IReactorFDSet = self.descriptors
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
