"""The servers the gateway is compared with, each run in its own process.

* ``plate``: the bare baseline. A stock ``twisted.web`` resource that parses
  the pushed JSON and answers a fixed reply: what any Twisted server pays
  for HTTP and JSON alone, with no decision, no store and no registry.
* ``comet``: an answer-at-once server. It answers every camera request (a
  comet poll included) at once with the idle reply, as a server that does
  not hold polls would, so cameras poll again immediately.
* ``cloud``: a stub cloud for the outbox drain: checks each request's
  Standard Webhooks signature, parses the event batch and accepts it.

Run as ``python -m bench.servers MODE [--secret whsec_...]``; the process
prints ``PORT <n>`` once it listens on 127.0.0.1 and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

FIXED_PLATE_REPLY = b'{"Response_AlarmInfoPlate":{"info":"ok"}}'
IDLE_COMET_REPLY = b'{"Response_AlarmInfoPlate":{"info":"no"}}'


class BarePlateResource(Resource):
    """Parse the body as JSON, answer a fixed plate reply."""

    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        body = request.content.read() if request.content is not None else b""
        json.loads(body)
        request.setHeader(b"Content-Type", b"application/json")
        return FIXED_PLATE_REPLY


class AnswerAtOnceResource(Resource):
    """Answer every request at once with the idle comet reply (no hold)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def render_POST(self, request: Request) -> bytes:
        if request.content is not None:
            request.content.read()
        self.requests += 1
        request.setHeader(b"Content-Type", b"application/json")
        return IDLE_COMET_REPLY


class StubCloudResource(Resource):
    """The cloud side of the outbox: signed batches in, ``202`` out."""

    isLeaf = True

    def __init__(self, key: bytes) -> None:
        super().__init__()
        self._key = key
        self.events = 0
        self.bad_signatures = 0

    def _signed(self, request: Request, body: bytes) -> bool:
        def header(name: bytes) -> bytes:
            return request.getHeader(name) or b""

        signed = header(b"webhook-id") + b"." + header(b"webhook-timestamp") + b"." + body
        wanted = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest())
        for candidate in header(b"webhook-signature").split(b" "):
            version, _, value = candidate.partition(b",")
            if version == b"v1" and hmac.compare_digest(value, wanted):
                return True
        return False

    def render(self, request: Request) -> bytes:
        body = request.content.read() if request.content is not None else b""
        request.setHeader(b"Content-Type", b"application/json")
        if not self._signed(request, body):
            self.bad_signatures += 1
            request.setResponseCode(401)
            return b'{"error":"bad signature"}'
        path = request.path or b""
        if request.method == b"POST" and path == b"/events":
            self.events += len(json.loads(body)["events"])
            request.setResponseCode(202)
            return b'{"accepted":true}'
        if request.method == b"PUT" and path.startswith(b"/images/"):
            request.setResponseCode(204)
            return b""
        if request.method == b"GET" and path == b"/sync":
            cursor = request.args.get(b"cursor", [b"c0"])[0].decode() if request.args else "c0"
            return json.dumps({"cursor": cursor, "more": False}).encode()
        if request.method == b"POST" and path == b"/decide":
            return b'{"open":false,"reason":"unknown"}'
        request.setResponseCode(404)
        return b'{"error":"not found"}'


def _site(mode: str, secret: str | None) -> Site:
    if mode == "plate":
        resource: Resource = BarePlateResource()
    elif mode == "comet":
        resource = AnswerAtOnceResource()
    else:
        if not secret or not secret.startswith("whsec_"):
            raise SystemExit("cloud mode needs --secret whsec_...")
        resource = StubCloudResource(base64.b64decode(secret[len("whsec_") :]))
    site = Site(resource)
    site.noisy = False
    # No access log: the gateway's camera site writes none either.
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.servers plate|comet|cloud``."""
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("mode", choices=("plate", "comet", "cloud"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", help="the cloud's signing secret (cloud mode)")
    args = parser.parse_args(argv)
    site = _site(args.mode, args.secret)

    def serve(reactor: Any) -> Deferred[None]:
        port = reactor.listenTCP(args.port, site, interface="127.0.0.1", backlog=1024)
        print(f"PORT {port.getHost().port}", flush=True)
        return Deferred()  # until SIGTERM stops the reactor

    react(serve)


if __name__ == "__main__":
    main(sys.argv[1:])
