"""systemd service notifications: readiness, watchdog, stopping.

With ``Type=notify`` systemd considers the gateway started only when it says
``READY=1``, and with ``WatchdogSec=`` it restarts a gateway that stops saying
``WATCHDOG=1``. Both are datagrams on the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (the sd_notify protocol), sent here without any library.
A name starting with ``@`` is in Linux's abstract namespace.

The watchdog ping comes from the reactor: a gateway whose event loop is stuck
(so that cameras get no answers) misses it and is restarted.

Without ``$NOTIFY_SOCKET`` (run by hand, under tests) nothing is sent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.timers import Every

__all__ = [
    "NotifySocket",
    "SystemdNotifier",
    "describe_address",
    "listening_status",
    "watchdog_interval",
]

log = Logger()

# A STATUS= line is shown by `systemctl status`; keep it to one screen line.
_STATUS_LIMIT: Final = 200


def _socket_address(name: str) -> str | None:
    """The address to send to for a ``$NOTIFY_SOCKET`` value, or None when it
    is not an AF_UNIX socket name."""
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    # systemd 254+ also knows "vsock:CID:PORT", used only for virtual machines.
    return None


class NotifySocket:
    """The ``$NOTIFY_SOCKET`` datagram socket, or nothing when there is none.

    :meth:`send` never blocks and never raises: systemd being slow to read must
    not stall the reactor, and a lost notification is logged, not fatal.
    """

    def __init__(self, name: str | None) -> None:
        self.name = name or None
        self._address = _socket_address(name) if name else None
        self._sock: socket.socket | None = None
        self._failing = False
        if name and self._address is None:
            log.warn("NOTIFY_SOCKET={name} is not a Unix socket: no notifications", name=name)

    @property
    def enabled(self) -> bool:
        """Whether there is somewhere to send notifications."""
        return self._address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; whether it was sent."""
        if self._address is None:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._address)
        except OSError as error:
            # Say it once, not every watchdog period.
            if not self._failing:
                log.warn(
                    "Cannot notify systemd at {name}: {reason}",
                    name=self.name,
                    reason=error.strerror or str(error),
                )
            self._failing = True
            return False
        if self._failing:
            log.info("Notifying systemd at {name} again", name=self.name)
        self._failing = False
        return True

    def close(self) -> None:
        """Close the socket (it is opened again by the next :meth:`send`)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between watchdog pings, or None when systemd expects none.

    systemd sets ``$WATCHDOG_USEC`` to the ``WatchdogSec=`` of the unit, and
    ``$WATCHDOG_PID`` to the process it watches (when set, only that process
    may answer). Pinging at half the period leaves room for one late ping.
    """
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    watched = environ.get("WATCHDOG_PID")
    try:
        if watched and int(watched) != pid:
            return None
        period = int(usec)
    except ValueError:
        log.warn(
            "Ignoring the watchdog: WATCHDOG_USEC={usec} WATCHDOG_PID={watched}",
            usec=usec,
            watched=watched,
        )
        return None
    if period <= 0:
        return None
    return period / 2_000_000


