"""twisted.web plumbing for the gateway's listeners: bounded requests and
connections, bodies kept in memory within a budget.

Twisted's stock request spools any body over 100 kB to a temporary file and
accepts bodies of any size, at any pace. The camera port and the admin port
must refuse an oversized body before buffering it (no disk, no memory), keep
the bodies they accept in memory, and not let slow or unfinished requests
hold connections or memory:

* a request's headers must be complete within the header timeout (for a
  connection's first request, counted from the connection's start, so a
  connection that never says anything is closed too);
* the whole request, headers and body, within the request timeout;
* a body must arrive at a minimum rate, over every window of
  :data:`BODY_RATE_GRACE_SECONDS` after its first: a trickled or stalled body
  is cut (a fast start buys no time, so one cannot hold memory by sending
  most of a body and then nothing);
* the bodies in memory at once, over all connections of a listener, are
  bounded by a :class:`BodyBudget`. A body is admitted when its announced
  size (the body limit when chunked) fits; otherwise it waits, its
  connection paused (its bytes stay in the kernel), and bodies in progress
  finish. Waiting bodies are admitted from the address holding the least of
  the budget first, so a camera with one connection is not queued behind a
  host with many.

:class:`BoundedRequest` serves any :class:`BoundedSite`: a site says how
large a body may be with a ``body_limit(method, path)`` method (the admin
site: a limit per route), or else a ``max_body_bytes`` attribute (the camera
site: one limit). :class:`ConnectionLimits` bounds the connections of a
listener in all and per address.
"""

from __future__ import annotations

import itertools
import json
import mmap
from collections import Counter, OrderedDict
from collections.abc import Callable
from io import BytesIO
from typing import IO, Any, cast

import attrs
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

__all__ = [
    "BODY_RATE_GRACE_SECONDS",
    "BodyBudget",
    "BodyTicket",
    "BoundedChannel",
    "BoundedRequest",
    "BoundedSite",
    "CameraSite",
    "ConnectionLimits",
    "MappedBody",
    "RequestLimits",
]

log = Logger()

#: A body must bring its minimum rate in every window of this many seconds
#: (or the rest of it), from the end of its first window, which is free
#: (TCP's slow start, a client that sends its headers before its body is ready).
BODY_RATE_GRACE_SECONDS = 1.0

#: Cut connections and refused bodies are logged once per address and reason
#: this often, with how many there were meanwhile.
LOG_INTERVAL_SECONDS = 60.0


class _PeerLog:
    """When to say something about a peer again: once per interval per
    peer and reason, bounded in peers (the longest quiet are forgotten)."""

    LIMIT = 4096

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._said: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def due(self, peer: str, reason: str, now: float) -> int | None:
        """How many times it happened since it was last said, when it is time
        to say it again; else None (and it is counted)."""
        key = (peer, reason)
        said_at, since = self._said.pop(key, (None, 0))
        if said_at is not None and now - said_at < self.interval:
            self._said[key] = (said_at, since + 1)
            return None
        self._said[key] = (now, 0)
        while len(self._said) > self.LIMIT:
            self._said.popitem(last=False)
        return since


@attrs.frozen
class RequestLimits:
    """How long a request may take to arrive. ``header_timeout``: seconds
    until its headers are complete; ``request_timeout``: until its body is
    complete too (None: no limit); ``min_body_rate``: the slowest a body may
    arrive at, in bytes a second, over each window of ``rate_grace`` seconds
    after its first (0: no minimum)."""

    header_timeout: float | None = None
    request_timeout: float | None = None
    min_body_rate: float = 0.0
    rate_grace: float = BODY_RATE_GRACE_SECONDS


@attrs.define(eq=False)
class BodyTicket:
    """One body's claim on a :class:`BodyBudget`."""

    address: str
    need: int
    held: int
    seq: int
    on_admit: Callable[[], object]
    state: str = "new"  # "waiting", "admitted", "done"
    buffered: int = 0

    @property
    def admitted(self) -> bool:
        return self.state == "admitted"


