"""The site's plate list as a service: kept in the store (the truth), served
from memory (the policy's index), fed by the admin API, the cloud's sync feed
and a watched CSV file, and followed by whoever needs its changes (the camera
whitelist sync, the gate's cache of cloud decisions).

Every change is a :class:`~gateway.policy.whitelist.PlateListChange` that
holds only what changed: an unchanged CSV row or cloud entry is no change.
Nothing on the reactor costs in proportion to the list: reading and diffing a
CSV file or a cloud replacement, converting rows and building a new index run
off the reactor; a small change is applied to the live index in place. Changes
are applied one at a time, in the order they came, so a large import never
interleaves with an edit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from datetime import tzinfo
from typing import Any, TypeVar, cast

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredLock, gatherResults, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.background import BackgroundStopped, InThread, reactor_threads
from gateway.heap import bulk
from gateway.policy.codec import EntryCodec
from gateway.policy.csvformat import CsvImport, parse_whitelist_csv
from gateway.policy.decision import Decision, PlateQuery
from gateway.policy.plates import normalise_plate
from gateway.policy.whitelist import (
    ENTRY_SOURCES,
    PlateListChange,
    WhitelistEntry,
    WhitelistIndex,
    WhitelistPolicy,
    format_hours,
    parse_hours,
)
from gateway.site import Lanes
from gateway.store import (
    PlateRow,
    PlateRowsWritten,
    Store,
    StoreClosedError,
    StoreError,
    StoreService,
)
from gateway.timers import Every

__all__ = ["CLOUD_SOURCE", "CSV_SOURCE", "PlateList", "entry_to_row", "row_to_entry"]

log = Logger()
T = TypeVar("T")

CSV_SOURCE = "csv"
CLOUD_SOURCE = "cloud"
# How often the CSV file is checked for changes (size and modification time).
CSV_POLL_SECONDS = 2.0
# A change up to this size is diffed and applied to the live index on the
# reactor (a few milliseconds); a larger one builds a new index off it.
IN_PLACE_LIMIT = 1000
# Plates named one by one in a log line; the rest are counted.
LOGGED_PLATES = 5

CSV_STAMP_KEY = "plate_list.csv_stamp"



def _file_stamp(path: str) -> tuple[int, int] | None:
    """(modification time in ns, size) of the file, None when unreadable."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _parse_stamp(text: str | None) -> tuple[int, int] | None:
    try:
        mtime, size = (int(part) for part in (text or "").split(":"))
    except ValueError:
        return None
    return mtime, size


def entry_to_row(entry: WhitelistEntry) -> PlateRow:
    return PlateRow(
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


def row_to_entry(row: PlateRow, tz: tzinfo, lanes: Lanes) -> tuple[WhitelistEntry, set[str]]:
    """A stored row as a policy entry, and the lane names it has that no
    configured lane has (kept: the lane may come back). Naive times are site
    local time; lane names take the configuration's spelling."""

    def aware(value: Any) -> Any:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=tz)
        return value

    names: set[str] = set()
    unknown: set[str] = set()
    for name in row.lanes:
        lane = lanes.canonical(name)
        if lane is None:
            unknown.add(name)
            names.add(name)
        else:
            names.add(lane)
    entry = WhitelistEntry(
        plate=row.plate,
        enabled=row.enabled,
        blacklist=row.blacklist,
        valid_from=aware(row.valid_from),
        valid_until=aware(row.valid_until),
        hours=parse_hours(row.hours) if row.hours else (),
        lanes=frozenset(names),
        note=row.note,
        source=row.source if row.source in ENTRY_SOURCES else "admin",
    )
    return entry, unknown


@attrs.frozen
class _Diff:
    """A change worked out against the current list, ready to store."""

    change: PlateListChange
    rows: tuple[PlateRow, ...]
    conflicts: tuple[str, ...] = ()  # plates held by another source, left as they are


def _diff_source(
    listed: Iterable[WhitelistEntry], source: str, entries: Sequence[WhitelistEntry]
) -> _Diff:
    """The change that makes ``entries`` the complete set of ``source``'s
    entries, given every entry ``listed`` now. Plates another source holds
    keep that entry. Walks the whole list: run it off the reactor."""
    current = {entry.plate: entry for entry in listed}
    wanted = {entry.plate: entry for entry in entries}
    upserts: list[WhitelistEntry] = []
    conflicts: list[str] = []
    for plate, entry in wanted.items():
        held = current.get(plate)
        if held is None:
            upserts.append(entry)
        elif held.source != source:
            conflicts.append(plate)
        elif held != entry:
            upserts.append(entry)
    deletes = [
        plate
        for plate, held in current.items()
        if held.source == source and plate not in wanted
    ]
    previous = {plate: current[plate] for plate in deletes}
    previous.update(
        (entry.plate, current[entry.plate]) for entry in upserts if entry.plate in current
    )
    return _Diff(
        change=PlateListChange(upserts=tuple(upserts), deletes=tuple(deletes), previous=previous),
        rows=tuple(entry_to_row(entry) for entry in upserts),
        conflicts=tuple(sorted(conflicts)),
    )


