"""The site's plate list: kept in the store (the truth), served from memory
(the policy's index), fed from a CSV file that is watched for changes.

Everything heavy (reading and parsing the CSV, building an index of 100 000
plates) runs off the reactor thread; the decision itself is a dictionary
lookup on the reactor thread.
"""

from __future__ import annotations

import os
from datetime import tzinfo
from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gateway.policy.csvformat import CsvImport, parse_whitelist_csv
from gateway.policy.decision import Decision, PlateQuery
from gateway.policy.plates import normalise_plate
from gateway.policy.whitelist import (
    WhitelistEntry,
    WhitelistIndex,
    WhitelistPolicy,
    format_hours,
    parse_hours,
)
from gateway.store import Store, StoreError, StoreService, WhitelistChange, WhitelistRow

log = Logger()

CSV_SOURCE = "csv"
CLOUD_SOURCE = "cloud"
# How often the CSV file is checked for changes (size and modification time).
CSV_POLL_SECONDS = 2.0


def entry_to_row(entry: WhitelistEntry) -> WhitelistRow:
    return WhitelistRow(
        plate=entry.plate,
        enabled=entry.enabled,
        blacklist=entry.blacklist,
        valid_from=entry.valid_from,
        valid_until=entry.valid_until,
        lanes=tuple(sorted(entry.lanes)),
        hours=format_hours(entry.hours),
        note=entry.note,
        source=entry.source,
    )


def row_to_entry(row: WhitelistRow, tz: tzinfo) -> WhitelistEntry:
    """A stored row as a policy entry; naive times are site local time."""

    def aware(value: Any) -> Any:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=tz)
        return value

    return WhitelistEntry(
        plate=row.plate,
        enabled=row.enabled,
        blacklist=row.blacklist,
        valid_from=aware(row.valid_from),
        valid_until=aware(row.valid_until),
        hours=parse_hours(row.hours) if row.hours else (),
        lanes=frozenset(row.lanes),
        note=row.note,
        source=row.source if row.source in ("csv", "admin", "cloud") else "admin",
    )


