"""A damaged row is one damaged event: a stored event that cannot be read back
is set aside in the quarantine table, whole and as found, and everything else
goes on (the cloud's batches, MQTT's reads, listings); batches and reads are
bounded in bytes; the cloud link is not shown up while nothing can be sent."""

from __future__ import annotations

import base64
import os
import sqlite3
import zlib
from typing import Any

import attrs

from gateway.store import EVENT_OVERHEAD_BYTES, EventRecord, Store
from gateway.store.bounded import record_too_large
from gateway.store.database import MAX_READ_RECORD_BYTES
from gateway.upstream.link import LinkState
from support import CapturedLog
from support.store import StoreTestCase, db_rows, plate_record
from support.upstream import UpstreamTestCase, plate_event


def flipped(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes([blob[middle] ^ 0x20]) + blob[middle + 1 :]


async def damage(store: Store, sql: str, params: tuple[Any, ...]) -> None:
    """Change a stored row behind the store's back (as a bad sector or a
    hand edit would), through its own connection."""
    await store._run_on_store_thread(lambda connection: connection.execute(sql, params))


async def stored_blob(store: Store, event_id: str) -> bytes:
    def read(connection: sqlite3.Connection) -> bytes:
        return bytes(
            connection.execute("SELECT raw_z FROM events WHERE id = ?", (event_id,)).fetchone()[0]
        )

    return await store._run_on_store_thread(read)


class QuarantineTests(StoreTestCase):
    async def damaged_store(self) -> tuple[Store, list[EventRecord], dict[str, str]]:
        store = await self.open_store()
        records = [plate_record(n) for n in range(12)]
        for record in records:
            await store.commit_event(record)
        ids = [record.id for record in records]
        blob = await stored_blob(store, ids[1])
        # One damage of each kind, on every other row.
        await damage(store, "UPDATE events SET raw_z = ? WHERE id = ?", (flipped(blob), ids[1]))
        await damage(store, "UPDATE events SET raw_z = ? WHERE id = ?", (blob[:-6], ids[3]))
        await damage(
            store, "UPDATE events SET raw_z = NULL, raw = '{\"license\": \"A' WHERE id = ?", (ids[5],)
        )
        await damage(store, "UPDATE events SET type = 'plxte' WHERE id = ?", (ids[7],))
        await damage(store, "UPDATE events SET received_at = 'yesterday' WHERE id = ?", (ids[9],))
        await damage(
            store, "UPDATE events SET raw_z = ? WHERE id = ?", (zlib.compress(b"[1, 2]"), ids[11])
        )
        reasons = {
            ids[1]: "compressed raw record is damaged",
            ids[3]: "compressed raw record is cut short",
            ids[5]: "raw record is not JSON",
            ids[7]: "ValueError: 'plxte' is not a valid EventType",
            ids[9]: "received_at is str",
            ids[11]: "raw record is not a JSON object",
        }
        return store, records, reasons

    async def test_damaged_rows_are_set_aside_and_the_rest_is_delivered_listed_and_read(
        self,
    ) -> None:
        with CapturedLog() as captured:
            store, records, reasons = await self.damaged_store()
            good = [record.id for n, record in enumerate(records) if n % 2 == 0]

            batch = await store.outbox_batch(200)
            self.assertEqual([item.event.id for item in batch], good)
        quarantined = db_rows(
            self.state_dir, "SELECT id, reason, queued, raw_z IS NOT NULL FROM quarantine ORDER BY seq"
        )
        self.assertEqual({row[0] for row in quarantined}, set(reasons))
        for event_id, reason, queued, _ in quarantined:
            self.assertTrue(reason.startswith(reasons[event_id]), (reason, reasons[event_id]))
            self.assertEqual(queued, 1)
        # Kept as found: the damaged blob itself is there for inspection.
        (flipped_row,) = db_rows(
            self.state_dir, "SELECT raw_z FROM quarantine WHERE id = ?", (records[1].id,)
        )
        self.assertNotEqual(flipped_row[0], None)
        self.assertEqual(len([t for t in captured.texts() if "cannot be read" in t]), 6)

        # The rest goes on: the outbox holds only what can be sent, listings
        # and MQTT's reads see the readable events, a damaged id is no event.
        self.assertEqual(await store.outbox_depth(), 6)
        listed = await store.recent_events(100)
        self.assertEqual([record.id for record in listed], good[::-1])
        after = await store.events_after(0, 100)
        self.assertEqual([record.id for record in after], good)
        self.assertIsNone(await store.get_event(records[1].id))
        stats = await store.stats()
        self.assertEqual(stats.quarantined_rows, 6)
        assert stats.latest_quarantined is not None
        self.assertIn(stats.latest_quarantined.event_id, reasons)
        self.assertTrue(stats.latest_quarantined.queued)

        # The camera sends the damaged event again: it is kept afresh.
        again = await store.commit_event(records[1])
        self.assertTrue(again.created)
        kept = await store.get_event(records[1].id)
        assert kept is not None
        self.assertEqual((kept.plate, kept.raw), (records[1].plate, records[1].raw))

    async def test_each_read_finds_damage_by_itself(self) -> None:
        store, records, reasons = await self.damaged_store()
        # The listing meets the damage first this time.
        listed = await store.recent_events(3)
        self.assertEqual([r.id for r in listed], [records[10].id, records[8].id, records[6].id])
        self.assertEqual(len(db_rows(self.state_dir, "SELECT 1 FROM quarantine")), 3)
        after = await store.events_after(0, 100)
        self.assertEqual(len(after), 6)
        self.assertEqual(len(db_rows(self.state_dir, "SELECT 1 FROM quarantine")), 6)

    async def test_batches_and_reads_are_bounded_in_bytes(self) -> None:
        store = await self.open_store()
        records = [
            plate_record(n, raw={"padding": base64.b64encode(os.urandom(45_000)).decode()})
            for n in range(20)
        ]
        for record in records:
            await store.commit_event(record)
        limit = 256 * 1024
        sent: list[str] = []
        while True:
            batch = await store.outbox_batch(200, max_bytes=limit)
            if not batch:
                break
            self.assertLessEqual(
                sum(item.event.raw_bytes + EVENT_OVERHEAD_BYTES for item in batch), limit
            )
            self.assertGreater(len(batch), 1)
            sent += [item.event.id for item in batch]
            await store.outbox_ack([item.event.id for item in batch])
        self.assertEqual(sent, [record.id for record in records])
        read = await store.events_after(0, 200, max_bytes=limit)
        self.assertLess(len(read), 20)
        # A single event larger than the bound still goes, alone.
        self.assertEqual(len(await store.events_after(0, 200, max_bytes=1)), 1)

    async def test_an_oversized_record_kept_by_an_older_release_is_read_as_its_size(self) -> None:
        store = await self.open_store()
        # An older release kept whatever the camera sent.
        huge = plate_record(1, raw={"userData": "x" * 7_500_000})
        await store.commit_event(huge)
        await store.commit_event(plate_record(2))
        record = await store.get_event(huge.id)
        assert record is not None
        self.assertEqual(
            record.raw, record_too_large(MAX_READ_RECORD_BYTES, MAX_READ_RECORD_BYTES)
        )
        self.assertEqual((record.plate, record.decision_open), (huge.plate, True))
        batch = await store.outbox_batch(200, max_bytes=1_048_576)
        self.assertEqual([item.event.id for item in batch], [huge.id])


class LinkStateTests(UpstreamTestCase):
    async def test_a_batch_that_cannot_be_built_is_not_a_link_that_is_up(self) -> None:
        store = await self.open_store()
        # Random text, so that setting it aside needs pages of its own.
        padded = attrs.evolve(
            plate_event("cam-1", 1, self.clock), raw={"padding": base64.b64encode(os.urandom(30_000)).decode()}
        )
        await self.commit([padded])
        blob = await stored_blob(store, padded.id)
        await damage(store, "UPDATE events SET raw_z = ? WHERE id = ?", (flipped(blob), padded.id))

        def cap(connection: sqlite3.Connection) -> None:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages}").fetchone()

        await store._run_on_store_thread(cap)
        service = await self.start_upstream()
        await self.until(
            lambda: service.link.state is LinkState.BACKING_OFF, "the link to show the failure"
        )
        self.assertIn("delivery: store:", str(service.link.status.last_error))
        self.assertIn("cannot be set aside", str(service.link.status.last_error))

        # Room again: the damaged row is set aside, the rest goes on, the link is up.
        await store._run_on_store_thread(
            lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone()
        )
        good = plate_event("cam-1", 2, self.clock)
        await self.commit([good])
        self.clock.advance(120)
        await self.settle(self.outbox_empty, "the outbox to drain")
        await self.until(lambda: service.link.state is LinkState.UP, "the link to be up")
        self.assertEqual(list(self.cloud.events), [good.id])
        self.assertEqual(len(db_rows(self.state_dir, "SELECT 1 FROM quarantine")), 1)
