"""A stub cloud for the upstream tests (a small Klein app on 127.0.0.1 that
checks every request's signature with its own HMAC code), the shared test
base, and the tests of the stub's own checks against the published Standard
Webhooks example (so the other tests can trust it)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import base64
import hashlib
import hmac
import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence, cast

import attrs
from klein import Klein
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IRequest
from twisted.web.server import Site
from zope.interface import implementer

from gateway.policy.codec import EntryCodec
from gateway.site import Lanes
from gateway.policy.whitelist import WhitelistEntry
from gateway.store import EventRecord, EventType, Store, StoreService, new_event_id, plate_event_id
from gateway.upstream.feed import CloudCommand
from gateway.upstream.service import UpstreamService
from gateway.upstream.settings import UpstreamSettings

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

    # -- running ----------------------------------------------------------

    def listen(self, port: int = 0) -> int:
        self.port = reactor.listenTCP(port, self.site, interface="127.0.0.1")
        self.port_number = self.port.getHost().port
        return self.port_number

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port_number}"

    async def go_down(self) -> None:
        """Stop listening and cut every connection: the cloud is unreachable."""
        if self.port is not None:
            port, self.port = self.port, None
            await maybeDeferred(port.stopListening)
        await self.cut_connections()

    async def cut_connections(self) -> None:
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


@implementer(ILogObserver)
class LogCollector:
    """Collects formatted log lines while installed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        text = formatEvent(event)
        if text:
            self.lines.append(text)

    def count(self, fragment: str) -> int:
        return sum(1 for line in self.lines if fragment in line)


class RecordingWhitelist:
    """A WhitelistSink that remembers what it was told."""

    def __init__(self) -> None:
        self.entries: dict[str, WhitelistEntry] = {}
        self.calls: list[tuple[str, int]] = []

    async def upsert(self, entries: Sequence[WhitelistEntry]) -> None:
        self.calls.append(("upsert", len(entries)))
        for entry in entries:
            self.entries[entry.plate] = entry

    async def delete(self, plates: Sequence[str]) -> None:
        self.calls.append(("delete", len(plates)))
        for plate in plates:
            self.entries.pop(plate, None)

    async def replace_cloud(self, entries: Sequence[WhitelistEntry]) -> None:
        self.calls.append(("replace", len(entries)))
        self.entries = {entry.plate: entry for entry in entries}


class RecordingCommands:
    """A CommandSink that remembers commands; refuses cameras it does not know."""

    def __init__(self, cameras: Sequence[str] = ("cam-1", "cam-2")) -> None:
        self.cameras = set(cameras)
        self.submitted: list[CloudCommand] = []

    async def submit(self, command: CloudCommand) -> None:
        from gateway.upstream.sync import CommandRejected

        if command.camera not in self.cameras:
            raise CommandRejected(f"no camera {command.camera} on this site")
        self.submitted.append(command)


def plate_event(
    camera: str, number: int, clock: Clock, *, license: str | None = None
) -> EventRecord:
    plate = license or f"京A{number % 100000:05d}"
    when = datetime.fromtimestamp(clock.seconds(), tz=timezone.utc)
    return EventRecord(
        id=plate_event_id(camera, number, plate, int(clock.seconds()), number % 1000000),
        type=EventType.PLATE,
        received_at=when,
        camera=camera,
        lane=f"lane-{camera}",
        camera_time=when,
        plate=plate,
        license=plate,
        decision_open=True,
        decision_reason="whitelist",
        decision_source="local",
        raw={"plateid": number, "license": plate, "confidence": 91},
    )


def other_event(camera: str, kind: EventType, clock: Clock) -> EventRecord:
    return EventRecord(
        id=new_event_id({EventType.IO: "io"}.get(kind, "online")),
        type=kind,
        received_at=datetime.fromtimestamp(clock.seconds(), tz=timezone.utc),
        camera=camera,
        lane=f"lane-{camera}",
        raw={"source": 1},
    )


