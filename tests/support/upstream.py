"""The shared base of the upstream tests: a real store on a test clock, the
stub cloud, and recording sinks for what the sync feed hands on.

By default everything is in memory: the store runs its SQLite work at once
(an inline executor), the cloud link speaks to the stub cloud through
``StubTreq``, and every timer runs on a ``Clock`` the test advances; nothing
waits. With ``loopback = True`` the stub cloud listens on 127.0.0.1 and the
real reactor carries the requests (the TLS tests: e2e)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from gateway.policy.codec import EntryCodec
from gateway.policy.whitelist import WhitelistEntry
from gateway.reactor import as_gateway_reactor
from gateway.site import Lanes
from gateway.store import EventRecord, EventType, Store, StoreService, new_event_id, plate_event_id
from gateway.upstream.feed import CloudCommand
from gateway.upstream.service import UpstreamService
from gateway.upstream.settings import UpstreamSettings
from support.cloud import SECRET, SECRET_BYTES, START, CloudLine, StubCloud, reactor
from support.store import InlineExecutor
from support.threads import global_reactor, inline_threads


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
    """A real store in a scratch directory on a test clock, the stub cloud,
    and the upstream service between them (in memory unless ``loopback``)."""

    loopback = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.state_dir = Path(tempfile.mkdtemp(prefix="anpr-upstream-test-")) / "state"
        self.addCleanup(shutil.rmtree, self.state_dir.parent, True)
        self.cloud = StubCloud(SECRET_BYTES, self.clock.seconds)
        self.line: CloudLine | None = None
        if self.loopback:
            self.cloud.listen()
        else:
            self.line = self.cloud.in_memory()
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
            service = StoreService(
                reactor,
                self.state_dir,
                clock=self.clock,
                executor=None if self.loopback else InlineExecutor,
            )
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
        in_memory: dict[str, Any] = {}
        if self.line is not None:
            # The Clock as the reactor too: nothing reaches a real socket.
            in_memory = dict(http=self.line, in_thread=inline_threads)
        service = UpstreamService(
            as_gateway_reactor(self.clock) if self.line is not None else global_reactor,
            self.store_service,
            self.config(**settings),
            whitelist=self.whitelist,
            commands=self.commands,
            codec=EntryCodec(tz=ZoneInfo("Asia/Shanghai"), lanes=Lanes.of_names("Entry", "Exit")),
            clock=self.clock,
            random=random,
            **in_memory,
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

    def flush(self) -> None:
        """Move everything in flight between the gateway and the stub cloud."""
        if self.line is not None:
            self.line.flush()

    async def until(self, condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
        """``condition()`` holds once what is in flight has moved.

        In memory nothing waits: the requests and answers in flight are
        delivered, then the condition must hold (time passes only when the
        test advances the clock). On loopback the real reactor runs until it
        holds (bounded by ``seconds``)."""
        if self.line is not None:
            self.line.flush()
            if not condition():
                self.fail(f"not so once everything in flight was delivered: {what}")
            return
        for _ in range(int(seconds / 0.005)):
            if condition():
                return
            await deferLater(reactor, 0.005, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def settle(self, condition: Callable[[], Awaitable[bool]], what: str) -> None:
        """As :meth:`until`, for a condition read from the store."""
        if self.line is not None:
            self.line.flush()
            if not await condition():
                self.fail(f"not so once everything in flight was delivered: {what}")
            return
        for _ in range(4000):
            if await condition():
                return
            await deferLater(reactor, 0.005, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def outbox_empty(self) -> bool:
        store = await self.open_store()
        return await store.outbox_depth() == 0
