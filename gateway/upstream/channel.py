"""What event delivery and the sync feed share: one pass at a time, retried
with back-off after a failure, resumed at once when the link is proven."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.store import Store, StoreError, StoreService
from gateway.upstream.http import UpstreamClient
from gateway.upstream.link import Backoff, FailureKind, Link, LinkFailure
from gateway.upstream.settings import UpstreamSettings

__all__ = ["LinkChannel"]

log = Logger()

# A channel waiting after one of these failures retries as soon as another
# exchange shows the cloud is reachable (or accepts the credentials again).
# After a server's "later" (5xx, 429...) it keeps waiting: the cloud asked for that.
_RETRY_WHEN_PROVEN = frozenset({FailureKind.CONNECTIVITY, FailureKind.AUTH})


class LinkChannel(Service, ABC):
    """A service that exchanges with the cloud in passes.

    Subclasses implement :meth:`_work` (one pass; return the delay until the
    next pass, or None to wait for :meth:`kick`) and call
    :meth:`_succeeded` after each successful exchange. A :class:`LinkFailure`
    raised by a pass is reported to the link and retried after the back-off
    delay (or ``Retry-After``, or the cap for a pause).
    """

    channel = "channel"

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
        self.setName(f"upstream-{self.channel}")
        self._store_service = store
        self._client = client
        self._clock = clock
        self._config = config
        self._link = link
        self._backoff = Backoff(cap=config.max_backoff_seconds, random=random)
        self._timer: IDelayedCall | None = None
        self._waiting_on: FailureKind | None = None
        self._pass: Deferred[None] | None = None
        self._starting: Deferred[None] | None = None
        self._again = False
        self.store: Store | None = None
        link.on_proven(self._link_proven)

    # -- service --------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(
            lambda failure: log.failure(
                "Upstream {channel} could not start", failure, channel=self.channel
            )
        )

    async def _start(self) -> None:
        try:
            store = await self._store_service.when_open()
        except Exception:
            return  # the store logged why; nothing can be sent without it
        if not self.running:
            return
        try:
            await self._prepare(store)
        except StoreError as error:
            # Best effort: without it the channel still works (a sync feed
            # without its cursor asks for everything again).
            log.warn(
                "Upstream {channel} starts without its stored state: {reason}",
                channel=self.channel,
                reason=str(error),
            )
        self.store = store
        if self.running:
            self.kick()

    async def _prepare(self, store: Store) -> None:
        """Load what the channel keeps in the store (before the first pass)."""

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._cancel_timer()
        waiting = [d for d in (self._starting, self._pass) if d is not None]
        stopped: Deferred[Any] = DeferredList(waiting, consumeErrors=True)
        stopped.addBoth(lambda result: self._cancel_timer())
        return stopped

    # -- scheduling -----------------------------------------------------------

    @property
    def waiting_on(self) -> FailureKind | None:
        """The kind of failure the channel is waiting out, if it is."""
        return self._waiting_on

    def kick(self) -> None:
        """Run a pass now, unless one is running (then another follows it) or
        the channel is waiting out a failure (new work waits for the retry)."""
        if not self.running or self.store is None:
            return
        if self._pass is not None:
            self._again = True
            return
        if self._waiting_on is not None:
            return
        self._cancel_timer()
        self._start_pass()

    def _start_pass(self) -> None:
        running = Deferred.fromCoroutine(self._run_pass())
        if not running.called:
            self._pass = running

    def _link_proven(self) -> None:
        if self._waiting_on in _RETRY_WHEN_PROVEN and self._timer is not None:
            self._cancel_timer()
            self._waiting_on = None
            self.kick()

    def _schedule(self, delay: float, waiting_on: FailureKind | None = None) -> None:
        self._cancel_timer()
        self._waiting_on = waiting_on
        self._timer = self._clock.callLater(max(0.0, delay), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._waiting_on = None
        if not self.running or self.store is None:
            return
        if self._pass is not None:
            self._again = True
            return
        self._start_pass()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- passes ---------------------------------------------------------------

    async def _run_pass(self) -> None:
        try:
            while self.running and self.store is not None:
                self._again = False
                try:
                    delay = await self._work(self.store)
                except LinkFailure as failure:
                    self._failed(failure)
                    return
                except StoreError as error:
                    if not self.running:
                        return  # the store closes as the gateway stops
                    # The store reports its own health; try again later.
                    log.warn(
                        "Upstream {channel} paused by a store error: {reason}",
                        channel=self.channel,
                        reason=str(error),
                    )
                    self._stalled(f"store: {error}")
                    return
                self._link.settled(self.channel)
                if self._again:
                    continue
                if delay is not None and self.running:
                    self._schedule(delay)
                return
        except Exception as error:
            log.failure("Upstream {channel} pass failed", channel=self.channel)
            if self.running:
                self._stalled(f"{type(error).__name__}: {error}"[:300])
        finally:
            self._pass = None

    def _stalled(self, reason: str) -> None:
        """The pass could not be done on the gateway's side (nothing was
        sent): the link shows it, and the pass is retried after the back-off."""
        delay = self._backoff.next_delay() + 1.0
        self._schedule(delay)
        failure = LinkFailure(FailureKind.STORE, f"{self.channel}: {reason}")
        self._link.failed(self.channel, failure, self._clock.seconds() + delay)

    @abstractmethod
    async def _work(self, store: Store) -> float | None:
        """One pass. Return the delay to the next pass, or None."""

    def _succeeded(self) -> None:
        """An exchange of this channel succeeded."""
        self._backoff.reset()
        self._link.succeeded(self.channel)

    def _retry_delay(self, failure: LinkFailure) -> float:
        if failure.pauses:
            return self._config.max_backoff_seconds
        delay = self._backoff.next_delay()
        if failure.retry_after is not None:
            delay = failure.retry_after
        return delay

    def _failed(self, failure: LinkFailure) -> None:
        if not self.running:
            return
        delay = self._retry_delay(failure)
        self._schedule(delay, waiting_on=failure.kind)
        self._link.failed(self.channel, failure, self._clock.seconds() + delay)
        log.debug(
            "Upstream {channel}: {reason}; next try in {delay:.1f} s",
            channel=self.channel,
            reason=failure.reason,
            delay=delay,
        )
