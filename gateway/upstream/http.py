"""The HTTP(S) client of the cloud link: one persistent connection pool,
certificate verification, signed requests, a time limit on every request
(measured on the clock that is passed in), response bodies always read.

The requests go through a treq ``HTTPClient`` over that pool; another client
with the same ``request`` (treq's ``StubTreq`` over a stub cloud's Klein app,
in tests) can be passed in instead.
"""

from __future__ import annotations

import email.utils
import enum
import math
import re
import typing
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import treq.client
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

from gateway import __version__
from gateway.reactor import IGatewayReactor
from gateway.schema import ConfigError
from gateway.upstream.link import FailureKind, LinkFailure
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.signing import new_message_id, signature_headers

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "RETRY_AFTER_LIMIT",
    "HTTPRequester",
    "UpstreamClient",
    "UpstreamResponse",
    "UpstreamTLSPolicy",
    "Verdict",
    "classify",
    "load_tls_policy",
    "parse_retry_after",
]

DEFAULT_BODY_LIMIT = 1024 * 1024
"""Bytes of a response body read at most (beyond: the answer is unusable)."""

RETRY_AFTER_LIMIT = 3600.0
"""The longest ``Retry-After`` honoured, in seconds (a longer one waits this long)."""

USER_AGENT = f"anpr-gateway/{__version__}"


class Verdict(str, enum.Enum):
    """What an HTTP status means for the request that got it."""

    ACCEPTED = "accepted"  # 2xx
    REJECTED = "rejected"  # a permanent 4xx: this request will never be accepted
    TRANSIENT = "transient"  # 408, 409, 429, 5xx (and 1xx/3xx): try again later
    AUTH = "auth"  # 401, 403: credentials refused
    ENDPOINT = "endpoint"  # 404, 405: nothing is served there (a wrong URL)


