"""The blocking half of the store: one SQLite connection and the image files.

Every method of :class:`Database` runs on the store's own thread, and only
there (the connection is opened on that thread and refuses any other).
:class:`gateway.store.store.Store` is the reactor-side half that hands work
to that thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import attrs
from twisted.logger import Logger

from gateway.policy.cameralist import CameraRow
from gateway.policy.occupancy import ParkingSession, SessionState
from gateway.store.bounded import record_too_large
from gateway.store.images import ImageFiles, PendingImage, fsync_directory
from gateway.store.records import (
    IMAGE_KINDS,
    OPERATOR_EVENT_TYPES,
    AdminSessionRow,
    AuditRow,
    CachedCloudDecision,
    CameraListState,
    CommitResult,
    DeadLetter,
    EventExpiry,
    EventRecord,
    EventRetentionTotals,
    EventType,
    ImageState,
    ImageUpload,
    LaneDayCounts,
    LogDamage,
    OutboxItem,
    OutboxTrim,
    PlateRow,
    PlateRowsWritten,
    QuarantinedRow,
    Replacement,
    RetentionResult,
    SalvageReport,
    StoreHealth,
    StoreStats,
)
from gateway.store.salvage import merge_reports, salvage
from gateway.store.schema import SchemaTooNewError, migrate
from gateway.store.settings import StoreSettings

__all__ = [
    "EVENT_OVERHEAD_BYTES",
    "MAX_READ_RECORD_BYTES",
    "Database",
    "EventWrite",
    "OpenReport",
    "StoreError",
    "StoreOpenError",
    "StoreWriteError",
]

T = TypeVar("T")

DB_NAME = "gateway.db"
LOCK_NAME = "gateway.lock"
#: Written when the gateway closed the database itself, removed at the next open.
CLEAN_NAME = "gateway.db.clean"
#: Written when a check found the database damaged: the next start moves it aside.
DAMAGED_NAME = "gateway.db.damaged"
IMAGES_DIR = "images"
#: Lost images are logged at most this often (the count goes on).
IMAGE_LOSS_LOG_SECONDS = 60.0

log = Logger()

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

# Rows touched per statement/transaction by bulk operations: bounds memory and
# the time one transaction holds the thread.
_CHUNK = 500
#: Free pages given back to the file system per vacuum step (1 MiB of 4 KiB pages).
VACUUM_STEP_PAGES = 256
#: Event rows in a retention step when its caller gives no size (the store sizes
#: its steps by the time they take: gateway.store.store._Pace).
RETENTION_STEP = 100
_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for incremental vacuum
#: kv totals of event retention, since the database was created.
EVENTS_EXPIRED_KEY = "events.expired"
EVENTS_DROPPED_KEY = "events.dropped"
EVENTS_DROPPED_UNSENT_KEY = "events.dropped_unsent"
#: kv: the database this one replaced, until an admin acknowledges it (JSON
#: of :class:`~gateway.store.records.Replacement`).
REPLACED_KEY = "store.replaced"
#: kv: a damaged write-ahead log found at a start, until acknowledged (JSON
#: of :class:`~gateway.store.records.LogDamage`).
LOG_DAMAGED_KEY = "store.log_damaged"
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_WAL_FRAME_HEADER = 24
DEAD_LETTER_BODY_LIMIT = 4096


class StoreError(Exception):
    """The store failed to do what it was asked."""


class StoreWriteError(StoreError):
    """The store could not keep what it was given (disk full, I/O error...).

    Nothing of the failed write was kept. For an event: do not tell the camera
    it was received (close the connection without a reply).
    """


class StoreClosedError(StoreWriteError):
    """The store is closed (or closing): nothing more can be written."""


class StoreOpenError(StoreError):
    """The store could not start (state directory unusable, database locked by
    another gateway, database written by a newer release)."""


class _CorruptDatabase(Exception):
    pass


def _is_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the disk or the database file failed (as opposed
    to a bug in what was asked)."""
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError)):
        return False
    return isinstance(exc, sqlite3.DatabaseError)


def describe_failure(exc: BaseException) -> str:
    """A one-line description of a storage failure for logs and the status page."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


def to_us(value: datetime) -> int:
    """A timezone-aware datetime as unix microseconds (exact)."""
    if value.tzinfo is None:
        raise ValueError("timestamps the store keeps must be timezone-aware")
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _seconds_to_us(value: float) -> int:
    return int(round(value * 1_000_000))


def _opt_us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def _opt_from_us(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


def _opt_iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _opt_from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _delete_where_in(
    connection: sqlite3.Connection, table: str, column: str, values: Sequence[Any]
) -> int:
    """Delete the rows whose ``column`` is one of ``values`` (in chunks under
    SQLite's parameter limit); how many went. ``table`` and ``column`` are
    this module's own names, never caller text."""
    removed = 0
    for chunk in _chunks(values):
        marks = ", ".join("?" * len(chunk))
        removed += connection.execute(
            f"DELETE FROM {table} WHERE {column} IN ({marks})", tuple(chunk)
        ).rowcount
    return removed


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_EVENT_COLUMNS = (
    "seq, id, type, camera, lane, received_at, camera_time, plate, license, offline, "
    "decision_open, decision_reason, decision_source, repeat, raw, reply, "
    "image_full, image_full_bytes, image_crop, image_crop_bytes, raw_z"
)
_EVENT_COLUMN_NAMES = [name.strip() for name in _EVENT_COLUMNS.split(",")]
_EVENT_COLUMN_COUNT = len(_EVENT_COLUMN_NAMES)
#: The most of one raw record read back, in bytes: twice the largest record
#: the camera server keeps (``max_record_bytes``). A larger one (kept by a
#: release that did not bound its records) is read as a note of its size.
MAX_READ_RECORD_BYTES = 2 * 1_048_576
#: What an event costs in a listing or a batch beside its raw record, in bytes.
EVENT_OVERHEAD_BYTES = 512
#: Damaged rows kept in the quarantine table, the newest.
MAX_QUARANTINED = 10_000
#: Times a read runs again after setting damaged rows aside.
_RESCANS = 10


def _event_select(alias: str = "") -> str:
    """The event columns to select (``alias.`` before each): the raw text
    of an old row is read no further than :data:`MAX_READ_RECORD_BYTES`."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(
        f"substr({prefix}raw, 1, {MAX_READ_RECORD_BYTES + 1})" if name == "raw" else prefix + name
        for name in _EVENT_COLUMN_NAMES
    )


_EVENT_SELECT = _event_select()


class _DamagedRow(Exception):
    """A stored event row that cannot be read back; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _raw_text(raw: Any, raw_z: Any) -> bytes | str | None:
    """The raw record's JSON as stored, or None when it is too large to read."""
    if raw_z is None:
        if not isinstance(raw, str):
            raise _DamagedRow(f"raw record is {type(raw).__name__}, not text")
        return raw if len(raw) <= MAX_READ_RECORD_BYTES else None
    if not isinstance(raw_z, bytes):
        raise _DamagedRow(f"compressed raw record is {type(raw_z).__name__}, not a blob")
    decompressor = zlib.decompressobj()
    try:
        data = decompressor.decompress(raw_z, MAX_READ_RECORD_BYTES + 1)
    except zlib.error as error:
        raise _DamagedRow(f"compressed raw record is damaged ({error})") from None
    if len(data) > MAX_READ_RECORD_BYTES:
        return None
    if not decompressor.eof:
        raise _DamagedRow("compressed raw record is cut short")
    return data


def _decode_raw(raw: Any, raw_z: Any) -> tuple[Mapping[str, Any], int]:
    text = _raw_text(raw, raw_z)
    if text is None:
        return record_too_large(MAX_READ_RECORD_BYTES, MAX_READ_RECORD_BYTES), MAX_READ_RECORD_BYTES
    try:
        value = json.loads(text)
    except ValueError as error:  # bad JSON, or bytes that are not UTF-8
        raise _DamagedRow(f"raw record is not JSON ({_one_line(str(error))})") from None
    if not isinstance(value, dict):
        raise _DamagedRow("raw record is not a JSON object")
    return value, len(text)


def _scan_once(
    connection: sqlite3.Connection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any],
    prefix: int,
    max_bytes: int | None,
    crossing: bool,
) -> tuple[list[tuple[Sequence[Any], EventRecord]], list[tuple[Any, Any, str]]]:
    """One pass of :meth:`Database._scan_events`: the events read, and the
    rows that could not be (seq, id, why)."""
    found: list[tuple[Sequence[Any], EventRecord]] = []
    damaged: list[tuple[Any, Any, str]] = []
    cursor = connection.execute(sql, params)
    used = 0
    try:
        for row in cursor:
            try:
                record = _event_from_row(row[prefix:])
            except _DamagedRow as error:
                damaged.append((row[prefix], row[prefix + 1], error.reason))
                continue
            cost = record.raw_bytes + EVENT_OVERHEAD_BYTES
            if max_bytes is not None and found and used + cost > max_bytes:
                if crossing:
                    found.append((row[:prefix], record))
                break
            found.append((row[:prefix], record))
            used += cost
    finally:
        cursor.close()
    return found, damaged


def _one_line(text: str) -> str:
    """A short, one-line reason."""
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


def _event_from_row(row: Sequence[Any]) -> EventRecord:
    """The event of a row; raises :class:`_DamagedRow` when it cannot be read."""
    try:
        return _decode_event(row)
    except _DamagedRow:
        raise
    except (ValueError, TypeError, OverflowError, AttributeError) as error:
        raise _DamagedRow(f"{type(error).__name__}: {_one_line(str(error))}") from None


