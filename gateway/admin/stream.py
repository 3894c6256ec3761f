"""Server-sent events: the bus, live, to the page (``/api/stream``).

One open request per page. Each bus message of a streamed topic becomes
``event: <topic>`` / ``data: <json>``; a ``: keepalive`` comment goes out
every 15 seconds so proxies and the browser keep the connection. The
stream is a push producer of its request: when the client stops reading
and the connection's buffer fills, messages wait in a bounded buffer; a
client that falls further behind is dropped (its page reconnects and
reloads what it missed).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import implementer

from gateway.admin.access import Access, authorized
from gateway.admin.auth import Principal, SessionStore
from gateway.admin.http import ApiError, admin_app, common_headers
from gateway.admin.settings import VIEWER
from gateway.bus import EventBus

__all__ = [
    "KEEPALIVE_SECONDS",
    "MAX_PENDING_BYTES",
    "MAX_STREAMS",
    "STREAM_TOPICS",
    "EventStream",
    "StreamResource",
]

log = Logger()

#: The bus topics a page receives.
STREAM_TOPICS = frozenset({"event", "camera", "command", "status", "attention", "occupancy"})
#: What may wait for a client that does not read before it is dropped.
MAX_PENDING_BYTES = 1024 * 1024
#: How long the browser waits before reconnecting (milliseconds).
RECONNECT_MS = 5000
#: How often a keepalive comment goes out.
KEEPALIVE_SECONDS = 15.0
#: The most streams open at once (each holds a connection and a subscription).
MAX_STREAMS = 32


def format_message(topic: str, payload: Mapping[str, object]) -> bytes:
    """One server-sent event. JSON escapes newlines, so ``data`` is one line."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {topic}\ndata: {data}\n\n".encode()


@implementer(IPushProducer)
class EventStream:
    """The live stream of one request. :attr:`done` fires (None) when the
    stream ends on the gateway's side (the login ended, or :meth:`end`);
    cancelling it, as Klein does when the connection goes (the client left,
    or was dropped for not reading), ends it too. Either way the bus
    subscription and the timer go."""

    def __init__(
        self,
        request: IRequest,
        clock: IReactorTime,
        *,
        keepalive: float,
        alive: Callable[[], bool] = lambda: True,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self._request = request
        self._clock = clock
        self._keepalive_seconds = keepalive
        self._alive = alive
        self._max_pending = max_pending_bytes
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._paused = False
        self._closed = False
        self._unsubscribe: Callable[[], None] | None = None
        self._timer: IDelayedCall | None = None
        self.sent = 0
        self.done: Deferred[None] = Deferred(lambda _: self._close())

    def start(self, bus: EventBus) -> None:
        request = self._request
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        # Reverse proxies (nginx) must pass each message on at once.
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.registerProducer(self, True)  # type: ignore[attr-defined]
        request.notifyFinish().addBoth(self._connection_ended)  # type: ignore[attr-defined]
        self._unsubscribe = bus.subscribe(self._published)
        self._write(f"retry: {RECONNECT_MS}\n: connected\n\n".encode("ascii"))
        self._arm()

    # -- IPushProducer ---------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._pending and not self._paused and not self._closed:
            chunk = self._pending.popleft()
            self._pending_bytes -= len(chunk)
            self._request.write(chunk)

    def stopProducing(self) -> None:
        self._close()

    # -- messages ----------------------------------------------------------------------

    def _published(self, topic: str, payload: Mapping[str, object]) -> None:
        if topic in STREAM_TOPICS:
            self._write(format_message(topic, payload))
            self.sent += 1

    def _write(self, chunk: bytes) -> None:
        if self._closed:
            return
        if self._paused or self._pending:
            self._pending.append(chunk)
            self._pending_bytes += len(chunk)
            if self._pending_bytes > self._max_pending:
                self._drop()
            return
        self._request.write(chunk)

    def _arm(self) -> None:
        self._timer = self._clock.callLater(self._keepalive_seconds, self._keepalive)

    def _keepalive(self) -> None:
        self._timer = None
        if self._closed:
            return
        if not self._alive():
            # Logged out or expired: end the stream; the page's reconnect
            # is refused and it shows the login.
            self._finish()
            return
        self._write(b": keepalive\n\n")
        if not self._closed:
            self._arm()

    # -- ending --------------------------------------------------------------------------

    def _drop(self) -> None:
        log.warn(
            "Dropping a live stream whose client stopped reading ({pending} bytes waiting)",
            pending=self._pending_bytes,
        )
        self._close()
        channel = getattr(self._request, "channel", None)
        transport = getattr(channel, "transport", None)
        if transport is not None:
            # Not loseConnection: that would wait for the client to read
            # everything already buffered.
            transport.abortConnection()

    def end(self) -> None:
        """End the stream from the gateway's side: the response finishes."""
        self._finish()

    def _finish(self) -> None:
        self._close()
        if not self.done.called:
            self.done.callback(None)

    def _connection_ended(self, result: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._pending_bytes = 0
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        try:
            self._request.unregisterProducer()  # type: ignore[attr-defined]
        except Exception:
            # The channel may already be gone (connection lost).
            pass


class StreamResource:
    """``/api/stream``: one :class:`EventStream` per page, for viewers. A
    stream opened with a login session ends when that session does (checked
    at each keepalive)."""

    app = admin_app()

    def __init__(
        self,
        *,
        access: Access,
        clock: IReactorTime,
        bus: EventBus,
        sessions: SessionStore,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.access = access
        self._clock = clock
        self._bus = bus
        self._sessions = sessions
        self.keepalive_seconds = keepalive_seconds
        self.max_streams = max_streams
        self.streams: set[EventStream] = set()
        # Who holds each stream, and the stream of each login session.
        self._holders: dict[EventStream, str] = {}
        self._by_session: dict[EventStream, object] = {}
        sessions.on_end(self._session_ended)

    @property
    def max_streams_per_holder(self) -> int:
        """The streams one user or token may hold: a share of them all, so
        that one credential cannot take every slot."""
        return max(2, self.max_streams // 4)

    @authorized(app, "/api/stream", methods=["GET"], role=VIEWER)
    def stream(self, request: IRequest, who: Principal) -> Deferred[None]:
        if len(self.streams) >= self.max_streams:
            raise ApiError(503, "too many live streams open; close another page first")
        holder = f"{who.via}:{who.name}"
        if sum(1 for held in self._holders.values() if held == holder) >= self.max_streams_per_holder:
            raise ApiError(
                503, "this user has too many live streams open; close another page first"
            )
        session = who.session
        sessions = self._sessions

        def alive() -> bool:
            return session is None or sessions.alive(session)

        common_headers(request)
        stream = EventStream(request, self._clock, keepalive=self.keepalive_seconds, alive=alive)
        self.streams.add(stream)
        self._holders[stream] = holder
        if session is not None:
            self._by_session[stream] = session
        stream.done.addBoth(self._stream_ended, stream)
        stream.start(self._bus)
        return stream.done

    def _session_ended(self, session: object) -> None:
        # A logout ends that session's streams now, not at the next keepalive.
        for stream, owner in list(self._by_session.items()):
            if owner is session:
                stream.end()

    def end_streams(self) -> None:
        """End every live stream (the gateway is stopping): each response
        is finished properly and its timer cancelled."""
        for stream in list(self.streams):
            stream.end()

    def _stream_ended(self, result: object, stream: EventStream) -> object:
        self.streams.discard(stream)
        self._holders.pop(stream, None)
        self._by_session.pop(stream, None)
        return result
