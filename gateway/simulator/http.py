"""The camera's HTTP client: POSTs the way camera firmware sends them.

One ``HTTPConnectionPool`` per camera keeps its connections alive (a camera
sends many requests on one socket), no automatic retry (the firmware decides
about re-sending), no ``User-Agent``, no ``Expect: 100-continue``, a
``Content-Length`` on every body, and one overall deadline per exchange: a
request that does not complete in time is a transport failure, exactly like
a refused or reset connection. Any complete HTTP response is a success,
whatever its status.

A camera whose embedded client cannot decode ``Transfer-Encoding: chunked``
(``decodes_chunked=False``; PROTOCOL.md section 9, "HTTP framing") fails on
such a reply: it reads no JSON from it, and the exchange is a
:class:`ChunkedReply` failure.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import attrs
from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IConsumer,
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    UNKNOWN_LENGTH,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

__all__ = [
    "CameraHttpClient",
    "ChunkedReply",
    "HttpReply",
    "TransportFailure",
    "loopback_bind_address",
]


class TransportFailure(Exception):
    """No complete HTTP response: refused, reset, aborted, timed out, TLS error.

    ``str(failure)`` is a short reason for the log.
    """


class ChunkedReply(TransportFailure):
    """The reply was chunked and this camera's client cannot decode that."""


@attrs.frozen
class HttpReply:
    """A complete HTTP response (any status counts as delivered)."""

    code: int
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    elapsed: float = 0.0


@implementer(IBodyProducer)
class _BytesProducer:
    """A body of known length written in one go (no cooperator, no reactor import)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IOpenSSLClientConnectionCreator)
class _AnonymousTLS:
    """TLS without certificate checks: a camera in "anonymous" HTTPS mode."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname.encode("idna")
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)
        self._context.set_verify(SSL.VERIFY_NONE, lambda *args: True)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_tlsext_host_name(self._hostname)
        connection.set_connect_state()
        return connection


@implementer(IPolicyForHTTPS)
class _CameraTLSPolicy:
    """Anonymous TLS, or certificate checks against one CA ("CA certificate" mode)."""

    def __init__(self, ca_pem: bytes | None) -> None:
        self._trust = Certificate.loadPEM(ca_pem) if ca_pem else None

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        host = hostname.decode("ascii")
        if self._trust is None:
            return _AnonymousTLS(host)
        creator: IOpenSSLClientConnectionCreator = optionsForClientTLS(host, trustRoot=self._trust)
        return creator


def loopback_bind_address(address: str, server_urls: list[str]) -> str | None:
    """``address`` if the camera can use it as its source address, else ``None``.

    Binding only makes sense when every server is on IPv4 loopback (a
    127.0.0.x source cannot reach anything else), and only where the system
    lets us bind that address (Linux binds all of 127/8; others may not).
    """
    try:
        if not ipaddress.IPv4Address(address).is_loopback:
            return None
    except ValueError:
        return None
    for url in server_urls:
        host = urlsplit(url).hostname or ""
        if host == "localhost":
            continue
        try:
            if not ipaddress.IPv4Address(host).is_loopback:
                return None
        except ValueError:
            return None
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((address, 0))
    except OSError:
        return None
    finally:
        probe.close()
    return address


@implementer(IAgentEndpointFactory)
class _CameraEndpoints:
    """Plain TCP connections, as a camera makes them: to an address, with no
    name resolution and no staggered connection attempts (a refused
    connection fails at once, as on the camera)."""

    def __init__(self, reactor: Any, tls: Any, bind_address: str | None) -> None:
        self._reactor = reactor
        self._tls = tls
        self._bind = (bind_address, 0) if bind_address else None

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        version: int
        try:
            version = ipaddress.ip_address(host).version
        except ValueError:
            version = 0
        endpoint: IStreamClientEndpoint
        if version == 6:
            endpoint = TCP6ClientEndpoint(self._reactor, host, uri.port, bindAddress=self._bind)
        elif version == 4:
            endpoint = TCP4ClientEndpoint(self._reactor, host, uri.port, bindAddress=self._bind)
        else:
            endpoint = HostnameEndpoint(self._reactor, host, uri.port, bindAddress=self._bind)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