class BodyBudget:
    """The memory the request bodies of one listener may hold at once:
    ``limit`` bytes, of which three quarters for bodies being read or
    answered and a quarter for what waiting bodies' connections had read.

    An admitted body claims its announced size (a chunked one: its body
    limit) until its request is finished or its connection lost. A body
    that does not fit waits, and is admitted as bodies before it finish:
    first the one from the address claiming the least (then the oldest), so
    one host's many connections cannot queue a camera behind them. The bytes
    a waiting body's connection had read with its headers (one socket read)
    count too; a body that would take the waiting bodies past their quarter
    is refused. Any body of at most half the budget is admitted once the
    ones in progress finish.
    """

    def __init__(self, limit: int) -> None:
        if limit < 4:
            raise ValueError(f"a body budget of {limit} bytes is too small")
        self.limit = limit
        self.hold_limit = limit // 4
        self.body_limit = limit - self.hold_limit
        #: Bytes claimed by admitted bodies.
        self.claimed = 0
        #: Bytes read ahead by waiting bodies' connections.
        self.held = 0
        self.peak_reserved = 0
        #: Bytes actually in admitted bodies' buffers.
        self.buffered = 0
        self.peak_buffered = 0
        self.admitted = 0
        self.waited = 0
        self.refused = 0
        self._by_address: dict[str, int] = {}
        self._waiting: dict[int, BodyTicket] = {}
        self._seq = itertools.count()
        self._granting = False

    @property
    def reserved(self) -> int:
        """Bytes claimed and held: never more than the limit."""
        return self.claimed + self.held

    @property
    def waiting(self) -> int:
        """How many bodies wait."""
        return len(self._waiting)

    def holding(self, address: str) -> int:
        """Bytes claimed by admitted bodies from ``address``."""
        return self._by_address.get(address, 0)

    def ask(
        self, address: str, need: int, held: int, on_admit: Callable[[], object]
    ) -> BodyTicket | None:
        """A claim for a body of ``need`` bytes from ``address``, whose
        connection has already read ``held`` bytes: admitted at once, or
        waiting (``on_admit()`` is called when it is admitted); None when it
        is refused (too many bytes read ahead by waiting bodies)."""
        ticket = BodyTicket(address, need, held, next(self._seq), on_admit)
        if self._fits(ticket) and not self._anyone_before(ticket):
            self._admit(ticket)
            return ticket
        if self.held + held > self.hold_limit:
            self.refused += 1
            return None
        ticket.state = "waiting"
        self.held += held
        self._peak()
        self._waiting[ticket.seq] = ticket
        self.waited += 1
        return ticket

    def received(self, ticket: BodyTicket, size: int) -> None:
        """``size`` more bytes of an admitted body are in memory."""
        if ticket.state == "admitted":
            ticket.buffered += size
            self.buffered += size
            self.peak_buffered = max(self.peak_buffered, self.buffered)

    def release(self, ticket: BodyTicket) -> None:
        """The body's memory is free (its request finished, or its connection
        went): bodies that wait may be admitted."""
        if ticket.state == "admitted":
            self.claimed -= ticket.need
            self.buffered -= ticket.buffered
            remaining = self._by_address.get(ticket.address, 0) - ticket.need
            if remaining > 0:
                self._by_address[ticket.address] = remaining
            else:
                self._by_address.pop(ticket.address, None)
        elif ticket.state == "waiting":
            del self._waiting[ticket.seq]
            self.held -= ticket.held
        ticket.state = "done"
        self._grant()

    def _key(self, ticket: BodyTicket) -> tuple[int, int]:
        return (self.holding(ticket.address), ticket.seq)

    def _fits(self, ticket: BodyTicket) -> bool:
        return self.claimed + ticket.need <= self.body_limit

    def _anyone_before(self, ticket: BodyTicket) -> bool:
        key = self._key(ticket)
        return any(self._key(waiting) < key for waiting in self._waiting.values())

    def _admit(self, ticket: BodyTicket) -> None:
        if ticket.state == "waiting":
            del self._waiting[ticket.seq]
            self.held -= ticket.held
        ticket.state = "admitted"
        self.claimed += ticket.need
        self._by_address[ticket.address] = self.holding(ticket.address) + ticket.need
        self.admitted += 1
        self._peak()

    def _peak(self) -> None:
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def _grant(self) -> None:
        if self._granting:
            return  # the loop below sees what a callback released
        self._granting = True
        try:
            while self._waiting:
                best = min(self._waiting.values(), key=self._key)
                if not self._fits(best):
                    return
                self._admit(best)
                try:
                    best.on_admit()
                except Exception:
                    log.failure("Admitting a waiting request body failed")
        finally:
            self._granting = False


