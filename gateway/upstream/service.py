"""The cloud link as one service: delivery, decisions and the sync feed."""

from __future__ import annotations

import random as random_module
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IPolicyForHTTPS

from gateway.background import InThread, reactor_threads
from gateway.policy.codec import EntryCodec
from gateway.reactor import IGatewayReactor
from gateway.store import OutboxTrim, StoreError, StoreService
from gateway.timers import Every
from gateway.upstream.decisions import CloudDecider
from gateway.upstream.http import HTTPRequester, UpstreamClient
from gateway.upstream.link import Link, LinkStatus
from gateway.upstream.outbox import OutboxDrainer
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.sync import CommandSink, SyncFeed, WhitelistSink

__all__ = ["HOUSEKEEPING_SECONDS", "UpstreamService", "UpstreamStatus"]

log = Logger()

HOUSEKEEPING_SECONDS = 60.0
"""How often the outbox cap and the cached decisions' expiry are enforced."""


@attrs.frozen
class UpstreamStatus:
    """The cloud link for the status page and metrics."""

    link: LinkStatus
    outbox_depth: int
    dead_letters: int
    images_pending: int
    dropped: OutboxTrim  # removed from the outbox by its cap, ever (kept in the store)
    delivered: int  # events delivered since start
    dead_lettered: int  # events dead-lettered since start
    images_sent: int
    images_skipped: int  # expired by retention before they could be sent
    images_rejected: int
    cached_decisions: int
    decisions_asked: int
    decisions_answered: int
    sync_cursor: str | None
    last_delivery_at: datetime | None
    last_sync_at: datetime | None


class UpstreamService(MultiService):
    """Everything that talks to the cloud, for a site with ``[upstream]``.

    * :meth:`notify_new_event`: call after an event was committed with
      ``outbox=True``; delivery starts at once when the link is up.
    * :attr:`decider`: :class:`CloudDecider` for live plates on lanes that
      ask the cloud.
    * :meth:`status`, :attr:`link`: what the status page shows.

    ``reactor`` makes the connections; ``clock`` (default: the reactor)
    times requests, back-off and the loops; ``random`` (default
    :func:`random.random`) draws the back-off jitter; ``http`` (default:
    treq over the link's own connection pool) sends the requests
    (:class:`~gateway.upstream.http.UpstreamClient`).
    """

    def __init__(
        self,
        reactor: IGatewayReactor,
        store: StoreService,
        config: UpstreamSettings,
        *,
        whitelist: WhitelistSink,
        commands: CommandSink,
        codec: EntryCodec,
        clock: IReactorTime | None = None,
        in_thread: InThread | None = None,
        random: Callable[[], float] | None = None,
        tls: IPolicyForHTTPS | None = None,
        http: HTTPRequester | None = None,
    ) -> None:
        super().__init__()
        self.setName("upstream")
        self.config = config
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._store_service = store
        draw = random if random is not None else random_module.random
        self.client = UpstreamClient(reactor, config, clock=self._clock, tls=tls, http=http)
        self.link = Link(self._clock)
        shared: dict[str, Any] = dict(
            store=store, client=self.client, clock=self._clock, config=config, link=self.link
        )
        self.decider = CloudDecider(**shared)
        self.drainer = OutboxDrainer(random=draw, **shared)
        if in_thread is None:
            in_thread = reactor_threads(reactor)

        self.sync = SyncFeed(
            random=draw,
            whitelist=whitelist,
            codec=codec,
            in_thread=in_thread,
            commands=commands,
            on_event=self.notify_new_event,
            **shared,
        )
        self.decider.setServiceParent(self)
        self.drainer.setServiceParent(self)
        self.sync.setServiceParent(self)
        # The first run is one period after start: the channels trim and load at start.
        Every(
            self._clock, HOUSEKEEPING_SECONDS, self._housekeeping_pass, name="upstream-housekeeping"
        ).setServiceParent(self)

    # -- service --------------------------------------------------------------

    def startService(self) -> None:
        if not self.config.https:
            log.warn(
                "The cloud link uses plain HTTP ({url}): requests are signed but not "
                "encrypted; use https:// outside a test setup",
                url=self.config.url,
            )
        super().startService()

    def stopService(self) -> Deferred[Any]:
        # The children stop (the housekeeping timer waits for a pass in
        # progress); requests in flight are cancelled (the events stay queued
        # and are sent again after the restart; the cloud deduplicates on
        # event id).
        children = super().stopService()
        closing = self.client.close()
        return gatherResults([children, closing], consumeErrors=True)

    async def _housekeeping_pass(self) -> None:
        store = self._store_service.store
        if store is None:
            return
        try:
            await self.drainer.trim(store)
            await self.decider.expire()
        except StoreError as error:
            log.warn("Upstream housekeeping failed: {reason}", reason=str(error))

    # -- for the rest of the gateway -------------------------------------------

    def notify_new_event(self) -> None:
        """An event was committed to the outbox: deliver it now if the link allows."""
        self.drainer.kick()

    async def status(self) -> UpstreamStatus:
        """The link, the outbox and what went through it."""
        store = await self._store_service.when_open()
        stats = await store.stats()
        images_pending = await store.image_uploads_depth()
        dropped = await store.outbox_dropped()
        drainer = self.drainer
        return UpstreamStatus(
            link=self.link.status,
            outbox_depth=stats.outbox_depth,
            dead_letters=stats.dead_letters,
            images_pending=images_pending,
            dropped=dropped,
            delivered=drainer.delivered,
            dead_lettered=drainer.dead_lettered,
            images_sent=drainer.images_sent,
            images_skipped=drainer.images_skipped,
            images_rejected=drainer.images_rejected,
            cached_decisions=len(self.decider),
            decisions_asked=self.decider.asked,
            decisions_answered=self.decider.answered,
            sync_cursor=self.sync.cursor,
            last_delivery_at=drainer.last_delivery_at,
            last_sync_at=self.sync.last.at,
        )
