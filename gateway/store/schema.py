"""The database schema, as a list of migration steps.

``PRAGMA user_version`` holds the number of steps applied. At start the store
applies the missing steps in order, each in its own transaction together with
the version bump, so a crash half-way leaves the database at a known version.
Never edit a released step: append a new one.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaTooNewError", "migrate"]


class SchemaTooNewError(Exception):
    """The database was written by a newer gateway (a downgrade): refuse to touch it."""


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: events, images, whitelist, outbox, dead letters, key/value state.
    (
        # seq is the INTEGER PRIMARY KEY (the rowid, so ordering and paging use
        # the table's own b-tree) with AUTOINCREMENT (never reused); the stable
        # event id is the unique key the rest of the system refers to.
        # Times are unix microseconds (exact, sortable).
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            camera TEXT,
            lane TEXT,
            received_at INTEGER NOT NULL,
            camera_time INTEGER,
            plate TEXT NOT NULL DEFAULT '',
            license TEXT NOT NULL DEFAULT '',
            offline INTEGER NOT NULL DEFAULT 0,
            decision_open INTEGER,
            decision_reason TEXT,
            decision_source TEXT,
            repeat INTEGER NOT NULL DEFAULT 0,
            raw TEXT NOT NULL DEFAULT '{}',
            reply TEXT,
            image_full TEXT NOT NULL DEFAULT 'none',
            image_full_bytes INTEGER NOT NULL DEFAULT 0,
            image_crop TEXT NOT NULL DEFAULT 'none',
            image_crop_bytes INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX events_received_at ON events (received_at)",
        "CREATE INDEX events_camera ON events (camera, seq)",
        "CREATE INDEX events_plate ON events (plate, seq)",
        # Retention walks only the events that still have an image, oldest first.
        """
        CREATE INDEX events_with_images ON events (received_at, seq)
        WHERE image_full = 'present' OR image_crop = 'present'
        """,
        """
        CREATE TABLE whitelist (
            plate TEXT PRIMARY KEY,
            enabled INTEGER NOT NULL DEFAULT 1,
            blacklist INTEGER NOT NULL DEFAULT 0,
            valid_from TEXT,
            valid_until TEXT,
            lanes TEXT NOT NULL DEFAULT '[]',
            hours TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT 'local',
            updated_at INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX whitelist_source ON whitelist (source)",
        """
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            camera TEXT,
            enqueued_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX outbox_camera ON outbox (camera, seq)",
        """
        CREATE TABLE dead_letters (
            event_id TEXT PRIMARY KEY,
            camera TEXT,
            status INTEGER,
            body TEXT NOT NULL DEFAULT '',
            at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID
        """,
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    ),
    # 2: upstream: images still to send for events the cloud accepted, and
    # decisions the cloud allowed the gateway to reuse while it cannot ask.
    (
        """
        CREATE TABLE upstream_images (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            enqueued_at INTEGER NOT NULL,
            UNIQUE (event_id, kind)
        )
        """,
        """
        CREATE TABLE cloud_decisions (
            plate TEXT NOT NULL,
            lane TEXT NOT NULL DEFAULT '',
            open INTEGER NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            display TEXT NOT NULL DEFAULT '[]',
            voice TEXT NOT NULL DEFAULT '',
            cache_until INTEGER NOT NULL,
            decided_at INTEGER NOT NULL,
            PRIMARY KEY (plate, lane)
        ) WITHOUT ROWID
        """,
    ),
    # 3: what each camera's own whitelist holds, a row per plate, so a
    # checkpoint writes what changed instead of one large value. The old
    # whole-list values are dropped: those cameras are synced again from a
    # cleared list (sending a row a camera holds is harmless).
    (
        """
        CREATE TABLE camera_lists (
            camera TEXT PRIMARY KEY,
            dialect TEXT,
            known INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE camera_list_rows (
            camera TEXT NOT NULL,
            plate TEXT NOT NULL,
            blacklist INTEGER NOT NULL DEFAULT 0,
            valid_from INTEGER,
            valid_until INTEGER,
            PRIMARY KEY (camera, plate)
        ) WITHOUT ROWID
        """,
        "DELETE FROM kv WHERE key LIKE 'camera_whitelist:%'",
    ),
    # 4: cursors of consumers that read the events table in commit order on
    # their own (MQTT): the seq of the last event each has handed over.
    (
        """
        CREATE TABLE consumer_cursors (
            consumer TEXT PRIMARY KEY,
            seq INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    # 5: the event's record of the camera's push, kept compressed (zlib of its
    # JSON text) instead of as text; rows written before keep their text in
    # ``raw``, new rows leave it empty.
    ("ALTER TABLE events ADD COLUMN raw_z BLOB",),
    # 6: the plate index goes: the event search matches any part of a plate
    # (LIKE '%...%'), which no index serves, and every event paid a page of
    # it in the write-ahead log (SD card writes).
    ("DROP INDEX IF EXISTS events_plate",),
    # 7: the admin page's login sessions, so that a restart signs nobody
    # out. A session is found by the SHA-256 of its cookie (the cookie itself
    # is never stored); ``origin`` says whether a password ("password") or a
    # wall screen's token ("token") opened it. Times are unix microseconds.
    (
        """
        CREATE TABLE admin_sessions (
            key TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            role TEXT NOT NULL,
            origin TEXT NOT NULL DEFAULT 'password',
            csrf_token TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at)",
        "CREATE INDEX admin_sessions_user ON admin_sessions (origin, user)",
    ),
    # 8: the audit log of what people and machines did through the admin
    # page and API: who (and with which role, by password session or token),
    # what (the action and what it was done to), when, and why (the reason
    # they gave). Append-only; the oldest rows go past a bound.
    (
        """
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            who TEXT NOT NULL,
            role TEXT NOT NULL,
            via TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '{}'
        )
        """,
    ),
    # 9: event rows that could not be read back (a damaged byte in a record,
    # a value of the wrong kind), set aside whole for inspection so that the
    # rest of the store goes on. The event's columns are kept as found (no
    # declared types: no conversion), with why and when it was set aside and
    # whether it was still queued for the cloud.
    (
        """
        CREATE TABLE quarantine (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            quarantined_at INTEGER NOT NULL,
            reason TEXT NOT NULL,
            queued INTEGER NOT NULL DEFAULT 0,
            event_seq, id, type, camera, lane, received_at, camera_time, plate, license,
            offline, decision_open, decision_reason, decision_source, repeat, raw, reply,
            image_full, image_full_bytes, image_crop, image_crop_bytes, raw_z
        )
        """,
    ),
    # 10: parking sessions: a plate's entry and exit paired, per scope (the
    # site is area '', or an area of it). ``key`` is the passage's event id
    # and the scope; ``state`` is inside, closed, no_entry (an exit without
    # an entry) or not_closed (an entry never closed). Times are unix
    # microseconds. The open ones are read back at start (a partial index).
    (
        """
        CREATE TABLE parking_sessions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            area TEXT NOT NULL DEFAULT '',
            plate TEXT NOT NULL,
            state TEXT NOT NULL,
            entered_at INTEGER,
            entry_lane TEXT,
            entry_event TEXT,
            left_at INTEGER,
            exit_lane TEXT,
            exit_event TEXT
        )
        """,
        "CREATE INDEX parking_sessions_inside ON parking_sessions (seq) WHERE state = 'inside'",
    ),
    # 11: an operator's event (an open, a plate correction, a manual entry)
    # names the read it answers (also in its raw record); this table finds,
    # for a read, the events that answer it. Only operators' events have a
    # row, removed with their event.
    (
        """
        CREATE TABLE event_answers (
            event_id TEXT PRIMARY KEY,
            answers TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX event_answers_read ON event_answers (answers)",
    ),
    # 12: the parking sessions by their time (the entry's, else the exit's),
    # so that an export of a time range reads only its own sessions.
    (
        "CREATE INDEX parking_sessions_time ON parking_sessions "
        "(COALESCE(entered_at, left_at), seq)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(connection: sqlite3.Connection) -> int:
    """The number of migration steps applied to the database."""
    row = connection.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the missing migration steps; return how many were applied.

    ``connection`` must be in autocommit mode (``isolation_level=None``): each
    step runs in an explicit transaction with its version bump.
    """
    current = schema_version(connection)
    if current > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"database schema version {current} is newer than this gateway's "
            f"({SCHEMA_VERSION}); it was written by a newer release"
        )
    applied = 0
    for version in range(current + 1, SCHEMA_VERSION + 1):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version - 1]:
                connection.execute(statement)
            # user_version lives in the database header: it commits (or rolls
            # back) with the step it counts.
            connection.execute(f"PRAGMA user_version = {version:d}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        applied += 1
    return applied