#: A body announced at least this large is kept in a memory map of its size.
MAPPED_BODY_BYTES = 65_536


class MappedBody:
    """A request body of an announced size, in an anonymous memory map of
    that size: its pages cost memory only as bytes arrive, nothing is copied
    as it grows (a growing buffer is copied at each step, and twice the body
    can be in memory meanwhile), and the memory goes back to the system when
    the request is done, not to the allocator's free lists."""

    def __init__(self, size: int) -> None:
        self._map: mmap.mmap | None = mmap.mmap(-1, max(size, 1))
        self._capacity = max(size, 1)
        #: Bytes written.
        self.written = 0
        self._position = 0

    def _open(self) -> mmap.mmap:
        if self._map is None:
            raise ValueError("the request body was already released")
        return self._map

    def write(self, data: bytes) -> int:
        end = self._position + len(data)
        if end > self._capacity:
            raise ValueError("more body than was announced")
        self._open()[self._position : end] = data
        self._position = end
        self.written = max(self.written, end)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: self.written}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        end = self.written if size is None or size < 0 else min(self.written, self._position + size)
        if end <= self._position:
            return b""
        data = self._open()[self._position : end]
        self._position = end
        return data

    def getvalue(self) -> bytes:
        return self._open()[: self.written]

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


class _Discard:
    """A content sink for a refused body."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> int:
        return 0

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _response(status: bytes, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n" % len(body)
        + extra
        + b"Connection: close\r\n\r\n"
    ) + body


def _host(transport: ITransport | None) -> str:
    if transport is None:
        return "?"
    return str(getattr(transport.getPeer(), "host", "?"))


def _global_clock() -> IReactorTime:
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


def _close_at_once(transport: ITransport) -> None:
    abort = getattr(transport, "abortConnection", None)
    if callable(abort):
        abort()
    else:
        transport.loseConnection()


class BoundedChannel(HTTPChannel):
    """A connection to a :class:`BoundedSite`: its first request's header
    time counts from the connection's start (a connection that never sends a
    request is closed in the header timeout), and nothing more is read from
    it while its request's body waits for the memory budget."""

    site: BoundedSite
    _opened_at: float | None = None
    _silence: IDelayedCall | None = None
    _waiting_for_budget = False

    def connectionMade(self) -> None:
        super().connectionMade()
        site = self.site
        self._opened_at = site.clock.seconds()
        timeout = site.limits.header_timeout
        if timeout:
            self._silence = self.callLater(timeout, self._silent_too_long)

    def _silent_too_long(self) -> None:
        self._silence = None
        self.site.cut(self.transport, "headers", "its request headers took too long")

    def request_began(self, now: float) -> float:
        """When the request whose first line came ``now`` began: a
        connection's first request began with the connection."""
        silence, self._silence = self._silence, None
        if silence is not None and silence.active():
            silence.cancel()
        began, self._opened_at = self._opened_at, None
        return now if began is None else began

    def wait_for_budget(self) -> None:
        """Read nothing more until :meth:`budget_admitted`: what the
        connection has read stays as it is, the rest in the kernel."""
        self._waiting_for_budget = True
        self.paused = True
        if self.transport is not None:
            cast(IPushProducer, self.transport).pauseProducing()

    def budget_admitted(self) -> None:
        """Read on: the body has its memory."""
        if not self._waiting_for_budget:
            return
        self._waiting_for_budget = False
        self.paused = False
        if self.transport is None:
            return
        if not self._waitingForTransport:
            cast(IPushProducer, self.transport).resumeProducing()
        self.dataReceived(b"")

    def resumeProducing(self) -> None:
        if self._waiting_for_budget:
            # The answer's write buffer drained: the body still waits.
            self._waitingForTransport = False
            if self._requestProducer is not None:
                self._requestProducer.resumeProducing()
            return
        super().resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        silence, self._silence = self._silence, None
        if silence is not None and silence.active():
            silence.cancel()
        super().connectionLost(reason)