class CameraHttpClient:
    """One camera's HTTP client (its own keep-alive connection pool)."""

    def __init__(
        self,
        reactor: Any,
        bind_address: str | None = None,
        tls_ca: bytes | None = None,
        connections: int = 2,
        decodes_chunked: bool = True,
    ) -> None:
        self._reactor = reactor
        self._decodes_chunked = decodes_chunked
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        # Pushes keep one connection; a held comet poll needs a second one.
        self._pool.maxPersistentPerHost = connections
        # The firmware never replays a request on its own: re-sending is its
        # push logic's decision, seen by the server as a new request.
        self._pool.retryAutomatically = False
        self._agent = Agent.usingEndpointFactory(
            reactor,
            _CameraEndpoints(reactor, _CameraTLSPolicy(tls_ca), bind_address),
            pool=self._pool,
        )

    async def post(self, url: str, body: bytes, content_type: str, timeout: float) -> HttpReply:
        """POST ``body``; a :class:`HttpReply` for any complete response.

        Raises :class:`TransportFailure` when there is none within ``timeout``
        seconds. Cancelling the call aborts the connection and raises
        ``CancelledError``.
        """
        started = self._reactor.seconds()
        exchange: Deferred[tuple[int, bytes]] = Deferred.fromCoroutine(
            self._exchange(url, body, content_type)
        )
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            exchange.cancel()

        timer = self._reactor.callLater(timeout, expire)
        try:
            code, data = await exchange
        except ChunkedReply:
            raise
        except Exception as error:
            if timed_out:
                raise TransportFailure(f"no reply within {timeout:g} s") from None
            if _is_cancellation(error):
                raise CancelledError() from None
            raise TransportFailure(_describe(error)) from None
        finally:
            if timer.active():
                timer.cancel()
        return HttpReply(code, data, self._reactor.seconds() - started)

    async def _exchange(self, url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        headers = Headers({b"Content-Type": [content_type.encode("ascii")]})
        response = await self._agent.request(
            b"POST", url.encode("ascii"), headers, _BytesProducer(body)
        )
        reader = _read_body(response)
        data = await reader.finished
        if not self._decodes_chunked and response.length is UNKNOWN_LENGTH and reader.framed:
            # No Content-Length, yet the body ended before the connection did:
            # it was chunked. A client without chunked decoding sees chunk-size
            # lines where it expects JSON and gives up on the exchange.
            raise ChunkedReply("chunked reply: this camera cannot decode Transfer-Encoding")
        return response.code, data

    def close(self) -> Deferred[None]:
        """Close the kept-alive connections."""
        closing: Deferred[None] = self._pool.closeCachedConnections()
        return closing


class _BodyReader(Protocol):
    """Collects a response body; a body cut short is a transport failure."""

    def __init__(self, finished: Deferred[bytes]) -> None:
        self.finished = finished
        self._parts: list[bytes] = []
        # True when the body ended by its own framing (length or chunks),
        # False when it ended with the connection.
        self.framed = True

    def dataReceived(self, data: bytes) -> None:
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            # PotentialDataLoss: a response without a length ends when the
            # server closes; that is a complete response too.
            self.framed = reason.check(PotentialDataLoss) is None
            self.finished.callback(b"".join(self._parts))
        else:
            self.finished.errback(reason)


def _read_body(response: IResponse) -> _BodyReader:
    """Start reading the body; ``reader.finished`` fires with it."""
    reader: _BodyReader | None = None

    def cancel(deferred: Deferred[bytes]) -> None:
        if reader is not None and reader.transport is not None:
            reader.transport.stopProducing()  # type: ignore[attr-defined]

    finished: Deferred[bytes] = Deferred(cancel)
    reader = _BodyReader(finished)
    response.deliverBody(reader)
    return reader


def _is_cancellation(error: BaseException) -> bool:
    if isinstance(error, CancelledError):
        return True
    reasons = getattr(error, "reasons", None) or []
    return any(isinstance(reason, Failure) and reason.check(CancelledError) for reason in reasons)


def _describe(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        inner = reasons[0]
        return f"{type(error).__name__}: {type(inner.value).__name__}"
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:160] if first else type(error).__name__
