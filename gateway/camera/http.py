"""twisted.web plumbing for camera requests: bounded bodies, kept in memory.

Twisted's stock request spools any body over 100 kB to a temporary file and
accepts bodies of any size. A camera port must refuse an oversized body before
buffering it (no disk, no memory), and keep the bodies it accepts (images of a
few MB at most) in memory.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import IO, Any, cast

from twisted.internet.interfaces import ITransport
from twisted.logger import Logger
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
    """A request whose body is held in memory up to the site's limit.

    A body announced (``Content-Length``) or found (chunked) to be over the
    limit is answered 413 at once and the connection is closed: the rest of
    the body is never stored.
    """

    refused = False
    _received = 0

    def _limit(self) -> int:
        return int(getattr(getattr(self.channel, "site", None), "max_body_bytes", 8 << 20))

    def _transport(self) -> ITransport:
        return cast(ITransport, self.channel.transport)

    def gotLength(self, length: int | None) -> None:
        self._received = 0
        if length is not None and length > self._limit():
            self._refuse(announced=length)
            return
        self.content = BytesIO()  # type: ignore[assignment]

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
        self.content = _Discard()  # type: ignore[assignment]
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
    """A Site for camera requests: bounded in-memory bodies, idle timeout,
    no access log lines (a busy site logs every push elsewhere)."""

    requestFactory = BoundedRequest
    noisy = False

    def __init__(self, resource: IResource, *, max_body_bytes: int, idle_timeout: float) -> None:
        super().__init__(resource, timeout=idle_timeout)
        self.max_body_bytes = max_body_bytes
        self.displayTracebacks = False

    def log(self, request: HTTPRequest) -> None:
        pass