class BoundedRequest(Request):
    """A request held in memory up to its site's body limit, and only as
    long and as slowly as its site's :class:`RequestLimits` allow.

    A body announced (``Content-Length``) or found (chunked) to be over the
    limit is answered 413 at once and the connection is closed: the rest of
    the body is never stored. Headers not complete in the header timeout,
    a request not complete in the request timeout and a body slower than
    the minimum rate get the connection closed. With a :class:`BodyBudget`,
    a body is read only once it is admitted.
    """

    refused = False
    _received = 0
    _body_limit = 8 << 20
    _site: BoundedSite | None = None
    _header_deadline: IDelayedCall | None = None
    _request_deadline: IDelayedCall | None = None
    _rate_check: IDelayedCall | None = None
    _rate_window_bytes: int | None = None
    _rate_due = 0.0
    _announced: int | None = None
    _ticket: BodyTicket | None = None
    _expect_continue = False
    _gone = False

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        site = getattr(channel, "site", None)
        if not isinstance(site, BoundedSite):
            return
        self._site = site
        limits = site.limits
        now = site.clock.seconds()
        began = channel.request_began(now) if isinstance(channel, BoundedChannel) else now
        if limits.header_timeout:
            self._header_deadline = channel.callLater(
                max(0.0, began + limits.header_timeout - now), self._headers_too_slow
            )
        if limits.request_timeout:
            self._request_deadline = channel.callLater(
                max(0.0, began + limits.request_timeout - now), self._request_too_slow
            )

    # -- time ---------------------------------------------------------------

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        self._cut("headers", "its request headers took too long")

    def _request_too_slow(self) -> None:
        self._request_deadline = None
        assert self._site is not None
        seconds = self._site.limits.request_timeout
        if self._ticket is not None and self._ticket.state == "waiting":
            self._cut(
                "waited", f"its request body waited for memory past the {seconds:g} s of a request"
            )
        else:
            self._cut("request", f"its request took more than {seconds:g} s to arrive")

    def _body_begins(self) -> None:
        site = self._site
        if site is None:
            return
        if site.limits.min_body_rate > 0:
            # The first window is free (TCP's slow start, a client that
            # sends its headers before its body is ready).
            self._rate_window_bytes = None
            self._rate_due = site.clock.seconds()
            self._next_rate_check()

    def _next_rate_check(self) -> None:
        # Windows end at fixed times from the body's start, however late
        # each check runs.
        assert self._site is not None
        self._rate_due += self._site.limits.rate_grace
        self._rate_check = self.channel.callLater(
            max(0.0, self._rate_due - self._site.clock.seconds()), self._check_rate
        )

    def _check_rate(self) -> None:
        self._rate_check = None
        assert self._site is not None
        limits = self._site.limits
        window_began_at, self._rate_window_bytes = self._rate_window_bytes, self._received
        if window_began_at is not None:
            # Each window must bring the minimum, or the rest of the body.
            needed = limits.min_body_rate * limits.rate_grace
            if self._announced is not None:
                needed = min(needed, self._announced - window_began_at)
            if self._received - window_began_at < needed:
                self._cut(
                    "rate",
                    f"its request body came slower than {limits.min_body_rate:g} bytes a second",
                )
                return
        self._next_rate_check()

    def _stop_timers(self) -> None:
        for name in ("_header_deadline", "_request_deadline", "_rate_check"):
            call: IDelayedCall | None = getattr(self, name)
            setattr(self, name, None)
            if call is not None and call.active():
                call.cancel()

    def _cut(self, reason: str, why: str) -> None:
        self._stop_timers()
        self.refused = True
        self.content = _Discard()
        self._release()
        site = self._site
        transport = self._transport()
        if site is None:
            transport.loseConnection()
            return
        site.cut(transport, reason, why)

    # -- the body -----------------------------------------------------------

    def _limit(self) -> int:
        return self._body_limit

    def _limit_for_this_request(self) -> int:
        site = getattr(self.channel, "site", None)
        body_limit = getattr(site, "body_limit", None)
        if callable(body_limit):
            # The request line is parsed by now, but twisted.web keeps it on
            # the channel until the body is in (the request learns it then).
            method = getattr(self.channel, "_command", b"")
            path = getattr(self.channel, "_path", b"")
            return int(body_limit(method, path))
        return int(getattr(site, "max_body_bytes", 8 << 20))

    def _transport(self) -> ITransport:
        return cast(ITransport, self.channel.transport)

    def gotLength(self, length: int | None) -> None:
        header, self._header_deadline = self._header_deadline, None
        if header is not None and header.active():
            header.cancel()
        self._received = 0
        self._announced = length
        self._body_limit = self._limit_for_this_request()
        if length is not None and length > self._limit():
            self._refuse(announced=length)
            return
        self.content = (
            MappedBody(length) if length is not None and length >= MAPPED_BODY_BYTES else BytesIO()
        )
        site = self._site
        if length == 0 or site is None:
            return
        budget = site.body_budget
        if budget is None:
            self._body_begins()
            return
        held = len(getattr(self.channel, "_buffer", b""))
        need = self._limit() if length is None else length
        ticket = budget.ask(_host(self._transport()), need, held, self._admitted)
        if ticket is None:
            self._busy()
            return
        self._ticket = ticket
        if ticket.admitted:
            self._body_begins()
            return
        # Not told to send the body before it may be kept.
        if (self.requestHeaders.getRawHeaders(b"expect") or [b""])[0].lower() == b"100-continue":
            self._expect_continue = True
            self.requestHeaders.removeHeader(b"expect")
        if isinstance(self.channel, BoundedChannel):
            self.channel.wait_for_budget()

    def _admitted(self) -> None:
        # Called while another request releases its memory: read on from
        # the reactor, not inside that request's finish.
        self.channel.callLater(0, self._read_on)

    def _read_on(self) -> None:
        if self._gone or self.refused or self.channel.transport is None:
            return
        self._body_begins()
        if self._expect_continue:
            self.channel._send100Continue()
        if isinstance(self.channel, BoundedChannel):
            self.channel.budget_admitted()

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse(announced=None)
            return
        cast(IO[bytes], self.content).write(data)
        if self._ticket is not None and self._site is not None:
            assert self._site.body_budget is not None
            self._site.body_budget.received(self._ticket, len(data))

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self._stop_timers()
        if self.refused:
            return
        super().requestReceived(command, path, version)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._release()
            # The answer is out: nothing reads the body any more.
            if isinstance(self.content, MappedBody):
                self.content.close()

    def connectionLost(self, reason: Any) -> None:
        self._gone = True
        self._stop_timers()
        self._release()
        super().connectionLost(reason)

    def _release(self) -> None:
        ticket, self._ticket = self._ticket, None
        if ticket is not None and self._site is not None and self._site.body_budget is not None:
            self._site.body_budget.release(ticket)

    def _refuse(self, announced: int | None) -> None:
        self._stop_timers()
        self._release()
        self.refused = True
        self.content = _Discard()
        # The channel answers "Expect: 100-continue" once the headers are in,
        # after this: the client must not be told to send the body after all.
        self.requestHeaders.removeHeader(b"expect")
        limit = self._limit()
        transport = self._transport()
        log.warn(
            "Refused a request body over {limit} bytes from {peer} ({size})",
            limit=limit,
            peer=_host(transport),
            size=f"{announced} bytes announced" if announced is not None else "chunked",
        )
        transport.write(_response(b"413 Request Entity Too Large",
                                  f"body too large: the limit is {limit} bytes"))
        transport.loseConnection()

    def _busy(self) -> None:
        self._stop_timers()
        self.refused = True
        self.content = _Discard()
        self.requestHeaders.removeHeader(b"expect")
        assert self._site is not None
        self._site.refuse_busy(self._transport())