def _decode_event(row: Sequence[Any]) -> EventRecord:
    (
        seq,
        event_id,
        type_,
        camera,
        lane,
        received_at,
        camera_time,
        plate,
        license,
        offline,
        decision_open,
        decision_reason,
        decision_source,
        repeat,
        raw,
        reply,
        image_full,
        image_full_bytes,
        image_crop,
        image_crop_bytes,
        raw_z,
    ) = row
    for name, value, kinds in (
        ("id", event_id, (str,)),
        ("camera", camera, (str, type(None))),
        ("lane", lane, (str, type(None))),
        ("plate", plate, (str,)),
        ("license", license, (str,)),
        ("reply", reply, (str, type(None))),
        ("received_at", received_at, (int,)),
        ("camera_time", camera_time, (int, type(None))),
        ("image_full_bytes", image_full_bytes, (int,)),
        ("image_crop_bytes", image_crop_bytes, (int,)),
    ):
        if not isinstance(value, kinds):
            raise _DamagedRow(f"{name} is {type(value).__name__}")
    raw_record, raw_bytes = _decode_raw(raw, raw_z)
    event_type = EventType(type_)
    answers = raw_record.get("answers") if event_type in OPERATOR_EVENT_TYPES else None
    return EventRecord(
        id=event_id,
        type=event_type,
        received_at=from_us(received_at),
        camera=camera,
        lane=lane,
        camera_time=_opt_from_us(camera_time),
        plate=plate,
        license=license,
        offline=bool(offline),
        decision_open=None if decision_open is None else bool(decision_open),
        decision_reason=decision_reason,
        decision_source=decision_source,
        repeat=bool(repeat),
        raw=raw_record,
        reply=reply,
        image_full=ImageState(image_full),
        image_full_bytes=image_full_bytes,
        image_crop=ImageState(image_crop),
        image_crop_bytes=image_crop_bytes,
        seq=seq,
        raw_bytes=raw_bytes,
        answers=answers if isinstance(answers, str) else None,
    )


_WHITELIST_COLUMNS = (
    "plate, enabled, blacklist, valid_from, valid_until, lanes, hours, note, source, updated_at"
)


_SESSION_COLUMNS = (
    "key, area, plate, state, entered_at, entry_lane, entry_event, left_at, exit_lane, exit_event"
)


def _session_from_row(row: Sequence[Any]) -> ParkingSession:
    return ParkingSession(
        key=row[0],
        area=row[1],
        plate=row[2],
        state=SessionState(row[3]),
        entered_at=_opt_from_us(row[4]),
        entry_lane=row[5],
        entry_event=row[6],
        left_at=_opt_from_us(row[7]),
        exit_lane=row[8],
        exit_event=row[9],
    )


def _whitelist_from_row(row: Sequence[Any]) -> PlateRow:
    plate, enabled, blacklist, valid_from, valid_until, lanes, hours, note, source, updated_at = row
    return PlateRow(
        plate=plate,
        enabled=bool(enabled),
        blacklist=bool(blacklist),
        valid_from=_opt_from_iso(valid_from),
        valid_until=_opt_from_iso(valid_until),
        lanes=tuple(json.loads(lanes)),
        hours=hours,
        note=note,
        source=source,
        updated_at=from_us(updated_at),
    )


@attrs.frozen
class EventWrite:
    """One event handed to the store thread for a group commit."""

    record: EventRecord
    raw_json: str
    images: tuple[tuple[str, bytes], ...]
    outbox: bool


@attrs.frozen
class OpenReport:
    """What happened while opening: a quarantined database, migrations run."""

    quarantined: Path | None
    corruption: str | None
    migrations_applied: int
    check_needed: bool = False  # the last run did not close it: check the whole file
    #: The database this one replaced, not yet acknowledged (kept in it).
    replacement: Replacement | None = None
    #: A salvage the last run did not finish was run again at this opening.
    salvage_resumed: bool = False
    #: A damaged write-ahead log, not yet acknowledged (kept in the database).
    log_damage: LogDamage | None = None
    #: The log damage was found at this opening.
    log_damage_new: bool = False


