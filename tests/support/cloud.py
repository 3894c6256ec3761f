"""A stub cloud for the upstream tests: a small Klein app that checks every
request's signature with its own HMAC code (not the gateway's), deduplicates
events on their id and remembers the order it received them in, as a cloud
developer would write it from docs/upstream-api.md.

The unit tests reach it in memory (:meth:`StubCloud.in_memory`: treq's
``StubTreq`` over the app, a :class:`CloudLine` the gateway's HTTP client is
given); the end-to-end tests on a loopback port (:meth:`StubCloud.listen`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs
from klein import Klein
from treq.testing import StubTreq
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest, IResponse
from twisted.web.server import Site

reactor: Any = global_reactor

# 2025-03-01T12:00:00Z: the test clock starts here, so signing timestamps
# look like real ones.
START = 1740830400.0
SECRET_BYTES = b"anpr-gateway test signing key 32"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode("ascii")
TOLERANCE = 300  # seconds a signed timestamp may be off, as a cloud would check


def expected_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The stub's own Standard Webhooks computation (not the gateway's)."""
    to_sign = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()


def signature_valid(
    key: bytes, headers: Mapping[str, str | None], body: bytes, now: float
) -> str | None:
    """None when the request is correctly signed, else why not."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not timestamp or not signatures:
        return "signature headers missing"
    if abs(now - int(timestamp)) > TOLERANCE:
        return "timestamp out of tolerance"
    wanted = expected_signature(key, msg_id, timestamp, body)
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, wanted):
            return None
    return "no matching signature"


@attrs.define
class Scripted:
    """A canned answer the stub gives instead of its normal one."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.define
class Received:
    method: str
    path: str
    headers: dict[str, str | None]
    body: bytes
    query: dict[str, str]


class _TrackingSite(Site):
    """A Site that knows its open connections, so a test can cut them."""

    def __init__(self, resource: Any) -> None:
        super().__init__(resource)
        self.noisy = False
        self.open: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        self.open.add(channel)
        original = channel.connectionLost

        def lost(reason: Any) -> None:
            self.open.discard(channel)
            original(reason)

        channel.connectionLost = lost
        return channel


class CloudLine:
    """The network between the gateway and a stub cloud, in memory: an HTTP
    client with treq's ``request`` (what ``UpstreamClient`` is given) over
    ``StubTreq``. Nothing moves on its own: :meth:`flush` moves every byte
    that can move now. While :attr:`down`, connections are refused."""

    def __init__(self, resource: Any) -> None:
        # StubTreq's request functions are set on it at run time.
        self._stub: Any = StubTreq(resource)
        self.down = False

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[IResponse]:
        if self.down:
            return fail(Failure(ConnectionRefusedError("the stub cloud is down")))
        response: Deferred[IResponse] = self._stub.request(method, url, **kwargs)
        return response

    def _connections(self) -> list[Any]:
        # treq's RequestTraversalAgent keeps one iosim pump per connection.
        return list(self._stub._agent._pumps)

    def flush(self) -> None:
        """Deliver requests, answers and closes until nothing moves (answers
        that cause new requests included)."""
        for _ in range(100_000):
            moved = [pump.flush() for pump in self._connections()]
            self._stub.flush()  # forgets the connections closed on both ends
            if not any(moved):
                return
        raise AssertionError("the stub cloud's connections never settle")

    def cut(self) -> None:
        """Abort every connection in flight (each side sees it lost)."""
        for pump in self._connections():
            pump.serverIO.abortConnection()
        self.flush()

    @property
    def open_connections(self) -> int:
        return len(self._connections())