class BoundedSite(Site):
    """A site whose requests are :class:`BoundedRequest`: bodies in memory
    within ``body_budget`` (None: each within its limit only), requests
    within ``limits``, idle keep-alive connections closed after
    ``idle_timeout``. POST bodies are never parsed into ``request.args``
    (the gateway reads its bodies itself). Time runs on ``clock`` (default:
    the global reactor)."""

    requestFactory = BoundedRequest
    protocol = BoundedChannel  # type: ignore[assignment]
    noisy = False
    #: Whether a request cut off or refused for lack of memory is answered
    #: (408, 503) before its connection closes.
    answers_refusals = True

    def __init__(
        self,
        resource: IResource,
        *,
        limits: RequestLimits,
        body_budget: BodyBudget | None,
        idle_timeout: float | None,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(
            resource, timeout=idle_timeout, parsePOSTFormSubmission=False, reactor=clock
        )
        self.limits = limits
        self.body_budget = body_budget
        self.clock: IReactorTime = self.reactor
        self.displayTracebacks = False
        #: How many connections were cut, by reason ("headers", "request",
        #: "rate", "waited", "busy").
        self.cuts: Counter[str] = Counter()
        self._peer_log = _PeerLog()

    @property
    def header_timeout(self) -> float | None:
        return self.limits.header_timeout

    def _warn(self, peer: str, reason: str, text: str) -> None:
        since = self._peer_log.due(peer, reason, self.clock.seconds())
        if since is not None:
            log.warn(
                "{text}{also}",
                text=text,
                also=f" ({since} more since it was last said)" if since else "",
            )

    def cut(self, transport: ITransport | None, reason: str, why: str) -> None:
        """Close a connection whose request is too slow (logged once a
        minute per address and reason)."""
        if transport is None:
            return
        self.cuts[reason] += 1
        peer = _host(transport)
        self._warn(peer, reason, f"Closed a connection from {peer}: {why}")
        if self.answers_refusals:
            transport.write(_response(b"408 Request Timeout", why.replace("its ", "the ", 1)))
            transport.loseConnection()
        else:
            _close_at_once(transport)

    def refuse_busy(self, transport: ITransport) -> None:
        """Close a connection whose body cannot be kept in memory now."""
        self.cuts["busy"] += 1
        peer = _host(transport)
        self._warn(
            peer, "busy",
            f"Refused a request body from {peer}: the bodies in memory are at the budget",
        )
        if self.answers_refusals:
            transport.write(_response(
                b"503 Service Unavailable", "busy: try again shortly", b"Retry-After: 5\r\n"
            ))
            transport.loseConnection()
        else:
            _close_at_once(transport)

    def log(self, request: HTTPRequest) -> None:
        pass


class CameraSite(BoundedSite):
    """The camera port's site: one body limit, ``max_body_bytes``. A
    request cut off or refused gets its connection closed without an
    answer: a camera takes any answer for success, and keeps its record to
    send again only when it gets none (PROTOCOL.md section 4)."""

    answers_refusals = False

    def __init__(
        self,
        resource: IResource,
        *,
        max_body_bytes: int,
        idle_timeout: float,
        limits: RequestLimits,
        body_budget: BodyBudget | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        # Twisted's parsing of POST bodies into request.args is pure cost:
        # parsing each Content-Type and multipart registration with the email
        # package took half the CPU of holding comet polls (bench/analysis.md).
        super().__init__(
            resource, limits=limits, body_budget=body_budget, idle_timeout=idle_timeout,
            clock=clock,
        )
        self.max_body_bytes = max_body_bytes


class _CountedConnection(ProtocolWrapper):
    peer_host = ""

    def being_answered(self) -> bool:
        """Whether a complete request of this connection is being answered
        (a held comet poll, a push being decided): not one to close."""
        return bool(getattr(self.wrappedProtocol, "_handlingRequest", False))


class ConnectionLimits(WrappingFactory):
    """At most ``max_connections`` connections in all and
    ``max_per_address`` from one address: a flood or a pile of idle
    connections from one host cannot take the service from the cameras.

    A connection over its address's limit is closed at once. When every
    connection is taken, a newcomer from an address with fewer connections
    than the address holding the most takes the place of that address's
    oldest connection not being answered (so a camera gets in while hosts
    with many connections hold them all); otherwise it is closed at once.
    Refused and displaced connections are logged once a minute per
    address, with how many there were meanwhile."""

    protocol = _CountedConnection
    noisy = False

    def __init__(self, wrapped: Site, *, max_connections: int, max_per_address: int) -> None:
        super().__init__(wrapped)
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        #: Open connections per address, not counting the ones being closed
        #: to make room.
        self.per_address: dict[str, int] = {}
        self.displaced = 0
        self._by_address: dict[str, dict[_CountedConnection, None]] = {}
        self._closing: set[_CountedConnection] = set()
        self._clock: IReactorTime = getattr(wrapped, "reactor", None) or _global_clock()
        self._peer_log = _PeerLog()

    @property
    def open_connections(self) -> int:
        return len(self.protocols) - len(self._closing)

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        host = str(getattr(addr, "host", ""))
        if self.per_address.get(host, 0) >= self.max_per_address:
            self._refuse(host, f"{self.per_address[host]} connections open from it")
            return None
        if self.open_connections >= self.max_connections and not self._make_room(host):
            self._refuse(host, f"{self.open_connections} connections open in all")
            return None
        protocol = super().buildProtocol(addr)
        if isinstance(protocol, _CountedConnection):
            protocol.peer_host = host
        return protocol

    def _make_room(self, newcomer: str) -> bool:
        if not self.per_address:
            return False
        heaviest = max(self.per_address, key=lambda host: self.per_address[host])
        if self.per_address[heaviest] <= self.per_address.get(newcomer, 0) + 1:
            return False
        for connection in self._by_address.get(heaviest, {}):
            if connection in self._closing or connection.being_answered():
                continue
            self._closing.add(connection)
            self._count(heaviest, -1)
            self.displaced += 1
            since = self._peer_log.due(heaviest, "displaced", self._clock.seconds())
            if since is not None:
                log.warn(
                    "Closing connections from {peer} ({count} open) to let others in: "
                    "every connection is taken{also}",
                    peer=heaviest,
                    count=self.per_address.get(heaviest, 0) + 1,
                    also=f" ({since} more since it was last said)" if since else "",
                )
            if connection.transport is not None:
                _close_at_once(connection.transport)
            return True
        return False

    def _refuse(self, host: str, why: str) -> None:
        since = self._peer_log.due(host, "refused", self._clock.seconds())
        if since is not None:
            log.warn(
                "Refusing connections from {peer}: {why}{also}",
                peer=host,
                why=why,
                also=f" ({since} more since it was last said)" if since else "",
            )

    def _count(self, host: str, change: int) -> None:
        remaining = self.per_address.get(host, 0) + change
        if remaining > 0:
            self.per_address[host] = remaining
        else:
            self.per_address.pop(host, None)

    def registerProtocol(self, protocol: Any) -> None:
        super().registerProtocol(protocol)
        host = getattr(protocol, "peer_host", "")
        self._count(host, 1)
        self._by_address.setdefault(host, {})[protocol] = None

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        host = getattr(protocol, "peer_host", "")
        if protocol in self._closing:
            self._closing.discard(protocol)
        else:
            self._count(host, -1)
        connections = self._by_address.get(host)
        if connections is not None:
            connections.pop(protocol, None)
            if not connections:
                del self._by_address[host]
