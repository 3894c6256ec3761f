"""A real loopback HTTP server for the simulator tests that keeps every raw request.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) to let the
tests see requests exactly as they arrive on the socket (header order, case,
what is absent) and to misbehave on purpose: abort a connection, hold a reply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

# A responder returns a reply object (sent as JSON), raw bytes, ABORT (drop
# the connection without a response) or a Deferred of one of those.
ABORT = object()


@attrs.define
class RawRequest:
    """One request as it arrived."""

    connection: int
    peer: str
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    @property
    def kind(self) -> str:
        """The top key of a JSON body, or "registration" for the multipart form."""
        if (self.header("content-type") or "").startswith("multipart/"):
            return "registration"
        data = self.json()
        return next(key for key in data if key != "ipaddr")


Responder = Callable[[RawRequest], Any]


class _Connection(Protocol):
    def __init__(self, server: RecordingServer, number: int) -> None:
        self._server = server
        self._number = number
        self._buffer = b""
        self._busy = False
        self._lost = False

    def connectionLost(self, reason: Any = None) -> None:
        self._lost = True

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        self._next()

    def _next(self) -> None:
        if self._busy or b"\r\n\r\n" not in self._buffer:
            return
        head, rest = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            key, value = line.split(":", 1)
            headers.append((key, value.strip()))
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        if len(rest) < length:
            return
        self._buffer = rest[length:]
        peer: Any = self.transport.getPeer()  # type: ignore[union-attr]
        request = RawRequest(self._number, peer.host, method, path, headers, rest[:length])
        self._server.requests.append(request)
        self._busy = True
        result = defer.maybeDeferred(self._server.responder, request)
        self._server.pending.add(result)
        result.addBoth(self._settled, result)
        result.addCallback(self._answer)
        result.addErrback(lambda failure: failure.trap(defer.CancelledError))

    def _settled(self, outcome: Any, result: Deferred[Any]) -> Any:
        self._server.pending.discard(result)
        return outcome

    def _answer(self, reply: Any) -> None:
        self._busy = False
        if self.transport is None or self._lost:
            return
        if reply is ABORT:
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        if isinstance(reply, bytes):
            body = reply
        else:
            body = json.dumps(reply, ensure_ascii=False).encode("utf-8")
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode("ascii")
            + body
        )
        self._next()


class RecordingServer(Factory):
    """Listen on 127.0.0.1, keep requests, answer with ``responder``."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or (
            lambda request: {"Response_AlarmInfoPlate": {"info": "no"}}
        )
        self.requests: list[RawRequest] = []
        self.pending: set[Deferred[Any]] = set()
        self._connections = 0
        self._port: Any = None

    def buildProtocol(self, addr: Any) -> Protocol:
        self._connections += 1
        return _Connection(self, self._connections)

    def listen(self, reactor: Any) -> str:
        self._port = reactor.listenTCP(0, self, interface="127.0.0.1")
        return f"http://127.0.0.1:{self._port.getHost().port}"

    def listen_tls(self, reactor: Any, context_factory: Any) -> str:
        self._port = reactor.listenSSL(0, self, context_factory, interface="127.0.0.1")
        return f"https://127.0.0.1:{self._port.getHost().port}"

    def close(self) -> Deferred[Any]:
        """Stop listening; replies still held are cancelled."""
        for result in list(self.pending):
            result.cancel()
        return defer.maybeDeferred(self._port.stopListening)

    def of_kind(self, kind: str) -> list[RawRequest]:
        return [request for request in self.requests if request.kind == kind]


def plate_result(request: RawRequest) -> dict[str, Any]:
    result: dict[str, Any] = request.json()["AlarmInfoPlate"]["result"]["PlateResult"]
    return result


def echo_reply(request: RawRequest, **fields: Any) -> dict[str, Any]:
    """A well-formed plate reply (plateid echoed, ContinuePushOffline for offline records)."""
    if request.kind != "AlarmInfoPlate":
        return {"Response_AlarmInfoPlate": {"info": "no"}}
    result = plate_result(request)
    reply: dict[str, Any] = {"content": "retransfer_stop", **fields}
    if "plateid" in result:
        reply["plateid"] = result["plateid"]
        if result.get("isoffline") == 1:
            reply["ContinuePushOffline"] = {"plateid": result["plateid"], "continue": 1}
    return {"Response_AlarmInfoPlate": reply}


async def wait_for(reactor: Any, condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll ``condition`` on the reactor until it holds (fails after ``limit`` seconds)."""
    waited = 0.0
    while not condition():
        if waited >= limit:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, 0.01)
        waited += 0.01