class StubCloud:
    """The other side of the upstream API, as a cloud developer would write
    it from docs/upstream-api.md: verifies signatures, deduplicates events on
    their id, remembers the order it received them in."""

    app = Klein()

    def __init__(self, key: bytes, now: Callable[[], float]) -> None:
        self.key = key
        self.now = now
        self.requests: list[Received] = []
        self.bad_signatures: list[str] = []
        self.events: dict[str, dict[str, Any]] = {}  # by id (deduplicated)
        self.arrivals: list[str] = []  # ids in the order first received
        self.duplicates = 0
        self.batches: list[list[str]] = []
        self.images: dict[tuple[str, str], bytes] = {}
        self.image_before_event: list[tuple[str, str]] = []
        self.reject_ids: set[str] = set()
        self.refuse_credentials = False
        self.scripts: dict[str, list[Scripted]] = {}
        self.decide_answer: Any = {"open": True, "reason": "paid"}
        self.decide_cancelled = 0
        self.sync_pages: Callable[[str | None], dict[str, Any]] = lambda cursor: {
            "cursor": cursor or "c0",
            "more": False,
        }
        self.site = _TrackingSite(self.app.resource())
        self.port: Any = None  # IListeningPort while listening
        self.port_number = 0
        self.line: CloudLine | None = None  # when reached in memory

    # -- running ----------------------------------------------------------

    def in_memory(self) -> CloudLine:
        """Serve in memory: the returned line is the gateway's HTTP client."""
        self.line = CloudLine(self.app.resource())
        return self.line

    def listen(self, port: int = 0) -> int:
        self.port = reactor.listenTCP(port, self.site, interface="127.0.0.1")
        self.port_number = self.port.getHost().port
        return self.port_number

    @property
    def url(self) -> str:
        if self.line is not None:
            return "http://cloud.test"
        return f"http://127.0.0.1:{self.port_number}"

    async def go_down(self) -> None:
        """Stop listening and cut every connection: the cloud is unreachable."""
        if self.line is not None:
            self.line.down = True
            self.line.cut()
            return
        if self.port is not None:
            port, self.port = self.port, None
            await maybeDeferred(port.stopListening)
        await self.cut_connections()

    async def cut_connections(self) -> None:
        if self.line is not None:
            self.line.cut()
            return
        for channel in list(self.site.open):
            inner = getattr(channel, "_channel", channel)  # HTTP/1.1 or HTTP/2 wrapper
            transport = getattr(inner, "transport", None)
            if transport is not None:
                transport.abortConnection()
        for _ in range(500):
            if not self.site.open:
                return
            await deferLater(reactor, 0.01, lambda: None)

    def come_up(self) -> None:
        if self.line is not None:
            self.line.down = False
            return
        self.listen(self.port_number)

    def requests_to(self, method: str, path_prefix: str) -> list[Received]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # -- request handling -------------------------------------------------

    def _receive(self, request: IRequest) -> tuple[Received, bytes | None]:
        """Record the request; return the refusal body if it must be refused."""
        body = request.content.read() if request.content is not None else b""

        def header(name: str) -> str | None:
            value = request.getHeader(name)
            return value.decode("latin-1") if isinstance(value, bytes) else value

        names = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")
        received = Received(
            method=request.method.decode(),
            path=request.path.decode(),
            headers={name: header(name) for name in (*names, "anpr-gateway-id")},
            body=body,
            query={
                key.decode(): values[0].decode() for key, values in (request.args or {}).items()
            },
        )
        self.requests.append(received)
        problem = signature_valid(self.key, received.headers, body, self.now())
        if problem is not None or self.refuse_credentials:
            self.bad_signatures.append(problem or "credentials refused")
            request.setResponseCode(401)
            return received, json.dumps({"error": problem or "unknown gateway"}).encode()
        script = self.scripts.get(received.path.split("/")[1])
        if script:
            answer = script.pop(0)
            request.setResponseCode(answer.status)
            for name, value in answer.headers.items():
                request.setHeader(name, value)
            return received, answer.body
        return received, None

    @app.route("/events", methods=["POST"])
    def receive_events(self, request: IRequest) -> bytes:
        received, refusal = self._receive(request)
        if refusal is not None:
            return refusal
        batch = json.loads(received.body)
        assert batch["gateway"] == received.headers["anpr-gateway-id"]
        ids = [event["id"] for event in batch["events"]]
        poison = [event_id for event_id in ids if event_id in self.reject_ids]
        if poison:
            request.setResponseCode(400)
            return json.dumps({"error": f"event {poison[0]} is malformed"}).encode()
        self.batches.append(ids)
        for event in batch["events"]:
            if event["id"] in self.events:
                self.duplicates += 1
                continue
            self.events[event["id"]] = event
            self.arrivals.append(event["id"])
        request.setResponseCode(202)
        return b'{"accepted":true}'

    @app.route("/images/<event_id>/<kind>", methods=["PUT"])
    def receive_image(self, request: IRequest, event_id: str, kind: str) -> bytes:
        received, refusal = self._receive(request)
        if refusal is not None:
            return refusal
        if event_id not in self.events:
            self.image_before_event.append((event_id, kind))
        assert received.headers["content-type"] == "image/jpeg"
        self.images[(event_id, kind)] = received.body
        request.setResponseCode(204)
        return b""

    @app.route("/decide", methods=["POST"])
    def answer_decide(self, request: IRequest) -> Any:
        received, refusal = self._receive(request)
        if refusal is not None:
            return refusal
        answer = self.decide_answer
        if isinstance(answer, Deferred):
            # A slow cloud: the answer never comes; count the request when
            # the gateway gives up on it (its connection is cut).
            def gone(failure: Any) -> None:
                self.decide_cancelled += 1

            cast(Any, request).notifyFinish().addErrback(gone)
            return Deferred()
        request.setHeader("Content-Type", "application/json")
        return json.dumps(answer).encode()

    @app.route("/sync", methods=["GET"])
    def answer_sync(self, request: IRequest) -> bytes:
        received, refusal = self._receive(request)
        if refusal is not None:
            return refusal
        if received.body:
            request.setResponseCode(400)
            return b'{"error":"a GET has no body"}'
        request.setHeader("Content-Type", "application/json")
        return json.dumps(self.sync_pages(received.query.get("cursor"))).encode()