class UpstreamTestCase(TestCase):
    """A real store in a scratch directory on a test clock, the stub cloud
    on a loopback port, and the upstream service between them."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.state_dir = Path(tempfile.mkdtemp(prefix="anpr-upstream-test-")) / "state"
        self.addCleanup(shutil.rmtree, self.state_dir.parent, True)
        self.cloud = StubCloud(SECRET_BYTES, self.clock.seconds)
        self.cloud.listen()
        self.addCleanup(self.cloud.go_down)
        self.whitelist = RecordingWhitelist()
        self.commands = RecordingCommands()
        self.store_service: StoreService | None = None
        self.log = LogCollector()
        globalLogPublisher.addObserver(self.log)
        self.addCleanup(globalLogPublisher.removeObserver, self.log)

    def config(self, **settings: Any) -> UpstreamSettings:
        values: dict[str, Any] = dict(
            url=self.cloud.url,
            secret=SECRET,
            gateway_id="site-7",
            max_backoff_seconds=60.0,
            images="none",
        )
        values.update(settings)
        return UpstreamSettings(**values)

    async def open_store(self) -> Store:
        if self.store_service is None:
            service = StoreService(reactor, self.state_dir, clock=self.clock)
            service.startService()
            self.store_service = service

            async def stop() -> None:
                if service.running:
                    await service.stopService()

            self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return await self.store_service.when_open()

    async def start_upstream(
        self, random: Callable[[], float] = lambda: 1.0, **settings: Any
    ) -> UpstreamService:
        await self.open_store()
        assert self.store_service is not None
        service = UpstreamService(
            reactor,
            self.store_service,
            self.config(**settings),
            whitelist=self.whitelist,
            commands=self.commands,
            codec=EntryCodec(tz=ZoneInfo("Asia/Shanghai"), lanes=Lanes.of_names("Entry", "Exit")),
            clock=self.clock,
            random=random,
        )
        service.startService()

        async def stop() -> None:
            if service.running:
                await service.stopService()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return service

    async def stop_upstream(self, service: UpstreamService) -> None:
        await service.stopService()

    async def commit(
        self, records: Sequence[EventRecord], images: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        store = await self.open_store()
        await gatherResults(
            [Deferred.fromCoroutine(store.commit_event(record, images)) for record in records]
        )

    async def until(self, condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
        """Let the real reactor run until ``condition()`` holds (bounded)."""
        for _ in range(int(seconds / 0.005)):
            if condition():
                return
            await deferLater(reactor, 0.005, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def settle(self, condition: Callable[[], Awaitable[bool]], what: str) -> None:
        for _ in range(4000):
            if await condition():
                return
            await deferLater(reactor, 0.005, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def outbox_empty(self) -> bool:
        store = await self.open_store()
        return await store.outbox_depth() == 0


class StubCloudSelfTests(TestCase):
    """The stub's checks agree with the published example and catch tampering."""

    # The example of the Standard Webhooks specification.
    KEY = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    TIMESTAMP = "1614265330"
    BODY = b'{"test": 2432232314}'
    SIGNATURE = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    def headers(self, **changes: str) -> dict[str, str | None]:
        values: dict[str, str | None] = {
            "webhook-id": self.MSG_ID,
            "webhook-timestamp": self.TIMESTAMP,
            "webhook-signature": f"v1,{self.SIGNATURE}",
        }
        values.update(changes)
        return values

    def test_published_example_verifies(self) -> None:
        self.assertEqual(
            expected_signature(self.KEY, self.MSG_ID, self.TIMESTAMP, self.BODY), self.SIGNATURE
        )
        now = float(self.TIMESTAMP)
        self.assertIsNone(signature_valid(self.KEY, self.headers(), self.BODY, now))
        rotated = self.headers(**{"webhook-signature": f"v1,bm90IGl0 v1,{self.SIGNATURE}"})
        self.assertIsNone(signature_valid(self.KEY, rotated, self.BODY, now))

    def test_tampering_and_replay_are_caught(self) -> None:
        now = float(self.TIMESTAMP)
        self.assertIsNotNone(signature_valid(self.KEY, self.headers(), self.BODY + b" ", now))
        self.assertIsNotNone(
            signature_valid(self.KEY, self.headers(**{"webhook-id": "msg_other"}), self.BODY, now)
        )
        self.assertIsNotNone(signature_valid(self.KEY, self.headers(), self.BODY, now + 301))
        self.assertIsNotNone(signature_valid(b"another key", self.headers(), self.BODY, now))
