"""The durable store, on a real SQLite database in a temporary directory,
driven through its own thread by the reactor trial runs."""

from __future__ import annotations

import base64
import os
import sqlite3
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from gateway.background import reactor_threads
from gateway.policy.cameralist import CameraRow
from gateway.store import (
    CommitResult,
    EventRecord,
    EventType,
    ImageState,
    Integrity,
    IntegrityState,
    PlateRow,
    PlateRowsWritten,
    Store,
    StoreError,
    StoreHealth,
    StoreOpenError,
    StoreService,
    StoreSettings,
    StoreWriteError,
    new_event_id,
)
from gateway.store.schema import SCHEMA_VERSION
from gateway.store.settings import MIN_DB_BYTES, MIN_IMAGE_BYTES
from support import CapturedLog
from support.store import (
    NOW,
    InlineExecutor,
    StoreTestCase,
    db_rows,
    full_image_state,
    io_record,
    plate_record,
)


class SchemaTests(StoreTestCase):
    async def test_migrations_from_an_empty_file_and_idempotent_reopen(self) -> None:
        self.state_dir.mkdir(parents=True)
        (self.state_dir / "gateway.db").write_bytes(b"")
        store = await Store.open(self.reactor, self.state_dir)
        await store.commit_event(plate_record(1))
        await store.close()

        self.assertEqual(db_rows(self.state_dir, "PRAGMA user_version"), [(SCHEMA_VERSION,)])
        self.assertEqual(db_rows(self.state_dir, "PRAGMA journal_mode"), [("wal",)])
        tables = {
            row[0]
            for row in db_rows(
                self.state_dir, "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        self.assertTrue({"events", "whitelist", "outbox", "dead_letters", "kv"} <= tables)

        again = await self.open_store()
        self.assertIsNone(again.quarantined_db)
        stored = await again.get_event(plate_record(1).id)
        assert stored is not None
        self.assertEqual(stored.license, "京A12345")
        self.assertEqual(db_rows(self.state_dir, "PRAGMA user_version"), [(SCHEMA_VERSION,)])

    async def test_database_of_a_newer_release_is_refused_not_quarantined(self) -> None:
        store = await Store.open(self.reactor, self.state_dir)
        await store.close()
        connection = sqlite3.connect(self.state_dir / "gateway.db")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
        connection.commit()
        connection.close()
        with self.assertRaises(StoreOpenError) as raised:
            await Store.open(self.reactor, self.state_dir)
        self.assertIn("newer", str(raised.exception))
        self.assertEqual([p.name for p in self.state_dir.glob("gateway.db.corrupt-*")], [])

    async def test_a_second_store_on_the_same_directory_is_refused(self) -> None:
        await self.open_store()
        with self.assertRaises(StoreOpenError) as raised:
            await Store.open(self.reactor, self.state_dir)
        self.assertIn("in use", str(raised.exception))


class CommitTests(StoreTestCase):
    async def test_commit_and_read_back(self) -> None:
        store = await self.open_store()
        record = plate_record(
            7, offline=True, repeat=True, decision_open=False, decision_reason="offline_record"
        )
        result = await store.commit_event(record)
        self.assertTrue(result.created)
        self.assertIsNotNone(result.record.seq)
        self.assertEqual(
            result.record, record.__class__(**{**_fields(record), "seq": result.record.seq})
        )

        stored = await store.get_event(record.id)
        self.assertEqual(stored, result.record)
        assert stored is not None
        self.assertEqual(stored.received_at, NOW)  # microseconds kept exactly
        self.assertEqual(stored.raw, {"license": "京A12345", "plateid": 7, "triggerType": 8})
        self.assertEqual(stored.image_full, ImageState.NONE)
        self.assertIsNone(await store.get_event(new_event_id("io")))

        queued = await store.outbox_batch(10)
        self.assertEqual([item.event.id for item in queued], [record.id])

    async def test_same_event_twice_is_stored_once_and_answered_like_the_first_time(self) -> None:
        store = await self.open_store()
        first = plate_record(8)
        await store.commit_event(first)
        resent = plate_record(8, decision_open=False, reply='{"other":1}', raw={"later": True})
        self.assertEqual(first.id, resent.id)
        result = await store.commit_event(resent, [("full", b"jpeg")])
        self.assertFalse(result.created)
        self.assertTrue(result.duplicate)
        self.assertEqual(result.record.reply, first.reply)
        self.assertTrue(result.record.decision_open)
        self.assertEqual(result.record.image_full, ImageState.NONE)
        self.assertEqual(await store.outbox_depth(), 1)
        self.assertEqual(db_rows(self.state_dir, "SELECT COUNT(*) FROM events"), [(1,)])
        self.assertEqual(list((self.state_dir / "images").rglob("*.jpg")), [])

    async def test_same_event_twice_in_one_group_commit(self) -> None:
        store = await self.open_store()
        await store.commit_event(io_record())  # keeps the thread busy so both below share a batch
        twin = plate_record(9)
        results = await self.commit_all(store, [twin, twin])
        self.assertEqual([r.created for r in results], [True, False])
        self.assertEqual(results[0].record, results[1].record)
        self.assertEqual(await store.outbox_depth(), 2)

    async def test_concurrent_commits_are_grouped_into_few_transactions(self) -> None:
        store = await self.open_store()
        before = store.commit_transactions
        records = [plate_record(n, camera=f"cam-{n % 3}") for n in range(50)]
        results = await self.commit_all(store, records)
        transactions = store.commit_transactions - before
        self.assertTrue(all(result.created for result in results))
        self.assertLess(transactions, 50)
        self.assertGreaterEqual(transactions, 1)
        self.assertEqual(len({result.record.seq for result in results}), 50)
        self.assertEqual(db_rows(self.state_dir, "SELECT COUNT(*) FROM events"), [(50,)])
        self.assertEqual(await store.outbox_depth(), 50)

    async def test_images_are_named_by_event_id_and_fsynced_before_commit_returns(self) -> None:
        synced: list[str] = []
        real_fsync = os.fsync

        def recording_fsync(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        self.patch(os, "fsync", recording_fsync)
        store = await self.open_store()
        record = plate_record(10)
        result = await store.commit_event(
            record, [("full", b"\xff\xd8full"), ("crop", b"\xff\xd8crop")]
        )

        day = self.state_dir / "images" / "2025-03-01"
        full = day / f"{record.id}-full.jpg"
        crop = day / f"{record.id}-crop.jpg"
        self.assertEqual(full.read_bytes(), b"\xff\xd8full")
        self.assertEqual(crop.read_bytes(), b"\xff\xd8crop")
        self.assertEqual(sorted(p.name for p in day.iterdir()), sorted([full.name, crop.name]))
        # Written under a temporary name, fsynced, renamed, then the directories fsynced.
        self.assertEqual(len([p for p in synced if p.startswith(str(day) + "/.")]), 2)
        self.assertIn(str(day), synced)
        self.assertIn(str(self.state_dir / "images"), synced)

        self.assertEqual(result.record.image_full, ImageState.PRESENT)
        self.assertEqual(result.record.image_full_bytes, 6)
        self.assertEqual(result.record.image_crop_bytes, 6)
        self.assertEqual(await store.event_image_path(record.id, "full"), full)
        self.assertEqual(await store.read_image(record.id, "crop"), b"\xff\xd8crop")
        other = await store.commit_event(plate_record(11))
        self.assertIsNone(await store.event_image_path(other.record.id, "full"))
        stats = await store.stats()
        self.assertEqual((stats.image_bytes, stats.image_files, stats.events), (12, 2, 2))

    async def test_bad_ids_and_image_kinds_are_refused_before_anything_is_written(self) -> None:
        store = await self.open_store()
        with self.assertRaises(ValueError):
            await store.commit_event(EventRecord(id="../../etc/x", type="io", received_at=NOW))
        with self.assertRaises(ValueError):
            await store.commit_event(io_record(), [("thumb", b"x")])
        with self.assertRaises(ValueError):
            await store.commit_event(io_record(), [("full", b"x"), ("full", b"y")])
        with self.assertRaises(ValueError):
            EventRecord(id=new_event_id("io"), type="io", received_at=datetime(2025, 1, 1))
        self.assertEqual((await store.stats()).events, 0)


def _fields(record: EventRecord) -> dict[str, Any]:
    import attrs

    return attrs.asdict(record, recurse=False)


class FailureTests(StoreTestCase):
    async def fill_disk(self, store: Store) -> None:
        """Cap the database at its current size: the next page it needs fails
        like a full disk (SQLITE_FULL, "database or disk is full")."""

        def cap(connection: sqlite3.Connection) -> None:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages}").fetchone()

        await store._run_on_store_thread(cap)

    async def test_disk_full_refuses_the_event_reports_degraded_then_recovers(self) -> None:
        store = await self.open_store()
        changes: list[StoreHealth] = []
        store.add_health_observer(changes.append)
        await store.commit_event(plate_record(1))
        await self.fill_disk(store)

        # Random text: the kept push is compressed, so padding must not compress.
        big = plate_record(2, raw={"padding": base64.b64encode(os.urandom(15000)).decode()})
        with self.assertRaises(StoreWriteError) as raised:
            await store.commit_event(big, [("full", b"image")])
        self.assertIn("full", str(raised.exception))
        self.assertTrue(store.degraded)
        self.assertIn("full", store.health.reason or "")
        self.assertIsNotNone(store.health.since)
        self.assertEqual([c.degraded for c in changes], [True])
        # Nothing half-written: no row, no outbox entry, no image file.
        self.assertIsNone(await store.get_event(big.id))
        self.assertEqual(await store.outbox_depth(), 1)
        self.assertEqual(list((self.state_dir / "images").rglob("*.jpg")), [])
        with self.assertRaises(StoreWriteError):
            await store.kv_set("cursor", "y" * 20000)
        self.assertEqual((await store.stats()).health, store.health)

        await store._run_on_store_thread(
            lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone()
        )
        result = await store.commit_event(big, [("full", b"image")])
        self.assertTrue(result.created)
        self.assertFalse(store.degraded)
        self.assertEqual([c.degraded for c in changes], [True, False])
        self.assertEqual(await store.read_image(big.id, "full"), b"image")

    async def test_an_image_that_cannot_be_written_costs_the_image_not_the_event(self) -> None:
        store = await self.open_store()
        # A file where the day directory belongs: creating it fails (as on a
        # broken or read-only image disk), whoever runs the test.
        (self.state_dir / "images").mkdir()
        blocker = self.state_dir / "images" / "2025-03-01"
        blocker.write_bytes(b"")

        with_image = plate_record(3)
        without_image = plate_record(4)
        with CapturedLog() as captured:
            outcomes = await DeferredList(
                [
                    # The first commit keeps the thread busy: the next two share a transaction.
                    Deferred.fromCoroutine(store.commit_event(io_record())),
                    Deferred.fromCoroutine(
                        store.commit_event(with_image, [("full", b"jpeg"), ("crop", b"c")])
                    ),
                    Deferred.fromCoroutine(store.commit_event(without_image)),
                ],
                consumeErrors=True,
            )
            self.assertEqual([success for success, _ in outcomes], [True, True, True])
            again = plate_record(5)
            await store.commit_event(again, [("crop", b"c")])
        kept = await store.get_event(with_image.id)
        assert kept is not None
        self.assertEqual(
            (kept.image_full, kept.image_crop), (ImageState.MISSING, ImageState.MISSING)
        )
        self.assertEqual(kept.license, with_image.license)
        self.assertIsNone(await store.read_image(with_image.id, "full"))
        queued = [item.event.id for item in await store.outbox_batch(10)]
        self.assertIn(with_image.id, queued)
        self.assertFalse(store.degraded)
        stats = await store.stats()
        self.assertEqual((stats.images_lost, stats.image_files), (3, 0))
        # Said once, not once per image.
        self.assertEqual(sum("Cannot write images" in text for text in captured.texts()), 1)

        blocker.unlink()
        later = plate_record(6)
        await store.commit_event(later, [("full", b"jpeg")])
        self.assertEqual(await store.read_image(later.id, "full"), b"jpeg")


class CorruptionTests(StoreTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.logged: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.logged.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    async def store_with_events(self, count: int) -> list[EventRecord]:
        store = await Store.open(self.reactor, self.state_dir)
        records = [plate_record(n, raw={"padding": "p" * 3000}) for n in range(count)]
        await self.commit_all(store, records)
        await store.close()
        return records

    async def check_quarantined(self, records: Sequence[EventRecord]) -> None:
        store = await self.open_store()
        quarantined = store.quarantined_db
        assert quarantined is not None
        self.assertTrue(quarantined.name.startswith("gateway.db.corrupt-"))
        self.assertTrue(quarantined.exists())
        self.assertEqual((await store.stats()).quarantined_db, str(quarantined))
        critical = [e for e in self.logged if e.get("log_level") == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertEqual(critical[0]["quarantined"], str(quarantined))
        # A fresh database that works, holding what could be read of the old
        # one (what exactly: test_store_salvage.py), and saying it was replaced.
        replacement = store.replacement
        assert replacement is not None
        self.assertEqual(replacement.moved_to, str(quarantined))
        kept = {event.id for event in await store.recent_events(limit=1000)}
        self.assertTrue(kept <= {record.id for record in records})
        fresh = await store.commit_event(plate_record(100))
        self.assertTrue(fresh.created)
        self.assertEqual(db_rows(self.state_dir, "PRAGMA integrity_check"), [("ok",)])

    async def test_garbage_file_is_quarantined_and_a_fresh_database_started(self) -> None:
        records = await self.store_with_events(3)
        (self.state_dir / "gateway.db").write_bytes(b"this is not a database\n" * 500)
        await self.check_quarantined(records)

    def damage_pages(self) -> None:
        path = self.state_dir / "gateway.db"
        self.assertGreater(path.stat().st_size, 8 * 4096)
        with open(path, "r+b") as damaged:
            damaged.seek(4 * 4096)
            damaged.write(bytes(range(256)) * 32)

    async def test_a_clean_close_is_not_checked_an_unclean_end_is(self) -> None:
        await self.store_with_events(3)
        store = await Store.open(self.reactor, self.state_dir)
        self.assertFalse(store.check_needed)
        self.assertEqual((await store.stats()).integrity, IntegrityState(Integrity.CLEAN))
        await store.close()
        # Any end but the gateway's own close (a power cut, kill -9) leaves no marker.
        (self.state_dir / "gateway.db.clean").unlink()
        store = await Store.open(self.reactor, self.state_dir)
        self.assertTrue(store.check_needed)
        await store.check_integrity(reactor_threads(self.reactor))
        self.assertEqual(store.integrity.state, Integrity.OK)
        await store.close()

    async def test_damaged_pages_after_an_unclean_end_are_found_then_quarantined(self) -> None:
        records = await self.store_with_events(40)
        (self.state_dir / "gateway.db.clean").unlink()
        self.damage_pages()
        # The start does not read the whole file: the store opens and serves.
        store = await Store.open(self.reactor, self.state_dir)
        self.assertIsNone(store.quarantined_db)
        self.assertTrue(store.check_needed)
        await store.check_integrity(reactor_threads(self.reactor))
        integrity = store.integrity
        self.assertEqual(integrity.state, Integrity.DAMAGED)
        self.assertTrue(integrity.detail)
        # Reads that meet the damage fail, and are not said again.
        with self.assertRaises(StoreError):
            await store.stats()
        critical = [e for e in self.logged if e.get("log_level") == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertTrue((self.state_dir / "gateway.db.damaged").exists())
        await store.close()
        self.logged.clear()
        # The next start moves it aside.
        await self.check_quarantined(records)
        self.assertFalse((self.state_dir / "gateway.db.damaged").exists())

    async def test_a_damaged_page_met_in_use_is_said_once_and_quarantined_next(self) -> None:
        records = await self.store_with_events(40)
        self.damage_pages()
        store = await Store.open(self.reactor, self.state_dir)
        for _ in range(2):
            with self.assertRaises(StoreError):
                await store.stats()
        critical = [e for e in self.logged if e.get("log_level") == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertTrue((self.state_dir / "gateway.db.damaged").exists())
        await store.close()
        self.logged.clear()
        await self.check_quarantined(records)


# Image sizes in tenths of the smallest image cap a site may set.
UNIT = MIN_IMAGE_BYTES // 10 + 1


class RetentionTests(StoreTestCase):
    async def test_images_older_than_the_retention_expire_rows_stay(self) -> None:
        store = await self.open_store(StoreSettings(image_retention_days=30))
        old = plate_record(1, received_at=NOW - timedelta(days=40))
        recent = plate_record(2, received_at=NOW - timedelta(days=10))
        await store.commit_event(old, [("full", b"a" * 100), ("crop", b"b" * 10)])
        await store.commit_event(recent, [("full", b"c" * 100)])
        orphan_day = self.state_dir / "images" / (NOW - timedelta(days=50)).date().isoformat()
        orphan_day.mkdir()
        (orphan_day / "orphan-full.jpg").write_bytes(b"left by a crash")

        result = await store.enforce_retention(NOW)

        self.assertEqual((result.expired_by_age, result.expired_by_size), (2, 0))
        self.assertEqual(result.bytes_freed, 110)
        self.assertEqual(result.image_bytes, 100)
        expired = await store.get_event(old.id)
        assert expired is not None
        self.assertEqual(
            (expired.image_full, expired.image_crop), (ImageState.EXPIRED, ImageState.EXPIRED)
        )
        self.assertEqual(expired.license, "京A12345")
        self.assertIsNone(await store.event_image_path(old.id, "full"))
        self.assertFalse((self.state_dir / "images" / "2025-01-20" / f"{old.id}-full.jpg").exists())
        self.assertFalse(orphan_day.exists())
        kept = await store.get_event(recent.id)
        assert kept is not None
        self.assertEqual(kept.image_full, ImageState.PRESENT)
        self.assertEqual(await store.read_image(recent.id, "full"), b"c" * 100)
        stats = await store.stats()
        self.assertEqual((stats.image_bytes, stats.image_files, stats.events), (100, 1, 2))

    async def test_oldest_images_go_first_to_stay_under_the_cap(self) -> None:
        store = await self.open_store(StoreSettings(image_retention_days=365))
        records = [plate_record(n, received_at=NOW + timedelta(minutes=n)) for n in range(5)]
        for record in records:
            await store.commit_event(record, [("full", b"f" * 2 * UNIT), ("crop", b"c" * UNIT)])
        store.config = StoreSettings(image_retention_days=365, image_max_bytes=10 * UNIT)

        result = await store.enforce_retention(NOW + timedelta(hours=1))

        self.assertEqual((result.expired_by_age, result.expired_by_size), (0, 4))
        self.assertEqual(result.image_bytes, 9 * UNIT)
        states = [await full_image_state(store, r.id) for r in records]
        self.assertEqual(
            states, [ImageState.EXPIRED, ImageState.EXPIRED] + [ImageState.PRESENT] * 3
        )
        self.assertEqual(db_rows(self.state_dir, "SELECT COUNT(*) FROM events"), [(5,)])
        self.assertEqual(len(list((self.state_dir / "images").rglob("*.jpg"))), 6)

    async def test_commits_over_the_cap_trim_without_waiting_for_the_next_pass(self) -> None:
        store = await self.open_store(StoreSettings(image_max_bytes=10 * UNIT))
        for n in range(6):
            await store.commit_event(
                plate_record(n, received_at=NOW + timedelta(seconds=n)), [("full", b"x" * 3 * UNIT)]
            )
        stats = await store.stats()  # runs on the store thread after the trim
        self.assertLessEqual(stats.image_bytes, 10 * UNIT)
        newest = await store.get_event(plate_record(5).id)
        assert newest is not None
        self.assertEqual(newest.image_full, ImageState.PRESENT)

    async def test_running_total_survives_reopen(self) -> None:
        store = await Store.open(self.reactor, self.state_dir)
        await store.commit_event(plate_record(1), [("full", b"x" * 321), ("crop", b"y" * 12)])
        await store.commit_event(plate_record(2), [("crop", b"z" * 7)])
        await store.close()
        again = await self.open_store()
        stats = await again.stats()
        self.assertEqual((stats.image_bytes, stats.image_files), (340, 3))


class WhitelistTests(StoreTestCase):
    async def test_rows_round_trip(self) -> None:
        store = await self.open_store()
        row = PlateRow(
            plate="京A12345",
            enabled=False,
            blacklist=True,
            valid_from=datetime(2025, 1, 1, 8, 0),
            valid_until=datetime(2025, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=8))),
            lanes=["entry", "exit"],
            hours="07:00-19:00",
            note="拉黑",
            source="cloud",
            updated_at=NOW,
        )
        change = await store.write_plates([row, PlateRow(plate="B1")])
        self.assertEqual((change.inserted, change.updated), (2, 0))
        rows = sorted(await store.whitelist_entries(), key=lambda r: r.plate)
        self.assertEqual(rows[1], row)
        self.assertEqual(rows[0].plate, "B1")
        self.assertIsNotNone(rows[0].updated_at)
        change = await store.write_plates([PlateRow(plate="B1", note="changed")])
        self.assertEqual((change.inserted, change.updated), (0, 1))
        self.assertEqual((await store.write_plates(deletes=["B1", "nope"])).deleted, 1)
        self.assertEqual([r.plate for r in await store.whitelist_entries()], ["京A12345"])

    async def test_a_large_write_goes_in_chunks_and_events_commit_between_them(self) -> None:
        from gateway.store.store import PLATE_WRITE_CHUNK

        store = await self.open_store()
        rows = [PlateRow(plate=f"京A{n:05d}") for n in range(PLATE_WRITE_CHUNK * 3 + 1)]
        before = store.commit_transactions
        writing = Deferred.fromCoroutine(store.write_plates(rows))
        # An event committed while the list is written is not held behind
        # the whole list: it is committed before the last chunk.
        committed = Deferred.fromCoroutine(store.commit_event(plate_record(1)))
        order: list[str] = []

        def event_committed(result: CommitResult) -> CommitResult:
            order.append("event")
            return result

        def plates_written(result: PlateRowsWritten) -> PlateRowsWritten:
            order.append("plates")
            return result

        committed.addCallback(event_committed)
        writing.addCallback(plates_written)
        written = await writing
        await committed
        self.assertEqual(order, ["event", "plates"])
        self.assertEqual(written.inserted, len(rows))
        self.assertEqual(store.commit_transactions, before + 1)
        self.assertEqual(len(await store.whitelist_entries()), len(rows))


class CameraListTests(StoreTestCase):
    async def test_saves_are_incremental_and_a_clear_drops_the_rows(self) -> None:
        store = await self.open_store()
        self.assertIsNone(await store.camera_list("cam-1"))
        until = datetime(2030, 1, 1, tzinfo=timezone.utc)
        await store.save_camera_list(
            "cam-1",
            dialect="vzenith",
            known=True,
            cleared=True,
            changes={f"京A{n:05d}": CameraRow(f"京A{n:05d}") for n in range(1000)},
        )
        await store.save_camera_list(
            "cam-1",
            dialect="vzenith",
            known=True,
            cleared=False,
            changes={"京A00001": None, "京A00002": CameraRow("京A00002", True, None, until)},
        )
        saved = await store.camera_list("cam-1")
        assert saved is not None
        self.assertEqual((saved.dialect, saved.known, len(saved.rows)), ("vzenith", True, 999))
        self.assertNotIn("京A00001", saved.rows)
        self.assertEqual(saved.rows["京A00002"], CameraRow("京A00002", True, None, until))
        await store.save_camera_list(
            "cam-1", dialect="parkingcam", known=False, cleared=True, changes={}
        )
        saved = await store.camera_list("cam-1")
        assert saved is not None
        self.assertEqual((saved.dialect, saved.known, saved.rows), ("parkingcam", False, {}))


class OutboxTests(StoreTestCase):
    async def test_outbox_keeps_commit_order_per_camera(self) -> None:
        store = await self.open_store()
        records = [plate_record(n, camera=("cam-a", "cam-b")[n % 2]) for n in range(6)]
        for record in records:
            await store.commit_event(record)
        await store.commit_event(io_record(camera="cam-c"), outbox=False)

        batch = await store.outbox_batch(100)
        self.assertEqual([item.event.id for item in batch], [r.id for r in records])
        for camera in ("cam-a", "cam-b"):
            seqs = [item.seq for item in batch if item.event.camera == camera]
            self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(
            [item.event.id for item in await store.outbox_batch(2)], [records[0].id, records[1].id]
        )

        self.assertEqual(
            await store.outbox_ack([records[0].id, records[1].id, "io-unknownxxxxxxxxxxxxxxxx"]), 2
        )
        self.assertEqual(await store.outbox_depth(), 4)
        self.assertEqual((await store.outbox_batch(1))[0].event.id, records[2].id)

    async def test_a_deferred_event_holds_back_its_cameras_later_events_only(self) -> None:
        store = await self.open_store()
        a1, b1, a2, b2 = (
            plate_record(n, camera=cam)
            for n, cam in enumerate(["cam-a", "cam-b", "cam-a", "cam-b"])
        )
        for record in (a1, b1, a2, b2):
            await store.commit_event(record)
        retry_at = NOW + timedelta(seconds=30)
        self.assertEqual(await store.outbox_defer([a1.id], retry_at), 1)

        due = await store.outbox_batch(10, now=NOW)
        self.assertEqual([item.event.id for item in due], [b1.id, b2.id])
        later = await store.outbox_batch(10, now=retry_at)
        self.assertEqual([item.event.id for item in later], [a1.id, b1.id, a2.id, b2.id])
        self.assertEqual((later[0].attempts, later[0].next_attempt_at), (1, retry_at))

    async def test_dead_letters_are_kept_and_replayable(self) -> None:
        store = await self.open_store()
        first, second = plate_record(1), plate_record(2)
        await store.commit_event(first)
        await store.commit_event(second)
        self.assertTrue(
            await store.outbox_dead_letter(first.id, 422, '{"error":"bad plate"}' + "x" * 10000)
        )
        self.assertFalse(await store.outbox_dead_letter("io-unknownxxxxxxxxxxxxxxxx", 400, ""))

        self.assertEqual([item.event.id for item in await store.outbox_batch(10)], [second.id])
        letters = await store.dead_letters()
        self.assertEqual(len(letters), 1)
        self.assertEqual(
            (letters[0].event_id, letters[0].status, letters[0].camera), (first.id, 422, "cam-1")
        )
        self.assertTrue(letters[0].body.startswith('{"error":"bad plate"}'))
        self.assertLessEqual(len(letters[0].body), 4096)
        self.assertEqual((await store.stats()).dead_letters, 1)

        self.assertTrue(await store.replay_dead_letter(first.id))
        self.assertFalse(await store.replay_dead_letter(first.id))
        self.assertEqual(await store.dead_letters(), [])
        self.assertEqual(
            [item.event.id for item in await store.outbox_batch(10)], [second.id, first.id]
        )

    async def test_key_value_state(self) -> None:
        store = await self.open_store()
        self.assertIsNone(await store.kv_get("sync.cursor"))
        await store.kv_set("sync.cursor", "abc")
        await store.kv_set("sync.cursor", "def")
        self.assertEqual(await store.kv_get("sync.cursor"), "def")
        await store.kv_set("sync.cursor", None)
        self.assertIsNone(await store.kv_get("sync.cursor"))


class QueryTests(StoreTestCase):
    async def test_filters_and_paging(self) -> None:
        store = await self.open_store()
        records = [
            plate_record(1, camera="cam-a", lane="entry", license="京A12345", received_at=NOW),
            plate_record(
                2,
                camera="cam-b",
                lane="exit",
                license="粤FQK883",
                received_at=NOW + timedelta(minutes=1),
                decision_open=False,
                decision_reason="unknown",
            ),
            plate_record(
                3,
                camera="cam-a",
                lane="entry",
                license="京B99999",
                received_at=NOW + timedelta(minutes=2),
            ),
            io_record(camera="cam-a", received_at=NOW + timedelta(minutes=3)),
        ]
        for record in records:
            await store.commit_event(record)

        def ids(events: Sequence[EventRecord]) -> list[str]:
            return [event.id for event in events]

        everything = await store.recent_events()
        self.assertEqual(ids(everything), [r.id for r in reversed(records)])
        page1 = await store.recent_events(2)
        page2 = await store.recent_events(2, before_seq=page1[-1].seq)
        self.assertEqual(ids(page1 + page2), ids(everything))
        self.assertEqual(await store.recent_events(2, before_seq=page2[-1].seq), [])

        self.assertEqual(ids(await store.recent_events(plate="12345")), [records[0].id])
        self.assertEqual(ids(await store.recent_events(plate="京")), [records[2].id, records[0].id])
        self.assertEqual(ids(await store.recent_events(plate="%")), [])
        self.assertEqual(ids(await store.recent_events(camera="cam-b")), [records[1].id])
        self.assertEqual(
            ids(await store.recent_events(lane="entry")), [records[2].id, records[0].id]
        )
        self.assertEqual(ids(await store.recent_events(type="io")), [records[3].id])
        self.assertEqual(ids(await store.recent_events(decision_open=False)), [records[1].id])
        self.assertEqual(ids(await store.recent_events(reason="unknown")), [records[1].id])
        window = await store.recent_events(
            since=NOW + timedelta(minutes=1), until=NOW + timedelta(minutes=3)
        )
        self.assertEqual(ids(window), [records[2].id, records[1].id])
        self.assertEqual(
            ids(await store.recent_events(camera="cam-a", type=EventType.PLATE)),
            [records[2].id, records[0].id],
        )


def filled(count: int, unsent_from: int) -> Callable[[sqlite3.Connection], None]:
    """Fill a store past the smallest size cap quickly, as rows straight into
    the table: ``count`` events of 8 kB of incompressible push each, received
    now, those from ``unsent_from`` on still queued for the cloud."""
    now = int(NOW.timestamp() * 1_000_000)

    def fill(connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN")
        for n in range(count):
            event_id = new_event_id("plate")
            connection.execute(
                "INSERT INTO events (id, type, received_at, raw, raw_z) VALUES (?, ?, ?, '', ?)",
                (event_id, "plate", now + n, zlib.compress(os.urandom(8000), 1)),
            )
            if n >= unsent_from:
                connection.execute(
                    "INSERT INTO outbox (event_id, enqueued_at) VALUES (?, ?)", (event_id, n)
                )
        connection.execute("COMMIT")

    return fill


class EventRetentionTests(StoreTestCase):
    async def test_old_events_go_unless_still_to_be_delivered_and_the_file_shrinks(self) -> None:
        store = await self.open_store(StoreSettings(event_retention_days=30))
        # Random padding: the kept push is compressed, and the rows must fill pages.
        old = [
            plate_record(
                n,
                received_at=NOW - timedelta(days=40, seconds=-n),
                raw={"padding": base64.b64encode(os.urandom(3000)).decode()},
            )
            for n in range(1200)
        ]
        delivered, unsent = old[:1100], old[1100:]
        # Issued at once: group commits.
        await gatherResults(
            [
                Deferred.fromCoroutine(
                    store.commit_event(record, [("full", b"x" * 10)], outbox=False)
                )
                for record in delivered
            ]
            + [Deferred.fromCoroutine(store.commit_event(record)) for record in unsent]
        )
        recent = plate_record(5000, received_at=NOW - timedelta(days=1))
        await store.commit_event(recent, outbox=False)
        before = (self.state_dir / "gateway.db").stat().st_size

        result = await store.enforce_retention(NOW)

        self.assertEqual((result.events_expired, result.events_waiting), (1100, 100))
        self.assertIsNone(await store.get_event(delivered[0].id))
        self.assertIsNone(await store.get_event(delivered[-1].id))
        self.assertIsNotNone(await store.get_event(unsent[0].id))
        self.assertIsNotNone(await store.get_event(recent.id))
        self.assertEqual(await store.outbox_depth(), 100)
        stats = await store.stats()
        self.assertEqual(stats.events, 101)
        assert stats.retention is not None
        self.assertEqual(stats.retention.expired, 1100)
        # Their images had gone by the images' own (shorter) retention.
        self.assertEqual((result.expired_by_age, stats.image_bytes), (1100, 0))
        # The pages freed went back to the file system (after the checkpoint).
        await store._run_on_store_thread(
            lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        )
        after = (self.state_dir / "gateway.db").stat().st_size
        self.assertLess(after, before / 3)
        self.assertEqual(db_rows(self.state_dir, "PRAGMA freelist_count"), [(0,)])

        # Once the cloud accepts them they go at the next pass.
        await store.outbox_ack([record.id for record in unsent])
        again = await store.enforce_retention(NOW)
        self.assertEqual((again.events_expired, again.events_waiting), (100, 0))
        self.assertEqual((await store.stats()).events, 1)

    async def test_an_operators_event_is_found_by_its_read_until_it_goes(self) -> None:
        store = await self.open_store(StoreSettings(event_retention_days=30))
        read = plate_record(1, received_at=NOW - timedelta(days=40))
        answering = EventRecord(
            id="open-abcdefghijklmnopqrstuvwx",
            type=EventType.OPERATOR_OPEN,
            received_at=NOW - timedelta(days=40, seconds=-5),
            camera="cam-1",
            decision_open=True,
            decision_reason="visitor",
            decision_source="operator",
            answers=read.id,
            raw={"operator": {"name": "olga"}, "reason": "visitor"},
        )
        await store.commit_event(read, outbox=False)
        await store.commit_event(answering, outbox=False)
        (found,) = await store.events_answering(read.id)
        self.assertEqual((found.id, found.answers), (answering.id, read.id))
        kept = await store.get_event(answering.id)
        assert kept is not None
        self.assertEqual(kept.raw["answers"], read.id)
        self.assertEqual(await store.events_answering(answering.id), [])
        await store.enforce_retention(NOW)
        self.assertEqual(await store.events_answering(read.id), [])
        self.assertEqual(db_rows(self.state_dir, "SELECT COUNT(*) FROM event_answers"), [(0,)])

    async def test_past_max_db_bytes_delivered_events_go_first_unsent_last(self) -> None:
        store = await self.open_store(
            StoreSettings(event_retention_days=3650, max_db_bytes=MIN_DB_BYTES)
        )
        # 9 000 events (72 MB), the newest 500 unsent.
        count, unsent_from = 9000, 8500

        await store._run_on_store_thread(filled(count, unsent_from))
        self.assertGreater((await store.stats()).db_live_bytes, MIN_DB_BYTES)

        result = await store.enforce_retention(NOW)

        self.assertGreater(result.events_dropped, 0)
        self.assertEqual(result.events_dropped_unsent, 0)
        self.assertLessEqual(result.db_live_bytes, MIN_DB_BYTES)
        self.assertEqual(await store.outbox_depth(), count - unsent_from)
        stats = await store.stats()
        assert stats.retention is not None
        self.assertEqual(stats.retention.dropped, result.events_dropped)
        self.assertLessEqual(stats.db_live_bytes, MIN_DB_BYTES)
        self.assertEqual(stats.events, count - result.events_dropped)

    async def test_when_only_unsent_events_are_left_they_are_dropped_and_counted(self) -> None:
        store = await self.open_store(
            StoreSettings(event_retention_days=3650, max_db_bytes=MIN_DB_BYTES)
        )

        await store._run_on_store_thread(filled(9000, unsent_from=0))
        result = await store.enforce_retention(NOW)
        self.assertGreater(result.events_dropped_unsent, 0)
        self.assertEqual(result.events_dropped, result.events_dropped_unsent)
        self.assertEqual(await store.outbox_depth(), 9000 - result.events_dropped)
        totals = await store.retention_totals()
        self.assertEqual(totals.dropped_unsent, result.events_dropped_unsent)

    async def test_rows_written_before_compression_read_as_before(self) -> None:
        store = await self.open_store()
        record = plate_record(7)
        await store.commit_event(record)
        stored = db_rows(self.state_dir, "SELECT raw, length(raw_z) FROM events")
        self.assertEqual(stored[0][0], "")
        self.assertGreater(stored[0][1], 0)

        def as_text(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE events SET raw = ?, raw_z = NULL WHERE id = ?",
                ('{"license":"old","plateid":7}', record.id),
            )

        await store._run_on_store_thread(as_text)
        old = await store.get_event(record.id)
        assert old is not None
        self.assertEqual(old.raw, {"license": "old", "plateid": 7})


class ServiceTests(StoreTestCase):
    async def test_service_opens_runs_retention_on_the_clock_and_closes(self) -> None:
        clock = Clock()
        clock.advance(NOW.timestamp())
        service = StoreService(
            self.reactor, self.state_dir, StoreSettings(image_retention_days=1), clock=clock
        )
        service.startService()
        store = await service.when_open()
        self.assertIs(service.store, store)

        aging = plate_record(1, received_at=NOW - timedelta(hours=12))
        await store.commit_event(aging, [("full", b"x" * 50)])
        await service.retention_idle()
        self.assertIsNotNone(service.last_retention)  # the pass at start

        clock.advance(3600)  # not yet a day old: kept
        await service.retention_idle()
        self.assertEqual(await full_image_state(store, aging.id), ImageState.PRESENT)
        clock.advance(13 * 3600)  # now a day and an hour old
        await service.retention_idle()
        self.assertEqual(await full_image_state(store, aging.id), ImageState.EXPIRED)
        assert service.last_retention is not None
        self.assertEqual(service.last_retention.expired_by_age, 1)

        await service.stopService()
        self.assertIsNone(service.store)
        self.assertEqual(clock.getDelayedCalls(), [])
        with self.assertRaises(StoreWriteError):
            await store.commit_event(plate_record(2))
        # Closed cleanly: another store can open the directory.
        again = await self.open_store()
        self.assertIsNotNone(await again.get_event(aging.id))


class RecordingExecutor(InlineExecutor):
    """An inline executor that counts the jobs it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs = 0

    def submit(self, job: Any) -> Deferred[Any]:
        self.jobs += 1
        return super().submit(job)


class ExecutorTests(StoreTestCase):
    """The store's work runs on the executor it is given (by default its own
    thread, as every other test here): what its consumers' tests rely on."""

    async def test_a_given_executor_runs_the_work_and_is_stopped_on_close(self) -> None:
        executor = RecordingExecutor()
        store = await Store.open(self.reactor, self.state_dir, executor=executor)
        opened = executor.jobs
        self.assertGreaterEqual(opened, 1)
        record = plate_record(1)
        await store.commit_event(record, [("full", b"jpeg")])
        stored = await store.get_event(record.id)
        assert stored is not None
        self.assertEqual(stored.plate, record.plate)
        self.assertGreaterEqual(executor.jobs, opened + 2)
        await store.close()
        self.assertTrue(executor.stopped)
        # Real SQLite and real files: the database holds the event.
        self.assertEqual(db_rows(self.state_dir, "SELECT id FROM events"), [(record.id,)])

    async def test_the_service_makes_an_executor_for_each_opening(self) -> None:
        made: list[RecordingExecutor] = []

        def make() -> RecordingExecutor:
            made.append(RecordingExecutor())
            return made[-1]

        service = StoreService(self.reactor, self.state_dir, clock=Clock(), executor=make)
        for _ in range(2):
            service.startService()
            store = await service.when_open()
            await store.commit_event(plate_record(len(made)))
            await service.stopService()
        self.assertEqual(len(made), 2)
        self.assertTrue(all(executor.stopped and executor.jobs > 0 for executor in made))


class StopWhileOpeningTests(TestCase):
    async def test_waiters_are_told_when_stopped_while_opening(self) -> None:
        """A stop during the opening must not leave when_open() waiting (a
        service that waits for it would hang the shutdown)."""
        from gateway.store import StoreClosedError, StoreService
        from support.threads import global_reactor

        service = StoreService(global_reactor, self.mktemp())
        service.startService()
        waiting = service.when_open()
        await service.stopService()
        failure = None
        try:
            await waiting
        except StoreClosedError as error:
            failure = error
        self.assertIsNotNone(failure)
        self.assertIsNone(service.store)
