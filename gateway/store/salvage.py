"""Copying what can still be read from a replaced database into the fresh one.

A database that cannot be used is moved aside (``gateway.db.corrupt-<time>``)
and a fresh one started; then :func:`salvage` reads the old file, row by row,
and copies what the site cannot do without: the plate list, the key/value
state (admin users and tokens, the cloud feed's cursor...), the admin
sessions, the events not yet delivered upstream with their outbox entries,
the dead letters, the most recent events, what each camera's own list holds,
the consumers' cursors, the cloud's cached decisions, the image uploads and
the newest audit entries.

Reading goes in key order, in chunks. A read that meets a damaged page fails:
the walk then skips ahead (a table keyed by an integer is probed at growing
distances past the damage; any other is read again from its other end) and
counts the damaged stretch; a row that is read but cannot be used
(undecodable, or an outbox entry whose event cannot be read) is counted too.
Every insert is ``OR IGNORE``: a salvage interrupted by a stop is run again at
the next start and copies only what is missing. Python's sqlite3 does not
offer SQLite's recovery API, hence the walk.

Blocking: runs on the store's thread, while the store opens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from gateway.store.records import SALVAGE_PARTS, SalvagedPart, SalvageReport

__all__ = ["RECENT_EVENTS", "RECENT_AUDIT", "merge_reports", "salvage"]

#: The most recent events copied besides those still to be delivered.
RECENT_EVENTS = 10_000
#: The newest audit entries copied.
RECENT_AUDIT = 20_000
#: Rows read per query and written per transaction.
_CHUNK = 500
#: Probes past a damaged stretch of an integer-keyed table: one by one this
#: far, then at doubling distances up to 2**_PROBE_BITS.
_PROBE_LINEAR = 32
_PROBE_BITS = 40

_EVENT_COLUMNS = (
    "seq, id, type, camera, lane, received_at, camera_time, plate, license, offline, "
    "decision_open, decision_reason, decision_source, repeat, raw, reply, "
    "image_full, image_full_bytes, image_crop, image_crop_bytes, raw_z"
)

#: kv keys not copied: the record of an earlier replacement is superseded.
SKIPPED_KEYS = frozenset({"store.replaced"})


@attrs.define
class _Count:
    copied: int = 0
    unusable: int = 0
    damaged: int = 0

    def frozen(self) -> SalvagedPart:
        return SalvagedPart(copied=self.copied, unusable=self.unusable, damaged=self.damaged)


class _Walk:
    """Rows of one table of the old database in key order, skipping damage.

    ``columns`` start with the key columns (``keys`` of them)."""

    def __init__(
        self,
        old: sqlite3.Connection,
        table: str,
        columns: str,
        keys: Sequence[str],
        count: _Count,
        *,
        integer: bool = False,
    ) -> None:
        self._old = old
        self._table = table
        self._columns = _select_list(old, table, columns)
        self._keys = list(keys)
        self._count = count
        self._integer = integer

    def _query(self, bound: tuple[Any, ...] | None, descending: bool, inclusive: bool) -> str:
        order = ", ".join(f"{key} {'DESC' if descending else 'ASC'}" for key in self._keys)
        where = ""
        if bound is not None:
            op = ("<" if descending else ">") + ("=" if inclusive else "")
            left = self._keys[0] if len(self._keys) == 1 else f"({', '.join(self._keys)})"
            right = "?" if len(self._keys) == 1 else f"({', '.join('?' * len(self._keys))})"
            where = f" WHERE {left} {op} {right}"
        return f"SELECT {self._columns} FROM {self._table}{where} ORDER BY {order} LIMIT {_CHUNK}"

    def _chunk(
        self, bound: tuple[Any, ...] | None, descending: bool, inclusive: bool = False
    ) -> tuple[list[tuple[Any, ...]], bool]:
        """Up to a chunk of rows past ``bound``, and whether the read failed."""
        rows: list[tuple[Any, ...]] = []
        try:
            cursor = self._old.execute(self._query(bound, descending, inclusive), bound or ())
            for row in cursor:
                rows.append(tuple(row))
        except sqlite3.DatabaseError:
            return rows, True
        return rows, False

    def rows(self, *, descending: bool = False, limit: int | None = None) -> Iterator[tuple[Any, ...]]:
        """The table's rows in key order (``descending``: newest first),
        at most ``limit``."""
        given = 0
        bound: tuple[Any, ...] | None = None
        inclusive = False
        # The keys reached from each end: the walk from the other end stops there.
        first_end: tuple[Any, ...] | None = None
        other_end = False
        while limit is None or given < limit:
            rows, failed = self._chunk(bound, descending, inclusive)
            for row in rows:
                key = row[: len(self._keys)]
                if other_end and first_end is not None and _reached(key, first_end, descending):
                    return
                yield row
                given += 1
                bound, inclusive = key, False
                if limit is not None and given >= limit:
                    return
            if not failed:
                if len(rows) < _CHUNK:
                    return
                continue
            self._count.damaged += 1
            if self._integer:
                found = self._probe(bound, descending)
                if found is None:
                    return
                bound, inclusive = found, True
                continue
            if other_end:
                return
            # Read the rest from the table's other end, up to where this walk got.
            other_end, first_end = True, bound
            descending, bound, inclusive = not descending, None, False

    def _probe(self, bound: tuple[Any, ...] | None, descending: bool) -> tuple[Any, ...] | None:
        """The first key past a damaged stretch after ``bound`` that can be
        read from, or None when none can."""
        if bound is None:
            start = self._end(descending)
            if start is None:
                return None
        else:
            start = int(bound[0])
        step = -1 if descending else 1
        distances = list(range(1, _PROBE_LINEAR + 1)) + [
            2**bit for bit in range(6, _PROBE_BITS + 1)
        ]
        for distance in distances:
            candidate = start + step * distance
            if candidate < 0:
                return None
            rows, failed = self._chunk((candidate,), descending, inclusive=True)
            if rows:
                return (candidate,)
            if not failed:
                return None  # nothing more beyond the damage
        return None

    def _end(self, descending: bool) -> int | None:
        """Where a walk starts when its very first read fails: 0 going up;
        going down, the table's last key as SQLite's sequence table has it."""
        if not descending:
            return 0
        try:
            row = self._old.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = ?", (self._table,)
            ).fetchone()
        except sqlite3.DatabaseError:
            return None
        return None if row is None else int(row[0]) + 1


def _reached(key: tuple[Any, ...], end: tuple[Any, ...], descending: bool) -> bool:
    """Whether a walk from the other end got to where the first one stopped."""
    try:
        return key <= end if descending else key >= end
    except TypeError:
        # Keys of different types (damage SQLite did not notice): SQLite
        # orders numbers before text; compare as it does.
        return _sort_key(key) <= _sort_key(end) if descending else _sort_key(key) >= _sort_key(end)


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    order = {type(None): 0, int: 1, float: 1, str: 2, bytes: 3}
    return tuple((order.get(type(part), 4), part if isinstance(part, (int, float, str, bytes)) else 0) for part in key)


class _Copy:
    """Inserts into the fresh database in transactions of a chunk of rows."""

    def __init__(self, new: sqlite3.Connection) -> None:
        self._new = new
        self._pending = 0

    def insert(self, sql: str, row: Sequence[Any], count: _Count) -> bool:
        if not self._new.in_transaction:
            self._new.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._new.execute(sql, tuple(row))
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError):
            count.unusable += 1
            return False
        if cursor.rowcount > 0:
            count.copied += 1
        self._pending += 1
        if self._pending >= _CHUNK:
            self.commit()
        return True

    def commit(self) -> None:
        if self._new.in_transaction:
            self._new.execute("COMMIT")
        self._pending = 0


def _select_list(old: sqlite3.Connection, table: str, columns: str) -> str:
    """``columns`` as the old file's ``table`` has them: a column added by a
    later schema step (the file was older) is read as NULL."""
    try:
        present = {str(row[1]) for row in old.execute(f"PRAGMA table_info({table})")}
    except sqlite3.DatabaseError:
        return columns
    if not present:
        return columns
    names = [name.strip() for name in columns.split(",")]
    return ", ".join(name if name in present else f"NULL AS {name}" for name in names)


def _open_old(path: Path) -> sqlite3.Connection:
    # The file is the gateway's own copy, moved aside: a plain connection
    # (one that may replay the file's write-ahead log) reads the most of it.
    connection = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        connection.close()
        raise
    return connection


def _tables(old: sqlite3.Connection) -> set[str]:
    try:
        return {
            str(row[0])
            for row in old.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError:
        return set()


def salvage(
    old_path: Path,
    new: sqlite3.Connection,
    *,
    now_us: int,
    check_event: Callable[[Sequence[Any]], object],
    check_plate: Callable[[Sequence[Any]], object],
    progress: Callable[[SalvageReport], None] | None = None,
) -> SalvageReport:
    """Copy what can be read of the database at ``old_path`` into ``new``
    (migrated to the current schema, autocommit mode). ``check_event`` and
    ``check_plate`` decode a row of ``events`` / ``whitelist`` (raising on one
    that cannot be used); ``now_us`` is the time sessions expire against.
    ``progress`` is given the report after each part."""
    counts = {name: _Count() for name in SALVAGE_PARTS}

    def report(finished: bool, error: str | None = None) -> SalvageReport:
        return SalvageReport(
            parts={name: count.frozen() for name, count in counts.items()},
            finished=finished,
            error=error,
        )

    try:
        old = _open_old(old_path)
    except sqlite3.Error as exc:
        return report(True, f"the old file cannot be read at all ({type(exc).__name__}: {exc})")
    copy = _Copy(new)
    try:
        tables = _tables(old)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("plates", lambda: _plates(old, copy, counts["plates"], check_plate)),
            ("settings", lambda: _settings(old, copy, counts["settings"])),
            ("sessions", lambda: _sessions(old, copy, counts["sessions"], now_us)),
            (
                "outbox",
                lambda: _outbox(
                    old, new, copy, counts["outbox"], counts["dead_letters"], check_event, tables
                ),
            ),
            ("events", lambda: _recent_events(old, copy, counts["events"], check_event)),
            ("camera_lists", lambda: _camera_lists(old, copy, counts["camera_lists"], tables)),
            ("cursors", lambda: _simple(old, copy, counts["cursors"], "consumer_cursors",
                                        "consumer, seq", ["consumer"], tables)),
            ("cloud_decisions", lambda: _simple(
                old, copy, counts["cloud_decisions"], "cloud_decisions",
                "plate, lane, open, reason, display, voice, cache_until, decided_at",
                ["plate", "lane"], tables)),
            ("image_uploads", lambda: _image_uploads(old, new, copy, counts["image_uploads"], tables)),
            ("audit", lambda: _audit(old, copy, counts["audit"], tables)),
        ]
        needs = {
            "plates": "whitelist",
            "settings": "kv",
            "sessions": "admin_sessions",
            "outbox": "events",
            "events": "events",
        }
        for name, step in steps:
            if name in needs and needs[name] not in tables:
                continue  # an older schema: nothing of that kind was kept
            step()
            copy.commit()
            if progress is not None:
                progress(report(False))
    except sqlite3.DatabaseError as exc:
        # The fresh database failed (the old one's failures are skipped):
        # what is committed stays, the rest is not copied.
        if new.in_transaction:
            new.execute("ROLLBACK")
        return report(True, f"copying stopped: {type(exc).__name__}: {exc}")
    finally:
        old.close()
    return report(True)


def _checked(check: Callable[[Sequence[Any]], object], row: Sequence[Any], count: _Count) -> bool:
    try:
        check(row)
    except Exception:
        count.unusable += 1
        return False
    return True


def _plates(
    old: sqlite3.Connection, copy: _Copy, count: _Count, check: Callable[[Sequence[Any]], object]
) -> None:
    columns = "plate, enabled, blacklist, valid_from, valid_until, lanes, hours, note, source, updated_at"
    sql = f"INSERT OR IGNORE INTO whitelist ({columns}) VALUES ({', '.join('?' * 10)})"
    for row in _Walk(old, "whitelist", columns, ["plate"], count).rows():
        if _checked(check, row, count):
            copy.insert(sql, row, count)


def _settings(old: sqlite3.Connection, copy: _Copy, count: _Count) -> None:
    sql = "INSERT OR IGNORE INTO kv (key, value) VALUES (?, ?)"
    for row in _Walk(old, "kv", "key, value", ["key"], count).rows():
        key, value = row
        if not isinstance(key, str) or not isinstance(value, str):
            count.unusable += 1
        elif key not in SKIPPED_KEYS:
            copy.insert(sql, row, count)


def _sessions(old: sqlite3.Connection, copy: _Copy, count: _Count, now_us: int) -> None:
    columns = "key, user, role, origin, csrf_token, created_at, expires_at"
    sql = f"INSERT OR IGNORE INTO admin_sessions ({columns}) VALUES ({', '.join('?' * 7)})"
    for row in _Walk(old, "admin_sessions", columns, ["key"], count).rows():
        if not isinstance(row[6], int):
            count.unusable += 1
        elif row[6] > now_us:
            copy.insert(sql, row, count)


_EVENT_INSERT = f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * 21)})"


def _copy_event(
    old: sqlite3.Connection,
    new: sqlite3.Connection,
    copy: _Copy,
    event_id: str,
    check: Callable[[Sequence[Any]], object],
    select: str,
) -> bool:
    """Copy the event ``event_id`` unless the fresh database has it; whether
    it is there. ``select`` lists the old file's event columns."""
    if new.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None:
        return True
    try:
        row = old.execute(f"SELECT {select} FROM events WHERE id = ?", (event_id,)).fetchone()
    except sqlite3.DatabaseError:
        return False
    if row is None:
        return False
    scratch = _Count()
    if not _checked(check, row, scratch):
        return False
    return copy.insert(_EVENT_INSERT, row, scratch)


