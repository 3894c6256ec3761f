"""Named serial ports of the gateway (RS-485 adapters), kept open through unplugs and errors.

Each port is a Twisted ``SerialPort`` (pyserial underneath) with:

* a bounded queue of frames, written one at a time and paced: after a frame the next one
  waits for the frame's transmission time at the port's baud rate plus a gap, so a board
  never receives a frame while it is still reading the previous one;
* when the port is away (device missing, adapter unplugged, errors), frames keep queueing
  up to the bound with the **newest** kept, so a board that comes back shows the current
  state rather than a backlog;
* reopening with capped exponential back-off, one log line per change of state, and a
  status (``open``, ``missing``, ``error`` with its reason, since when, counters) for the
  status page;
* bytes read from the port handed to callbacks (the camera serial bridge).

The reactor (file descriptors) and the clock (pacing, retries) are passed in; tests drive
real pseudo-terminals with the reactor and the timing with a ``Clock``.
"""

from __future__ import annotations

import enum
import errno
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import attrs
import serial
from twisted.application.service import Service
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.serialport import SerialPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.serial.settings import SerialPortSettings

__all__ = [
    "PortState",
    "PortStatus",
    "ReceiveCallback",
    "SerialPorts",
    "UnknownPort",
]

log = Logger()


# Device errors that mean "not there" rather than "there but failing".
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})


class PortState(str, enum.Enum):
    """Where a port stands."""

    CLOSED = "closed"  # not started, or stopped
    OPEN = "open"
    MISSING = "missing"  # the device path does not exist (adapter unplugged)
    ERROR = "error"  # the device exists but cannot be used; see the reason


@attrs.frozen
class PortStatus:
    """A snapshot of one port for the status page and the logs.

    ``since`` is in clock seconds (the reactor's wall clock in service).
    """

    name: str
    device: str
    state: PortState
    reason: str | None
    since: float
    bytes_written: int
    frames_written: int
    frames_dropped: int
    bytes_read: int
    queued: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "name": self.name,
            "device": self.device,
            "state": self.state.value,
            "reason": self.reason,
            "since": self.since,
            "bytes_written": self.bytes_written,
            "frames_written": self.frames_written,
            "frames_dropped": self.frames_dropped,
            "bytes_read": self.bytes_read,
            "queued": self.queued,
        }


ReceiveCallback = Callable[[bytes], None]


class UnknownPort(KeyError):
    """A port name that is not configured."""

    def __str__(self) -> str:
        return f"no serial port named {self.args[0]!r} is configured"


class _GatewaySerialPort(SerialPort):
    """Twisted's SerialPort, opening pyserial with an optional exclusive lock and never
    leaking the device when the set-up after the open fails."""

    def __init__(
        self, protocol: Protocol, device: str, reactor: Any, *, exclusive: bool, **kw: Any
    ) -> None:
        self._exclusive = exclusive
        try:
            super().__init__(protocol, device, reactor, **kw)
        except BaseException:
            opened = getattr(self, "_serial", None)
            if opened is not None:
                opened.close()
            raise

    def _serialFactory(self, device: str, **kw: Any) -> serial.Serial:
        # pyserial configures the line with tcsetattr, which pseudo-terminals accept like
        # real adapters, and ignores the modem-line ioctls a pty refuses.
        return serial.Serial(device, exclusive=self._exclusive, **kw)


class _PortProtocol(Protocol):
    def __init__(self, port: _ManagedPort) -> None:
        self._port = port

    def dataReceived(self, data: bytes) -> None:
        self._port._received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._port._lost(self, reason)


