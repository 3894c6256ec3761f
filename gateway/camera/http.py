"""twisted.web plumbing for camera requests: bounded bodies, kept in memory.

Twisted's stock request spools any body over 100 kB to a temporary file and
accepts bodies of any size. A camera port must refuse an oversized body before
buffering it (no disk, no memory), and keep the bodies it accepts (images of a
few MB at most) in memory.

:class:`BoundedRequest` serves any site that says how large a body may be: a
``body_limit(method, path)`` method (the admin site: a limit per route), or
else a ``max_body_bytes`` attribute (the camera site: one limit).
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import IO, Any, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

log = Logger()


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


def _too_large_response(limit: int) -> bytes:
    body = json.dumps(
        {"error": f"body too large: the limit is {limit} bytes"}, separators=(",", ":")
    ).encode()
    return (
        b"HTTP/1.1 413 Request Entity Too Large\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(body)
    ) + body


class BoundedRequest(Request):
    """A request whose body is held in memory up to the site's limit, and
    whose headers must be complete within the site's header timeout.

    A body announced (``Content-Length``) or found (chunked) to be over the
    limit is answered 413 at once and the connection is closed: the rest of
    the body is never stored. Headers that trickle in (a slow-loris client
    holding connections open) get the connection closed.
    """

    refused = False
    _received = 0
    _body_limit = 8 << 20
    _header_deadline: IDelayedCall | None = None

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        timeout = getattr(getattr(channel, "site", None), "header_timeout", None)
        if timeout:
            self._header_deadline = channel.callLater(timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        transport = self._transport()
        log.warn(
            "Closed a connection from {peer}: its request headers took too long",
            peer=getattr(transport.getPeer(), "host", "?"),
        )
        transport.loseConnection()

    def _headers_done(self) -> None:
        deadline, self._header_deadline = self._header_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def connectionLost(self, reason: Any) -> None:
        self._headers_done()
        super().connectionLost(reason)

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
        self._headers_done()
        self._received = 0
        self._body_limit = self._limit_for_this_request()
        if length is not None and length > self._limit():
            self._refuse(announced=length)
            return
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse(announced=None)
            return
        cast(IO[bytes], self.content).write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            return
        super().requestReceived(command, path, version)

    def _refuse(self, announced: int | None) -> None:
        self.refused = True
        self.content = _Discard()
        # The channel answers "Expect: 100-continue" once the headers are in,
        # after this: the client must not be told to send the body after all.
        self.requestHeaders.removeHeader(b"expect")
        limit = self._limit()
        transport = self._transport()
        peer = transport.getPeer()
        log.warn(
            "Refused a request body over {limit} bytes from {peer} ({size})",
            limit=limit,
            peer=getattr(peer, "host", "?"),
            size=f"{announced} bytes announced" if announced is not None else "chunked",
        )
        transport.write(_too_large_response(limit))
        transport.loseConnection()


class CameraSite(Site):
    """A Site for camera requests: bounded in-memory bodies, header and idle
    timeouts, no access log lines (a busy site logs every push elsewhere).

    The timeouts run on ``clock`` (default: the global reactor)."""

    requestFactory = BoundedRequest
    noisy = False

    def __init__(
        self,
        resource: IResource,
        *,
        max_body_bytes: int,
        idle_timeout: float,
        header_timeout: float | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        # The camera server reads every body itself (it routes by content):
        # Twisted's parsing of POST bodies into request.args is pure cost.
        # Parsing each Content-Type and multipart registration with the email
        # package took half the CPU of holding comet polls (bench/analysis.md).
        super().__init__(
            resource, timeout=idle_timeout, parsePOSTFormSubmission=False, reactor=clock
        )
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout
        self.displayTracebacks = False

    def log(self, request: HTTPRequest) -> None:
        pass


class _CountedConnection(ProtocolWrapper):
    peer_host = ""


class ConnectionLimits(WrappingFactory):
    """At most ``max_connections`` connections in all and
    ``max_per_address`` from one address: a flood or a pile of idle
    connections from one host cannot take the service from the cameras.
    A connection over a limit is closed at once; each refusing address is
    logged once until it is under its limit again."""

    protocol = _CountedConnection
    noisy = False

    def __init__(self, wrapped: Site, *, max_connections: int, max_per_address: int) -> None:
        super().__init__(wrapped)
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.per_address: dict[str, int] = {}
        self._refusing: set[str] = set()

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        host = str(getattr(addr, "host", ""))
        if len(self.protocols) >= self.max_connections:
            self._refuse(host, f"{len(self.protocols)} connections open in all")
            return None
        if self.per_address.get(host, 0) >= self.max_per_address:
            self._refuse(host, f"{self.per_address[host]} connections open from it")
            return None
        self._refusing.discard(host)
        protocol = super().buildProtocol(addr)
        if isinstance(protocol, _CountedConnection):
            protocol.peer_host = host
        return protocol

    def _refuse(self, host: str, why: str) -> None:
        if host not in self._refusing:
            self._refusing.add(host)
            log.warn("Refusing connections from {peer}: {why}", peer=host, why=why)

    def registerProtocol(self, protocol: Any) -> None:
        super().registerProtocol(protocol)
        host = getattr(protocol, "peer_host", "")
        self.per_address[host] = self.per_address.get(host, 0) + 1

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        host = getattr(protocol, "peer_host", "")
        remaining = self.per_address.get(host, 1) - 1
        if remaining > 0:
            self.per_address[host] = remaining
        else:
            self.per_address.pop(host, None)
