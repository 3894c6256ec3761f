"""The durable store, as used from the reactor thread.

All SQLite and file work runs on one dedicated thread owned by the store (one
connection, opened on that thread); the reactor thread only queues work and
awaits the result. Event commits are grouped: commits issued while a
transaction is running are gathered into the next single transaction, so one
fsync covers many events.

The thread is the store's :class:`StoreExecutor`; the tests of the store's
consumers may give one that runs each job at once instead.
"""

from __future__ import annotations

import functools
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.background import InThread
from gateway.policy.cameralist import CameraRow
from gateway.policy.occupancy import ParkingSession
from gateway.store.database import (
    Database,
    EventWrite,
    StoreClosedError,
    StoreWriteError,
    check_database,
    describe_failure,
    encode_raw,
)
from gateway.store.ids import is_valid_event_id
from gateway.store.records import (
    IMAGE_KINDS,
    AdminSessionRow,
    AuditRow,
    CachedCloudDecision,
    CameraListState,
    CommitResult,
    DeadLetter,
    EventRecord,
    EventRetentionTotals,
    EventType,
    ImageUpload,
    Integrity,
    IntegrityState,
    LaneDayCounts,
    LogDamage,
    OutboxItem,
    OutboxTrim,
    PlateRow,
    PlateRowsWritten,
    Replacement,
    RetentionResult,
    StoreHealth,
    StoreStats,
)
from gateway.store.schema import SCHEMA_VERSION
from gateway.store.settings import StoreSettings

__all__ = ["Store", "StoreExecutor", "HealthObserver"]

log = Logger()

T = TypeVar("T")

# Events per group-commit transaction: bounds the latency one transaction adds
# to the events queued behind it (images are written inside the batch).
MAX_BATCH = 64
# Plate list rows written per transaction (see Store.write_plates): a plate
# event committed meanwhile waits for one such transaction at most.
PLATE_WRITE_CHUNK = 500
# A database over max_db_bytes is trimmed to this fraction under it.
SIZE_HEADROOM = 100
# How long one step of a retention pass should keep the store's thread: an
# event commit that comes meanwhile waits for it.
RETENTION_STEP_SECONDS = 0.005


