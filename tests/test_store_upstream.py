"""The store's upstream parts: accepting delivered events with their images
queued for upload in the same transaction, the upload queue, the outbox cap
and its persisted counters, and cached cloud decisions. Real SQLite."""

from __future__ import annotations

from datetime import timedelta

from gateway.store import (
    CachedCloudDecision,
    EventRecord,
    EventType,
    ImageState,
    OutboxTrim,
    Store,
    new_event_id,
)
from gateway.store.schema import SCHEMA_VERSION
from support.store import NOW, StoreTestCase, db_rows, plate_record


def status_record(online: bool, camera: str = "cam-1") -> EventRecord:
    kind = "camera_online" if online else "camera_offline"
    return EventRecord(
        id=new_event_id("online" if online else "offline"),
        type=EventType(kind),
        received_at=NOW,
        camera=camera,
        raw={"address": "192.0.2.10"},
    )


def io_record(camera: str = "cam-1") -> EventRecord:
    return EventRecord(
        id=new_event_id("io"), type=EventType.IO, received_at=NOW, camera=camera, raw={"in": 1}
    )


class UpstreamStoreTestCase(StoreTestCase):
    async def reopen(self, store: Store) -> Store:
        await store.close()
        return await self.open_store()


class ImageQueueTests(UpstreamStoreTestCase):
    async def test_accept_removes_from_outbox_and_queues_present_images_atomically(self) -> None:
        store = await self.open_store()
        both = plate_record(1)
        crop_only = plate_record(2)
        none = plate_record(3)
        await store.commit_event(both, [("full", b"FULL-1"), ("crop", b"CROP-1")])
        await store.commit_event(crop_only, [("crop", b"CROP-2")])
        await store.commit_event(none)
        removed = await store.outbox_accept([both.id, crop_only.id, none.id], ["full", "crop"])
        self.assertEqual(removed, 3)
        self.assertEqual(await store.outbox_depth(), 0)
        uploads = await store.image_uploads(10)
        self.assertEqual(
            [(u.event_id, u.kind) for u in uploads],
            [(both.id, "crop"), (both.id, "full"), (crop_only.id, "crop")],
        )
        self.assertEqual(await store.image_uploads_depth(), 3)

        # The queue survives a restart; accepting the same event again does
        # not queue its images twice.
        store = await self.reopen(store)
        self.assertEqual(await store.outbox_accept([both.id], ["full", "crop"]), 0)
        uploads = await store.image_uploads(10)
        self.assertEqual(len(uploads), 3)
        self.assertEqual(await store.image_uploads_done([uploads[0].seq, uploads[2].seq]), 2)
        left = [(u.event_id, u.kind) for u in await store.image_uploads(10)]
        self.assertEqual(left, [(both.id, "full")])

    async def test_only_the_kinds_asked_for_and_only_images_on_disk(self) -> None:
        store = await self.open_store()
        record = plate_record(4)
        await store.commit_event(record, [("full", b"F"), ("crop", b"C")])
        await store.outbox_accept([record.id], ["crop"])
        self.assertEqual([u.kind for u in await store.image_uploads(10)], ["crop"])

        expired = plate_record(5)
        await store.commit_event(expired, [("crop", b"C")])
        await store.enforce_retention(NOW + timedelta(days=365))
        stored = await store.get_event(expired.id)
        assert stored is not None
        self.assertIs(stored.image_crop, ImageState.EXPIRED)
        await store.outbox_accept([expired.id], ["full", "crop"])
        self.assertNotIn(expired.id, [u.event_id for u in await store.image_uploads(10)])
        with self.assertRaises(ValueError):
            await store.outbox_accept([record.id], ["thumbnail"])


class OutboxTrimTests(UpstreamStoreTestCase):
    async def test_camera_status_first_then_other_then_oldest_plates(self) -> None:
        store = await self.open_store()
        order: list[EventRecord] = []
        for index in range(6):
            order.append(plate_record(100 + index))
            order.append(status_record(index % 2 == 0))
            order.append(io_record())
        for record in order:
            await store.commit_event(record)
        self.assertEqual(await store.outbox_depth(), 18)

        self.assertEqual(await store.outbox_trim(18), OutboxTrim())  # at the cap: nothing
        dropped = await store.outbox_trim(10)
        self.assertEqual(dropped, OutboxTrim(camera_status=6, other=2, plate=0))
        left = [item.event for item in await store.outbox_batch(100)]
        self.assertEqual(len(left), 10)
        self.assertTrue(all(event.type is not EventType.CAMERA_ONLINE for event in left))
        # The two oldest io events went; the newer ones stay, in order.
        ios = [record.id for record in order if record.type is EventType.IO]
        self.assertEqual([e.id for e in left if e.type is EventType.IO], ios[2:])

        dropped = await store.outbox_trim(5, target=3)
        self.assertEqual(dropped, OutboxTrim(camera_status=0, other=4, plate=3))
        plates = [record.id for record in order if record.type is EventType.PLATE]
        self.assertEqual([item.event.id for item in await store.outbox_batch(100)], plates[3:])

        # Counted durably, across restarts; event rows are kept.
        store = await self.reopen(store)
        self.assertEqual(
            await store.outbox_dropped(), OutboxTrim(camera_status=6, other=6, plate=3)
        )
        self.assertEqual(db_rows(self.state_dir, "SELECT COUNT(*) FROM events"), [(18,)])


class CloudDecisionTests(UpstreamStoreTestCase):
    async def test_put_replace_read_expire_and_delete(self) -> None:
        store = await self.open_store()
        paid = CachedCloudDecision(
            plate="京A12345",
            lane="Exit",
            open=True,
            reason="paid",
            cache_until=NOW + timedelta(minutes=15),
            decided_at=NOW,
            display=("Paid", "Goodbye"),
            voice="Goodbye",
        )
        other_lane = CachedCloudDecision(
            plate="京A12345",
            lane="",
            open=False,
            reason="unpaid",
            cache_until=NOW + timedelta(minutes=5),
            decided_at=NOW,
        )
        await store.put_cloud_decision(paid)
        await store.put_cloud_decision(other_lane)
        store = await self.reopen(store)
        self.assertEqual(await store.cloud_decisions(NOW), [other_lane, paid])
        self.assertEqual(await store.cloud_decisions(NOW + timedelta(minutes=10)), [paid])

        replaced = CachedCloudDecision(
            plate="京A12345",
            lane="Exit",
            open=False,
            reason="overstay",
            cache_until=NOW + timedelta(minutes=30),
            decided_at=NOW,
        )
        await store.put_cloud_decision(replaced)
        self.assertEqual(await store.expire_cloud_decisions(NOW + timedelta(minutes=6)), 1)
        self.assertEqual(await store.cloud_decisions(NOW), [replaced])
        self.assertTrue(await store.delete_cloud_decision("京A12345", "Exit"))
        self.assertFalse(await store.delete_cloud_decision("京A12345", "Exit"))
        self.assertEqual(await store.cloud_decisions(NOW), [])

    async def test_schema_has_the_upstream_tables(self) -> None:
        await self.open_store()
        tables = {
            row[0]
            for row in db_rows(
                self.state_dir, "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        self.assertTrue({"upstream_images", "cloud_decisions"} <= tables)
        self.assertEqual(db_rows(self.state_dir, "PRAGMA user_version"), [(SCHEMA_VERSION,)])
        self.assertGreaterEqual(SCHEMA_VERSION, 2)
