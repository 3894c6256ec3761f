"""Delivery of the outbox to the cloud: events in batches, oldest first per
camera, at least once; then their images.

A batch the cloud rejects permanently is split in halves until the event it
rejects is found; that event goes to the dead letters with the cloud's
answer, and the others are delivered. Transient failures leave everything in
the outbox and are retried with back-off (see :mod:`gateway.upstream.channel`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.store import ImageUpload, OutboxItem, OutboxTrim, Store, StoreService
from gateway.upstream.channel import LinkChannel
from gateway.upstream.events import events_body
from gateway.upstream.http import UpstreamClient, Verdict
from gateway.upstream.link import Link, LinkFailure
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.signing import new_message_id

__all__ = ["OutboxDrainer"]

log = Logger()

# Images sent between two event batches: events (small, and what the cloud
# acts on) go first, but a busy site must not starve the images.
IMAGES_PER_ROUND = 20
EVENTS_ANSWER_LIMIT = 256 * 1024


class OutboxDrainer(LinkChannel):
    """Sends the store's outbox upstream. Call :meth:`kick` (through
    :meth:`UpstreamService.notify_new_event`) when an event was committed."""

    channel = "delivery"

    def __init__(
        self,
        *,
        store: StoreService,
        client: UpstreamClient,
        clock: IReactorTime,
        config: UpstreamSettings,
        link: Link,
        random: Callable[[], float],
    ) -> None:
        super().__init__(
            store=store, client=client, clock=clock, config=config, link=link, random=random
        )
        self._kinds = self._config.images.kinds
        # webhook-id of the request being retried: the same batch (or image)
        # sent again keeps its id.
        self._retrying: tuple[tuple[str, ...], str] | None = None
        self.delivered = 0
        self.dead_lettered = 0
        self.images_sent = 0
        self.images_skipped = 0
        self.images_rejected = 0
        self.dropped = OutboxTrim()  # since start; the store keeps the totals
        self.last_delivery_at: datetime | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)

    async def _prepare(self, store: Store) -> None:
        await self.trim(store)

    async def _work(self, store: Store) -> float | None:
        while self.running:
            items = await store.outbox_batch(
                self._config.batch_size, max_bytes=self._config.batch_max_bytes
            )
            if items:
                await self._deliver(store, items)
            uploads = await store.image_uploads(IMAGES_PER_ROUND)
            for upload in uploads:
                if not self.running:
                    break
                await self._upload(store, upload)
            if not items and not uploads:
                break
        # Also look now and then without being told: events queued by a path
        # that does not notify (a replayed dead letter) still go.
        return self._config.sync_interval_seconds

    # -- events ---------------------------------------------------------------

    def _message_id(self, key: tuple[str, ...]) -> str:
        if self._retrying is not None and self._retrying[0] == key:
            return self._retrying[1]
        message_id = new_message_id()
        self._retrying = (key, message_id)
        return message_id

    async def _deliver(self, store: Store, items: Sequence[OutboxItem]) -> None:
        ids = [item.event.id for item in items]
        body = events_body(self._config.gateway_id, [item.event for item in items], self._kinds)
        try:
            response = await self._client.request(
                "POST",
                "/events",
                body=body,
                message_id=self._message_id(tuple(ids)),
                body_limit=EVENTS_ANSWER_LIMIT,
            )
        except LinkFailure:
            await self._count_attempt(store, ids)
            raise
        verdict = response.verdict
        if verdict is Verdict.ACCEPTED:
            self._retrying = None
            await store.outbox_accept(ids, self._kinds)
            self.delivered += len(ids)
            self.last_delivery_at = self._now()
            self._succeeded()
            return
        if verdict is not Verdict.REJECTED:
            await self._count_attempt(store, ids)
            raise response.failure(self._now(), "POST /events")
        # The cloud answered, so the link works; one of these events it will
        # never take. Find it: halves, until single events.
        self._retrying = None
        self._succeeded()
        if len(items) == 1:
            await self._dead_letter(store, items[0], response.status, response.text())
            return
        middle = len(items) // 2
        await self._deliver(store, items[:middle])
        await self._deliver(store, items[middle:])

    async def _count_attempt(self, store: Store, ids: list[str]) -> None:
        # Attempts are counted for the dead-letter record; retry timing is the
        # link's back-off, so the events stay due.
        await store.outbox_defer(ids, self._now())

    async def _dead_letter(self, store: Store, item: OutboxItem, status: int, body: str) -> None:
        await store.outbox_dead_letter(item.event.id, status, body)
        self.dead_lettered += 1
        log.warn(
            "The cloud rejected event {event_id} ({type} from camera {camera}) with HTTP "
            "{status}: {body}. It is kept in the dead letters (replayable); delivery goes on.",
            event_id=item.event.id,
            type=item.event.type.value,
            camera=item.event.camera,
            status=status,
            body=" ".join(body.split())[:300],
        )

    # -- images ---------------------------------------------------------------

    async def _upload(self, store: Store, upload: ImageUpload) -> None:
        data = None
        if upload.kind in self._kinds:
            data = await store.read_image(upload.event_id, upload.kind)
        if data is None:
            # Expired by retention (or no longer wanted): nothing to send.
            self.images_skipped += 1
            await store.image_uploads_done([upload.seq])
            return
        path = f"/images/{upload.event_id}/{upload.kind}"
        response = await self._client.request(
            "PUT",
            path,
            body=data,
            content_type="image/jpeg",
            message_id=self._message_id(("image", upload.event_id, upload.kind)),
        )
        verdict = response.verdict
        if verdict is Verdict.ACCEPTED:
            self.images_sent += 1
        elif verdict is Verdict.REJECTED:
            self.images_rejected += 1
            log.warn(
                "The cloud rejected the {kind} image of event {event_id} with HTTP {status}: "
                "{body}. It is not sent again (the event was delivered).",
                kind=upload.kind,
                event_id=upload.event_id,
                status=response.status,
                body=" ".join(response.text(300).split()),
            )
        else:
            raise response.failure(self._now(), f"PUT {path}")
        self._retrying = None
        await store.image_uploads_done([upload.seq])
        self._succeeded()

    # -- bound ----------------------------------------------------------------

    async def trim(self, store: Store) -> OutboxTrim:
        """Keep the outbox under ``outbox_max_events``: past it, the oldest
        events go, camera online/offline first, plates last. Trims to 1 %
        under the cap, so that a long outage trims now and then, not at every
        event."""
        cap = self._config.outbox_max_events
        dropped = await store.outbox_trim(cap, cap - cap // 100)
        if dropped.total:
            self.dropped = OutboxTrim(
                camera_status=self.dropped.camera_status + dropped.camera_status,
                other=self.dropped.other + dropped.other,
                plate=self.dropped.plate + dropped.plate,
            )
            log.warn(
                "The outbox reached its cap of {cap} events: {total} of the oldest were "
                "dropped from it ({camera_status} camera online/offline, {other} other, "
                "{plate} plate events); they stay in the store but will not reach the cloud",
                cap=cap,
                total=dropped.total,
                camera_status=dropped.camera_status,
                other=dropped.other,
                plate=dropped.plate,
            )
        return dropped