class SiteWhitelist(Service):
    """The plate list service, and the gate policy the camera server asks.

    Until the list is loaded from the store, :attr:`loaded` is False: the
    camera server must not answer plates then (it would decide them on an
    empty list).
    """

    def __init__(
        self,
        reactor: Any,
        store: StoreService,
        *,
        tz: tzinfo,
        unknown_plate: str,
        lane_overrides: dict[str, str],
        max_plate_distance: int,
        csv_path: str | None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.setName("whitelist")
        self._reactor = reactor
        self._threads: IReactorThreads = reactor
        self._clock: IReactorTime = clock or reactor
        self._store_service = store
        self._tz = tz
        self._policy_args = dict(
            tz=tz,
            unknown_plate=unknown_plate,
            lane_overrides=lane_overrides,
            max_plate_distance=max_plate_distance,
        )
        self._max_distance = max_plate_distance
        self._csv_path = csv_path
        self._csv_stamp: tuple[int, int] | None = None
        self._watch: LoopingCall | None = None
        self._starting: Deferred[None] | None = None
        self._waiters: list[Deferred[None]] = []
        self.policy = WhitelistPolicy(WhitelistIndex(), **self._policy_args)  # type: ignore[arg-type]
        self.loaded = False
        self.last_import: CsvImport | None = None
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever the list changes (after it applies)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.failure("Plate list change listener failed")

    def entries(self) -> tuple[WhitelistEntry, ...]:
        """Every entry of the list, sorted by plate."""
        return self.policy.index.entries()

    # -- GatePolicy ---------------------------------------------------------

    def decide(self, query: PlateQuery) -> Decision:
        return self.policy.decide(query)

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(lambda f: log.failure("The plate list could not be loaded", f))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        starting = self._starting
        return starting if starting is not None else succeed(None)

    def when_loaded(self) -> Deferred[None]:
        if self.loaded:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    async def _start(self) -> None:
        store = await self._store_service.when_open()
        if self._csv_path is not None:
            await self.import_csv(store)
        await self.reload(store)
        self.loaded = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if self._csv_path is not None and self.running:
            self._watch = LoopingCall(self._check_csv)
            self._watch.clock = self._clock
            self._watch.start(CSV_POLL_SECONDS, now=False)

    # -- loading --------------------------------------------------------------

    def _in_thread(self, function: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._threads.getThreadPool(), function, *args)

    async def reload(self, store: Store) -> None:
        """Rebuild the in-memory index from the store (built off the reactor)."""
        rows = await store.whitelist_entries()
        tz, distance = self._tz, self._max_distance

        def build() -> tuple[WhitelistIndex, list[str]]:
            entries, broken = [], []
            for row in rows:
                try:
                    entries.append(row_to_entry(row, tz))
                except ValueError as error:
                    broken.append(f"{row.plate}: {error}")
            return WhitelistIndex.from_entries(entries, max_distance=distance), broken

        index, broken = await self._in_thread(build)
        for problem in broken:
            log.warn("Stored plate list row skipped: {problem}", problem=problem)
        self.policy = WhitelistPolicy(index, **self._policy_args)  # type: ignore[arg-type]
        log.info("Plate list loaded: {count} plates", count=len(index))
        if self.loaded:
            self._changed()

    async def import_csv(self, store: Store) -> CsvImport | None:
        """Import the configured CSV file as the rows of source ``csv``,
        replacing the previous import. Bad rows are logged and skipped."""
        path = self._csv_path
        if path is None:
            return None
        tz = self._tz

        def read() -> tuple[tuple[int, int], CsvImport]:
            stat = os.stat(path)
            with open(path, "rb") as handle:
                data = handle.read()
            return (stat.st_mtime_ns, stat.st_size), parse_whitelist_csv(data, CSV_SOURCE, tz=tz)

        try:
            stamp, result = await self._in_thread(read)
        except OSError as error:
            log.error(
                "Cannot read the plate list {path}: {reason}", path=path, reason=error.strerror
            )
            return None
        self._csv_stamp = stamp
        for problem in result.errors:
            log.warn(
                "{path} line {line}{column}: {reason} (row skipped)",
                path=path,
                line=problem.line,
                column=f", column {problem.column}" if problem.column else "",
                reason=problem.reason,
            )
        if any(problem.line <= 1 for problem in result.errors) and not result.entries:
            # A bad header loads nothing: keep the previous import rather than
            # emptying the list because of one misspelt column.
            return result
        change = await store.replace_whitelist_source(
            CSV_SOURCE, [entry_to_row(entry) for entry in result.entries]
        )
        for plate in change.conflicts:
            log.warn(
                "{path}: plate {plate} is also set by the admin page or the cloud; "
                "their entry is kept",
                path=path,
                plate=plate,
            )
        log.info(
            "Plate list imported from {path}: {loaded} rows, {skipped} skipped "
            "({inserted} new, {updated} changed, {deleted} removed)",
            path=path,
            loaded=len(result.entries),
            skipped=len(result.errors),
            inserted=change.inserted,
            updated=change.updated,
            deleted=change.deleted,
        )
        self.last_import = result
        return result

    async def _reimport(self, store: Store) -> None:
        if await self.import_csv(store) is not None:
            await self.reload(store)

    def _check_csv(self) -> Deferred[None] | None:
        path = self._csv_path
        store = self._store_service.store
        if path is None or store is None:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None  # being replaced; the next check sees the new file
        if (stat.st_mtime_ns, stat.st_size) == self._csv_stamp:
            return None
        d = Deferred.fromCoroutine(self._reimport(store))

        def failed(failure: Any) -> None:
            if failure.check(StoreError):
                log.warn("Plate list re-import failed: {reason}", reason=str(failure.value))
            else:
                log.failure("Plate list re-import failed", failure)

        d.addErrback(failed)
        # LoopingCall waits for the import, so imports never overlap.
        return d

    # -- edits ----------------------------------------------------------------

    async def upsert(self, entries: Iterable[WhitelistEntry]) -> None:
        """Add or change entries (admin page, cloud sync): stored first,
        then applied to the live index."""
        store = await self._store_service.when_open()
        batch = list(entries)
        await store.upsert_whitelist([entry_to_row(entry) for entry in batch])
        for entry in batch:
            self.policy.index.upsert(entry)
        self._changed()

    async def delete(self, plates: Iterable[str]) -> None:
        store = await self._store_service.when_open()
        batch = [normalise_plate(plate) for plate in plates]
        await store.delete_whitelist(batch)
        for plate in batch:
            self.policy.index.remove(plate)
        self._changed()

    async def replace_cloud(self, entries: Iterable[WhitelistEntry]) -> WhitelistChange:
        """Make ``entries`` the complete list of source ``cloud`` (a full sync
        from the cloud): stored in one transaction, then the index is
        rebuilt. Plates held by another source (CSV, admin page) keep that
        row; they are logged."""
        store = await self._store_service.when_open()
        # The store gives every row the replaced source.
        rows = [entry_to_row(entry) for entry in entries]
        change = await store.replace_whitelist_source(CLOUD_SOURCE, rows)
        for plate in change.conflicts:
            log.warn(
                "Plate {plate} from the cloud is also set locally (CSV or admin page); "
                "the local entry is kept",
                plate=plate,
            )
        log.info(
            "Plate list replaced from the cloud: {count} rows ({inserted} new, {updated} "
            "changed, {deleted} removed)",
            count=len(rows),
            inserted=change.inserted,
            updated=change.updated,
            deleted=change.deleted,
        )
        await self.reload(store)
        return change