def _outbox(
    old: sqlite3.Connection,
    new: sqlite3.Connection,
    copy: _Copy,
    count: _Count,
    dead: _Count,
    check: Callable[[Sequence[Any]], object],
    tables: set[str],
) -> None:
    select = _select_list(old, "events", _EVENT_COLUMNS)
    columns = "seq, event_id, camera, enqueued_at, attempts, next_attempt_at"
    sql = f"INSERT OR IGNORE INTO outbox ({columns}) VALUES (?, ?, ?, ?, ?, ?)"
    for row in _Walk(old, "outbox", columns, ["seq"], count, integer=True).rows():
        if isinstance(row[1], str) and _copy_event(old, new, copy, row[1], check, select):
            copy.insert(sql, row, count)
        else:
            count.unusable += 1
    if "dead_letters" not in tables:
        return
    columns = "event_id, camera, status, body, at, attempts"
    sql = f"INSERT OR IGNORE INTO dead_letters ({columns}) VALUES (?, ?, ?, ?, ?, ?)"
    for row in _Walk(old, "dead_letters", columns, ["event_id"], dead).rows():
        if isinstance(row[0], str) and _copy_event(old, new, copy, row[0], check, select):
            copy.insert(sql, row, dead)
        else:
            dead.unusable += 1


def _recent_events(
    old: sqlite3.Connection, copy: _Copy, count: _Count, check: Callable[[Sequence[Any]], object]
) -> None:
    walk = _Walk(old, "events", _EVENT_COLUMNS, ["seq"], count, integer=True)
    for row in walk.rows(descending=True, limit=RECENT_EVENTS):
        if _checked(check, row, count):
            copy.insert(_EVENT_INSERT, row, count)