def _diff_edit(
    listed: Callable[[str], WhitelistEntry | None],
    upserts: Iterable[WhitelistEntry],
    deletes: Iterable[str],
) -> _Diff:
    """The change of an edit: entries equal to what is listed (``listed``
    finds a plate's entry) are dropped, and so are deletions of plates that
    are not listed. Costs the size of the edit."""
    changed = {entry.plate: entry for entry in upserts}
    kept = [entry for entry in changed.values() if listed(entry.plate) != entry]
    gone = sorted(
        {plate for plate in deletes if listed(plate) is not None and plate not in changed}
    )
    previous = {
        plate: held
        for plate in [*gone, *(entry.plate for entry in kept)]
        if (held := listed(plate)) is not None
    }
    return _Diff(
        change=PlateListChange(upserts=tuple(kept), deletes=tuple(gone), previous=previous),
        rows=tuple(entry_to_row(entry) for entry in kept),
    )


def _few(plates: Sequence[str]) -> str:
    named = ", ".join(plates[:LOGGED_PLATES])
    more = len(plates) - LOGGED_PLATES
    return f"{named} and {more} more" if more > 0 else named


class PlateList(MultiService):
    """The site's plate list, and the local rule the gate asks.

    Until the list is loaded from the store, :attr:`loaded` is False: plates
    must not be decided then (they would be decided on an empty list).
    """

    def __init__(
        self,
        reactor: IReactorThreads,
        store: StoreService,
        *,
        codec: EntryCodec,
        unknown_plate: str,
        lane_overrides: dict[str, str],
        max_plate_distance: int,
        csv_path: str | None,
        clock: IReactorTime | None = None,
        in_thread: InThread | None = None,
    ) -> None:
        super().__init__()
        self.setName("plate-list")
        # Without a clock, the reactor's own (which has one).
        self._clock: IReactorTime = clock if clock is not None else cast(IReactorTime, reactor)
        if in_thread is None:
            in_thread = reactor_threads(reactor)

        self._in_thread = in_thread
        self._store_service = store
        self.codec = codec
        self._policy_args: dict[str, Any] = dict(
            tz=codec.tz,
            unknown_plate=unknown_plate,
            lane_overrides=lane_overrides,
            max_plate_distance=max_plate_distance,
        )
        self._max_distance = max_plate_distance
        self._csv_path = csv_path
        self._csv_stamp: tuple[int, int] | None = None
        # The file is watched once the start-up import is done.
        self._watching = False
        if csv_path is not None:
            Every(self._clock, CSV_POLL_SECONDS, self._check_csv, name="csv-watch").setServiceParent(
                self
            )
        self._starting: Deferred[None] | None = None
        self._waiters: list[Deferred[None]] = []
        self._lock = DeferredLock()
        self.policy = WhitelistPolicy(WhitelistIndex(), **self._policy_args)
        self.loaded = False
        self.last_import: CsvImport | None = None
        self._listeners: list[Callable[[PlateListChange], None]] = []

    def on_change(self, listener: Callable[[PlateListChange], None]) -> None:
        """Call ``listener(change)`` after each change is stored and applied."""
        self._listeners.append(listener)

    def _changed(self, change: PlateListChange) -> None:
        if not change:
            return
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.failure("Plate list change listener failed")

    @property
    def index(self) -> WhitelistIndex:
        return self.policy.index

    def get(self, plate: str) -> WhitelistEntry | None:
        """The entry for exactly this plate (normalised first), if any."""
        return self.policy.index.get(plate)

    def entries(self) -> tuple[WhitelistEntry, ...]:
        """Every entry of the list, sorted by plate."""
        return self.policy.index.entries()

    def snapshot(self) -> tuple[WhitelistEntry, ...]:
        """Every entry, unsorted, as it is now (for work off the reactor)."""
        return self.policy.index.snapshot()

    def decide(self, query: PlateQuery) -> Decision:
        """The local rule's decision, from memory."""
        return self.policy.decide(query)

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(self._start_failed)

    def _start_failed(self, failure: Failure) -> None:
        if failure.check(BackgroundStopped, StoreClosedError) and not self.running:
            log.info("The plate list was not loaded: the gateway stopped while it started")
            return
        log.failure("The plate list could not be loaded", failure)

    def stopService(self) -> Deferred[None]:
        self._watching = False
        timers = super().stopService()  # the CSV watch, waiting for an import in progress
        starting = self._starting
        waiting = [timers] if starting is None else [timers, starting]
        return gatherResults(waiting, consumeErrors=True).addCallback(lambda _: None)

    def when_settled(self) -> Deferred[None]:
        """Fires once start-up work is done: the list loaded and the CSV
        file imported again (this can come after :meth:`when_loaded`)."""
        starting = self._starting
        if starting is None:
            return self.when_loaded()
        settled: Deferred[None] = Deferred()

        def done(result: object) -> object:
            settled.callback(None)
            return result

        starting.addBoth(done)
        return settled

    def when_loaded(self) -> Deferred[None]:
        if self.loaded:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    async def _start(self) -> None:
        store = await self._store_service.when_open()
        await self._load(store)
        if self._csv_path is not None:
            # The file as last imported is in the store: plates are decided
            # from it at once. A file changed while the gateway was stopped is
            # imported first, so that no read is decided on an old list.
            saved = _parse_stamp(await store.kv_get(CSV_STAMP_KEY))
            changed = saved is None or saved != _file_stamp(self._csv_path)
            if changed:
                await self._locked(lambda: self._import_csv(store))
        self.loaded = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if self._csv_path is not None and not changed:
            # The file is the truth for its own rows (an edit on the page of
            # a row the file holds lasts until the next start): imported
            # again, while plates are decided.
            await self._locked(lambda: self._import_csv(store))
        self._watching = bool(self.running)

    async def _load(self, store: Store) -> None:
        """Build the in-memory index from the store (off the reactor)."""
        rows = await store.whitelist_entries()
        tz, lanes, distance = self.codec.tz, self.codec.lanes, self._max_distance

        def build() -> tuple[WhitelistIndex, list[str], set[str]]:
            entries, broken, unknown = [], [], set()
            for row in rows:
                try:
                    entry, missing = row_to_entry(row, tz, lanes)
                except ValueError as error:
                    broken.append(f"{row.plate}: {error}")
                    continue
                entries.append(entry)
                unknown |= missing
            return WhitelistIndex.from_entries(entries, max_distance=distance), broken, unknown

        with bulk("the plate list loaded"):
            index, broken, unknown = await self._in_thread(build)
        for problem in broken:
            log.warn("Stored plate list row skipped: {problem}", problem=problem)
        if unknown:
            log.warn(
                "Plate list entries name lanes that are not configured ({lanes}); "
                "those entries do not apply on any configured lane",
                lanes=", ".join(sorted(unknown)),
            )
        self.policy = WhitelistPolicy(index, **self._policy_args)
        log.info("Plate list loaded: {count} plates", count=len(index))

    # -- applying changes -----------------------------------------------------

    async def _locked(self, work: Callable[[], Any]) -> Any:
        await self._lock.acquire()
        try:
            return await work()
        finally:
            self._lock.release()

    async def _store(self, diff: _Diff) -> PlateRowsWritten:
        store = await self._store_service.when_open()
        return await store.write_plates(diff.rows, diff.change.deletes)

    async def _commit(self, diff: _Diff) -> PlateRowsWritten:
        """Store ``diff``, then apply it to memory and tell the listeners.
        Called with the lock held."""
        change = diff.change
        if not change:
            return PlateRowsWritten()
        if len(change) <= IN_PLACE_LIMIT:
            written = await self._store(diff)
            index = self.policy.index
            for entry in change.upserts:
                index.upsert(entry)
            for plate in change.deletes:
                index.remove(plate)
            self._changed(change)
            return written
        current, distance = self.policy.index, self._max_distance

        def rebuild(listed: Sequence[WhitelistEntry]) -> WhitelistIndex:
            entries = {entry.plate: entry for entry in listed}
            for plate in change.deletes:
                entries.pop(plate, None)
            for entry in change.upserts:
                entries[entry.plate] = entry
            return WhitelistIndex.from_entries(entries.values(), max_distance=distance)

        # Storing, rebuilding and the followers' recomputes make hundreds of
        # thousands of long-lived objects: full collections wait for them.
        with bulk("a large plate list change"):
            written = await self._store(diff)
            listed = current.snapshot()
            index = await self._in_thread(lambda: rebuild(listed))
            self.policy = WhitelistPolicy(index, **self._policy_args)
            self._changed(change)
        return written

    async def upsert(self, entries: Iterable[WhitelistEntry]) -> PlateListChange:
        """Add or change entries (admin page, cloud feed): stored first, then
        applied. Entries equal to what is listed are no change."""
        batch = list(entries)
        return await self._edit(batch, ())

    async def delete(self, plates: Iterable[str]) -> PlateListChange:
        """Remove plates (normalised first); plates not listed are no change."""
        batch = [normalise_plate(plate) for plate in plates]
        return await self._edit((), batch)

    async def _edit(
        self, upserts: Sequence[WhitelistEntry], deletes: Sequence[str]
    ) -> PlateListChange:
        async def work() -> PlateListChange:
            # Read while the lock is held: only changes, which hold it, write
            # to the index.
            listed = self.policy.index.get
            if len(upserts) + len(deletes) <= IN_PLACE_LIMIT:
                diff = _diff_edit(listed, upserts, deletes)
            else:
                diff = await self._in_thread(lambda: _diff_edit(listed, upserts, deletes))
            await self._commit(diff)
            return diff.change

        change: PlateListChange = await self._locked(work)
        return change

    async def replace_cloud(self, entries: Iterable[WhitelistEntry]) -> PlateListChange:
        """Make ``entries`` the complete list of source ``cloud`` (a full sync
        from the cloud). Plates held by another source (CSV, admin page) keep
        that entry; they are logged."""
        batch = list(entries)

        async def work() -> PlateListChange:
            listed = self.policy.index.snapshot()
            with bulk("a cloud list compared"):
                diff: _Diff = await self._in_thread(
                    lambda: _diff_source(listed, CLOUD_SOURCE, batch)
                )
            if diff.conflicts:
                log.warn(
                    "{count} plates from the cloud are also set locally (CSV or admin page); "
                    "the local entry is kept: {plates}",
                    count=len(diff.conflicts),
                    plates=_few(diff.conflicts),
                )
            written = await self._commit(diff)
            log.info(
                "Plate list replaced from the cloud: {count} entries ({inserted} new, "
                "{updated} changed, {deleted} removed, the rest unchanged)",
                count=len(batch),
                inserted=written.inserted,
                updated=written.updated,
                deleted=written.deleted,
            )
            return diff.change

        change: PlateListChange = await self._locked(work)
        return change

    # -- the CSV file -----------------------------------------------------------

    async def import_csv(self) -> CsvImport | None:
        """Import the configured CSV file now (it is also watched)."""
        store = await self._store_service.when_open()
        result: CsvImport | None = await self._locked(lambda: self._import_csv(store))
        return result

    async def _import_csv(self, store: Store) -> CsvImport | None:
        """Make the CSV file's rows the entries of source ``csv``. Bad rows
        are logged and skipped. Called with the lock held."""
        path = self._csv_path
        if path is None:
            return None
        codec = self.codec
        listed = self.policy.index.snapshot()

        def read() -> tuple[tuple[int, int], CsvImport, _Diff | None]:
            stat = os.stat(path)
            with open(path, "rb") as handle:
                data = handle.read()
            parsed = parse_whitelist_csv(data, codec, CSV_SOURCE)
            if any(problem.line <= 1 for problem in parsed.errors) and not parsed.entries:
                return (stat.st_mtime_ns, stat.st_size), parsed, None
            return (stat.st_mtime_ns, stat.st_size), parsed, _diff_source(
                listed, CSV_SOURCE, parsed.entries
            )

        try:
            with bulk("the CSV file read"):
                stamp, result, diff = await self._in_thread(read)
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
        if diff is None:
            # A bad header loads nothing: keep the previous import rather than
            # emptying the list because of one misspelt column.
            await self._save_stamp(store, stamp)
            return result
        if diff.conflicts:
            log.warn(
                "{path}: {count} plates are also set by the admin page or the cloud; "
                "their entry is kept: {plates}",
                path=path,
                count=len(diff.conflicts),
                plates=_few(diff.conflicts),
            )
        written = await self._commit(diff)
        # Only once the rows are stored: a file not wholly imported is read
        # again at the next start.
        await self._save_stamp(store, stamp)
        log.info(
            "Plate list imported from {path}: {loaded} rows, {skipped} skipped "
            "({inserted} new, {updated} changed, {deleted} removed, the rest unchanged)",
            path=path,
            loaded=len(result.entries),
            skipped=len(result.errors),
            inserted=written.inserted,
            updated=written.updated,
            deleted=written.deleted,
        )
        self.last_import = result
        return result

    @staticmethod
    async def _save_stamp(store: Store, stamp: tuple[int, int]) -> None:
        await store.kv_set(CSV_STAMP_KEY, f"{stamp[0]}:{stamp[1]}")

    def _check_csv(self) -> Deferred[None] | None:
        path = self._csv_path
        store = self._store_service.store
        if path is None or store is None or not self._watching:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None  # being replaced; the next check sees the new file
        if (stat.st_mtime_ns, stat.st_size) == self._csv_stamp:
            return None
        d = Deferred.fromCoroutine(self._locked(lambda: self._import_csv(store)))

        def failed(failure: Any) -> None:
            if failure.check(StoreError):
                log.warn("Plate list re-import failed: {reason}", reason=str(failure.value))
            else:
                log.failure("Plate list re-import failed", failure)

        d.addErrback(failed)
        # The timer waits for the import, so imports never overlap.
        return d
