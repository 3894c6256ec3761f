"""The store for its own tests and its close consumers: event records with
fixed times, direct reads of the database file (and damage written into
it), and a test case that opens a real store (real SQLite, its own thread)
in a temporary directory; and the inline executor that lets the store's
consumers run in memory."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from gateway.store import (
    EventRecord,
    EventType,
    ImageState,
    Store,
    StoreSettings,
    new_event_id,
    plate_event_id,
)

T = TypeVar("T")

UTC = timezone.utc
NOW = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def plate_record(
    plateid: int,
    *,
    camera: str = "cam-1",
    received_at: datetime = NOW,
    license: str = "京A12345",
    **fields: Any,
) -> EventRecord:
    values: dict[str, Any] = dict(
        id=plate_event_id(camera, plateid, license, 1740830400, plateid),
        type=EventType.PLATE,
        received_at=received_at,
        camera=camera,
        lane="entry",
        camera_time=datetime(2025, 3, 1, 11, 59, 58, 5, tzinfo=UTC),
        plate=license.upper(),
        license=license,
        decision_open=True,
        decision_reason="whitelist",
        decision_source="local",
        raw={"license": license, "plateid": plateid, "triggerType": 8},
        reply=f'{{"Response_AlarmInfoPlate":{{"info":"ok","plateid":{plateid}}}}}',
    )
    values.update(fields)
    return EventRecord(**values)


def io_record(*, camera: str = "cam-1", received_at: datetime = NOW) -> EventRecord:
    return EventRecord(
        id=new_event_id("io"),
        type=EventType.IO,
        received_at=received_at,
        camera=camera,
        raw={"source": 1},
    )


async def full_image_state(store: Store, event_id: str) -> ImageState:
    record = await store.get_event(event_id)
    assert record is not None, event_id
    return record.image_full


def db_rows(state_dir: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read the database file directly (not through the store)."""
    connection = sqlite3.connect(state_dir / "gateway.db")
    try:
        return [tuple(row) for row in connection.execute(sql, params)]
    finally:
        connection.close()


def leaf_pages(path: Path, table: str) -> list[int]:
    """A table's leaf pages in key order (SQLite's dbstat walks the b-tree)."""
    connection = sqlite3.connect(path)
    try:
        return [
            int(row[0])
            for row in connection.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path",
                (table,),
            )
        ]
    finally:
        connection.close()


def write_garbage(path: Path, pages: Sequence[int], page_size: int = 4096) -> None:
    """Overwrite whole pages of a database file with random bytes, as a
    failing SD card does."""
    with open(path, "r+b") as handle:
        for page in pages:
            handle.seek((page - 1) * page_size)
            handle.write(os.urandom(page_size))
        handle.flush()
        os.fsync(handle.fileno())


class StoreTestCase(TestCase):
    def setUp(self) -> None:
        from support.threads import global_reactor

        self.reactor = global_reactor
        self.state_dir = Path(tempfile.mkdtemp(prefix="anpr-store-test-")) / "state"
        self.addCleanup(shutil.rmtree, self.state_dir.parent, True)

    async def open_store(self, config: StoreSettings | None = None) -> Store:
        store = await Store.open(self.reactor, self.state_dir, config)
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store

    def commit_all(
        self, store: Store, records: Sequence[EventRecord], images: Sequence[tuple[str, bytes]] = ()
    ) -> Deferred[list[Any]]:
        """Issue every commit at once, without waiting in between."""
        return gatherResults(
            [Deferred.fromCoroutine(store.commit_event(record, images)) for record in records],
            consumeErrors=True,
        )


class InlineExecutor:
    """A :class:`~gateway.store.StoreExecutor` that runs each job at once on
    the calling thread (the reactor's): the same SQLite and files as the
    store's thread, with no thread and nothing to wait for. For the tests of
    the store's consumers; the store's own tests keep the real thread."""

    def __init__(self) -> None:
        self.stopped = False

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        if self.stopped:
            raise RuntimeError("the store's executor was stopped")
        try:
            return succeed(job())
        except BaseException:
            # As the store's thread does: every failure goes to the caller.
            return fail(Failure())

    def stop(self) -> None:
        self.stopped = True