class _ManagedPort:
    """One port: its queue, pacing, state and reopening."""

    def __init__(self, settings: SerialPortSettings, reactor: Any, clock: IReactorTime) -> None:
        self.settings = settings
        self._reactor = reactor
        self._clock = clock
        self.state = PortState.CLOSED
        self.reason: str | None = None
        self.since = clock.seconds()
        self.queue: deque[bytes] = deque()
        self.bytes_written = 0
        self.frames_written = 0
        self.frames_dropped = 0
        self.bytes_read = 0
        self.receivers: list[ReceiveCallback] = []
        #: Told each change of state (with the new status).
        self.watchers: list[Callable[[PortStatus], None]] = []
        self._transport: Any = None
        self._protocol: _PortProtocol | None = None
        self._running = False
        self._retry: IDelayedCall | None = None
        self._retry_delay = settings.retry_min_seconds
        self._pacing: IDelayedCall | None = None
        self._overflow_logged = False

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._retry_delay = self.settings.retry_min_seconds
        self._open()

    def stop(self) -> None:
        self._running = False
        for call in (self._retry, self._pacing):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._pacing = None
        transport, self._transport = self._transport, None
        if transport is not None:
            # Close now, synchronously: the service is stopping and nothing may stay
            # registered with the reactor. Bytes still in Twisted's buffer are dropped.
            transport.connectionLost(Failure(ConnectionDone("serial port closed")))
        self._set_state(PortState.CLOSED, None)

    def _open(self) -> None:
        self._retry = None
        if not self._running:
            return
        device = self.settings.device
        if not os.path.exists(device):
            self._failed(PortState.MISSING, self._missing_reason())
            return
        protocol = _PortProtocol(self)
        try:
            transport = _GatewaySerialPort(
                protocol,
                device,
                self._reactor,
                exclusive=self.settings.exclusive,
                baudrate=self.settings.baudrate,
                bytesize=self.settings.bytesize,
                parity=self.settings.parity,
                stopbits=self.settings.stopbits,
            )
        except Exception as error:
            # pyserial raises SerialException (an OSError) for most things, ValueError for
            # settings the driver refuses; anything else must not end the retries either.
            if getattr(error, "errno", None) in _MISSING_ERRNOS or not os.path.exists(device):
                self._failed(PortState.MISSING, self._missing_reason())
            else:
                self._failed(PortState.ERROR, str(error) or type(error).__name__)
            return
        self._protocol = protocol
        self._transport = transport
        self._retry_delay = self.settings.retry_min_seconds
        self._overflow_logged = False
        self._set_state(PortState.OPEN, None)
        self._pump()

    def _missing_reason(self) -> str:
        return f"{self.settings.device} does not exist"

    def _failed(self, state: PortState, reason: str) -> None:
        self._set_state(state, reason)
        delay = self._retry_delay
        self._retry_delay = min(delay * 2, self.settings.retry_max_seconds)
        self._retry = self._clock.callLater(delay, self._open)

    def _lost(self, protocol: _PortProtocol, reason: Failure) -> None:
        if protocol is not self._protocol:
            return  # a connection already replaced or stopped
        self._protocol = None
        self._transport = None
        if self._pacing is not None and self._pacing.active():
            self._pacing.cancel()
        self._pacing = None
        if not self._running:
            return
        # A replugged adapter comes back within a second or two: start the back-off low.
        self._retry_delay = self.settings.retry_min_seconds
        if os.path.exists(self.settings.device):
            self._failed(PortState.ERROR, reason.getErrorMessage() or "connection lost")
        else:
            self._failed(PortState.MISSING, self._missing_reason())

    def _set_state(self, state: PortState, reason: str | None) -> None:
        if (state, reason) == (self.state, self.reason):
            return
        previous = self.state
        self.state = state
        self.reason = reason
        self.since = self._clock.seconds()
        self._overflow_logged = False
        name, device = self.settings.name, self.settings.device
        for watcher in list(self.watchers):
            try:
                watcher(self.status())
            except Exception:
                log.failure("A serial port state watcher failed")
        if state is PortState.OPEN:
            log.info(
                "Serial port {port} open on {device} at {baudrate} baud",
                port=name,
                device=device,
                baudrate=self.settings.baudrate,
            )
        elif state is PortState.CLOSED:
            if previous is not PortState.CLOSED:
                log.info("Serial port {port} closed", port=name)
        else:
            log.warn(
                "Serial port {port} is {state}: {reason}; retrying, frames are kept "
                "(newest {limit})",
                port=name,
                state=state.value,
                reason=reason,
                limit=self.settings.max_queued_frames,
            )

    # -- sending ----------------------------------------------------------

    def send(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"serial data must be bytes, not {type(data).__name__}")
        if not data:
            return
        if len(self.queue) >= self.settings.max_queued_frames:
            # Keep the newest: a board coming back must show the current state.
            self.queue.popleft()
            self.frames_dropped += 1
            if not self._overflow_logged:
                self._overflow_logged = True
                log.info(
                    "Serial port {port} ({state}): queue full, dropping the oldest frames",
                    port=self.settings.name,
                    state=self.state.value,
                )
        self.queue.append(bytes(data))
        self._pump()

    def _pump(self) -> None:
        if self.state is not PortState.OPEN or self._pacing is not None or not self.queue:
            return
        frame = self.queue.popleft()
        self._transport.write(frame)
        self.bytes_written += len(frame)
        self.frames_written += 1
        pause = self.settings.transmit_seconds(len(frame)) + self.settings.gap_ms / 1000.0
        self._pacing = self._clock.callLater(pause, self._paced)

    def _paced(self) -> None:
        self._pacing = None
        self._pump()

    # -- receiving --------------------------------------------------------

    def _received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        for receiver in list(self.receivers):
            try:
                receiver(data)
            except Exception:
                # A broken consumer must not close the port (Twisted drops a connection
                # whose dataReceived raises).
                log.failure(
                    "Serial port {port}: a reader of its data failed", port=self.settings.name
                )

    def status(self) -> PortStatus:
        return PortStatus(
            name=self.settings.name,
            device=self.settings.device,
            state=self.state,
            reason=self.reason,
            since=self.since,
            bytes_written=self.bytes_written,
            frames_written=self.frames_written,
            frames_dropped=self.frames_dropped,
            bytes_read=self.bytes_read,
            queued=len(self.queue),
        )