def _camera_lists(old: sqlite3.Connection, copy: _Copy, count: _Count, tables: set[str]) -> None:
    if "camera_lists" not in tables:
        return
    heads = list(_Walk(old, "camera_lists", "camera, dialect, known", ["camera"], count).rows())
    rows_count = _Count()
    rows = list(
        _Walk(
            old,
            "camera_list_rows",
            "camera, plate, blacklist, valid_from, valid_until",
            ["camera", "plate"],
            rows_count,
        ).rows()
    )
    count.damaged += rows_count.damaged
    # A camera whose rows were not all read is kept as unknown: it is
    # cleared and filled again (a row it holds but the gateway lost would
    # otherwise stay in it for good).
    whole = rows_count.damaged == 0 and count.damaged == 0
    for camera, dialect, known in heads:
        copy.insert(
            "INSERT OR IGNORE INTO camera_lists (camera, dialect, known) VALUES (?, ?, ?)",
            (camera, dialect, known if whole else 0),
            count,
        )
    if whole:
        for row in rows:
            copy.insert(
                "INSERT OR IGNORE INTO camera_list_rows "
                "(camera, plate, blacklist, valid_from, valid_until) VALUES (?, ?, ?, ?, ?)",
                row,
                _Count(),
            )


def _simple(
    old: sqlite3.Connection,
    copy: _Copy,
    count: _Count,
    table: str,
    columns: str,
    keys: list[str],
    tables: set[str],
) -> None:
    if table not in tables:
        return
    marks = ", ".join("?" * len(columns.split(",")))
    sql = f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})"
    for row in _Walk(old, table, columns, keys, count).rows():
        copy.insert(sql, row, count)