class _Pace:
    """The size of a retention pass's steps, and the pauses between them.

    Each step is a transaction (an fsync) of its own; event commits queue
    behind the step under way. Rows are deleted in steps sized to take about
    :data:`RETENTION_STEP_SECONDS` (on a cold SD card a row costs reads of
    every index it is in), and the pass pauses three times as long as a step
    took, so that it takes at most a quarter of the thread and of the core
    it shares with the event loop: a year's catch-up takes minutes, and no
    plate waits for more than one short step."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.rows = 100
        self._took = 0.0

    async def timed(self, work: Awaitable[T]) -> T:
        started = self._clock.seconds()
        result = await work
        self._took = self._clock.seconds() - started
        if self._took > 2 * RETENTION_STEP_SECONDS:
            self.rows = max(5, self.rows // 2)
        elif self._took < RETENTION_STEP_SECONDS / 2:
            self.rows = min(500, self.rows * 2)
        return result

    async def pause(self) -> None:
        await deferLater(self._clock, max(3 * self._took, 0.002), lambda: None)



HealthObserver = Callable[[StoreHealth], None]

# SQLite's primary result codes that mean the file itself is damaged.
_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


class StoreExecutor(Protocol):
    """Where the store's SQLite and file work runs: one job at a time, in the
    order submitted, each result given on the reactor thread. The store's own
    is a dedicated thread; a test of the store's consumers may run each job at
    once on the calling thread instead (the same SQLite, no waiting)."""

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        """Run ``job()`` after the jobs already submitted; fires with its result."""
        ...

    def stop(self) -> None:
        """No jobs follow: end after the ones already submitted."""
        ...


class _StoreThread:
    """One thread running jobs in order; results come back on the reactor thread."""

    def __init__(self, reactor: IReactorFromThreads, name: str) -> None:
        self._reactor = reactor
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Deferred[Any]] | None] = (
            queue.SimpleQueue()
        )
        # A daemon thread: a gateway stopped without closing the store (kill,
        # crash) must not hang on it; the database survives that by design.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        result: Deferred[T] = Deferred()
        self._jobs.put((job, result))
        return result

    def stop(self) -> None:
        """Let the thread end after the jobs already queued."""
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, result = item
            try:
                value = job()
            except BaseException:
                self._reactor.callFromThread(result.errback, Failure())
            else:
                self._reactor.callFromThread(result.callback, value)


@attrs.define
class _PendingCommit:
    write: EventWrite
    result: Deferred[CommitResult]


def _now(clock: IReactorTime) -> datetime:
    return datetime.fromtimestamp(clock.seconds(), tz=timezone.utc)


class Store:
    """The gateway's durable store: events and their images, the whitelist,
    the upstream outbox and dead letters, and small key/value state.

    Open it with ``await Store.open(reactor, state_dir)``; every method is
    called from the reactor thread. Write methods raise
    :class:`StoreWriteError` when the disk or database fails; the store then
    reports itself degraded (:attr:`health`, observers) until a write succeeds.
    """

    def __init__(
        self, clock: IReactorTime, database: Database, thread: StoreExecutor, config: StoreSettings
    ) -> None:
        """Use :meth:`open`."""
        self._clock = clock
        self._db = database
        self._thread = thread
        self.config = config
        self._pending: list[_PendingCommit] = []
        self._committing = False
        self._trimming = False
        self._closing = False
        self._closed = False
        self._drained: list[Deferred[None]] = []
        self._health = StoreHealth()
        self._observers: list[HealthObserver] = []
        self.integrity = IntegrityState(Integrity.CLEAN)
        """What is known of the database file's pages (see :meth:`check_integrity`)."""
        self._checking: Deferred[None] | None = None
        self._check_connection: sqlite3.Connection | None = None
        self.replacement: Replacement | None = None
        """The database this one replaced (moved aside, salvaged), until an
        admin acknowledges it (:meth:`acknowledge_damage`)."""
        self.log_damage: LogDamage | None = None
        """A damaged write-ahead log found at a start, until acknowledged."""

    @classmethod
    async def open(
        cls,
        reactor: IReactorFromThreads,
        state_dir: str | Path,
        config: StoreSettings | None = None,
        *,
        clock: IReactorTime | None = None,
        executor: StoreExecutor | None = None,
    ) -> Store:
        """Start the store thread, open (or create) ``state_dir/gateway.db``,
        apply schema migrations and return the started store.

        A database that cannot be read or fails its integrity check is moved
        aside to ``gateway.db.corrupt-<UTC time>`` and a fresh one is created
        (logged as critical; see :attr:`quarantined_db`). Raises
        :class:`StoreOpenError` when the store cannot start at all.

        ``reactor`` takes the results of the store's thread; ``clock``
        (default: the reactor) gives the time of the timestamps the store
        sets itself (health, whitelist ``updated_at``, dead letters).
        ``executor`` (default: a new dedicated thread) runs the store's work;
        the store stops it when it closes.
        """
        if clock is None:
            clock = cast(IReactorTime, reactor)
        directory = Path(state_dir)
        database = Database(directory)
        thread: StoreExecutor = (
            executor
            if executor is not None
            else _StoreThread(reactor, name=f"anpr-gateway store {directory}")
        )
        now = _now(clock)
        try:
            report = await thread.submit(lambda: database.open(now))
        except BaseException:
            thread.stop()
            raise
        replacement = report.replacement
        if report.quarantined is not None and replacement is not None:
            log.critical(
                "The database {path} could not be used ({reason}). It was moved aside to "
                "{quarantined} and a fresh database was started, with what could be read "
                "of the old one ({salvage}). Shown on the status page until an admin "
                "acknowledges it.",
                path=str(database.path),
                reason=report.corruption,
                quarantined=str(report.quarantined),
                salvage=replacement.salvage.summary(),
            )
        elif report.salvage_resumed and replacement is not None:
            log.critical(
                "The salvage of the replaced database {quarantined} had not finished: run "
                "again ({salvage})",
                quarantined=replacement.moved_to,
                salvage=replacement.salvage.summary(),
            )
        elif replacement is not None:
            log.warn(
                "{notice}",
                notice=replacement.notice(),
            )
        if report.migrations_applied:
            log.info(
                "Database {path} is at schema version {version} ({count} migration steps applied)",
                path=str(database.path),
                version=SCHEMA_VERSION,
                count=report.migrations_applied,
            )
        store = cls(clock, database, thread, config or StoreSettings())
        store.replacement = replacement
        store.log_damage = report.log_damage
        if report.log_damage is not None and report.log_damage_new:
            log.critical(
                "The write-ahead log of {path} was damaged: SQLite replayed it up to the "
                "damage and dropped {count} committed transactions after it (events answered "
                "then are lost; the cameras will not send them again). The damaged log is kept "
                "at {copy}. Shown on the status page until an admin acknowledges it.",
                path=str(database.path),
                count=report.log_damage.dropped_commits,
                copy=report.log_damage.copy or "(no copy could be made)",
            )
        if report.check_needed:
            store.integrity = IntegrityState(Integrity.CHECKING)
        return store

    async def close(self) -> None:
        """Finish the commits already requested, then close the database and stop the thread."""
        if self._closing:
            while not self._closed:
                waiter: Deferred[None] = Deferred()
                self._drained.append(waiter)
                await waiter
            return
        self._closing = True
        if self._checking is not None:
            # A check takes minutes on a large file: the next start checks again.
            connection = self._check_connection
            if connection is not None:
                connection.interrupt()
            await self._checking
        while self._committing or self._pending:
            waiter = Deferred()
            self._drained.append(waiter)
            await waiter
        try:
            await self._thread.submit(self._db.close)
        finally:
            self._thread.stop()
            self._closed = True
            self._wake_drained()

    # -- state -----------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self._db.state_dir

    @property
    def health(self) -> StoreHealth:
        """Whether the store can write, and if not why and since when."""
        return self._health

    @property
    def degraded(self) -> bool:
        return self._health.degraded

    @property
    def quarantined_db(self) -> Path | None:
        """Where a corrupt database was moved at start, if that happened."""
        return self._db.quarantined

    async def acknowledge_damage(self) -> tuple[Replacement | None, LogDamage | None]:
        """An admin has seen that the database was replaced and/or its log
        found damaged: stop showing it (durably). What was acknowledged."""
        acknowledged = await self._write(self._db.acknowledge_damage)
        self.replacement = None
        self.log_damage = None
        return acknowledged

    @property
    def commit_transactions(self) -> int:
        """Event-commit transactions since the store opened (events per
        transaction shows group commit at work)."""
        return self._db.commit_transactions

    def add_health_observer(self, observer: HealthObserver) -> None:
        """Call ``observer(health)`` on the reactor thread whenever the store
        becomes degraded or recovers."""
        self._observers.append(observer)

    def remove_health_observer(self, observer: HealthObserver) -> None:
        self._observers.remove(observer)

    def _report_failure(self, reason: str) -> None:
        if self._health.degraded and self._health.reason == reason:
            return
        first = not self._health.degraded
        since = _now(self._clock) if first else self._health.since
        self._set_health(StoreHealth(degraded=True, reason=reason, since=since))
        if first:
            log.error(
                "The store cannot write ({reason}): events are refused (cameras keep and "
                "re-send them) until it can write again",
                reason=reason,
            )

    def _report_success(self) -> None:
        if not self._health.degraded:
            return
        since = self._health.since
        self._set_health(StoreHealth())
        log.info("The store can write again (it could not since {since})", since=since)

    def _set_health(self, health: StoreHealth) -> None:
        self._health = health
        for observer in list(self._observers):
            try:
                observer(health)
            except Exception:
                log.failure("Store health observer {observer!r} failed", observer=observer)

    # -- the whole-file check --------------------------------------------------

    @property
    def check_needed(self) -> bool:
        """Whether the last run ended without closing the database (a power
        cut, a kill): its pages are then checked, by :meth:`check_integrity`."""
        return self.integrity.state is Integrity.CHECKING

    def check_integrity(self, in_thread: InThread) -> Deferred[None]:
        """Check every page of the database in ``in_thread`` (a thread of its
        own: the check reads the whole file, minutes on a large one on an SD
        card), beside the store, which serves on meanwhile. Damage found is
        logged, shown in :attr:`integrity`, and the database is moved aside
        at the next start (see docs/reliability.md)."""
        if self._checking is None:
            self._checking = Deferred.fromCoroutine(self._check(in_thread))
        return self._checking

    async def _check(self, in_thread: InThread) -> None:
        self.integrity = IntegrityState(Integrity.CHECKING)
        started = self._clock.seconds()

        def run() -> list[str]:
            def connected(connection: sqlite3.Connection) -> None:
                self._check_connection = connection
                if self._closing:
                    # close() began before there was a connection to interrupt.
                    connection.interrupt()

            try:
                return check_database(self._db.path, connected)
            finally:
                self._check_connection = None

        try:
            problems = await in_thread(run)
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if self._closing or code is None or code & 0xFF not in _DAMAGE_CODES:
                self.integrity = IntegrityState(
                    Integrity.UNCHECKED, detail=describe_failure(exc), at=_now(self._clock)
                )
                if not self._closing:
                    log.warn("The database check did not finish: {reason}", reason=str(exc))
                return
            problems = [describe_failure(exc)]
        except Exception as exc:
            self.integrity = IntegrityState(
                Integrity.UNCHECKED, detail=describe_failure(exc), at=_now(self._clock)
            )
            log.failure("The database check failed")
            return
        seconds = self._clock.seconds() - started
        if not problems:
            self.integrity = IntegrityState(Integrity.OK, at=_now(self._clock))
            log.info(
                "Database {path} checked after an unclean shutdown: no damage ({seconds:.1f} s)",
                path=str(self._db.path),
                seconds=seconds,
            )
            return
        detail = "; ".join(problems[:5])
        self.integrity = IntegrityState(Integrity.DAMAGED, detail=detail, at=_now(self._clock))
        log.critical(
            "Database {path} is damaged ({detail}). The gateway goes on with it; at the "
            "next start it is moved aside and a fresh database is started.",
            path=str(self._db.path),
            detail=detail,
        )
        if not self._closing:
            try:
                await self._thread.submit(lambda: self._db.mark_damaged(detail))
            except Exception:
                log.failure("Could not record that the database is damaged")

    # -- running work on the store thread -------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise StoreClosedError("the store is closed")

    async def _read(self, job: Callable[[], T]) -> T:
        self._check_open()
        return await self._thread.submit(job)

    async def _write(self, job: Callable[[], T]) -> T:
        self._check_open()
        try:
            result = await self._thread.submit(job)
        except StoreClosedError:
            raise
        except StoreWriteError as exc:
            self._report_failure(str(exc))
            raise
        self._report_success()
        return result

    def _run_on_store_thread(self, job: Callable[[Any], T]) -> Deferred[T]:
        """Run ``job(connection)`` on the store thread (for tests: e.g. to set
        ``PRAGMA max_page_count`` and simulate a full disk)."""
        return self._thread.submit(lambda: job(self._db.connection))

    # -- events ----------------------------------------------------------------

    async def commit_event(
        self,
        record: EventRecord,
        images: Sequence[tuple[str, bytes]] = (),
        *,
        outbox: bool = True,
    ) -> CommitResult:
        """Store an event durably, with its images; return when it is on disk.

        ``images`` are ``(kind, data)`` pairs, kind ``"full"`` or ``"crop"``.
        With ``outbox`` (the default) the event is also queued for upstream,
        in the same transaction. If an event with the same id is already
        stored, nothing is written and the result carries the stored record
        (``created`` False).

        Raises :class:`StoreWriteError` when the event could not be kept:
        then nothing of it was kept, and the camera must not be answered.
        """
        self._check_open()
        if not is_valid_event_id(record.id):
            raise ValueError(f"not an event id: {record.id!r}")
        kinds = [kind for kind, _ in images]
        for kind in kinds:
            if kind not in IMAGE_KINDS:
                raise ValueError(f"unknown image kind {kind!r}")
        if len(set(kinds)) != len(kinds):
            raise ValueError("one image per kind")
        write = EventWrite(
            record=record,
            # An operator's event keeps the read it answers in its raw record too.
            raw_json=encode_raw(
                {**record.raw, "answers": record.answers} if record.answers else record.raw
            ),
            # bytes are immutable: kept as given; anything else is copied once
            # so the caller cannot change it while the store thread writes it.
            images=tuple(
                (kind, data if type(data) is bytes else bytes(data)) for kind, data in images
            ),
            outbox=outbox,
        )
        pending = _PendingCommit(write=write, result=Deferred())
        self._pending.append(pending)
        self._start_batch()
        return await pending.result

    def _start_batch(self) -> None:
        if self._committing or not self._pending:
            return
        batch = self._pending[:MAX_BATCH]
        del self._pending[:MAX_BATCH]
        self._committing = True
        writes = [pending.write for pending in batch]
        job = self._thread.submit(lambda: self._db.commit_events(writes))
        job.addCallbacks(
            self._batch_done, self._batch_failed, callbackArgs=(batch,), errbackArgs=(batch,)
        )

    def _batch_done(
        self, outcomes: list[CommitResult | StoreWriteError], batch: list[_PendingCommit]
    ) -> None:
        self._committing = False
        # Queue the next batch before waking the callers: the store thread
        # works on it while their continuations run here.
        self._start_batch()
        failures = [outcome for outcome in outcomes if isinstance(outcome, StoreWriteError)]
        if failures:
            self._report_failure(str(failures[0]))
        elif any(isinstance(outcome, CommitResult) and outcome.created for outcome in outcomes):
            self._report_success()
        self._maybe_trim()
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, StoreWriteError):
                pending.result.errback(Failure(outcome))
            else:
                pending.result.callback(outcome)
        self._wake_drained()

    def _batch_failed(self, failure: Failure, batch: list[_PendingCommit]) -> None:
        # Not a storage failure (those come back as outcomes): a fault in the
        # store itself. The callers get it; the store keeps serving.
        self._committing = False
        self._start_batch()
        log.failure("Event commit failed", failure=failure)
        for pending in batch:
            pending.result.errback(failure)
        self._wake_drained()

    def _wake_drained(self) -> None:
        if self._committing or self._pending:
            return
        waiters, self._drained = self._drained, []
        for waiter in waiters:
            waiter.callback(None)

    def _maybe_trim(self) -> None:
        # Retention runs periodically; between runs a burst of images could
        # overshoot the cap, so trim as soon as the running total exceeds it.
        if self._trimming or self._closing or self._db.image_bytes <= self.config.image_max_bytes:
            return
        self._trimming = True
        job = self._thread.submit(lambda: self._db.trim_to(self.config.image_max_bytes))

        def done(result: object) -> None:
            self._trimming = False
            if isinstance(result, Failure):
                if result.check(StoreWriteError):
                    self._report_failure(str(result.value))
                else:
                    log.failure("Trimming images to the size cap failed", failure=result)

        job.addBoth(done)

    async def get_event(self, event_id: str) -> EventRecord | None:
        """The stored event with this id, or None."""
        return await self._read(lambda: self._db.get_event(event_id))

    async def recent_events(
        self,
        limit: int = 50,
        before_seq: int | None = None,
        *,
        plate: str | None = None,
        camera: str | None = None,
        lane: str | None = None,
        type: EventType | str | None = None,
        decision_open: bool | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        max_bytes: int | None = None,
    ) -> list[EventRecord]:
        """Events newest first, at most ``limit`` (capped at 1000).

        Page with ``before_seq`` = the ``seq`` of the last event of the
        previous page. Filters: ``plate`` is a substring of the normalised
        plate or the text as read; ``since`` inclusive, ``until`` exclusive
        (gateway receive time); the others are exact. With ``max_bytes``, no
        more is read than the events whose raw records (``raw_bytes``) and
        :data:`EVENT_OVERHEAD_BYTES` each fit in it, and the first that did
        not (so a caller can tell there is more).
        """
        limit = max(1, min(int(limit), 1000))
        event_type = None if type is None else EventType(type)
        return await self._read(
            lambda: self._db.recent_events(
                limit,
                before_seq,
                plate,
                camera,
                lane,
                event_type,
                decision_open,
                reason,
                since,
                until,
                max_bytes,
            )
        )

    async def event_image_path(self, event_id: str, kind: str) -> Path | None:
        """The file of an event's image of ``kind``, or None when there is none
        (never sent, expired, or no such event)."""
        if kind not in IMAGE_KINDS:
            raise ValueError(f"unknown image kind {kind!r}")
        return await self._read(lambda: self._db.image_path(event_id, kind))

    async def read_image(self, event_id: str, kind: str) -> bytes | None:
        """An event's image of ``kind`` (read on the store thread), or None."""
        if kind not in IMAGE_KINDS:
            raise ValueError(f"unknown image kind {kind!r}")
        return await self._read(lambda: self._db.read_image(event_id, kind))

    async def stats(self) -> StoreStats:
        """Sizes, counts and health for the status page and metrics."""
        health = self._health
        stats = await self._read(lambda: self._db.stats(health))
        integrity = self.integrity
        damage = self._db.damage
        if damage is not None and integrity.state is not Integrity.DAMAGED:
            integrity = IntegrityState(Integrity.DAMAGED, detail=damage)
        return attrs.evolve(stats, integrity=integrity)

    # -- retention -------------------------------------------------------------

    async def enforce_retention(self, now: datetime) -> RetentionResult:
        """Remove images older than ``image_retention_days``, then the oldest
        until the total is at most ``image_max_bytes`` (their event rows stay,
        images marked expired); then delete event rows older than
        ``event_retention_days`` that are not waiting for delivery, then the
        oldest events while the database is over ``max_db_bytes``; then give
        the freed pages back to the file system.

        Each step is a transaction of its own (a few hundred rows), so event
        commits go on between them."""
        config = self.config
        result = await self._write(lambda: self._db.enforce_retention(now, config))
        self._log_image_retention(result)
        cutoff = now - timedelta(days=config.event_retention_days)
        expired = waiting = dropped = unsent = 0
        after = 0
        pace = _Pace(self._clock)
        while not self._closing:
            step = await pace.timed(
                self._write(functools.partial(self._db.expire_events, cutoff, after, pace.rows))
            )
            expired += step.removed
            waiting += step.kept_waiting
            after = step.last_seq
            if step.finished:
                break
            await pace.pause()
        live = await self._read(self._db.live_bytes)
        # Past the cap, down to a hundredth under it: the events of the hours
        # until the next pass fit in that without going over.
        target = config.max_db_bytes - config.max_db_bytes // SIZE_HEADROOM
        over = live > config.max_db_bytes
        while over and live > target and not self._closing:
            step = await pace.timed(
                self._write(functools.partial(self._db.drop_oldest_events, pace.rows))
            )
            dropped += step.removed
            unsent += step.dropped_unsent
            live = await self._read(self._db.live_bytes)
            if step.removed == 0:
                break
            await pace.pause()
        while not self._closing and await pace.timed(
            self._write(lambda: self._db.vacuum_step() > 0)
        ):
            await pace.pause()
        if expired or dropped:
            log.info(
                "Event retention deleted {expired} events older than {days} days "
                "({waiting} kept: not yet delivered upstream) and {dropped} more to stay "
                "under {cap} bytes{unsent}",
                expired=expired,
                days=config.event_retention_days,
                waiting=waiting,
                dropped=dropped,
                cap=config.max_db_bytes,
                unsent=f", {unsent} of them never delivered" if unsent else "",
            )
        if unsent:
            log.warn(
                "{unsent} events the cloud had not accepted were dropped to keep the "
                "database under max_db_bytes ({cap} bytes)",
                unsent=unsent,
                cap=config.max_db_bytes,
            )
        return attrs.evolve(
            result,
            events_expired=expired,
            events_waiting=waiting,
            events_dropped=dropped,
            events_dropped_unsent=unsent,
            db_live_bytes=live,
        )

    async def retention_totals(self) -> EventRetentionTotals:
        """Event rows removed by retention since the database was created."""
        return await self._read(self._db.retention_totals)

    def _log_image_retention(self, result: RetentionResult) -> None:
        config = self.config
        if result.expired_by_age or result.expired_by_size:
            log.info(
                "Image retention removed {by_age} images older than {days} days and "
                "{by_size} to stay under {cap} bytes ({freed} bytes freed, {left} kept)",
                by_age=result.expired_by_age,
                days=config.image_retention_days,
                by_size=result.expired_by_size,
                cap=config.image_max_bytes,
                freed=result.bytes_freed,
                left=result.image_bytes,
            )

    # -- whitelist -------------------------------------------------------------

    async def whitelist_entries(self) -> list[PlateRow]:
        """Every whitelist/blacklist row (in no particular order)."""
        return await self._read(self._db.whitelist_entries)

    async def write_plates(
        self, upserts: Sequence[PlateRow] = (), deletes: Sequence[str] = ()
    ) -> PlateRowsWritten:
        """Insert or replace ``upserts`` by plate and delete ``deletes``.

        A large change is written in transactions of
        :data:`PLATE_WRITE_CHUNK` rows, so the event commits of cameras
        pushing meanwhile wait for one chunk at most, never for the whole
        list. A failure part-way leaves the chunks before it written: the
        caller (the plate list) applies a change to memory only once it is
        stored, and its sources (the CSV file, the cloud feed's cursor) give
        the change again. ``updated_at`` left None is set to now."""
        upserts, deletes = list(upserts), list(deletes)
        now = _now(self._clock)
        written = PlateRowsWritten()
        for start in range(0, max(len(upserts), 1), PLATE_WRITE_CHUNK):
            chunk = upserts[start : start + PLATE_WRITE_CHUNK]
            if chunk:
                written += await self._write(
                    functools.partial(self._db.write_plates, chunk, (), now)
                )
        for start in range(0, len(deletes), PLATE_WRITE_CHUNK):
            gone = deletes[start : start + PLATE_WRITE_CHUNK]
            written += await self._write(functools.partial(self._db.write_plates, (), gone, now))
        return written

    # -- camera lists ----------------------------------------------------------

    async def camera_list(self, camera: str) -> CameraListState | None:
        """What the camera ``camera`` (a case-folded serial number) holds, as
        last saved, or None for a camera never synced."""
        return await self._read(lambda: self._db.camera_list(camera))

    async def save_camera_list(
        self,
        camera: str,
        *,
        dialect: str | None,
        known: bool,
        cleared: bool,
        changes: Mapping[str, CameraRow | None],
    ) -> None:
        """Record what changed in a camera's list since the last save: with
        ``cleared`` every saved row goes first; ``changes`` maps a plate to the
        row the camera now holds (None: it holds none)."""
        # In transactions of PLATE_WRITE_CHUNK rows, like the plate list, so
        # that a plate's commit never waits behind a whole camera's list.
        items = list(changes.items())
        for start in range(0, max(len(items), 1), PLATE_WRITE_CHUNK):
            chunk = dict(items[start : start + PLATE_WRITE_CHUNK])
            first = start == 0
            await self._write(
                functools.partial(
                    self._db.save_camera_list, camera, dialect, known, cleared and first, chunk
                )
            )

    # -- outbox ----------------------------------------------------------------

    async def outbox_batch(
        self, limit: int, now: datetime | None = None, *, max_bytes: int | None = None
    ) -> list[OutboxItem]:
        """Up to ``limit`` queued events, in commit order (so oldest first per camera).

        With ``now``, only events due by then (see :meth:`outbox_defer`); a
        camera whose oldest queued event is not due yet contributes nothing,
        so its events still go in order. With ``max_bytes``, no more events
        than fit in it (raw records and :data:`EVENT_OVERHEAD_BYTES` each), at
        least one. A queued event whose row cannot be read is set aside in the
        quarantine table (and no longer queued); the others go on.
        """
        return await self._read(lambda: self._db.outbox_batch(limit, now, max_bytes))

    async def outbox_ack(self, event_ids: Sequence[str]) -> int:
        """Remove delivered events from the outbox; return how many were queued."""
        event_ids = list(event_ids)
        return await self._write(lambda: self._db.outbox_ack(event_ids))

    async def outbox_defer(self, event_ids: Sequence[str], next_attempt_at: datetime) -> int:
        """Count a failed attempt for these events and hold them until ``next_attempt_at``."""
        event_ids = list(event_ids)
        return await self._write(lambda: self._db.outbox_defer(event_ids, next_attempt_at))

    async def outbox_dead_letter(self, event_id: str, status: int | None, body: str) -> bool:
        """Move an event the cloud rejected permanently from the outbox to the
        dead letters, with the rejection's status and body (truncated to 4 KiB).
        Returns False when no such event is stored."""
        now = _now(self._clock)
        return await self._write(lambda: self._db.outbox_dead_letter(event_id, status, body, now))

    async def outbox_depth(self) -> int:
        """Events waiting to go upstream."""
        return await self._read(self._db.outbox_depth)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        return await self._read(lambda: self._db.dead_letters(limit))

    async def replay_dead_letter(self, event_id: str) -> bool:
        """Queue a dead-lettered event again (at the end of the outbox).
        Returns False when there is no such dead letter."""
        now = _now(self._clock)
        return await self._write(lambda: self._db.replay_dead_letter(event_id, now))

    # -- upstream --------------------------------------------------------------

    async def outbox_accept(self, event_ids: Sequence[str], image_kinds: Sequence[str] = ()) -> int:
        """The cloud accepted these events: remove them from the outbox and, in
        the same transaction, queue their images of ``image_kinds`` that are
        on disk for upload (see :meth:`image_uploads`). Returns how many of
        the events were queued."""
        event_ids = list(event_ids)
        for kind in image_kinds:
            if kind not in IMAGE_KINDS:
                raise ValueError(f"unknown image kind {kind!r}")
        kinds = list(image_kinds)
        now = _now(self._clock)
        return await self._write(lambda: self._db.outbox_accept(event_ids, kinds, now))

    async def image_uploads(self, limit: int) -> list[ImageUpload]:
        """Up to ``limit`` images waiting to be sent upstream, oldest first."""
        return await self._read(lambda: self._db.image_uploads(limit))

    async def image_uploads_done(self, seqs: Sequence[int]) -> int:
        """Remove sent (or no longer sendable) images from the upload queue."""
        seqs = list(seqs)
        return await self._write(lambda: self._db.image_uploads_done(seqs))

    async def image_uploads_depth(self) -> int:
        """Images waiting to be sent upstream."""
        return await self._read(self._db.image_uploads_depth)

    async def outbox_trim(self, max_events: int, target: int | None = None) -> OutboxTrim:
        """Keep the outbox bounded: when more than ``max_events`` are queued,
        remove the oldest until ``target`` (default ``max_events``) are left,
        camera online/offline events first, then other non-plate events,
        plate events last. Event rows stay in the store; what was removed is
        added to the totals of :meth:`outbox_dropped`, in the same
        transaction."""
        if max_events < 0:
            raise ValueError("max_events must not be negative")
        goal = max_events if target is None else max(0, min(target, max_events))
        return await self._write(lambda: self._db.outbox_trim(max_events, goal))

    async def outbox_dropped(self) -> OutboxTrim:
        """Events removed from the outbox by :meth:`outbox_trim` since the
        database was created, by kind."""
        return await self._read(self._db.outbox_dropped)

    async def put_cloud_decision(self, decision: CachedCloudDecision) -> None:
        """Keep (or replace) the cloud's reusable decision for its plate and lane."""
        await self._write(lambda: self._db.put_cloud_decision(decision))

    async def delete_cloud_decision(self, plate: str, lane: str) -> bool:
        """Forget the cached decision for ``plate`` on ``lane``; False if there was none."""
        return await self._write(lambda: self._db.delete_cloud_decision(plate, lane))

    async def cloud_decisions(self, now: datetime) -> list[CachedCloudDecision]:
        """The cached cloud decisions still valid at ``now`` (``cache_until`` after it)."""
        return await self._read(lambda: self._db.cloud_decisions(now))

    async def forget_cloud_decisions(self, plates: Sequence[str]) -> int:
        """Drop every cached cloud decision (any lane) for these plates."""
        plates = list(plates)
        return await self._write(lambda: self._db.forget_cloud_decisions(plates))

    async def expire_cloud_decisions(self, now: datetime) -> int:
        """Delete cached cloud decisions no longer valid at ``now``; return how many."""
        return await self._write(lambda: self._db.expire_cloud_decisions(now))

    # -- consumer cursors ----------------------------------------------------------

    async def start_cursor(self, consumer: str) -> int:
        """The seq of the last event ``consumer`` handed over. A consumer seen
        for the first time starts at the newest event, durably: it gets what
        is committed from now on, not the site's history."""
        return await self._write(lambda: self._db.start_cursor(consumer))

    async def cursor(self, consumer: str) -> int | None:
        """``consumer``'s cursor, or None if it never started."""
        return await self._read(lambda: self._db.cursor(consumer))

    async def set_cursor(self, consumer: str, seq: int) -> None:
        """Move ``consumer``'s cursor forward to ``seq`` (never back), durably."""
        await self._write(lambda: self._db.set_cursor(consumer, seq))

    async def events_after(
        self, seq: int, limit: int, *, max_bytes: int | None = None
    ) -> list[EventRecord]:
        """Up to ``limit`` events committed after ``seq``, in commit order;
        with ``max_bytes``, no more than fit in it (at least one)."""
        return await self._read(lambda: self._db.events_after(seq, limit, max_bytes))

    async def events_answering(self, event_id: str, limit: int = 100) -> list[EventRecord]:
        """The operators' events (opens, corrections, manual entries) that
        answer ``event_id``, oldest first, at most ``limit``."""
        return await self._read(lambda: self._db.events_answering(event_id, limit))

    async def events_in_range(
        self,
        since: datetime,
        until: datetime,
        after: tuple[datetime, int] | None = None,
        limit: int = 500,
        types: Sequence[EventType] = (),
    ) -> list[EventRecord]:
        """Events received in [``since``, ``until``) in receive order, a
        page of at most ``limit`` (capped at 1000) after the key ``after``:
        the ``(received_at, seq)`` of the previous page's last event."""
        limit = max(1, min(int(limit), 1000))
        return await self._read(
            lambda: self._db.events_in_range(since, until, after, limit, tuple(types))
        )

    async def lane_counts(self, since: datetime, until: datetime) -> list[LaneDayCounts]:
        """Reads and operators' events of [``since``, ``until``) counted per
        lane (:class:`~gateway.store.records.LaneDayCounts`)."""
        return await self._read(lambda: self._db.lane_counts(since, until))

    async def events_behind(self, seq: int) -> int:
        """How many events were committed after ``seq``."""
        return await self._read(lambda: self._db.events_behind(seq))

    # -- admin sessions --------------------------------------------------------

    async def admin_sessions(self, now: float) -> list[AdminSessionRow]:
        """The admin page's sessions still valid at ``now`` (unix seconds),
        oldest first; the expired ones are deleted."""
        return await self._write(lambda: self._db.admin_sessions(now))

    async def put_admin_session(
        self, session: AdminSessionRow, forget: Sequence[str] = ()
    ) -> None:
        """Keep ``session`` durably, forgetting the sessions keyed ``forget``."""
        forget = list(forget)
        await self._write(lambda: self._db.put_admin_session(session, forget))

    async def delete_admin_sessions(self, keys: Sequence[str]) -> int:
        """Forget these sessions durably; how many there were."""
        keys = list(keys)
        return await self._write(lambda: self._db.delete_admin_sessions(keys))

    # -- audit log ---------------------------------------------------------------

    async def add_audit(self, entry: AuditRow, keep: int = 200_000) -> int:
        """Append ``entry`` to the audit log durably (keeping the newest
        ``keep`` entries); its seq."""
        return await self._write(lambda: self._db.add_audit(entry, keep))

    async def audit_entries(self, before: int | None = None, limit: int = 100) -> list[AuditRow]:
        """Audit entries, newest first, older than seq ``before``."""
        return await self._read(lambda: self._db.audit_entries(before, limit))

    # -- parking sessions --------------------------------------------------------

    async def occupancy_state(
        self, consumer: str, offsets_key: str
    ) -> tuple[int, str | None, list[ParkingSession]]:
        """The occupancy's cursor over the events, its corrections (JSON)
        and the open parking sessions, oldest first."""
        return await self._read(lambda: self._db.occupancy_state(consumer, offsets_key))

    async def save_parking_sessions(
        self,
        sessions: Sequence[ParkingSession],
        *,
        consumer: str,
        cursor: int,
        offsets_key: str,
        offsets: str,
        keep: int = 1_000_000,
    ) -> None:
        """Keep these sessions, the cursor and the corrections durably, at once."""
        sessions = list(sessions)
        await self._write(
            lambda: self._db.save_parking_sessions(
                sessions, consumer, cursor, offsets_key, offsets, keep
            )
        )

    async def parking_sessions(
        self,
        *,
        area: str | None = None,
        state: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[tuple[int, ParkingSession]]:
        """Parking sessions with their seq, newest first."""
        return await self._read(lambda: self._db.parking_sessions(area, state, before, limit))

    async def sessions_in_range(
        self,
        since: datetime,
        until: datetime,
        after: tuple[int, int] | None = None,
        limit: int = 500,
    ) -> list[tuple[int, int, ParkingSession]]:
        """Parking sessions whose time (the entry's, else the exit's) is in
        [``since``, ``until``), oldest first, a page of at most ``limit``
        (capped at 1000) after the key ``after``: the ``(time, seq)`` of the
        previous page's last, as given with each session."""
        limit = max(1, min(int(limit), 1000))
        return await self._read(lambda: self._db.sessions_in_range(since, until, after, limit))

    # -- key/value state -------------------------------------------------------

    async def kv_get(self, key: str) -> str | None:
        """A small piece of state (a sync cursor...), or None."""
        return await self._read(lambda: self._db.kv_get(key))

    async def kv_set(self, key: str, value: str | None) -> None:
        """Set (or with None, delete) a small piece of state, durably."""
        await self._write(lambda: self._db.kv_set(key, value))