def classify(status: int) -> Verdict:
    """The :class:`Verdict` of an HTTP status."""
    if 200 <= status < 300:
        return Verdict.ACCEPTED
    if status in (401, 403):
        return Verdict.AUTH
    if status in (404, 405):
        return Verdict.ENDPOINT
    if status in (408, 409, 429) or status >= 500 or status < 200 or 300 <= status < 400:
        return Verdict.TRANSIENT
    return Verdict.REJECTED


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` value (seconds, or an HTTP date) as a delay in
    seconds from ``now``, at most :data:`RETRY_AFTER_LIMIT`; None when absent
    or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(int(text)), RETRY_AFTER_LIMIT)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # HTTP dates are GMT
    delay = (when - now).total_seconds()
    if math.isnan(delay):
        return None
    return min(max(0.0, delay), RETRY_AFTER_LIMIT)


@attrs.frozen
class UpstreamResponse:
    """An answer of the cloud, its body read completely."""

    status: int
    headers: Headers = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)

    @property
    def verdict(self) -> Verdict:
        return classify(self.status)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode("latin-1"))
        return values[0].decode("latin-1") if values else None

    def text(self, limit: int = 4096) -> str:
        """The body as text for logs and dead letters (bounded)."""
        return self.body[:limit].decode("utf-8", "replace")

    def failure(self, now: datetime, what: str) -> LinkFailure:
        """This answer as a :class:`LinkFailure` (for a non-accepted, non-rejected status)."""
        verdict = self.verdict
        kind = {
            Verdict.AUTH: FailureKind.AUTH,
            Verdict.ENDPOINT: FailureKind.ENDPOINT,
        }.get(verdict, FailureKind.SERVER)
        detail = _one_line(self.text(200))
        reason = f"{what}: HTTP {self.status}" + (f" ({detail})" if detail else "")
        if verdict is Verdict.AUTH:
            reason += ": the cloud refuses the gateway's signature or identity"
        elif verdict is Verdict.ENDPOINT:
            reason += ": nothing is served at that URL (check [upstream] url)"
        return LinkFailure(
            kind,
            reason,
            status=self.status,
            retry_after=parse_retry_after(self.header("Retry-After"), now),
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


class BodyTooLarge(Exception):
    """The response body exceeded the limit for its request."""


class _BodyReader(Protocol):
    """Reads a response body up to a limit; cancelling it aborts the connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, finished: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            self.finished.errback(
                Failure(BodyTooLarge(f"response body over {self.limit} bytes"))
            )
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def _read_body(response: IResponse, limit: int) -> Deferred[bytes]:
    reader = _BodyReader(limit)
    response.deliverBody(reader)
    return reader.finished


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL
)


def _pem_certificates(data: bytes, key: str) -> list[Certificate]:
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ConfigError(key, "holds no PEM certificate")
    try:
        return [Certificate.loadPEM(block) for block in blocks]
    except SSL.Error as error:
        raise ConfigError(key, f"holds an unreadable certificate ({error})") from None


def _read_file(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ConfigError(key, f"cannot read {path}: {error.strerror}") from None


@implementer(IPolicyForHTTPS)
class UpstreamTLSPolicy:
    """TLS for the cloud link: the server's certificate must chain to the
    trusted roots and name the host of the URL (service-identity); a client
    certificate is presented when one is configured."""

    def __init__(
        self,
        trust_roots: list[Certificate] | None = None,
        client_certificate: PrivateCertificate | None = None,
        client_chain: list[Certificate] | None = None,
    ) -> None:
        self._trust = (
            trustRootFromCertificates(trust_roots) if trust_roots else platformTrust()
        )
        self._client = client_certificate
        self._extra: dict[str, Any] = {}
        if client_chain:
            self._extra["extraCertChain"] = [cert.original for cert in client_chain]

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(
            hostname.decode("ascii"),
            trustRoot=self._trust,
            clientCertificate=self._client,
            extraCertificateOptions=dict(self._extra),
        )


def load_tls_policy(config: UpstreamSettings) -> UpstreamTLSPolicy:
    """Read ``ca_file`` and the client certificate of ``config`` (at start,
    before the reactor runs). Raises :class:`ConfigError`."""
    roots = None
    if config.ca_file is not None:
        roots = _pem_certificates(_read_file(config.ca_file, "ca_file"), "ca_file")
    client: PrivateCertificate | None = None
    chain: list[Certificate] = []
    if config.client_cert is not None:
        cert_pem = _read_file(config.client_cert, "client_cert")
        certificates = _pem_certificates(cert_pem, "client_cert")
        key_name = "client_key" if config.client_key else "client_cert"
        key_pem = _read_file(config.client_key, key_name) if config.client_key else cert_pem
        try:
            # loadPEM takes the first certificate and the private key found in
            # the text, and refuses a key that does not match the certificate.
            client = PrivateCertificate.loadPEM(certificates[0].dumpPEM() + b"\n" + key_pem)
        except Exception as error:  # pyOpenSSL raises several kinds here
            raise ConfigError(
                key_name, f"holds no private key matching client_cert ({describe_error(error)})"
            ) from None
        chain = certificates[1:]
    return UpstreamTLSPolicy(roots, client, chain)


class HTTPRequester(typing.Protocol):
    """What the cloud link needs of an HTTP client: treq's
    ``HTTPClient.request`` with the arguments it is given here."""

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers,
        data: bytes | None,
        params: dict[str, str] | None,
        allow_redirects: bool,
        unbuffered: bool,
        reactor: Any,
    ) -> Deferred[Any]:
        """Fires with the response (an ``IResponse``) once its headers are in."""
        ...


class UpstreamClient:
    """Signed requests to the cloud over one persistent connection pool.

    ``reactor`` makes the connections; ``clock`` times the requests (every
    request has a time limit) and gives the signing timestamps. ``http``
    (default: treq over the pool, verifying TLS by ``tls``) sends them; with
    another client there is no pool of ours and ``tls`` is not used.
    """

    def __init__(
        self,
        reactor: IGatewayReactor,
        config: UpstreamSettings,
        *,
        clock: IReactorTime | None = None,
        tls: IPolicyForHTTPS | None = None,
        http: HTTPRequester | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._config = config
        self._key = config.signing_key
        self.pool: HTTPConnectionPool | None = None
        if http is None:
            self.pool = HTTPConnectionPool(reactor, persistent=True)
            # Delivery, the sync feed, images and decisions may overlap.
            self.pool.maxPersistentPerHost = 4
            self.pool.cachedConnectionTimeout = 120
            policy = tls if tls is not None else load_tls_policy(config)
            agent = Agent(
                reactor,
                contextFactory=policy,
                pool=self.pool,
                connectTimeout=config.request_timeout_seconds,
            )
            http = treq.client.HTTPClient(agent)
        self._http: HTTPRequester = http
        self._inflight: set[Deferred[UpstreamResponse]] = set()
        self._closed = False

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
        body_limit: int = DEFAULT_BODY_LIMIT,
    ) -> UpstreamResponse:
        """Send one signed request to ``url + path`` and read the whole answer.

        Whatever the status, the answer is returned; a request that gets no
        answer (connection refused, TLS failure, time-out, cancelled by
        :meth:`close`) raises :class:`LinkFailure` of kind connectivity.
        ``message_id`` is the ``webhook-id`` (reuse it when retrying the same
        request); a fresh one is made when None.
        """
        if self._closed:
            raise LinkFailure(FailureKind.CONNECTIVITY, "the cloud link is stopped")
        limit = self._config.request_timeout_seconds if timeout is None else timeout
        payload = body if body is not None else b""
        headers: dict[str, str] = {
            "User-Agent": USER_AGENT,
            "anpr-gateway-id": self._config.gateway_id,
            **signature_headers(
                self._key,
                message_id or new_message_id(),
                int(self._clock.seconds()),
                payload,
            ),
        }
        if body is not None:
            headers["Content-Type"] = content_type
        url = self._config.url + path
        exchange = Deferred.fromCoroutine(
            self._exchange(method, url, headers, body, params, body_limit)
        )
        exchange.addTimeout(limit, self._clock)
        self._inflight.add(exchange)

        def forget(result: object) -> object:
            self._inflight.discard(exchange)
            return result

        exchange.addBoth(forget)
        what = f"{method} {path}"
        try:
            return await exchange
        except defer.TimeoutError:
            raise LinkFailure(
                FailureKind.CONNECTIVITY, f"{what}: no answer within {limit:g} s"
            ) from None
        except CancelledError:
            raise LinkFailure(FailureKind.CONNECTIVITY, f"{what}: cancelled") from None
        except BodyTooLarge as error:
            raise LinkFailure(FailureKind.SERVER, f"{what}: {error}") from None
        except LinkFailure:
            raise
        except Exception as error:
            raise LinkFailure(
                FailureKind.CONNECTIVITY, f"{what}: {describe_error(error)}"
            ) from None

    async def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        params: Mapping[str, str] | None,
        body_limit: int,
    ) -> UpstreamResponse:
        response: IResponse = await self._http.request(
            method,
            url,
            headers=Headers({name: [value] for name, value in headers.items()}),
            data=body,
            params=dict(params) if params else None,
            allow_redirects=False,
            unbuffered=True,
            reactor=self._reactor,
        )
        # Always read the body: an unread body keeps the connection out of the pool.
        content = await _read_body(response, body_limit)
        return UpstreamResponse(status=response.code, headers=response.headers, body=content)

    def cancel_all(self) -> None:
        """Cancel every request in flight (their callers see a connectivity failure)."""
        for exchange in list(self._inflight):
            exchange.cancel()

    def close(self) -> Deferred[None]:
        """Cancel what is in flight and close the pooled connections."""
        self._closed = True
        self.cancel_all()
        if self.pool is None:
            return defer.succeed(None)
        closing: Deferred[None] = self.pool.closeCachedConnections()
        return closing


def describe_error(error: BaseException) -> str:
    """A one-line reason for a failed exchange (TLS and connection errors unwrapped)."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        inner = reasons[0].value if isinstance(reasons[0], Failure) else reasons[0]
        if isinstance(inner, BaseException):
            return describe_error(inner)
    if isinstance(error, SSL.Error):
        return f"TLS failed: {_ssl_reason(error)}"
    if isinstance(error, VerificationError):
        names = ", ".join(_identity(problem) for problem in error.errors)
        return f"TLS failed: the cloud's certificate is not for {names}"
    text = str(error).strip() or type(error).__name__
    name = type(error).__name__
    return _one_line(text if name in text else f"{name}: {text}")


def _identity(problem: Any) -> str:
    wanted = getattr(problem, "mismatched_id", problem)
    for name in ("hostname", "ip", "uri"):
        value = getattr(wanted, name, None)
        if value is not None:
            return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return str(wanted)


def _ssl_reason(error: SSL.Error) -> str:
    details: list[str] = []
    for item in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(item, tuple) and item:
            details.append(str(item[-1]))
    return ", ".join(details) or str(error) or "handshake error"

