"""The sync feed: plate list changes and commands from the cloud.

``GET /sync?gateway=<id>&cursor=<cursor>`` every ``sync_interval_seconds``
(at once again while the cloud says ``"more": true``). A page is applied
(plate list, then commands) before its cursor is stored, so a page is never
skipped; applying one twice is harmless (upserts and deletes are idempotent,
command ids seen recently are ignored).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Protocol

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.background import InThread
from gateway.heap import bulk
from gateway.policy.codec import EntryCodec
from gateway.policy.whitelist import WhitelistEntry
from gateway.store import Store, StoreService, StoreWriteError
from gateway.upstream.channel import LinkChannel
from gateway.upstream.events import command_result_record
from gateway.upstream.feed import CloudCommand, SyncPage, parse_sync_page
from gateway.upstream.http import UpstreamClient, Verdict
from gateway.upstream.link import FailureKind, Link, LinkFailure
from gateway.upstream.settings import UpstreamSettings

__all__ = [
    "CURSOR_KEY",
    "CommandRejected",
    "CommandSink",
    "SyncFeed",
    "SyncReport",
    "WhitelistSink",
]

log = Logger()

CURSOR_KEY = "upstream.sync_cursor"
SYNC_BODY_LIMIT = 64 * 1024 * 1024  # a whole plate list of 100 000 entries fits
MAX_PAGES_PER_PASS = 50  # "more" pages fetched back to back before yielding
REMEMBERED_COMMANDS = 4096


#: Runs a function off the reactor thread and gives its result.


async def decode_page(body: bytes, codec: EntryCodec, in_thread: InThread) -> SyncPage:
    """A ``GET /sync`` answer decoded off the reactor (a page may hold the
    cloud's whole list). Raises ``ValueError`` as :func:`parse_sync_page`."""
    with bulk("a sync page decoded"):
        page: SyncPage = await in_thread(lambda: parse_sync_page(body, codec))
    return page


class WhitelistSink(Protocol):
    """Where the feed's plate list changes go (the site plate list)."""

    async def upsert(self, entries: Sequence[WhitelistEntry]) -> object:
        """Add or change entries (source ``cloud``)."""

    async def delete(self, plates: Sequence[str]) -> object:
        """Remove these (normalised) plates."""

    async def replace_cloud(self, entries: Sequence[WhitelistEntry]) -> object:
        """Make ``entries`` the complete set of rows of source ``cloud``."""


class CommandRejected(ValueError):
    """Raised by a :class:`CommandSink` for a command it cannot carry out
    (unknown camera, a type the camera does not support); the reason is
    reported to the cloud."""


class CommandSink(Protocol):
    """Where the feed's commands go (the camera registry)."""

    async def submit(self, command: CloudCommand) -> None:
        """Queue ``command`` for its camera and return.

        ``command`` has ``id``, ``camera`` (serial number), ``type``
        (``open``, ``snapshot``, ``trigger``, ``serial``, ``display``),
        ``expires_at`` (aware datetime or None: never carry it out later),
        and by type: ``channel`` (int or None for the lane's default; open,
        serial), ``data`` (bytes; serial), ``lines`` (tuple of str) and
        ``voice`` (str; display). Raise :class:`CommandRejected` (or
        ``ValueError``) with a reason to refuse it. How the command then ends
        is reported by the camera control, as a ``command_result`` event
        naming the cloud's command id.
        """


@attrs.frozen
class SyncReport:
    """What the last applied page did (for the status page)."""

    at: datetime | None = None
    upserted: int = 0
    deleted: int = 0
    replaced: bool = False
    rejected_entries: tuple[str, ...] = ()
    commands: int = 0
    rejected_commands: int = 0


class SyncFeed(LinkChannel):
    """Polls the sync feed and applies it to the plate list and the cameras."""

    channel = "sync"

    def __init__(
        self,
        *,
        store: StoreService,
        client: UpstreamClient,
        clock: IReactorTime,
        config: UpstreamSettings,
        link: Link,
        random: Callable[[], float],
        whitelist: WhitelistSink,
        commands: CommandSink,
        codec: EntryCodec,
        in_thread: InThread,
        on_event: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(
            store=store, client=client, clock=clock, config=config, link=link, random=random
        )
        self._whitelist = whitelist
        self._commands = commands
        self._codec = codec
        self._in_thread = in_thread
        self._on_event = on_event
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.cursor: str | None = None
        self.pages = 0
        self.last = SyncReport()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)

    async def _prepare(self, store: Store) -> None:
        self.cursor = await store.kv_get(CURSOR_KEY)

    def _retry_delay(self, failure: LinkFailure) -> float:
        delay = super()._retry_delay(failure)
        if failure.kind is FailureKind.CONNECTIVITY:
            # The feed is polled anyway: no faster than its interval.
            delay = max(delay, self._config.sync_interval_seconds)
        return delay

    async def _work(self, store: Store) -> float | None:
        for _ in range(MAX_PAGES_PER_PASS):
            if not self.running:
                return None
            page = await self._fetch()
            self._succeeded()
            await self._apply(store, page)
            if page.cursor != self.cursor:
                await store.kv_set(CURSOR_KEY, page.cursor)
                self.cursor = page.cursor
            self.pages += 1
            if not page.more:
                return self._config.sync_interval_seconds
        return 0.0  # more pages: go on after letting the reactor breathe

    async def _fetch(self) -> SyncPage:
        params = {"gateway": self._config.gateway_id}
        if self.cursor:
            params["cursor"] = self.cursor
        response = await self._client.request(
            "GET", "/sync", params=params, body_limit=SYNC_BODY_LIMIT
        )
        if response.verdict is not Verdict.ACCEPTED:
            raise response.failure(self._now(), "GET /sync")
        try:
            return await decode_page(response.body, self._codec, self._in_thread)
        except ValueError as error:
            raise LinkFailure(FailureKind.SERVER, f"GET /sync: unusable answer: {error}") from None

    async def _apply(self, store: Store, page: SyncPage) -> None:
        update = page.whitelist
        if update.replace:
            await self._whitelist.replace_cloud(list(update.upsert))
        elif update.upsert:
            await self._whitelist.upsert(list(update.upsert))
        if update.delete and not update.replace:
            await self._whitelist.delete(list(update.delete))
        deleted = 0 if update.replace else len(update.delete)
        for problem in update.rejected:
            log.warn("Plate list entry from the cloud skipped: {problem}", problem=problem)
        if not update.empty:
            log.info(
                "Plate list synced from the cloud: {upserted} entries {how}, {deleted} deleted, "
                "{rejected} skipped",
                upserted=len(update.upsert),
                how="(the whole cloud list)" if update.replace else "added or changed",
                deleted=deleted,
                rejected=len(update.rejected),
            )
        for rejected in page.rejected_commands:
            log.warn(
                "Command {id} from the cloud skipped: {reason}",
                id=rejected.id or "(no id)",
                reason=rejected.reason,
            )
            if rejected.id is not None:
                await self._report(
                    store, rejected.id, rejected.type, rejected.camera, "rejected", rejected.reason
                )
        for command in page.commands:
            await self._submit(store, command)
        self.last = SyncReport(
            at=self._now(),
            upserted=len(update.upsert),
            deleted=deleted,
            replaced=update.replace,
            rejected_entries=update.rejected,
            commands=len(page.commands),
            rejected_commands=len(page.rejected_commands),
        )

    async def _submit(self, store: Store, command: CloudCommand) -> None:
        if command.id in self._seen:
            return  # the same page again (its cursor was not stored): done already
        self._seen[command.id] = None
        while len(self._seen) > REMEMBERED_COMMANDS:
            self._seen.popitem(last=False)
        if command.expires_at is not None and command.expires_at <= self._now():
            await self._report(
                store, command.id, command.type, command.camera, "expired", "expired on arrival"
            )
            return
        try:
            await self._commands.submit(command)
        except ValueError as error:
            log.warn(
                "Command {id} ({type}) for camera {camera} refused: {reason}",
                id=command.id,
                type=command.type,
                camera=command.camera,
                reason=str(error),
            )
            await self._report(
                store, command.id, command.type, command.camera, "rejected", str(error)
            )
        except Exception as error:
            log.failure("Command {id} could not be queued", id=command.id)
            await self._report(
                store, command.id, command.type, command.camera, "failed", type(error).__name__
            )
        else:
            log.info(
                "Command {id} from the cloud queued: {type} for camera {camera}",
                id=command.id,
                type=command.type,
                camera=command.camera,
            )

    async def _report(
        self,
        store: Store,
        command_id: str,
        command_type: str | None,
        camera: str | None,
        outcome: str,
        detail: str,
    ) -> None:
        record = command_result_record(
            command_id, command_type, camera, outcome, received_at=self._now(), detail=detail
        )
        try:
            await store.commit_event(record)
        except StoreWriteError as error:
            log.warn(
                "The result of command {id} could not be kept: {reason}",
                id=command_id,
                reason=str(error),
            )
            return
        self._on_event()
