"""The camera server in memory, spoken to as cameras speak: pushes through
``StubTreq`` (the requests and replies cameras exchange), raw bytes through a
``StringTransport`` on the listener's own protocol (what only the listener
sees: announced and chunked body sizes, headers that trickle in, piles of
connections), and time on a ``Clock``."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from support import Reply, loopback_config
from support.parts import GatewayParts, build_parts, parts_config

__all__ = ["CameraServerTestCase", "MemoryCamera", "RawConnection", "START"]

# 2025-03-01T12:00:00Z: the test clock starts here.
START = 1740830400.0


class MemoryCamera:
    """A camera's HTTP exchanges with the camera server, in memory."""

    def __init__(self, parts: GatewayParts) -> None:
        # StubTreq's request functions are set on it at run time.
        self.stub: Any = StubTreq(parts.camera_server.resource())

    def send(
        self,
        body: bytes,
        *,
        path: str = "/devicemanagement/php/plateresult.php",
        content_type: str | None = "application/Json",
        method: str = "POST",
    ) -> Deferred[Any]:
        """Send a request; the Deferred fires with the response once it is in
        (see :meth:`reply`)."""
        headers = {"Content-Type": [content_type]} if content_type else {}
        return self.stub.request(method, "http://gateway.test" + path, data=body, headers=headers)

    def reply(self, sent: Deferred[Any]) -> Reply:
        """The reply to ``sent``, once everything in flight has moved; fails
        when there is none (a held poll, or a request the server dropped)."""
        response = self._now(sent, "reply")
        body = self._now(self.stub.content(response), "reply body")
        headers = {
            name.decode().lower(): values[-1].decode("latin-1")
            for name, values in response.headers.getAllRawHeaders()
        }
        return Reply(response.code, headers, body)

    def answered(self, sent: Deferred[Any]) -> bool:
        """Whether ``sent`` has its reply once everything in flight has moved."""
        arrived: list[object] = []

        def seen(result: object) -> object:
            arrived.append(result)
            return result

        sent.addBoth(seen)
        self.stub.flush()
        return bool(arrived)

    async def post(
        self,
        body: bytes,
        *,
        path: str = "/devicemanagement/php/plateresult.php",
        content_type: str | None = "application/Json",
    ) -> Reply:
        return self.reply(self.send(body, path=path, content_type=content_type))

    def _now(self, waiting: Deferred[Any], what: str) -> Any:
        outcome: list[Any] = []
        waiting.addBoth(outcome.append)
        self.stub.flush()
        if not outcome:
            raise AssertionError(f"no {what} once everything in flight was delivered")
        (result,) = outcome
        if isinstance(result, Failure):
            result.raiseException()
        return result


class RawConnection:
    """One connection to what a camera listener serves (the site behind its
    connection limits, ``factory``), its bytes in a ``StringTransport``.

    As with a real transport, the server closing (``closed``) does not end
    the connection by itself: :meth:`drop` does, as the peer's close would."""

    def __init__(
        self, factory: Any, *, peer: str = "127.0.0.1", port: int = 40000
    ) -> None:
        self.factory = factory
        self.transport = _SocketTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", peer, port),
        )
        protocol: IProtocol | None = factory.buildProtocol(self.transport.getPeer())
        self.refused = protocol is None
        if protocol is not None:
            protocol.makeConnection(self.transport)
        self.protocol = protocol
        self._lost = self.refused

    def send(self, data: bytes) -> None:
        assert self.protocol is not None, "the connection was refused"
        self.protocol.dataReceived(data)

    @property
    def received(self) -> bytes:
        return self.transport.value()

    @property
    def closed(self) -> bool:
        """The server closed (or refused) the connection."""
        return self.refused or bool(self.transport.disconnecting or self.transport.disconnected)

    def drop(self) -> None:
        """The connection ends (the camera closed its end, or saw the server's close)."""
        if not self._lost and self.protocol is not None:
            self._lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


class _SocketTransport(StringTransport):
    """A StringTransport that treats an abort as a socket does: what is
    written after it never leaves (a socket's buffer is dropped with it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(lenient=True, **kwargs)
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def write(self, data: bytes) -> None:
        if not self.aborted:
            super().write(data)

    def writeSequence(self, data: Any) -> None:
        if not self.aborted:
            super().writeSequence(data)


class CameraServerTestCase(TestCase):
    """The gateway's camera-side parts (support.parts) for ``config`` on a
    Clock, started before each test that calls :meth:`start`."""

    config: dict[str, Any] = loopback_config()

    async def start(
        self, config: dict[str, Any] | None = None, state_dir: str | None = None
    ) -> GatewayParts:
        """Build and start the parts (with ``state_dir``: a restart on the
        state of an earlier start; its clock goes on)."""
        if state_dir is None or not hasattr(self, "clock"):
            self.clock = Clock()
            self.clock.advance(START)
        parts = build_parts(
            parts_config(config or self.config, state_dir or self.mktemp()), self.clock
        )
        await parts.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(parts.stop()))
        self.parts = parts
        return parts

    def camera(self) -> MemoryCamera:
        return MemoryCamera(self.parts)

    def connection(self, factory: Any = None, **kwargs: Any) -> RawConnection:
        """A raw connection to ``factory`` (default: a new listening factory)."""
        factory = factory or self.parts.camera_server.listening_factory()
        connection = RawConnection(factory, **kwargs)
        self.addCleanup(connection.drop)
        return connection

    def assert_strict_reply(self, body: bytes) -> dict[str, Any]:
        """What the firmware accepts: one compact UTF-8 JSON object."""
        self.assertFalse(body.startswith(b"\xef\xbb\xbf"))
        decoder = json.JSONDecoder()
        value, end = decoder.raw_decode(body.decode("utf-8"))
        self.assertEqual(end, len(body.decode("utf-8")), "one JSON value and nothing after it")
        self.assertIsInstance(value, dict)
        self.assertNotIn(b"\n", body)
        self.assertNotIn(b", ", body)
        return value
