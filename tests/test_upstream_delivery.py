"""Event and image delivery to the stub cloud: shape, order, dedup, outages,
Retry-After, 429, poison events, refused credentials, images, the outbox cap.

In memory: the stub cloud is reached through StubTreq, the store runs its
SQLite work at once, and every timer of the gateway (back-off, time limits,
loops) runs on a test Clock the tests advance."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from gateway.store import EventType, OutboxTrim
from gateway.upstream.link import LinkState
from gateway.upstream.service import UpstreamService
from support.cloud import Scripted
from support.upstream import UpstreamTestCase, other_event, plate_event

CAMERAS = ("cam-1", "cam-2", "cam-3", "cam-4", "cam-5")


def idle_after_failure(service: UpstreamService) -> bool:
    """Both channels tried, failed, and wait for their next attempt."""
    return all(
        channel.waiting_on is not None and channel._pass is None
        for channel in (service.drainer, service.sync)
    )


class DeliveryTests(UpstreamTestCase):
    async def test_busy_hour_arrives_once_in_order_per_camera_with_the_documented_shape(
        self,
    ) -> None:
        records = []
        for number in range(3000):
            camera = CAMERAS[number % len(CAMERAS)]
            if number % 10 == 3:
                records.append(other_event(camera, EventType.IO, self.clock))
            else:
                records.append(plate_event(camera, number, self.clock))
            if number % 50 == 0:
                self.clock.advance(1.2)  # an hour of traffic
        await self.commit(records)
        service = await self.start_upstream(batch_size=200)
        await self.settle(self.outbox_empty, "the outbox to drain")

        self.assertEqual(self.cloud.bad_signatures, [])
        self.assertEqual(set(self.cloud.events), {record.id for record in records})
        self.assertEqual(len(self.cloud.arrivals), 3000)
        self.assertTrue(all(len(batch) <= 200 for batch in self.cloud.batches))
        for camera in CAMERAS:
            sent = [r.id for r in records if r.camera == camera]
            received = [i for i in self.cloud.arrivals if self.cloud.events[i]["camera"] == camera]
            self.assertEqual(received, sent, camera)

        first_plate = next(r for r in records if r.type is EventType.PLATE)
        event = self.cloud.events[first_plate.id]
        self.assertEqual(
            event,
            {
                "id": first_plate.id,
                "type": "plate",
                "camera": "cam-1",
                "lane": "lane-cam-1",
                "received_at": "2025-03-01T12:00:00.000000Z",
                "camera_time": "2025-03-01T12:00:00.000000Z",
                "plate": first_plate.plate,
                "license": first_plate.license,
                "offline": False,
                "decision": {"open": True, "reason": "whitelist", "source": "local"},
                "repeat": False,
                "images": [],
                "raw": {"plateid": 0, "license": first_plate.license, "confidence": 91},
            },
        )
        io = self.cloud.events[records[3].id]
        self.assertEqual(io["type"], "io")
        self.assertNotIn("decision", io)
        self.assertIsNone(io["camera_time"])
        await self.until(lambda: service.link.state is LinkState.UP, "the link to be up")
        status = await service.status()
        self.assertEqual((status.outbox_depth, status.delivered), (0, 3000))

        # A new event is delivered as soon as the recorder says so.
        late = plate_event("cam-2", 99999, self.clock)
        await self.commit([late])
        service.notify_new_event()
        await self.until(lambda: late.id in self.cloud.events, "the new event")

    async def test_outage_of_any_length_then_everything_in_order(self) -> None:
        before = [plate_event("cam-1", n, self.clock) for n in range(5)]
        await self.commit(before)
        service = await self.start_upstream(max_backoff_seconds=300.0)
        await self.settle(self.outbox_empty, "the first events")
        await self.cloud.go_down()

        during = []
        for step in range(12):  # six hours without the cloud, half an hour a step
            for n in range(10):
                during.append(plate_event(CAMERAS[n % 2], 1000 * (step + 1) + n, self.clock))
            await self.commit(during[-10:])
            service.notify_new_event()
            if step == 0:
                # The link was up: the first new event is tried at once.
                await self.until(
                    lambda: service.drainer._backoff.failures == 1, "the attempt at once"
                )
            self.clock.advance(1800)
            await self.until(lambda: idle_after_failure(service), "a failed attempt")
        status = service.link.status
        self.assertEqual(status.state, LinkState.BACKING_OFF)
        self.assertIn("refused", str(status.last_error))
        self.assertEqual(len(self.cloud.arrivals), 5)
        self.assertEqual((await service.status()).outbox_depth, 120)
        # That attempt and one retry each half hour: thirteen failures in a
        # row, and the back-off (2**12 s) is capped.
        self.assertEqual(service.drainer._backoff.failures, 13)
        assert status.retry_at is not None
        self.assertEqual(status.retry_at.timestamp(), self.clock.seconds() + 300)

        self.cloud.come_up()
        self.clock.advance(300)
        await self.settle(self.outbox_empty, "the backlog to drain")
        self.assertEqual(self.cloud.arrivals, [r.id for r in before + during])
        await self.until(lambda: service.link.state is LinkState.UP, "the link to be up")

    async def test_a_successful_decision_resumes_delivery_at_once(self) -> None:
        service = await self.start_upstream(max_backoff_seconds=3600.0)
        await self.until(lambda: service.link.state is LinkState.UP, "the first sync")
        await self.cloud.go_down()
        queued = [plate_event("cam-1", n, self.clock) for n in range(3)]
        await self.commit(queued)
        service.notify_new_event()
        await self.until(lambda: service.drainer.waiting_on is not None, "the failed delivery")
        for _ in range(4):  # several failed attempts: the back-off grows
            self.clock.advance(3600)
            await self.until(lambda: idle_after_failure(service), "another failed attempt")
        self.cloud.come_up()
        answer = await service.decider.decide({"plate": "京A00001", "lane": "Exit"})
        self.assertIsNotNone(answer)
        # No clock advance: the decision proved the link, delivery went at once.
        await self.settle(self.outbox_empty, "delivery after the decision")
        self.assertEqual(self.cloud.arrivals, [r.id for r in queued])

    async def test_503_with_retry_after_is_honoured(self) -> None:
        service = await self.start_upstream()
        await self.until(lambda: service.link.state is LinkState.UP, "the first sync")
        self.cloud.scripts["events"] = [
            Scripted(503, b"maintenance", {"Retry-After": "120"}),
            Scripted(
                503,
                b"maintenance",
                {
                    "Retry-After": format_datetime(
                        datetime.fromtimestamp(self.clock.seconds() + 600, tz=timezone.utc),
                        usegmt=True,
                    )
                },
            ),
        ]
        record = plate_event("cam-1", 1, self.clock)
        await self.commit([record])
        start = self.clock.seconds()
        service.notify_new_event()
        await self.until(lambda: service.link.state is LinkState.BACKING_OFF, "the 503")
        self.assertEqual(
            service.link.status.retry_at, datetime.fromtimestamp(start + 120, tz=timezone.utc)
        )
        self.assertIn("HTTP 503", str(service.link.status.last_error))
        # A link proven by another exchange does not override the cloud's
        # request, nor does a new event: no attempt starts.
        service.link.proven()
        service.notify_new_event()
        self.assertIsNone(service.drainer._pass)
        self.clock.advance(119)
        self.assertIsNone(service.drainer._pass)
        self.assertEqual(len(self.cloud.requests_to("POST", "/events")), 1)
        self.clock.advance(1)
        await self.until(
            lambda: len(self.cloud.requests_to("POST", "/events")) == 2, "the retry at 120 s"
        )
        await self.until(
            lambda: service.link.status.retry_at
            == datetime.fromtimestamp(start + 600, tz=timezone.utc),
            "the HTTP-date Retry-After",
        )
        self.clock.advance(480)
        await self.until(lambda: record.id in self.cloud.events, "delivery after the wait")
        # The same request, retried, kept its webhook-id.
        ids = {r.headers["webhook-id"] for r in self.cloud.requests_to("POST", "/events")}
        self.assertEqual(len(ids), 1)

    async def test_429_and_5xx_back_off_exponentially_with_jitter(self) -> None:
        service = await self.start_upstream(random=lambda: 0.5, max_backoff_seconds=3.0)
        await self.until(lambda: service.link.state is LinkState.UP, "the first sync")
        self.cloud.scripts["events"] = [
            Scripted(429, b"slow down"),
            Scripted(500),
            Scripted(408),
            Scripted(409),
        ]
        record = plate_event("cam-1", 1, self.clock)
        await self.commit([record])
        service.notify_new_event()
        delays = []
        for expected_requests in range(1, 5):

            def attempted(expected: int = expected_requests) -> bool:
                posts = self.cloud.requests_to("POST", "/events")
                return len(posts) == expected and service.drainer.waiting_on is not None

            await self.until(attempted, f"attempt {expected_requests}")
            retry_at = service.link.status.retry_at
            assert retry_at is not None
            delay = round(retry_at.timestamp() - self.clock.seconds(), 3)
            delays.append(delay)
            self.clock.advance(delay + 0.001)
        # random() = 0.5 of 1, 2, 4 s, then the 3 s cap.
        self.assertEqual(delays, [0.5, 1.0, 1.5, 1.5])
        await self.until(lambda: record.id in self.cloud.events, "delivery")
        await self.until(lambda: service.link.state is LinkState.UP, "the link to be up")

    async def test_poison_event_goes_to_dead_letters_and_the_rest_is_delivered(self) -> None:
        records = [plate_event(CAMERAS[n % 3], n, self.clock) for n in range(37)]
        poison = records[21]
        self.cloud.reject_ids = {poison.id}
        await self.commit(records)
        service = await self.start_upstream(batch_size=16)
        await self.settle(self.outbox_empty, "the outbox to drain")

        expected = [r.id for r in records if r.id != poison.id]
        self.assertEqual(self.cloud.arrivals, expected)
        store = await self.open_store()
        (dead,) = await store.dead_letters()
        self.assertEqual((dead.event_id, dead.status, dead.camera), (poison.id, 400, poison.camera))
        self.assertIn("malformed", dead.body)
        await self.until(lambda: service.link.state is LinkState.UP, "the link to be up")
        self.assertEqual(self.log.count(f"rejected event {poison.id}"), 1)

        # Fixed on the cloud side, the dead letter can be replayed.
        self.cloud.reject_ids = set()
        self.assertTrue(await store.replay_dead_letter(poison.id))
        service.notify_new_event()
        await self.until(lambda: poison.id in self.cloud.events, "the replayed event")

    async def test_refused_credentials_pause_delivery_until_fixed(self) -> None:
        self.cloud.refuse_credentials = True
        records = [plate_event("cam-1", n, self.clock) for n in range(4)]
        await self.commit(records)
        service = await self.start_upstream(max_backoff_seconds=45.0)
        await self.until(lambda: service.link.state is LinkState.DOWN, "the link to go down")
        start = self.clock.seconds()
        self.assertIn("HTTP 401", str(service.link.status.last_error))
        self.assertEqual(
            service.link.status.retry_at, datetime.fromtimestamp(start + 45, tz=timezone.utc)
        )
        for _ in range(3):
            self.clock.advance(45)
            await self.until(
                lambda: service.drainer.waiting_on is not None and service.drainer._pass is None,
                "another refused attempt",
            )
        self.assertEqual(self.cloud.arrivals, [])
        self.assertEqual(self.log.count("Cloud link is down"), 1)  # once per state change
        self.assertEqual(await (await self.open_store()).outbox_depth(), 4)

        self.cloud.refuse_credentials = False
        self.clock.advance(45)
        await self.settle(self.outbox_empty, "delivery after the fix")
        self.assertEqual(self.cloud.arrivals, [r.id for r in records])
        await self.until(lambda: service.link.state is LinkState.UP, "the link to be up")
        self.assertEqual(self.log.count("Cloud link is up"), 1)

    async def test_a_wrong_url_pauses_instead_of_dead_lettering(self) -> None:
        service = await self.start_upstream(max_backoff_seconds=45.0)
        await self.until(lambda: service.link.state is LinkState.UP, "the first sync")
        self.cloud.scripts["events"] = [Scripted(404, b"no such route")]
        records = [plate_event("cam-1", n, self.clock) for n in range(3)]
        await self.commit(records)
        service.notify_new_event()
        await self.until(lambda: service.link.state is LinkState.DOWN, "the paused link")
        self.assertIn("HTTP 404", str(service.link.status.last_error))
        store = await self.open_store()
        self.assertEqual(await store.dead_letters(), [])
        self.assertEqual(await store.outbox_depth(), 3)
        self.clock.advance(45)
        await self.settle(self.outbox_empty, "delivery once the route exists")
        self.assertEqual(self.cloud.arrivals, [r.id for r in records])


class ImageTests(UpstreamTestCase):
    async def test_images_follow_their_event_and_resume_after_a_restart(self) -> None:
        records = [plate_event("cam-1", n, self.clock) for n in range(3)]
        for index, record in enumerate(records):
            images = [("full", b"FULL-%d" % index), ("crop", b"CROP-%d" % index)]
            await self.commit([record], images)
        # The first image upload meets a cloud that fails; then the gateway stops.
        self.cloud.scripts["images"] = [Scripted(503)]
        service = await self.start_upstream(images="all")
        await self.until(lambda: service.drainer.waiting_on is not None, "the failed upload")
        self.assertEqual(set(self.cloud.arrivals), {r.id for r in records})
        self.assertEqual(self.cloud.events[records[0].id]["images"], ["full", "crop"])
        await self.stop_upstream(service)
        store = await self.open_store()
        self.assertEqual(await store.image_uploads_depth(), 6)

        again = await self.start_upstream(images="all")
        await self.until(lambda: len(self.cloud.images) == 6, "every image")
        self.assertEqual(self.cloud.image_before_event, [])
        for index, record in enumerate(records):
            self.assertEqual(self.cloud.images[(record.id, "full")], b"FULL-%d" % index)
            self.assertEqual(self.cloud.images[(record.id, "crop")], b"CROP-%d" % index)

        async def uploaded() -> bool:
            return await store.image_uploads_depth() == 0

        await self.settle(uploaded, "the upload queue to empty")
        self.assertEqual((await again.status()).images_pending, 0)

    async def test_crop_setting_and_images_expired_before_upload_are_skipped(self) -> None:
        first = plate_event("cam-1", 1, self.clock)
        second = plate_event("cam-1", 2, self.clock)
        await self.commit([first], [("full", b"F1"), ("crop", b"C1")])
        await self.commit([second], [("full", b"F2"), ("crop", b"C2")])
        self.cloud.scripts["images"] = [Scripted(500)]
        service = await self.start_upstream(images="crop")
        await self.until(lambda: service.drainer.waiting_on is not None, "the failed upload")
        store = await self.open_store()
        # Retention removes the images before they could go: skipped, not an error.
        await store.enforce_retention(
            datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc) + timedelta(days=400)
        )
        self.clock.advance(60)

        async def skipped() -> bool:
            return await store.image_uploads_depth() == 0

        await self.settle(skipped, "the upload queue to empty")
        self.assertEqual(service.drainer.images_skipped, 2)
        self.assertEqual(set(self.cloud.images), set())
        self.assertEqual(service.drainer.images_sent, 0)
        self.assertEqual(self.cloud.events[first.id]["images"], ["crop"])
        await self.until(lambda: service.link.state is LinkState.UP, "the link to be up")


class OutboxCapTests(UpstreamTestCase):
    async def test_past_the_cap_non_plate_events_go_first_and_are_counted(self) -> None:
        records = []
        for n in range(10):
            records.append(other_event("cam-1", EventType.CAMERA_OFFLINE, self.clock))
            records.append(other_event("cam-1", EventType.IO, self.clock))
            records.append(plate_event("cam-1", n, self.clock))
        await self.commit(records)
        self.cloud.refuse_credentials = True  # nothing is delivered meanwhile
        service = await self.start_upstream(outbox_max_events=10)
        await self.until(lambda: service.link.state is LinkState.DOWN, "the paused link")
        status = await service.status()
        self.assertEqual(status.outbox_depth, 10)
        self.assertEqual(status.dropped, OutboxTrim(camera_status=10, other=10, plate=0))
        self.assertEqual(self.log.count("reached its cap of 10 events"), 1)

        more = [plate_event("cam-1", 100 + n, self.clock) for n in range(5)]
        await self.commit(more)
        self.clock.advance(60)  # housekeeping
        await self.until(lambda: service.drainer.dropped.plate == 5, "the second trim")
        await self.stop_upstream(service)

        self.cloud.refuse_credentials = False
        again = await self.start_upstream(outbox_max_events=10)
        await self.settle(self.outbox_empty, "the rest to drain")
        plates = [r.id for r in records if r.type is EventType.PLATE] + [r.id for r in more]
        self.assertEqual(self.cloud.arrivals, plates[5:])
        self.assertEqual(
            (await again.status()).dropped, OutboxTrim(camera_status=10, other=10, plate=5)
        )