class SystemdNotifier(MultiService):
    """Tells systemd when the gateway serves, that it is alive, and when it stops.

    ``ready`` is called from :meth:`startService`; its result is awaited and
    is the status text sent with ``READY=1`` (and logged). Add this service to
    the service tree after the listeners, so that it starts after them (their
    ports are being opened) and stops before them (``STOPPING=1`` is the first
    thing systemd hears of a shutdown).

    If ``ready`` fails, READY=1 is never sent: the failure is logged and shown
    as the unit's status, and systemd ends the start at its start timeout.

    ``notice()`` is what an operator must know now (the store cannot open,
    its database was replaced), or None: it leads the unit's status, before
    and after READY=1. Call :meth:`refresh` when it may have changed.

    ``environ`` (default: the process environment) supplies
    ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``; ``pid`` (default:
    this process) is compared with ``WATCHDOG_PID``.
    """

    def __init__(
        self,
        clock: IReactorTime,
        ready: Callable[[], Awaitable[str]],
        environ: Mapping[str, str] | None = None,
        pid: int | None = None,
        notice: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__()
        self._notice = notice
        self._sent_status: str | None = None
        environ = os.environ if environ is None else environ
        self._clock = clock
        self._ready = ready
        self._pid = os.getpid() if pid is None else pid
        self._socket = NotifySocket(environ.get("NOTIFY_SOCKET"))
        self._watchdog_interval = (
            watchdog_interval(environ, self._pid) if self._socket.enabled else None
        )
        if self._watchdog_interval is not None:
            Every(
                clock, self._watchdog_interval, self._pet_watchdog, name="watchdog", now=True
            ).setServiceParent(self)
        self._announcing: Deferred[None] | None = None
        #: The status sent with READY=1, once the gateway serves.
        self.ready_status: str | None = None

    def startService(self) -> None:
        super().startService()
        if self._notice is not None and self._notice() is not None:
            self.refresh()  # a notice from before this service started
        self._announcing = Deferred.fromCoroutine(self._announce())
        # Stopping before the listeners are up cancels the wait; nothing to say.
        self._announcing.addErrback(lambda failure: failure.trap(CancelledError))

    async def _announce(self) -> None:
        try:
            status = await self._ready()
        except CancelledError:
            raise
        except Exception:
            failure = Failure()
            log.failure("The gateway is not serving", failure)
            self._socket.send(f"STATUS={_one_line('Not serving: ' + str(failure.value))}")
            return
        if not self.running:
            return
        self.ready_status = status
        log.info("Serving: {status}", status=status)
        line = self.status_line()
        self._sent_status = line
        self._socket.send("READY=1", f"STATUS={line}")

    def status_line(self) -> str:
        """The unit's status as ``systemctl status`` shows it: the notice
        first, then what serves (or that the gateway is starting)."""
        notice = self._notice() if self._notice is not None else None
        serving = self.ready_status
        if notice is None:
            return _one_line(serving if serving is not None else "Starting")
        return _one_line(f"{notice} | {'serving: ' + serving if serving else 'not serving'}")

    def refresh(self) -> None:
        """Send the unit's status again if it changed (the notice did)."""
        if not self.running:
            return
        line = self.status_line()
        if line != self._sent_status:
            self._sent_status = line
            self._socket.send(f"STATUS={line}")

    def _pet_watchdog(self) -> None:
        self._socket.send("WATCHDOG=1")

    def stopService(self) -> Deferred[object]:
        stopped: Deferred[object] = super().stopService()  # the watchdog first
        if self._announcing is not None:
            self._announcing.cancel()
            self._announcing = None
        self._socket.send("STOPPING=1", "STATUS=Stopping")
        self._socket.close()
        return stopped


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _STATUS_LIMIT else line[: _STATUS_LIMIT - 3] + "..."


def describe_address(address: IAddress) -> str:
    """``host:port`` (``[host]:port`` for IPv6) or the socket path of a listener."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return str(name) if name else str(address)


def _port_of(service: StreamServerEndpointService) -> Deferred[IListeningPort | None]:
    # Twisted keeps the outcome of endpoint.listen() only in this private
    # attribute, and has no public accessor. Its own stopService uses the
    # result to stop listening, so it is observed with a callback that hands
    # the result on unchanged. A listen failure has already been logged there
    # and turned into None; a cancelled listen (stopped early) stays a Failure.
    waiting: Deferred[IListeningPort | None] | None = service._waitingForPort
    if waiting is None:
        raise RuntimeError(f"listener {service.name!r} has not been started")
    observed: Deferred[IListeningPort | None] = Deferred()

    def hand_on(result: object) -> object:
        if isinstance(result, Failure):
            observed.errback(result)
        else:
            observed.callback(result)  # type: ignore[arg-type]
        return result

    waiting.addBoth(hand_on)
    return observed


async def listening_status(services: Iterable[StreamServerEndpointService]) -> str:
    """Wait until every listener in ``services`` (started) is listening.

    Returns a status line such as ``camera-listener-1 on 0.0.0.0:8080,
    admin-listener-1 on 127.0.0.1:8081``. Raises ``RuntimeError`` naming a
    listener that could not listen.
    """
    services = list(services)
    ports: Sequence[Deferred[IListeningPort | None]] = [_port_of(s) for s in services]
    parts = []
    for service, waiting in zip(services, ports, strict=True):
        port = await waiting
        if port is None:
            raise RuntimeError(f"listener {service.name or '?'} is not listening")
        parts.append(f"{service.name or 'listener'} on {describe_address(port.getHost())}")
    return ", ".join(parts) if parts else "no listeners"