def _image_uploads(
    old: sqlite3.Connection, new: sqlite3.Connection, copy: _Copy, count: _Count, tables: set[str]
) -> None:
    if "upstream_images" not in tables:
        return
    columns = "seq, event_id, kind, enqueued_at"
    sql = f"INSERT OR IGNORE INTO upstream_images ({columns}) VALUES (?, ?, ?, ?)"
    for row in _Walk(old, "upstream_images", columns, ["seq"], count, integer=True).rows():
        # Only for an event the fresh database has: the upload reads it.
        if new.execute("SELECT 1 FROM events WHERE id = ?", (row[1],)).fetchone() is None:
            count.unusable += 1
        else:
            copy.insert(sql, row, count)


def _audit(old: sqlite3.Connection, copy: _Copy, count: _Count, tables: set[str]) -> None:
    if "audit" not in tables:
        return
    columns = "seq, at, who, role, via, action, target, reason, detail"
    sql = f"INSERT OR IGNORE INTO audit ({columns}) VALUES ({', '.join('?' * 9)})"
    walk = _Walk(old, "audit", columns, ["seq"], count, integer=True)
    for row in walk.rows(descending=True, limit=RECENT_AUDIT):
        copy.insert(sql, row, count)


def merge_reports(earlier: SalvageReport | None, later: SalvageReport) -> SalvageReport:
    """The report of a salvage run again (``later``) after one that did not
    finish (``earlier``): rows copied by both runs count once, since a row
    the first run copied is skipped by the second."""
    if earlier is None:
        return later
    parts = {}
    for name in SALVAGE_PARTS:
        first = earlier.parts.get(name, SalvagedPart())
        second = later.parts.get(name, SalvagedPart())
        parts[name] = SalvagedPart(
            copied=first.copied + second.copied,
            unusable=max(first.unusable, second.unusable),
            damaged=max(first.damaged, second.damaged),
        )
    return SalvageReport(parts=parts, finished=later.finished, error=later.error)