class SerialPorts(Service):
    """The gateway's named serial ports, opened when the service starts.

    ``reactor`` provides the file descriptors; ``clock`` (default: the reactor) times the
    pacing and the reopening. A port that cannot be opened never stops the service: it is
    retried, and frames sent to it wait (bounded) until it opens.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        ports: Sequence[SerialPortSettings],
        *,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            if not IReactorTime.providedBy(reactor):
                raise TypeError("pass a clock: the reactor given does not provide IReactorTime")
            clock = cast(IReactorTime, reactor)
        self._ports: dict[str, _ManagedPort] = {}
        devices: dict[str, str] = {}
        for settings in ports:
            if settings.name in self._ports:
                raise ValueError(f"serial port {settings.name!r} is configured twice")
            device = os.path.abspath(settings.device)
            if device in devices:
                raise ValueError(
                    f"serial ports {devices[device]!r} and {settings.name!r} "
                    f"both use {settings.device}"
                )
            devices[device] = settings.name
            self._ports[settings.name] = _ManagedPort(settings, reactor, clock)

    def __contains__(self, name: object) -> bool:
        return name in self._ports

    def __iter__(self) -> Iterator[str]:
        return iter(self._ports)

    def _port(self, name: str) -> _ManagedPort:
        try:
            return self._ports[name]
        except KeyError:
            raise UnknownPort(name) from None

    def send(self, name: str, data: bytes) -> None:
        """Queue ``data`` (one frame, written as is) for port ``name``.

        Never blocks and never fails for a port that is away: the frame waits in the
        bounded queue. Raises :class:`UnknownPort` for a name not configured.
        """
        self._port(name).send(data)

    def on_receive(self, name: str, callback: ReceiveCallback) -> None:
        """Call ``callback(bytes)`` with whatever is read from port ``name``."""
        self._port(name).receivers.append(callback)

    def on_state_change(self, callback: Callable[[PortStatus], None]) -> None:
        """Call ``callback(status)`` whenever a port changes state."""
        for port in self._ports.values():
            port.watchers.append(callback)

    def status(self, name: str) -> PortStatus:
        """The state and counters of port ``name``."""
        return self._port(name).status()

    def statuses(self) -> list[PortStatus]:
        """Every port's status, in configuration order."""
        return [port.status() for port in self._ports.values()]

    def startService(self) -> None:
        super().startService()
        for port in self._ports.values():
            port.start()

    def stopService(self) -> Any:
        for port in self._ports.values():
            port.stop()
        return super().stopService()
