"""A damaged database is replaced loudly and salvaged: garbage pages in the
middle of a real store (plates, admin users, sessions, delivered and unsent
events) found by the whole-file check, then the next start moves the file
aside and copies what can be read into the fresh one, row by row past the
damage; the replacement is kept (and shown) until acknowledged. And a store
that cannot open is tried again, with its reason, until it opens."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.admin.auth import USERS_KEY
from gateway.background import reactor_threads
from gateway.store import (
    AdminSessionRow,
    Integrity,
    PlateRow,
    Store,
    StoreClosedError,
    StoreService,
)
from gateway.store.schema import SCHEMA_VERSION
from support.store import StoreTestCase, leaf_pages, plate_record, write_garbage

PLATES = 3000
EVENTS = 400
DELIVERED = 300
USERS = json.dumps(
    [{"name": "ada", "password_hash": "scrypt$kept-as-is", "role": "admin", "disabled": False}]
)


class DamagedDatabaseTests(StoreTestCase):
    async def fill(self) -> tuple[list[str], AdminSessionRow]:
        """A store as a site has it; the ids of the events not yet delivered."""
        store = await Store.open(self.reactor, self.state_dir)
        await store.write_plates([PlateRow(plate=f"P{n:05d}", note=f"n{n}") for n in range(PLATES)])
        await store.kv_set(USERS_KEY, USERS)
        session = AdminSessionRow(
            key="k" * 64,
            user="ada",
            role="admin",
            origin="password",
            csrf_token="c" * 32,
            created_at=float(int(time.time())),
            expires_at=float(int(time.time()) + 3600),
        )
        await store.put_admin_session(session)
        # Pushes that do not compress to nothing: a few events per page.
        records = [
            plate_record(n, raw={"plateid": n, "pad": os.urandom(300).hex()}) for n in range(EVENTS)
        ]
        for record in records:
            await store.commit_event(record)
        await store.outbox_ack([record.id for record in records[:DELIVERED]])
        await store.close()
        return [record.id for record in records[DELIVERED:]], session

    async def damage_and_check(self) -> None:
        """Garbage over plate list pages and old events' pages, found by the
        whole-file check the way the gateway runs it after an unclean stop."""
        path = self.state_dir / "gateway.db"
        plates = leaf_pages(path, "whitelist")
        events = leaf_pages(path, "events")
        self.assertGreater(len(plates), 10)
        self.assertGreater(len(events), 20)
        middle = len(plates) // 2
        write_garbage(path, plates[middle : middle + 2] + events[3:6])
        store = await Store.open(self.reactor, self.state_dir)
        await store.check_integrity(reactor_threads(self.reactor))
        self.assertEqual(store.integrity.state, Integrity.DAMAGED)
        await store.close()

    async def test_the_fresh_database_holds_what_could_be_read(self) -> None:
        unsent, session = await self.fill()
        await self.damage_and_check()

        store = await self.open_store()
        replacement = store.replacement
        assert replacement is not None
        moved = Path(replacement.moved_to)
        self.assertTrue(moved.exists())
        self.assertTrue(moved.name.startswith("gateway.db.corrupt-"))
        salvage = replacement.salvage
        self.assertTrue(salvage.finished)
        self.assertTrue(salvage.lost_anything)

        # The plate list: all but the rows of the two damaged pages, unchanged.
        plates = {row.plate: row for row in await store.whitelist_entries()}
        lost = PLATES - len(plates)
        self.assertGreater(lost, 0)
        self.assertLess(lost, 400)
        self.assertEqual(salvage.parts["plates"].copied, len(plates))
        self.assertGreaterEqual(salvage.parts["plates"].damaged, 1)
        self.assertEqual(plates["P00001"].note, "n1")
        self.assertTrue(set(plates) <= {f"P{n:05d}" for n in range(PLATES)})

        # The users and the sign-in, exactly.
        self.assertEqual(await store.kv_get(USERS_KEY), USERS)
        self.assertEqual(await store.admin_sessions(time.time()), [session])

        # Every unsent event, in order, with its push; still to be delivered.
        batch = await store.outbox_batch(1000)
        self.assertEqual([item.event.id for item in batch], unsent)
        self.assertEqual(batch[0].event.raw["plateid"], DELIVERED)
        self.assertEqual(salvage.parts["outbox"].copied, len(unsent))
        self.assertEqual(salvage.parts["outbox"].unusable, 0)

        # Delivered events past the damaged pages were read on (the walk
        # skips the damage), those on them are lost.
        newest_delivered = await store.get_event(plate_record(DELIVERED - 1).id)
        oldest = await store.get_event(plate_record(0).id)
        self.assertIsNotNone(newest_delivered)
        self.assertIsNotNone(oldest)
        kept = len(await store.recent_events(limit=1000))
        self.assertLess(kept, EVENTS)
        self.assertGreater(kept, EVENTS - 40)
        self.assertGreaterEqual(salvage.parts["events"].damaged, 1)

    async def test_the_replacement_is_kept_until_acknowledged(self) -> None:
        await self.fill()
        await self.damage_and_check()
        store = await Store.open(self.reactor, self.state_dir)
        first = store.replacement
        assert first is not None
        await store.close()

        # A restart does not forget it, nor salvage again.
        store = await Store.open(self.reactor, self.state_dir)
        self.assertEqual(store.replacement, first)
        self.assertEqual(len(list(self.state_dir.glob("gateway.db.corrupt-*"))), 1)
        self.assertEqual(await store.acknowledge_damage(), (first, None))
        self.assertIsNone(store.replacement)
        await store.close()

        store = await self.open_store()
        self.assertIsNone(store.replacement)
        self.assertEqual(await store.acknowledge_damage(), (None, None))

    async def test_a_file_nothing_can_be_read_from_is_said_so(self) -> None:
        await self.fill()
        write_garbage(self.state_dir / "gateway.db", [1])  # the header and the schema
        store = await self.open_store()
        replacement = store.replacement
        assert replacement is not None
        self.assertIn("cannot be read at all", replacement.salvage.error or "")
        self.assertTrue(replacement.salvage.lost_anything)
        self.assertIn("DATABASE REPLACED", replacement.notice())
        self.assertEqual(await store.whitelist_entries(), [])


class StoreThatCannotOpenTests(StoreTestCase):
    async def next_change(self, service: StoreService) -> None:
        changed: Deferred[None] = Deferred()

        def seen() -> None:
            if not changed.called:
                changed.callback(None)

        service.on_change(seen)
        await changed

    def set_schema(self, version: int) -> None:
        connection = sqlite3.connect(self.state_dir / "gateway.db")
        connection.execute(f"PRAGMA user_version = {version}")
        connection.commit()
        connection.close()

    async def test_a_newer_schema_is_refused_with_its_reason_while_retrying(self) -> None:
        store = await Store.open(self.reactor, self.state_dir)
        await store.commit_event(plate_record(1))
        await store.close()
        self.set_schema(SCHEMA_VERSION + 3)

        clock = Clock()
        service = StoreService(self.reactor, self.state_dir, clock=clock)
        waiting = service.when_open()
        changed = Deferred.fromCoroutine(self.next_change(service))
        service.startService()
        self.addCleanup(service.stopService)
        await changed
        problem = service.problem
        assert problem is not None
        self.assertIn("newer than this gateway's", problem.reason)
        self.assertEqual((problem.attempts, problem.retry_in), (1, 10.0))
        self.assertIn("NOT KEEPING EVENTS", service.notice() or "")
        self.assertFalse(waiting.called)
        # Never moved aside: a newer release's database is not damaged.
        self.assertEqual(list(self.state_dir.glob("gateway.db.corrupt-*")), [])

        changed = Deferred.fromCoroutine(self.next_change(service))
        clock.advance(10)
        await changed
        assert service.problem is not None
        self.assertEqual((service.problem.attempts, service.problem.retry_in), (2, 20.0))
        self.assertFalse(waiting.called)

        # The right release is back (a downgrade undone): opens, no restart.
        self.set_schema(SCHEMA_VERSION)
        clock.advance(20)
        store = await waiting
        self.assertIs(service.store, store)
        self.assertIsNone(service.problem)
        self.assertIsNone(service.notice())
        self.assertIsNotNone(await store.get_event(plate_record(1).id))

    async def test_a_stop_while_retrying_tells_whoever_waits(self) -> None:
        blocker = await self.open_store()  # another gateway holds the directory
        del blocker
        clock = Clock()
        service = StoreService(self.reactor, self.state_dir, clock=clock)
        changed = Deferred.fromCoroutine(self.next_change(service))
        service.startService()
        waiting = service.when_open()
        await changed
        assert service.problem is not None
        self.assertIn("in use by another anpr-gateway", service.problem.reason)
        await service.stopService()
        failure: Any = None
        try:
            await waiting
        except StoreClosedError as error:
            failure = error
        self.assertIsNotNone(failure)
        self.assertEqual(clock.getDelayedCalls(), [])


class DamagedLogTests(StoreTestCase):
    """The write-ahead log of a power cut's image of the files: SQLite
    replays it up to a damaged frame and drops every commit after it; the
    gateway says how many, keeps the log, and shows it until acknowledged."""

    async def power_cut_image(self, events: int) -> tuple[Path, int]:
        """The files as a power cut leaves them after ``events`` answered
        plates (copied while the store is open: each commit is fsynced),
        and how many frames the log holds."""
        store = await self.open_store()
        for n in range(events):
            await store.commit_event(plate_record(n))
        image = self.state_dir.parent / "image"
        image.mkdir()
        for name in ("gateway.db", "gateway.db-wal"):
            shutil.copyfile(self.state_dir / name, image / name)
        frames = ((image / "gateway.db-wal").stat().st_size - 32) // (24 + 4096)
        return image, frames

    async def test_commits_dropped_past_a_damaged_frame_are_said(self) -> None:
        image, frames = await self.power_cut_image(40)
        damaged = frames * 3 // 5
        with open(image / "gateway.db-wal", "r+b") as log_file:
            log_file.seek(32 + damaged * (24 + 4096) + 24 + 100)
            log_file.write(os.urandom(64))

        store = await Store.open(self.reactor, image)
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        damage = store.log_damage
        assert damage is not None
        kept = len(await store.recent_events(limit=1000))
        self.assertGreater(kept, 0)
        self.assertLess(kept, 40)
        # Every commit after the damaged frame, the answered plates among them.
        self.assertEqual(damage.dropped_commits, 40 - kept)
        assert damage.copy is not None
        self.assertTrue(Path(damage.copy).exists())
        self.assertIn("WRITE-AHEAD LOG DAMAGED", damage.notice())
        await store.close()

        again = await Store.open(self.reactor, image)
        self.assertEqual(again.log_damage, damage)  # kept until acknowledged
        self.assertEqual(await again.acknowledge_damage(), (None, damage))
        self.assertIsNone(again.log_damage)
        await again.close()

    async def test_an_undamaged_log_of_a_power_cut_is_not_reported(self) -> None:
        image, _ = await self.power_cut_image(40)
        store = await Store.open(self.reactor, image)
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        self.assertIsNone(store.log_damage)
        self.assertEqual(len(await store.recent_events(limit=1000)), 40)