class Database:
    """The store's connection and image directory. Thread-confined."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DB_NAME
        self.images = ImageFiles(state_dir / IMAGES_DIR)
        self.image_bytes = 0
        self.image_files = 0
        self.images_lost = 0
        self.rows_quarantined = 0  # event rows set aside since the store opened
        self._image_loss_logged = -IMAGE_LOSS_LOG_SECONDS
        self.commit_transactions = 0
        self.quarantined: Path | None = None
        self.damage: str | None = None  # damage met while in use, if any
        self.replacement: Replacement | None = None
        self.log_damage: LogDamage | None = None
        self._dropped_commits = 0  # found in the log at this opening
        self._connection: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    # -- opening and closing -------------------------------------------------

    def open(self, now: datetime) -> OpenReport:
        """Lock the state directory, open (or quarantine and recreate) the
        database, apply migrations and load the image totals."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreOpenError(
                f"cannot create state directory {self.state_dir}: {describe_failure(exc)}"
            ) from exc
        self._lock()
        try:
            return self._open_locked(now)
        except BaseException:
            self.close()
            raise

    def _open_locked(self, now: datetime) -> OpenReport:
        corruption: str | None = None
        # Present only if the last run closed the database itself: removed
        # (and the removal made durable) before anything is written, so any
        # end but a clean close leaves the database to be checked.
        clean = self._clean_marker.exists()
        try:
            fresh = self.path.stat().st_size == 0
        except FileNotFoundError:
            fresh = True
        if clean:
            try:
                self._clean_marker.unlink()
                fsync_directory(self.state_dir)
            except OSError as exc:
                raise StoreOpenError(
                    f"cannot write in state directory {self.state_dir}: {describe_failure(exc)}"
                ) from exc
        try:
            self._connection = self._connect_checked()
        except _CorruptDatabase as exc:
            corruption = str(exc)
            self.quarantined = self._quarantine(now)
            self._connection = self._connect_checked()
        resumed = False
        found_log_damage = None
        if self._dropped_commits >= 2 and self.quarantined is None:
            # Copied before anything is written: the next write starts the log again.
            found_log_damage = LogDamage(
                at=now, dropped_commits=self._dropped_commits, copy=self._keep_damaged_log(now)
            )
        try:
            applied = migrate(self._connection)
            if found_log_damage is not None:
                self.kv_set(LOG_DAMAGED_KEY, json.dumps(found_log_damage.to_json()))
            self.log_damage = found_log_damage or self._load_log_damage()
            if self.quarantined is not None:
                replacement = Replacement(
                    at=now, moved_to=str(self.quarantined), reason=corruption or "damaged"
                )
                # Recorded before the salvage: a stop during it leaves the
                # replacement shown, and the salvage is run again.
                self._save_replacement(replacement)
                self.replacement = self._salvage(replacement, now)
            else:
                self.replacement = self._load_replacement()
                unfinished = self.replacement
                if (
                    unfinished is not None
                    and not unfinished.salvage.finished
                    and Path(unfinished.moved_to).exists()
                ):
                    self.replacement = self._salvage(unfinished, now, unfinished.salvage)
                    resumed = True
            self._load_image_totals()
        except SchemaTooNewError as exc:
            raise StoreOpenError(f"{self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreOpenError(
                f"cannot prepare database {self.path}: {describe_failure(exc)}"
            ) from exc
        except StoreError as exc:  # the record of a replacement or a damaged log
            raise StoreOpenError(f"cannot prepare database {self.path}: {exc}") from exc
        return OpenReport(
            quarantined=self.quarantined,
            corruption=corruption,
            migrations_applied=applied,
            check_needed=not (clean or fresh) and self.quarantined is None,
            replacement=self.replacement,
            salvage_resumed=resumed,
            log_damage=self.log_damage,
            log_damage_new=found_log_damage is not None,
        )

    # -- a replaced database -------------------------------------------------

    def _salvage(
        self, replacement: Replacement, now: datetime, earlier: SalvageReport | None = None
    ) -> Replacement:
        """Copy what can be read of the replaced database into this one; the
        replacement with its salvage report (saved in this one)."""

        def progress(report: SalvageReport) -> None:
            self._save_replacement(
                attrs.evolve(replacement, salvage=merge_reports(earlier, report))
            )

        report = salvage(
            Path(replacement.moved_to),
            self.connection,
            now_us=to_us(now),
            check_event=_event_from_row,
            check_plate=_whitelist_from_row,
            progress=progress,
        )
        done = attrs.evolve(replacement, salvage=merge_reports(earlier, report))
        self._save_replacement(done)
        return done

    def _save_replacement(self, replacement: Replacement | None) -> None:
        value = None if replacement is None else json.dumps(replacement.to_json())
        self.kv_set(REPLACED_KEY, value)

    def _load_replacement(self) -> Replacement | None:
        text = self.kv_get(REPLACED_KEY)
        if text is None:
            return None
        try:
            return Replacement.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warn("The record of a replaced database cannot be read: {text}", text=text[:200])
            return None

    def _load_log_damage(self) -> LogDamage | None:
        text = self.kv_get(LOG_DAMAGED_KEY)
        if text is None:
            return None
        try:
            return LogDamage.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warn("The record of a damaged log cannot be read: {text}", text=text[:200])
            return None

    def acknowledge_damage(self) -> tuple[Replacement | None, LogDamage | None]:
        """Forget the replaced database and the damaged log (an admin has
        seen them); what they were."""
        replacement = self.replacement if self.replacement is not None else self._load_replacement()
        damage = self.log_damage if self.log_damage is not None else self._load_log_damage()

        def work(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM kv WHERE key IN (?, ?)", (REPLACED_KEY, LOG_DAMAGED_KEY))

        self.write(work)
        self.replacement = None
        self.log_damage = None
        return replacement, damage

    def _lock(self) -> None:
        # One gateway per state directory: two would interleave writes to the
        # same image files and fight over the outbox. flock is released by the
        # kernel when the process dies, even by kill -9.
        path = self.state_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreOpenError(
                f"cannot open lock file {path}: {exc.strerror or describe_failure(exc)}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreOpenError(
                f"state directory {self.state_dir} is in use by another anpr-gateway"
            ) from exc
        self._lock_fd = fd

    def _connect_checked(self) -> sqlite3.Connection:
        """Open the database and prove it readable; raise _CorruptDatabase if it is not."""
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        except sqlite3.Error as exc:
            raise StoreOpenError(
                f"cannot open database {self.path}: {describe_failure(exc)}"
            ) from exc
        try:
            if int(connection.execute("PRAGMA page_count").fetchone()[0]) == 0:
                # A new database: free pages go back to the file system in
                # small steps (vacuum_step) once retention deletes rows. Only
                # possible before the first table is made.
                connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreOpenError(
                    f"database {self.path} cannot use write-ahead logging (mode {mode})"
                )
            # FULL: a commit is on disk (WAL fsynced) before it returns, so an
            # event the camera was answered for survives power loss.
            connection.execute("PRAGMA synchronous = FULL")
            # Keep the write-ahead log from growing without bound after bursts.
            connection.execute("PRAGMA journal_size_limit = 67108864")
            # A bounded check on the way to serving, whatever the file's size:
            # the header and the schema read and make sense. The whole file is
            # checked after an unclean shutdown, in the background
            # (check_database), never on the way to answering plates.
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            if self._damage_marker.exists():
                raise _CorruptDatabase(self._read_damage_marker())
            # SQLite has replayed the log: before anything is written (which
            # starts the log again), see whether it dropped commits past damage.
            self._dropped_commits = self._commits_past_the_log_end(connection)
        except sqlite3.DatabaseError as exc:
            connection.close()
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise _CorruptDatabase(describe_failure(exc)) from exc
            raise StoreOpenError(
                f"cannot open database {self.path}: {describe_failure(exc)}"
            ) from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def _commits_past_the_log_end(self, connection: sqlite3.Connection) -> int:
        """Commit frames of the log's current generation (its salts) beyond
        the frames SQLite replayed. SQLite stops at the first frame whose
        checksum fails and drops the rest without a word: one such commit
        may be the torn last transaction of a power cut (never answered);
        two or more mean the log was damaged after commits were answered."""
        wal = Path(f"{self.path}-wal")
        try:
            size = wal.stat().st_size
        except OSError:
            return 0
        if size <= _WAL_HEADER:
            return 0
        row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        replayed = int(row[1]) if row is not None else -1
        if replayed < 0:
            return 0
        commits = 0
        with open(wal, "rb") as log_file:
            header = log_file.read(_WAL_HEADER)
            if len(header) < _WAL_HEADER:
                return 0
            magic, _, page_size, _, salt1, salt2 = struct.unpack(">6I", header[:24])
            if magic not in _WAL_MAGIC or page_size < 512:
                return 0
            frame = _WAL_FRAME_HEADER + page_size
            offset = _WAL_HEADER + replayed * frame
            while offset + _WAL_FRAME_HEADER <= size:
                log_file.seek(offset)
                _, commit, frame_salt1, frame_salt2 = struct.unpack(">4I", log_file.read(16))
                if (frame_salt1, frame_salt2) == (salt1, salt2) and commit:
                    commits += 1
                offset += frame
        return commits

    def _keep_damaged_log(self, now: datetime) -> str | None:
        """A copy of the damaged log beside the database, for inspection."""
        stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{DB_NAME}-wal.damaged-{stamp}")
        try:
            shutil.copyfile(f"{self.path}-wal", target)
            with open(target, "rb") as stream:
                os.fsync(stream.fileno())
            fsync_directory(self.state_dir)
        except OSError as exc:
            log.error("Could not keep a copy of the damaged log: {reason}", reason=describe_failure(exc))
            return None
        return str(target)

    @property
    def _damage_marker(self) -> Path:
        return self.state_dir / DAMAGED_NAME

    @property
    def _clean_marker(self) -> Path:
        return self.state_dir / CLEAN_NAME

    def _read_damage_marker(self) -> str:
        try:
            text = self._damage_marker.read_text("utf-8", "replace").strip()
        except OSError as exc:
            text = describe_failure(exc)
        return text[:500] or "the last check found the database damaged"

    def mark_damaged(self, problems: str) -> None:
        """Remember that the database is damaged: the next start moves it aside."""
        if self.damage is None:
            self.damage = problems
        path = self._damage_marker
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(problems[:2000] + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        fsync_directory(self.state_dir)

    def _quarantine(self, now: datetime) -> Path:
        """Move the corrupt database (and its -wal/-shm) aside; return the new name."""
        stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = self.path.with_name(f"{DB_NAME}.corrupt-{stamp}")
        counter = 1
        while base.exists():
            counter += 1
            base = self.path.with_name(f"{DB_NAME}.corrupt-{stamp}-{counter}")
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    os.replace(source, f"{base}{suffix}")
            self._damage_marker.unlink(missing_ok=True)
            fsync_directory(self.state_dir)
        except OSError as exc:
            raise StoreOpenError(
                f"cannot move corrupt database {self.path} aside: {describe_failure(exc)}"
            ) from exc
        return base

    def _load_image_totals(self) -> None:
        # Once at start, from the rows (the partial index), never by walking the tree.
        row = self.connection.execute("""
            SELECT
              COALESCE(SUM(CASE WHEN image_full = 'present' THEN image_full_bytes ELSE 0 END
                         + CASE WHEN image_crop = 'present' THEN image_crop_bytes ELSE 0 END), 0),
              COALESCE(SUM((image_full = 'present') + (image_crop = 'present')), 0)
            FROM events WHERE image_full = 'present' OR image_crop = 'present'
            """).fetchone()
        self.image_bytes, self.image_files = int(row[0]), int(row[1])

    def close(self) -> None:
        """Checkpoint and close the database, release the state directory."""
        if self._connection is not None:
            clean = True
            try:
                # Fold the log back into the database so the next start is quick.
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                clean = False  # the log stays; SQLite replays it at the next open
            self._connection.close()
            self._connection = None
            if clean and not self._damage_marker.exists():
                try:
                    with open(self._clean_marker, "wb") as stream:
                        os.fsync(stream.fileno())
                    fsync_directory(self.state_dir)
                except OSError:
                    pass  # the next start checks the whole file
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreClosedError("the store is closed")
        return self._connection

    # -- transactions --------------------------------------------------------

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction; storage failures become StoreWriteError."""
        connection = self.connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
                connection.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except Exception as exc:
            if _is_storage_failure(exc):
                self._damage_found(exc)
                raise StoreWriteError(describe_failure(exc)) from exc
            raise
        return result

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work``; storage failures become StoreError."""
        try:
            return work(self.connection)
        except Exception as exc:
            if _is_storage_failure(exc):
                self._damage_found(exc)
                raise StoreError(describe_failure(exc)) from exc
            raise

    def _damage_found(self, exc: BaseException) -> None:
        """A read or write met a damaged page: said once, and the database is
        moved aside at the next start."""
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return
        if self.damage is not None:
            return
        self.damage = describe_failure(exc)
        log.critical(
            "Database {path} is damaged ({reason}); what cannot be read is refused. "
            "At the next start it is moved aside and a fresh database is started.",
            path=str(self.path),
            reason=self.damage,
        )
        try:
            self.mark_damaged(self.damage)
        except OSError as error:
            log.error("Could not record the damage: {reason}", reason=describe_failure(error))

    def _rollback(self) -> None:
        connection = self.connection
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (e.g. after SQLITE_FULL)

    # -- events --------------------------------------------------------------

    def _event_by_id(self, event_id: str) -> EventRecord | None:
        """The stored event with this id; a row that cannot be read is set
        aside (see :meth:`_scan_events`) and is no event."""
        found = self._scan_events(f"SELECT {_EVENT_SELECT} FROM events WHERE id = ?", (event_id,))
        return found[0][1] if found else None

    def _scan_events(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any],
        *,
        prefix: int = 0,
        max_bytes: int | None = None,
        crossing: bool = False,
    ) -> list[tuple[Sequence[Any], EventRecord]]:
        """The events ``sql`` selects (its first ``prefix`` columns given back
        beside each), read one row at a time: with ``max_bytes``, no further
        than the rows whose raw records and overhead fit in it (at least one;
        with ``crossing``, also the first that did not fit, so the caller can
        tell there is more).

        A row that cannot be read (a damaged record, a value of the wrong
        kind) is set aside in the quarantine table and the query runs again
        without it: one damaged row is one damaged event, never a failed read.
        """
        found: list[tuple[Sequence[Any], EventRecord]] = []
        for _ in range(_RESCANS):
            found, damaged = self.read(
                lambda connection: _scan_once(connection, sql, params, prefix, max_bytes, crossing)
            )
            if not damaged:
                return found
            try:
                self._set_aside(damaged)
            except StoreError as error:
                if found:
                    return found
                raise StoreError(f"damaged event rows cannot be set aside: {error}") from error
        return found

    def _set_aside(self, damaged: Sequence[tuple[Any, Any, str]]) -> None:
        """Move damaged event rows, whole and as found, to the quarantine
        table (with their outbox and image-upload entries: they cannot be sent)."""
        now = to_us(datetime.now(timezone.utc))
        columns = ", ".join(_EVENT_COLUMN_NAMES[1:])

        def work(connection: sqlite3.Connection) -> list[tuple[Any, Any, str]]:
            moved = []
            for seq, event_id, reason in damaged:
                queued = connection.execute(
                    "SELECT 1 FROM outbox WHERE event_id = ?", (event_id,)
                ).fetchone()
                inserted = connection.execute(
                    f"INSERT INTO quarantine (quarantined_at, reason, queued, event_seq, {columns}) "
                    f"SELECT ?, ?, ?, seq, {columns} FROM events WHERE seq = ?",
                    (now, reason, int(queued is not None), seq),
                ).rowcount
                if not inserted:
                    continue  # set aside meanwhile
                connection.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))
                connection.execute("DELETE FROM upstream_images WHERE event_id = ?", (event_id,))
                connection.execute("DELETE FROM events WHERE seq = ?", (seq,))
                moved.append((seq, event_id, reason))
            connection.execute(
                "DELETE FROM quarantine WHERE seq <= (SELECT MAX(seq) FROM quarantine) - ?",
                (MAX_QUARANTINED,),
            )
            return moved

        for seq, event_id, reason in self.write(work):
            self.rows_quarantined += 1
            log.error(
                "Event {event_id} (row {seq}) cannot be read: {reason}. It is set aside in "
                "the quarantine table as found (shown on the status page); the other events "
                "go on.",
                event_id=str(event_id)[:80],
                seq=seq,
                reason=reason,
            )

    def commit_events(self, writes: Sequence[EventWrite]) -> list[CommitResult | StoreWriteError]:
        """Store a batch of events in one transaction (a group commit).

        Images are written and fsynced (files and directories) before the
        transaction: all files of the batch first, then each synced (one
        flush of the file system's journal does most of the work). An image
        that cannot be written is marked missing, its event kept; if the
        transaction fails the images written for it are removed. Returns one
        outcome per write, in order.
        """
        outcomes: list[CommitResult | StoreWriteError | None] = [None] * len(writes)
        first_index: dict[str, int] = {}
        fresh: list[tuple[int, EventRecord, EventWrite]] = []
        written: list[Path] = []
        pending: list[tuple[int, str, PendingImage]] = []  # (position in fresh, kind, image)
        directories: set[Path] = set()

        try:
            for index, item in enumerate(writes):
                event_id = item.record.id
                if event_id in first_index:
                    continue  # the same event twice in one batch: resolved below
                first_index[event_id] = index
                try:
                    existing = self._event_by_id(event_id)
                except StoreError as exc:
                    outcomes[index] = StoreWriteError(str(exc))
                    continue
                if existing is not None:
                    outcomes[index] = CommitResult(record=existing, created=False)
                    continue
                record, started = self._start_images(item, directories)
                pending.extend((len(fresh), kind, image) for kind, image in started)
                fresh.append((index, record, item))
        except BaseException:
            # Not a storage failure (those are outcomes): leave no open file behind.
            for _, _, image in pending:
                self.images.abandon(image)
            raise

        # Every image of the batch is written; now each is synced and named.
        for position, kind, image in pending:
            try:
                self.images.finish(image)
            except OSError as exc:
                index, record, item = fresh[position]
                self._image_lost(record.id, kind, exc)
                fresh[position] = (index, _image_state(record, kind, ImageState.MISSING, 0), item)
            else:
                written.append(image.path)

        if fresh:
            try:
                try:
                    ImageFiles.sync_directories(directories)
                except OSError as exc:
                    raise StoreWriteError(f"cannot write image: {describe_failure(exc)}") from exc
                seqs = self.write(
                    lambda c: [self._insert_event(c, record, item) for _, record, item in fresh]
                )
            except StoreWriteError as exc:
                for path in written:
                    self._discard(path)
                for index, _, _ in fresh:
                    outcomes[index] = exc
            else:
                self.commit_transactions += 1
                for (index, record, _), seq in zip(fresh, seqs, strict=True):
                    stored = attrs.evolve(record, seq=seq)
                    outcomes[index] = CommitResult(record=stored, created=True)
                    for kind in IMAGE_KINDS:
                        if stored.image_state(kind) is ImageState.PRESENT:
                            self.image_files += 1
                            self.image_bytes += _image_bytes(stored, kind)

        results: list[CommitResult | StoreWriteError] = []
        for index, item in enumerate(writes):
            outcome = outcomes[index]
            if outcome is None:
                first = outcomes[first_index[item.record.id]]
                assert first is not None
                outcome = (
                    CommitResult(record=first.record, created=False)
                    if isinstance(first, CommitResult)
                    else first
                )
            results.append(outcome)
        return results

    def _start_images(
        self, item: EventWrite, directories: set[Path]
    ) -> tuple[EventRecord, list[tuple[str, PendingImage]]]:
        """The event's images written (not yet synced), and the record saying
        which are. An image that cannot be written costs the image, not the
        event: it is kept as ``missing`` and counted (the plate is answered
        all the same)."""
        record = attrs.evolve(
            item.record,
            image_full=ImageState.NONE,
            image_full_bytes=0,
            image_crop=ImageState.NONE,
            image_crop_bytes=0,
            seq=None,
        )
        started: list[tuple[str, PendingImage]] = []
        for kind, data in item.images:
            path = self.images.path(record.id, kind, record.received_at)
            try:
                started.append((kind, self.images.start(path, data, directories)))
            except OSError as exc:
                self._image_lost(record.id, kind, exc)
                record = _image_state(record, kind, ImageState.MISSING, 0)
            else:
                record = _image_state(record, kind, ImageState.PRESENT, len(data))
        return record, started

    def _image_lost(self, event_id: str, kind: str, error: OSError) -> None:
        self.images_lost += 1
        now = time.monotonic()
        if now - self._image_loss_logged >= IMAGE_LOSS_LOG_SECONDS:
            self._image_loss_logged = now
            log.error(
                "Cannot write images ({reason}): events are kept without them "
                "({count} images lost since the store opened; the first here: {kind} of {event})",
                reason=describe_failure(error),
                count=self.images_lost,
                kind=kind,
                event=event_id,
            )

    def _discard(self, path: Path) -> None:
        try:
            self.images.remove(path)
        except OSError:
            pass  # an orphan; retention removes its whole day later

    def _insert_event(
        self, connection: sqlite3.Connection, record: EventRecord, item: EventWrite
    ) -> int:
        cursor = connection.execute(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (NULL{', ?' * (_EVENT_COLUMN_COUNT - 1)})",
            (
                record.id,
                record.type.value,
                record.camera,
                record.lane,
                to_us(record.received_at),
                _opt_us(record.camera_time),
                record.plate,
                record.license,
                int(record.offline),
                None if record.decision_open is None else int(record.decision_open),
                record.decision_reason,
                record.decision_source,
                int(record.repeat),
                "",
                record.reply,
                record.image_full.value,
                record.image_full_bytes,
                record.image_crop.value,
                record.image_crop_bytes,
                compress_raw(item.raw_json),
            ),
        )
        seq = cursor.lastrowid
        assert seq is not None
        if record.answers is not None:
            connection.execute(
                "INSERT INTO event_answers (event_id, answers) VALUES (?, ?)",
                (record.id, record.answers),
            )
        if item.outbox:
            connection.execute(
                "INSERT INTO outbox (event_id, camera, enqueued_at) VALUES (?, ?, ?)",
                (record.id, record.camera, to_us(record.received_at)),
            )
        return seq

    def get_event(self, event_id: str) -> EventRecord | None:
        return self._event_by_id(event_id)

    def recent_events(
        self,
        limit: int,
        before_seq: int | None,
        plate: str | None,
        camera: str | None,
        lane: str | None,
        type: EventType | None,
        decision_open: bool | None,
        reason: str | None,
        since: datetime | None,
        until: datetime | None,
        max_bytes: int | None = None,
    ) -> list[EventRecord]:
        """Newest first; with ``max_bytes``, read no further than the events
        that fit in it and the first that did not (see :meth:`_scan_events`)."""
        clauses: list[str] = []
        params: list[Any] = []
        if before_seq is not None:
            clauses.append("seq < ?")
            params.append(before_seq)
        if plate:
            clauses.append("(plate LIKE ? ESCAPE '\\' OR license LIKE ? ESCAPE '\\')")
            params += [_like_pattern(plate)] * 2
        for column, value in (("camera", camera), ("lane", lane), ("decision_reason", reason)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if type is not None:
            clauses.append("type = ?")
            params.append(EventType(type).value)
        if decision_open is not None:
            clauses.append("decision_open = ?")
            params.append(int(decision_open))
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(to_us(since))
        if until is not None:
            clauses.append("received_at < ?")
            params.append(to_us(until))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        sql = f"SELECT {_EVENT_SELECT} FROM events {where} ORDER BY seq DESC LIMIT ?"
        found = self._scan_events(sql, params, max_bytes=max_bytes, crossing=True)
        return [record for _, record in found]

    def image_path(self, event_id: str, kind: str) -> Path | None:
        record = self.get_event(event_id)
        if record is None or record.image_state(kind) is not ImageState.PRESENT:
            return None
        path = self.images.path(record.id, kind, record.received_at)
        return path if path.is_file() else None

    def read_image(self, event_id: str, kind: str) -> bytes | None:
        path = self.image_path(event_id, kind)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None  # removed by retention in between
        except OSError as exc:
            raise StoreError(f"cannot read image: {describe_failure(exc)}") from exc

    # -- retention -----------------------------------------------------------

    def enforce_retention(self, now: datetime, config: StoreSettings) -> RetentionResult:
        """Expire images older than the retention, then the oldest until the
        total is under the cap. Rows stay, marked expired."""
        cutoff = now - timedelta(days=config.image_retention_days)
        by_age, freed_age = 0, 0
        while True:
            rows = self._oldest_with_images("received_at < ?", (to_us(cutoff),), _CHUNK)
            if not rows:
                break
            count, freed = self._expire(rows)
            by_age += count
            freed_age += freed
        by_size, freed_size = self.trim_to(config.image_max_bytes)
        try:
            self.images.remove_days_before(cutoff.astimezone(timezone.utc).date())
        except OSError:
            pass  # orphans only; the next pass tries again
        return RetentionResult(
            expired_by_age=by_age,
            expired_by_size=by_size,
            bytes_freed=freed_age + freed_size,
            image_bytes=self.image_bytes,
        )

    def trim_to(self, max_bytes: int) -> tuple[int, int]:
        """Expire the oldest images until at most ``max_bytes`` are kept."""
        count, freed = 0, 0
        while self.image_bytes > max_bytes:
            rows = self._oldest_with_images("1", (), 64)
            if not rows:
                # The running total disagrees with the rows (cannot happen
                # unless edited by hand): trust the rows.
                self._load_image_totals()
                break
            chosen = []
            excess = self.image_bytes - max_bytes
            for row in rows:
                chosen.append(row)
                excess -= _row_image_bytes(row)
                if excess <= 0:
                    break
            expired, released = self._expire(chosen)
            count += expired
            freed += released
        return count, freed

    def _oldest_with_images(
        self, condition: str, params: tuple[Any, ...], limit: int
    ) -> list[tuple[Any, ...]]:
        sql = (
            "SELECT seq, id, received_at, image_full, image_full_bytes, image_crop, image_crop_bytes "
            "FROM events WHERE (image_full = 'present' OR image_crop = 'present') "
            f"AND {condition} ORDER BY received_at, seq LIMIT ?"
        )
        return self.read(lambda c: [tuple(row) for row in c.execute(sql, (*params, limit))])

    def _expire(self, rows: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
        """Mark the images of ``rows`` expired (committed first), then remove the files.

        Marking first means a crash in between leaves only orphan files,
        never a row pointing at a missing image.
        """

        def mark(connection: sqlite3.Connection) -> None:
            connection.executemany(
                """
                UPDATE events SET
                  image_full = CASE image_full WHEN 'present' THEN 'expired' ELSE image_full END,
                  image_crop = CASE image_crop WHEN 'present' THEN 'expired' ELSE image_crop END
                WHERE seq = ?
                """,
                [(row[0],) for row in rows],
            )

        self.write(mark)
        count, freed = 0, 0
        for _seq, event_id, received_at, full, full_bytes, crop, crop_bytes in rows:
            for kind, state, size in (("full", full, full_bytes), ("crop", crop, crop_bytes)):
                if state != ImageState.PRESENT.value:
                    continue
                self._discard(self.images.path(event_id, kind, from_us(received_at)))
                count += 1
                freed += size
        self.image_files -= count
        self.image_bytes -= freed
        return count, freed

    # -- event retention -----------------------------------------------------

    def live_bytes(self) -> int:
        """Bytes of database pages in use (the file less its free pages): what
        ``max_db_bytes`` caps. The file itself gives free pages back as they
        are vacuumed."""

        return self.read(_live_bytes)

    @staticmethod
    def _waiting(connection: sqlite3.Connection, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` are still to be delivered upstream (queued,
        their images queued, or a dead letter an admin may replay)."""
        waiting: set[str] = set()
        for chunk in _chunks(event_ids):
            marks = ", ".join("?" * len(chunk))
            for table in ("outbox", "upstream_images", "dead_letters"):
                waiting.update(
                    row[0]
                    for row in connection.execute(
                        f"SELECT event_id FROM {table} WHERE event_id IN ({marks})", tuple(chunk)
                    )
                )
        return waiting

    def _delete_events(
        self, connection: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Delete the events of ``rows`` (seq first), with whatever still names them."""
        ids = [row[1] for row in rows]
        for table in ("outbox", "upstream_images", "dead_letters", "event_answers"):
            _delete_where_in(connection, table, "event_id", ids)
        _delete_where_in(connection, "events", "seq", [row[0] for row in rows])

    def _count(self, connection: sqlite3.Connection, key: str, count: int) -> None:
        if count:
            connection.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                "SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT)",
                (key, str(count), count),
            )

    def _forget_images(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Remove the image files of deleted rows (after their commit: a crash
        in between leaves orphan files, which the day sweep removes)."""
        freed = 0
        for _seq, event_id, received_at, full, full_bytes, crop, crop_bytes in rows:
            for kind, state, size in (("full", full, full_bytes), ("crop", crop, crop_bytes)):
                if state == ImageState.PRESENT.value:
                    self._discard(self.images.path(event_id, kind, from_us(received_at)))
                    self.image_files -= 1
                    self.image_bytes -= size
                    freed += size
        return freed

    _ROW_SELECT = (
        "SELECT seq, id, received_at, image_full, image_full_bytes, image_crop, image_crop_bytes "
        "FROM events "
    )

    def expire_events(
        self, cutoff: datetime, after_seq: int, limit: int = RETENTION_STEP
    ) -> EventExpiry:
        """One step of event retention by age, in one transaction: of the next
        ``limit`` events after ``after_seq`` (in commit order), delete those
        received before ``cutoff`` that are not waiting for delivery. The walk
        ends at the first event received after the cutoff."""
        cutoff_us = to_us(cutoff)

        def work(connection: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int, bool, int]:
            rows = [
                tuple(row)
                for row in connection.execute(
                    self._ROW_SELECT + "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
                )
            ]
            old = []
            for row in rows:
                if row[2] >= cutoff_us:
                    break
                old.append(row)
            finished = len(old) < limit
            waiting = self._waiting(connection, [row[1] for row in old])
            doomed = [row for row in old if row[1] not in waiting]
            self._delete_events(connection, doomed)
            self._count(connection, EVENTS_EXPIRED_KEY, len(doomed))
            last = old[-1][0] if old else after_seq
            return doomed, last, finished, len(old) - len(doomed)

        doomed, last, finished, kept = self.write(work)
        freed = self._forget_images(doomed)
        return EventExpiry(
            removed=len(doomed),
            kept_waiting=kept,
            last_seq=last,
            finished=finished,
            image_bytes_freed=freed,
        )

    _DELIVERED = (
        "WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = events.id) "
        "AND NOT EXISTS (SELECT 1 FROM upstream_images u WHERE u.event_id = events.id) "
        "AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_id = events.id) "
    )

    def drop_oldest_events(self, limit: int = RETENTION_STEP) -> EventExpiry:
        """One step of the size cap, in one transaction: delete the ``limit``
        oldest events that are not waiting for delivery; when only such
        events are left, the oldest of those (counted as dropped unsent)."""

        def work(connection: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
            rows = [
                tuple(row)
                for row in connection.execute(
                    self._ROW_SELECT + self._DELIVERED + "ORDER BY seq LIMIT ?", (limit,)
                )
            ]
            if not rows:
                rows = [
                    tuple(row)
                    for row in connection.execute(
                        self._ROW_SELECT + "ORDER BY seq LIMIT ?", (limit,)
                    )
                ]
            unsent = len(self._waiting(connection, [row[1] for row in rows]))
            self._delete_events(connection, rows)
            self._count(connection, EVENTS_DROPPED_KEY, len(rows))
            self._count(connection, EVENTS_DROPPED_UNSENT_KEY, unsent)
            return rows, unsent

        rows, unsent = self.write(work)
        freed = self._forget_images(rows)
        return EventExpiry(
            removed=len(rows),
            dropped_unsent=unsent,
            last_seq=rows[-1][0] if rows else 0,
            finished=len(rows) < limit,
            image_bytes_freed=freed,
        )

    def vacuum_step(self, pages: int = VACUUM_STEP_PAGES) -> int:
        """Give up to ``pages`` free pages back to the file system (databases
        made with incremental vacuum); how many free pages are left."""

        connection = self.connection
        try:
            if int(connection.execute("PRAGMA auto_vacuum").fetchone()[0]) != _INCREMENTAL:
                return 0
            # A transaction of its own. Through execute() the pragma frees one
            # page per step of its statement, and Python's sqlite3 takes one
            # step; executescript runs it to its end.
            connection.executescript(f"PRAGMA incremental_vacuum({int(pages):d});")
            return int(connection.execute("PRAGMA freelist_count").fetchone()[0])
        except Exception as exc:
            if _is_storage_failure(exc):
                self._damage_found(exc)
                raise StoreWriteError(describe_failure(exc)) from exc
            raise

    def retention_totals(self) -> EventRetentionTotals:
        def work(connection: sqlite3.Connection) -> EventRetentionTotals:
            values = dict(
                connection.execute(
                    "SELECT key, CAST(value AS INTEGER) FROM kv WHERE key IN (?, ?, ?)",
                    (EVENTS_EXPIRED_KEY, EVENTS_DROPPED_KEY, EVENTS_DROPPED_UNSENT_KEY),
                )
            )
            return EventRetentionTotals(
                expired=values.get(EVENTS_EXPIRED_KEY, 0),
                dropped=values.get(EVENTS_DROPPED_KEY, 0),
                dropped_unsent=values.get(EVENTS_DROPPED_UNSENT_KEY, 0),
            )

        return self.read(work)

    # -- whitelist -----------------------------------------------------------

    def whitelist_entries(self) -> list[PlateRow]:
        sql = f"SELECT {_WHITELIST_COLUMNS} FROM whitelist"
        return self.read(lambda c: [_whitelist_from_row(row) for row in c.execute(sql)])

    @staticmethod
    def _upsert_row(connection: sqlite3.Connection, row: PlateRow, now: datetime) -> None:
        connection.execute(
            f"""
            INSERT INTO whitelist ({_WHITELIST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (plate) DO UPDATE SET
              enabled = excluded.enabled, blacklist = excluded.blacklist,
              valid_from = excluded.valid_from, valid_until = excluded.valid_until,
              lanes = excluded.lanes, hours = excluded.hours, note = excluded.note,
              source = excluded.source, updated_at = excluded.updated_at
            """,
            (
                row.plate,
                int(row.enabled),
                int(row.blacklist),
                _opt_iso(row.valid_from),
                _opt_iso(row.valid_until),
                json.dumps(list(row.lanes), ensure_ascii=False),
                row.hours,
                row.note,
                row.source,
                to_us(row.updated_at or now),
            ),
        )

    @staticmethod
    def _existing(connection: sqlite3.Connection, plates: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(plates):
            marks = ", ".join("?" * len(chunk))
            found.update(
                plate
                for (plate,) in connection.execute(
                    f"SELECT plate FROM whitelist WHERE plate IN ({marks})", tuple(chunk)
                )
            )
        return found

    def write_plates(
        self, upserts: Sequence[PlateRow], deletes: Sequence[str], now: datetime
    ) -> PlateRowsWritten:
        """Insert or replace ``upserts`` by plate and delete ``deletes``, in
        one transaction (the last row wins for a plate given twice)."""

        def work(connection: sqlite3.Connection) -> PlateRowsWritten:
            unique = {row.plate: row for row in upserts}
            existing = self._existing(connection, list(unique))
            for row in unique.values():
                self._upsert_row(connection, row, now)
            deleted = _delete_where_in(connection, "whitelist", "plate", sorted(set(deletes)))
            updated = len(existing)
            return PlateRowsWritten(
                inserted=len(unique) - updated, updated=updated, deleted=deleted
            )

        return self.write(work)

    # -- camera lists ----------------------------------------------------------

    def camera_list(self, camera: str) -> CameraListState | None:
        def work(connection: sqlite3.Connection) -> CameraListState | None:
            head = connection.execute(
                "SELECT dialect, known FROM camera_lists WHERE camera = ?", (camera,)
            ).fetchone()
            if head is None:
                return None
            rows = {
                plate: CameraRow(
                    plate=plate,
                    blacklist=bool(blacklist),
                    valid_from=_opt_from_us(valid_from),
                    valid_until=_opt_from_us(valid_until),
                )
                for plate, blacklist, valid_from, valid_until in connection.execute(
                    "SELECT plate, blacklist, valid_from, valid_until FROM camera_list_rows "
                    "WHERE camera = ?",
                    (camera,),
                )
            }
            return CameraListState(camera=camera, dialect=head[0], known=bool(head[1]), rows=rows)

        return self.read(work)

    def save_camera_list(
        self,
        camera: str,
        dialect: str | None,
        known: bool,
        cleared: bool,
        changes: Mapping[str, CameraRow | None],
    ) -> None:
        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO camera_lists (camera, dialect, known) VALUES (?, ?, ?) "
                "ON CONFLICT (camera) DO UPDATE SET dialect = excluded.dialect, "
                "known = excluded.known",
                (camera, dialect, int(known)),
            )
            if cleared:
                connection.execute("DELETE FROM camera_list_rows WHERE camera = ?", (camera,))
            gone = [plate for plate, row in changes.items() if row is None]
            for chunk in _chunks(gone):
                marks = ", ".join("?" * len(chunk))
                connection.execute(
                    f"DELETE FROM camera_list_rows WHERE camera = ? AND plate IN ({marks})",
                    (camera, *chunk),
                )
            connection.executemany(
                "INSERT OR REPLACE INTO camera_list_rows "
                "(camera, plate, blacklist, valid_from, valid_until) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        camera,
                        row.plate,
                        int(row.blacklist),
                        _opt_us(row.valid_from),
                        _opt_us(row.valid_until),
                    )
                    for row in changes.values()
                    if row is not None
                ],
            )

        self.write(work)

    # -- outbox --------------------------------------------------------------

    def outbox_batch(
        self, limit: int, now: datetime | None, max_bytes: int | None = None
    ) -> list[OutboxItem]:
        """Up to ``limit`` queued events in commit order, and with
        ``max_bytes`` no more than fit in it (at least one): rows are read one
        at a time, so no more than the batch is ever held."""
        base = (
            f"SELECT o.seq, o.enqueued_at, o.attempts, o.next_attempt_at, {_event_select('e')} "
            "FROM outbox o JOIN events e ON e.id = o.event_id"
        )
        params: dict[str, Any] = {"limit": limit}
        if now is None:
            sql = f"{base} ORDER BY o.seq LIMIT :limit"
        else:
            # Per camera, events go in order: once a camera's oldest event is
            # waiting for its retry time, its later events wait behind it.
            sql = (
                f"{base} WHERE o.next_attempt_at <= :now AND NOT EXISTS ("
                " SELECT 1 FROM outbox p WHERE p.camera IS o.camera AND p.seq < o.seq"
                " AND p.next_attempt_at > :now)"
                " ORDER BY o.seq LIMIT :limit"
            )
            params["now"] = to_us(now)
        items = []
        for queued, event in self._scan_events(sql, params, prefix=4, max_bytes=max_bytes):
            seq, enqueued_at, attempts, next_attempt_at = queued
            items.append(
                OutboxItem(
                    seq=seq,
                    event=event,
                    enqueued_at=from_us(enqueued_at),
                    attempts=attempts,
                    next_attempt_at=from_us(next_attempt_at) if next_attempt_at else None,
                )
            )
        return items

    def outbox_ack(self, event_ids: Sequence[str]) -> int:
        def work(connection: sqlite3.Connection) -> int:
            return _delete_where_in(connection, "outbox", "event_id", list(event_ids))

        return self.write(work)

    def outbox_defer(self, event_ids: Sequence[str], next_attempt_at: datetime) -> int:
        def work(connection: sqlite3.Connection) -> int:
            return connection.executemany(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ? WHERE event_id = ?",
                [(to_us(next_attempt_at), event_id) for event_id in event_ids],
            ).rowcount

        return self.write(work)

    def outbox_dead_letter(
        self, event_id: str, status: int | None, body: str, now: datetime
    ) -> bool:
        def work(connection: sqlite3.Connection) -> bool:
            event = connection.execute(
                "SELECT camera FROM events WHERE id = ?", (event_id,)
            ).fetchone()
            if event is None:
                return False
            queued = connection.execute(
                "SELECT attempts FROM outbox WHERE event_id = ?", (event_id,)
            ).fetchone()
            attempts = (queued[0] + 1) if queued is not None else 0
            connection.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))
            connection.execute(
                "INSERT OR REPLACE INTO dead_letters (event_id, camera, status, body, at, attempts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, event[0], status, body[:DEAD_LETTER_BODY_LIMIT], to_us(now), attempts),
            )
            return True

        return self.write(work)

    def outbox_depth(self) -> int:
        return self.read(lambda c: int(c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]))

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        def work(connection: sqlite3.Connection) -> list[DeadLetter]:
            return [
                DeadLetter(
                    event_id=row[0],
                    camera=row[1],
                    status=row[2],
                    body=row[3],
                    at=from_us(row[4]),
                    attempts=row[5],
                )
                for row in connection.execute(
                    "SELECT event_id, camera, status, body, at, attempts FROM dead_letters ORDER BY at DESC LIMIT ?",
                    (limit,),
                )
            ]

        return self.read(work)

    def replay_dead_letter(self, event_id: str, now: datetime) -> bool:
        def work(connection: sqlite3.Connection) -> bool:
            row = connection.execute(
                "SELECT camera FROM dead_letters WHERE event_id = ?", (event_id,)
            ).fetchone()
            if row is None:
                return False
            connection.execute("DELETE FROM dead_letters WHERE event_id = ?", (event_id,))
            connection.execute(
                "INSERT OR IGNORE INTO outbox (event_id, camera, enqueued_at) VALUES (?, ?, ?)",
                (event_id, row[0], to_us(now)),
            )
            return True

        return self.write(work)

    # -- upstream --------------------------------------------------------------

    def outbox_accept(
        self, event_ids: Sequence[str], image_kinds: Sequence[str], now: datetime
    ) -> int:
        """Remove delivered events from the outbox and, in the same
        transaction, queue their present images of ``image_kinds`` for upload
        (so a crash in between can lose neither)."""
        kinds = [kind for kind in IMAGE_KINDS if kind in image_kinds]
        stamp = to_us(now)

        def work(connection: sqlite3.Connection) -> int:
            removed = 0
            for chunk in _chunks(list(event_ids)):
                marks = ", ".join("?" * len(chunk))
                removed += connection.execute(
                    f"DELETE FROM outbox WHERE event_id IN ({marks})", tuple(chunk)
                ).rowcount
                if not kinds:
                    continue
                # kind is one of IMAGE_KINDS (checked above), never caller text.
                selects = " UNION ALL ".join(
                    f"SELECT id, seq, '{kind}' AS kind FROM events "
                    f"WHERE id IN ({marks}) AND image_{kind} = 'present'"
                    for kind in kinds
                )
                connection.execute(
                    "INSERT OR IGNORE INTO upstream_images (event_id, kind, enqueued_at) "
                    f"SELECT id, kind, ? FROM ({selects}) ORDER BY seq, kind",
                    (stamp, *(tuple(chunk) * len(kinds))),
                )
            return removed

        return self.write(work)

    def image_uploads(self, limit: int) -> list[ImageUpload]:
        def work(connection: sqlite3.Connection) -> list[ImageUpload]:
            return [
                ImageUpload(seq=row[0], event_id=row[1], kind=row[2], enqueued_at=from_us(row[3]))
                for row in connection.execute(
                    "SELECT seq, event_id, kind, enqueued_at FROM upstream_images "
                    "ORDER BY seq LIMIT ?",
                    (limit,),
                )
            ]

        return self.read(work)

    def image_uploads_done(self, seqs: Sequence[int]) -> int:
        def work(connection: sqlite3.Connection) -> int:
            return _delete_where_in(connection, "upstream_images", "seq", list(seqs))

        return self.write(work)

    def image_uploads_depth(self) -> int:
        return self.read(
            lambda c: int(c.execute("SELECT COUNT(*) FROM upstream_images").fetchone()[0])
        )

    _DROPPED_KEYS = {
        "camera_status": "outbox.dropped.camera_status",
        "other": "outbox.dropped.other",
        "plate": "outbox.dropped.plate",
    }
    # Oldest first within each tier; tiers in the order they are given up.
    # The last tier takes whatever is left (including a row whose event is
    # missing, which cannot happen unless the file was edited by hand).
    _TRIM_TIERS = (
        ("camera_status", "e.type IN ('camera_online', 'camera_offline')"),
        ("other", "e.type NOT IN ('plate', 'camera_online', 'camera_offline')"),
        ("plate", "1"),
    )

    def outbox_trim(self, max_events: int, target: int) -> OutboxTrim:
        """When more than ``max_events`` are queued, remove the oldest down to
        ``target``, least valuable kinds first; count them in the kv totals."""

        def work(connection: sqlite3.Connection) -> OutboxTrim:
            depth = int(connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            if depth <= max_events:
                return OutboxTrim()
            excess = depth - min(target, max_events)
            removed: dict[str, int] = {}
            for name, condition in self._TRIM_TIERS:
                if excess <= 0:
                    break
                count = connection.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT o.seq FROM outbox o "
                    "LEFT JOIN events e ON e.id = o.event_id "
                    f"WHERE {condition} ORDER BY o.seq LIMIT ?)",
                    (excess,),
                ).rowcount
                removed[name] = count
                excess -= count
            for name, count in removed.items():
                if count:
                    connection.execute(
                        "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                        "SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT)",
                        (self._DROPPED_KEYS[name], str(count), count),
                    )
            return OutboxTrim(**removed)

        return self.write(work)

    def outbox_dropped(self) -> OutboxTrim:
        def work(connection: sqlite3.Connection) -> OutboxTrim:
            totals: dict[str, int] = {}
            for name, key in self._DROPPED_KEYS.items():
                row = connection.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
                totals[name] = int(row[0]) if row is not None else 0
            return OutboxTrim(**totals)

        return self.read(work)

    def put_cloud_decision(self, decision: CachedCloudDecision) -> None:
        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT OR REPLACE INTO cloud_decisions "
                "(plate, lane, open, reason, display, voice, cache_until, decided_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    decision.plate,
                    decision.lane,
                    int(decision.open),
                    decision.reason,
                    json.dumps(list(decision.display), ensure_ascii=False),
                    decision.voice,
                    to_us(decision.cache_until),
                    to_us(decision.decided_at),
                ),
            )

        self.write(work)

    def delete_cloud_decision(self, plate: str, lane: str) -> bool:
        return self.write(
            lambda c: (
                c.execute(
                    "DELETE FROM cloud_decisions WHERE plate = ? AND lane = ?", (plate, lane)
                ).rowcount
                > 0
            )
        )

    def cloud_decisions(self, now: datetime) -> list[CachedCloudDecision]:
        def work(connection: sqlite3.Connection) -> list[CachedCloudDecision]:
            return [
                CachedCloudDecision(
                    plate=row[0],
                    lane=row[1],
                    open=bool(row[2]),
                    reason=row[3],
                    display=tuple(json.loads(row[4])),
                    voice=row[5],
                    cache_until=from_us(row[6]),
                    decided_at=from_us(row[7]),
                )
                for row in connection.execute(
                    "SELECT plate, lane, open, reason, display, voice, cache_until, decided_at "
                    "FROM cloud_decisions WHERE cache_until > ? ORDER BY plate, lane",
                    (to_us(now),),
                )
            ]

        return self.read(work)

    def forget_cloud_decisions(self, plates: Sequence[str]) -> int:
        return self.write(
            lambda c: _delete_where_in(c, "cloud_decisions", "plate", sorted(set(plates)))
        )

    def expire_cloud_decisions(self, now: datetime) -> int:
        return self.write(
            lambda c: (
                c.execute(
                    "DELETE FROM cloud_decisions WHERE cache_until <= ?", (to_us(now),)
                ).rowcount
            )
        )

    # -- consumer cursors ------------------------------------------------------

    def cursor(self, consumer: str) -> int | None:
        def work(connection: sqlite3.Connection) -> int | None:
            row = connection.execute(
                "SELECT seq FROM consumer_cursors WHERE consumer = ?", (consumer,)
            ).fetchone()
            return None if row is None else int(row[0])

        return self.read(work)

    def start_cursor(self, consumer: str) -> int:
        """The consumer's cursor; a new consumer starts at the newest event
        (it is not handed the site's history)."""

        def work(connection: sqlite3.Connection) -> int:
            row = connection.execute(
                "SELECT seq FROM consumer_cursors WHERE consumer = ?", (consumer,)
            ).fetchone()
            if row is not None:
                return int(row[0])
            newest = connection.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
            seq = int(newest[0])
            connection.execute(
                "INSERT INTO consumer_cursors (consumer, seq) VALUES (?, ?)", (consumer, seq)
            )
            return seq

        return self.write(work)

    def set_cursor(self, consumer: str, seq: int) -> None:
        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO consumer_cursors (consumer, seq) VALUES (?, ?) "
                "ON CONFLICT (consumer) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                (consumer, seq),
            )

        self.write(work)

    def events_after(
        self, seq: int, limit: int, max_bytes: int | None = None
    ) -> list[EventRecord]:
        sql = f"SELECT {_EVENT_SELECT} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
        found = self._scan_events(sql, (seq, limit), max_bytes=max_bytes)
        return [record for _, record in found]

    def events_answering(self, event_id: str, limit: int) -> list[EventRecord]:
        """The operators' events that answer ``event_id``, oldest first."""
        columns = ", ".join(f"e.{name.strip()}" for name in _EVENT_COLUMNS.split(","))
        sql = (
            f"SELECT {columns} FROM event_answers a JOIN events e ON e.id = a.event_id "
            "WHERE a.answers = ? ORDER BY e.seq LIMIT ?"
        )
        return self.read(
            lambda c: [_event_from_row(row) for row in c.execute(sql, (event_id, limit))]
        )

    def events_in_range(
        self,
        since: datetime,
        until: datetime,
        after: tuple[datetime, int] | None,
        limit: int,
        types: Sequence[EventType] = (),
    ) -> list[EventRecord]:
        """Up to ``limit`` events received in [``since``, ``until``), in
        receive order, after the key ``after`` (the ``(received_at, seq)``
        of the last one of the previous page). The receive-time index serves
        it: each page costs its own rows, however large the range."""
        clauses = ["received_at >= ?", "received_at < ?"]
        params: list[Any] = [to_us(since), to_us(until)]
        if after is not None:
            clauses.append("(received_at, seq) > (?, ?)")
            params += [to_us(after[0]), after[1]]
        if types:
            clauses.append(f"type IN ({', '.join('?' * len(types))})")
            params += [EventType(t).value for t in types]
        params.append(limit)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events INDEXED BY events_received_at "
            f"WHERE {' AND '.join(clauses)} ORDER BY received_at, seq LIMIT ?"
        )
        return self.read(lambda c: [_event_from_row(row) for row in c.execute(sql, params)])

    def lane_counts(self, since: datetime, until: datetime) -> list[LaneDayCounts]:
        """Plate reads and operators' events of [``since``, ``until``), counted
        per lane (see :class:`LaneDayCounts`), in one pass over the range."""
        sql = (
            "SELECT lane, type, decision_open, decision_reason, repeat, offline, COUNT(*) "
            "FROM events INDEXED BY events_received_at "
            "WHERE received_at >= ? AND received_at < ? AND type IN (?, ?, ?, ?) "
            "GROUP BY lane, type, decision_open, decision_reason, repeat, offline"
        )
        params = (
            to_us(since),
            to_us(until),
            EventType.PLATE.value,
            EventType.OPERATOR_OPEN.value,
            EventType.PLATE_CORRECTION.value,
            EventType.MANUAL_ENTRY.value,
        )
        rows = self.read(lambda c: c.execute(sql, params).fetchall())
        counts: dict[str | None, dict[str, Any]] = {}
        for lane, type_, opened, reason, repeat, offline, number in rows:
            into = counts.setdefault(lane, {"lane": lane, "refused": {}})
            keys: list[str] = []
            if type_ == EventType.PLATE.value:
                if repeat:
                    keys = ["repeats"]
                elif offline:
                    keys = ["reads", "offline"]
                elif opened:
                    keys = ["reads", "opened"]
                else:
                    keys = ["reads"]
                    if opened is not None:
                        refused = into["refused"]
                        refused[reason or ""] = refused.get(reason or "", 0) + number
            elif type_ == EventType.OPERATOR_OPEN.value:
                keys = ["operator_opens"]
            elif type_ == EventType.PLATE_CORRECTION.value:
                keys = ["corrections", "corrections_opened"] if opened else ["corrections"]
            else:
                keys = ["manual_entries", "manual_opened"] if opened else ["manual_entries"]
            for key in keys:
                into[key] = into.get(key, 0) + number
        return [LaneDayCounts(**values) for values in counts.values()]

    def events_behind(self, seq: int) -> int:
        return self.read(
            lambda c: int(
                c.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (seq,)).fetchone()[0]
            )
        )

    # -- admin sessions --------------------------------------------------------

    def admin_sessions(self, now: float) -> list[AdminSessionRow]:
        """The sessions still valid at ``now`` (expired ones are deleted),
        oldest first."""

        def work(connection: sqlite3.Connection) -> list[AdminSessionRow]:
            connection.execute(
                "DELETE FROM admin_sessions WHERE expires_at <= ?", (_seconds_to_us(now),)
            )
            rows = connection.execute(
                "SELECT key, user, role, origin, csrf_token, created_at, expires_at "
                "FROM admin_sessions ORDER BY created_at, key"
            )
            return [
                AdminSessionRow(
                    key=row[0],
                    user=row[1],
                    role=row[2],
                    origin=row[3],
                    csrf_token=row[4],
                    created_at=row[5] / 1_000_000,
                    expires_at=row[6] / 1_000_000,
                )
                for row in rows
            ]

        return self.write(work)

    def put_admin_session(self, session: AdminSessionRow, forget: Sequence[str]) -> None:
        """Keep ``session`` and forget the sessions keyed ``forget`` (those
        it pushed out), in one transaction."""

        def work(connection: sqlite3.Connection) -> None:
            _delete_where_in(connection, "admin_sessions", "key", list(forget))
            connection.execute(
                "INSERT OR REPLACE INTO admin_sessions "
                "(key, user, role, origin, csrf_token, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session.key,
                    session.user,
                    session.role,
                    session.origin,
                    session.csrf_token,
                    _seconds_to_us(session.created_at),
                    _seconds_to_us(session.expires_at),
                ),
            )

        self.write(work)

    def delete_admin_sessions(self, keys: Sequence[str]) -> int:
        keys = list(keys)
        return self.write(lambda c: _delete_where_in(c, "admin_sessions", "key", keys))

    # -- audit log ---------------------------------------------------------------

    def add_audit(self, entry: AuditRow, keep: int) -> int:
        """Append ``entry``; the oldest entries beyond the newest ``keep`` go.
        Its seq."""

        def work(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                "INSERT INTO audit (at, who, role, via, action, target, reason, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _seconds_to_us(entry.at),
                    entry.who,
                    entry.role,
                    entry.via,
                    entry.action,
                    entry.target,
                    entry.reason,
                    json.dumps(dict(entry.detail), ensure_ascii=False, separators=(",", ":")),
                ),
            )
            seq = int(cursor.lastrowid or 0)
            connection.execute("DELETE FROM audit WHERE seq <= ?", (seq - keep,))
            return seq

        return self.write(work)

    def audit_entries(self, before: int | None, limit: int) -> list[AuditRow]:
        """Up to ``limit`` entries, newest first, older than seq ``before``."""

        def work(connection: sqlite3.Connection) -> list[AuditRow]:
            rows = connection.execute(
                "SELECT seq, at, who, role, via, action, target, reason, detail FROM audit "
                "WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (before if before is not None else 2**62, limit),
            )
            entries = []
            for row in rows:
                try:
                    detail = json.loads(row[8])
                except ValueError:
                    detail = {}
                entries.append(
                    AuditRow(
                        seq=row[0],
                        at=row[1] / 1_000_000,
                        who=row[2],
                        role=row[3],
                        via=row[4],
                        action=row[5],
                        target=row[6],
                        reason=row[7],
                        detail=detail if isinstance(detail, dict) else {},
                    )
                )
            return entries

        return self.read(work)

    # -- parking sessions ----------------------------------------------------

    def occupancy_state(
        self, consumer: str, offsets_key: str
    ) -> tuple[int, str | None, list[ParkingSession]]:
        """Where the occupancy consumer stands: its cursor (a new one starts
        at the newest event), the corrections' JSON and the open sessions,
        oldest first."""
        offsets = self.kv_get(offsets_key)

        def work(connection: sqlite3.Connection) -> tuple[int, list[ParkingSession]]:
            # Read only: a new consumer's cursor is written with its first
            # sessions.
            row = connection.execute(
                "SELECT seq FROM consumer_cursors WHERE consumer = ?", (consumer,)
            ).fetchone()
            if row is None:
                row = connection.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
            rows = connection.execute(
                f"SELECT {_SESSION_COLUMNS} FROM parking_sessions "
                "WHERE state = 'inside' ORDER BY seq"
            )
            return int(row[0]), [_session_from_row(row) for row in rows]

        cursor, inside = self.read(work)
        return cursor, offsets, inside

    def save_parking_sessions(
        self,
        sessions: Sequence[ParkingSession],
        consumer: str,
        cursor: int,
        offsets_key: str,
        offsets: str,
        keep: int,
    ) -> None:
        """Write ``sessions`` (new or changed, by key), the consumer's
        cursor and the corrections in one transaction; beyond the newest
        ``keep`` rows the oldest that are not open go."""

        def work(connection: sqlite3.Connection) -> None:
            last = 0
            for session in sessions:
                cursor_row = connection.execute(
                    "INSERT INTO parking_sessions (key, area, plate, state, entered_at, "
                    "entry_lane, entry_event, left_at, exit_lane, exit_event) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET state = excluded.state, "
                    "left_at = excluded.left_at, exit_lane = excluded.exit_lane, "
                    "exit_event = excluded.exit_event",
                    (
                        session.key,
                        session.area,
                        session.plate,
                        session.state.value,
                        _opt_us(session.entered_at),
                        session.entry_lane,
                        session.entry_event,
                        _opt_us(session.left_at),
                        session.exit_lane,
                        session.exit_event,
                    ),
                )
                last = max(last, int(cursor_row.lastrowid or 0))
            connection.execute(
                "INSERT INTO consumer_cursors (consumer, seq) VALUES (?, ?) "
                "ON CONFLICT (consumer) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                (consumer, cursor),
            )
            connection.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (offsets_key, offsets),
            )
            if last > keep:
                connection.execute(
                    "DELETE FROM parking_sessions WHERE seq <= ? AND state != 'inside'",
                    (last - keep,),
                )

        self.write(work)

    def sessions_in_range(
        self, since: datetime, until: datetime, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int, ParkingSession]]:
        """Up to ``limit`` sessions whose time (the entry's, else the exit's)
        is in [``since``, ``until``), in that order, after the key ``after``
        (the ``(time, seq)`` of the previous page's last); each with its
        time (unix microseconds) and seq. The time index serves it: each page
        costs its own rows."""
        moment = "COALESCE(entered_at, left_at)"
        clauses = [f"{moment} >= ?", f"{moment} < ?"]
        params: list[Any] = [to_us(since), to_us(until)]
        if after is not None:
            clauses.append(f"({moment}, seq) > (?, ?)")
            params += [after[0], after[1]]
        params.append(limit)
        sql = (
            f"SELECT {moment}, seq, {_SESSION_COLUMNS} FROM parking_sessions "
            f"INDEXED BY parking_sessions_time WHERE {' AND '.join(clauses)} "
            f"ORDER BY {moment}, seq LIMIT ?"
        )
        return self.read(
            lambda c: [
                (int(row[0]), int(row[1]), _session_from_row(row[2:]))
                for row in c.execute(sql, params)
            ]
        )

    def parking_sessions(
        self, area: str | None, state: str | None, before: int | None, limit: int
    ) -> list[tuple[int, ParkingSession]]:
        """Up to ``limit`` sessions, newest first, older than seq ``before``,
        of one ``area`` and ``state`` when given; each with its seq."""
        clauses = ["seq < ?"]
        values: list[Any] = [before if before is not None else 2**62]
        if area is not None:
            clauses.append("area = ?")
            values.append(area)
        if state is not None:
            clauses.append("state = ?")
            values.append(state)
        values.append(limit)
        sql = (
            f"SELECT seq, {_SESSION_COLUMNS} FROM parking_sessions "
            f"WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?"
        )
        return self.read(
            lambda c: [(int(row[0]), _session_from_row(row[1:])) for row in c.execute(sql, values)]
        )

    # -- key/value -----------------------------------------------------------

    def kv_get(self, key: str) -> str | None:
        def work(connection: sqlite3.Connection) -> str | None:
            row = connection.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return self.read(work)

    def kv_set(self, key: str, value: str | None) -> None:
        def work(connection: sqlite3.Connection) -> None:
            if value is None:
                connection.execute("DELETE FROM kv WHERE key = ?", (key,))
            else:
                connection.execute(
                    "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

        self.write(work)

    # -- statistics ----------------------------------------------------------

    @staticmethod
    def _latest_quarantined(connection: sqlite3.Connection) -> QuarantinedRow | None:
        row = connection.execute(
            "SELECT id, event_seq, reason, quarantined_at, queued FROM quarantine "
            "ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        event_id, event_seq, reason, at, queued = row
        return QuarantinedRow(
            event_id=_text_or_none(event_id),
            event_seq=event_seq if isinstance(event_seq, int) else None,
            reason=str(reason),
            at=from_us(at),
            queued=bool(queued),
        )

    def stats(self, health: StoreHealth) -> StoreStats:
        def count(connection: sqlite3.Connection, table: str) -> int:
            return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

        def work(connection: sqlite3.Connection) -> StoreStats:
            db_bytes = 0
            for suffix in ("", "-wal"):
                try:
                    db_bytes += os.stat(f"{self.path}{suffix}").st_size
                except FileNotFoundError:
                    pass
            return StoreStats(
                db_live_bytes=_live_bytes(connection),
                retention=self.retention_totals(),
                db_bytes=db_bytes,
                image_bytes=self.image_bytes,
                image_files=self.image_files,
                events=count(connection, "events"),
                outbox_depth=count(connection, "outbox"),
                dead_letters=count(connection, "dead_letters"),
                whitelist_rows=count(connection, "whitelist"),
                commit_transactions=self.commit_transactions,
                health=health,
                images_lost=self.images_lost,
                quarantined_db=None if self.quarantined is None else str(self.quarantined),
                quarantined_rows=count(connection, "quarantine"),
                latest_quarantined=self._latest_quarantined(connection),
            )

        return self.read(work)


def _live_bytes(connection: sqlite3.Connection) -> int:
    size = int(connection.execute("PRAGMA page_size").fetchone()[0])
    pages = int(connection.execute("PRAGMA page_count").fetchone()[0])
    free = int(connection.execute("PRAGMA freelist_count").fetchone()[0])
    return (pages - free) * size


def _image_state(record: EventRecord, kind: str, state: ImageState, size: int) -> EventRecord:
    if kind == "full":
        return attrs.evolve(record, image_full=state, image_full_bytes=size)
    return attrs.evolve(record, image_crop=state, image_crop_bytes=size)


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:200]


def _image_bytes(record: EventRecord, kind: str) -> int:
    return record.image_full_bytes if kind == "full" else record.image_crop_bytes


def _row_image_bytes(row: Sequence[Any]) -> int:
    _, _, _, full, full_bytes, crop, crop_bytes = row
    present = ImageState.PRESENT.value
    return (full_bytes if full == present else 0) + (crop_bytes if crop == present else 0)


def encode_raw(raw: Mapping[str, Any]) -> str:
    """The JSON text of an event's ``raw`` (compact, UTF-8 kept readable)."""
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


#: zlib's level for the kept pushes: level 6 takes a 2.5 kB plate push to
#: about a third in some 40 microseconds; 9 saves a few bytes more at twice the time.
RAW_COMPRESSION_LEVEL = 6


def compress_raw(text: str) -> bytes:
    """What the ``raw_z`` column keeps of an event's ``raw`` JSON text."""
    return zlib.compress(text.encode("utf-8"), RAW_COMPRESSION_LEVEL)


def check_database(path: Path, started: Callable[[sqlite3.Connection], None]) -> list[str]:
    """Check every page of the database at ``path`` (``PRAGMA quick_check``)
    on a read-only connection of its own, beside the store's; the problems
    found (empty when none). ``started(connection)`` is given the connection
    first, so that the check can be interrupted (``connection.interrupt()``,
    from any thread)."""
    connection = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0, check_same_thread=False
    )
    try:
        started(connection)
        problems = [str(row[0]) for row in connection.execute("PRAGMA quick_check")]
    finally:
        connection.close()
    return [] if problems == ["ok"] else problems
