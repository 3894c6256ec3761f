"""The store as a Twisted service: opened at start, image retention on a timer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorFromThreads,
    IReactorThreads,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.background import InThread, reactor_threads
from gateway.store.database import StoreClosedError, StoreError
from gateway.store.records import RetentionResult
from gateway.store.settings import StoreSettings
from gateway.store.store import Store, StoreExecutor
from gateway.timers import Every

__all__ = ["StoreService", "RETENTION_INTERVAL"]

log = Logger()

RETENTION_INTERVAL = 3600.0
"""Seconds between retention passes (one also runs right after opening)."""

CHECK_DELAY = 10.0
"""Seconds after opening before the whole-file check of a database the last
run did not close: the plate list is loaded and cameras answered first."""


class StoreService(MultiService):
    """Opens the :class:`Store` when started, closes it when stopped, and
    enforces retention (images, then events) at start and then every ``retention_interval``
    seconds of ``clock`` (default: the reactor; the store's own timestamps
    use it too). ``executor``, when given, makes the :class:`StoreExecutor`
    for each opening (default: a dedicated thread). ``checker`` runs the
    whole-file check after an unclean shutdown (default: the reactor's pool).

    Parts that need the store wait for :meth:`when_open`.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        state_dir: str | Path,
        config: StoreSettings | None = None,
        *,
        clock: IReactorTime | None = None,
        retention_interval: float = RETENTION_INTERVAL,
        executor: Callable[[], StoreExecutor] | None = None,
        checker: InThread | None = None,
    ) -> None:
        super().__init__()
        self.setName("store")
        self._reactor = reactor
        self._state_dir = Path(state_dir)
        self._config = config or StoreSettings()
        self._clock = clock if clock is not None else cast(IReactorTime, reactor)
        self._executor = executor
        self._checker = checker
        self._check_call: IDelayedCall | None = None
        self.store: Store | None = None
        """The open store (None until open, and after a failed open)."""
        self.last_retention: RetentionResult | None = None
        self._open_failure: Failure | None = None
        self._waiters: list[Deferred[Store]] = []
        self._opening: Deferred[None] | None = None
        self._retention_running: Deferred[None] | None = None
        Every(
            self._clock, retention_interval, self._retention_tick, name="retention"
        ).setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self._opening = Deferred.fromCoroutine(self._open())

    def stopService(self) -> Deferred[None]:
        # The retention timer stops first, waiting for a pass in progress.
        timers = super().stopService()
        return Deferred.fromCoroutine(self._stop(timers))

    def when_open(self) -> Deferred[Store]:
        """Fires with the store once it is open (or with the reason it could not open)."""
        if self.store is not None:
            return succeed(self.store)
        if self._open_failure is not None:
            return fail(self._open_failure)
        waiter: Deferred[Store] = Deferred()
        self._waiters.append(waiter)
        return waiter

    async def _open(self) -> None:
        try:
            store = await Store.open(
                self._reactor,
                self._state_dir,
                self._config,
                clock=self._clock,
                executor=self._executor() if self._executor is not None else None,
            )
        except Exception:
            failure = Failure()
            log.failure(
                "The store in {state_dir} could not be opened: events cannot be kept",
                failure=failure,
                state_dir=str(self._state_dir),
            )
            self._open_failure = failure
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.errback(failure)
            return
        if not self.running:
            # Stopped while opening: close it again, and tell whoever waits
            # that it will not be open (they must not wait forever: the
            # shutdown waits for them).
            await store.close()
            failure = Failure(StoreClosedError("the store was stopped while it opened"))
            self._open_failure = failure
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.errback(failure)
            return
        self.store = store
        # The first pass right away: a gateway that was off for a month
        # catches up before it takes new images.
        self._retention_tick()
        if store.check_needed:
            log.warn(
                "The database was not closed by the gateway last time (a power cut?): "
                "its pages are checked in the background, starting in {delay:.0f} s",
                delay=CHECK_DELAY,
            )
            self._check_call = self._clock.callLater(CHECK_DELAY, self._check, store)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(store)

    def _check(self, store: Store) -> None:
        self._check_call = None
        checker = self._checker or reactor_threads(cast(IReactorThreads, self._reactor))
        store.check_integrity(checker)

    async def _stop(self, timers: Deferred[object]) -> None:
        if self._check_call is not None and self._check_call.active():
            self._check_call.cancel()
        self._check_call = None
        await timers
        if self._opening is not None:
            await self._opening
        if self._retention_running is not None:
            await self._retention_running
        if self.store is not None:
            store, self.store = self.store, None
            await store.close()

    def retention_idle(self) -> Deferred[None]:
        """Fires once no retention pass is running."""
        running = self._retention_running
        if running is None:
            return succeed(None)
        idle: Deferred[None] = Deferred()

        def done(result: object) -> object:
            idle.callback(None)
            return result

        running.addBoth(done)
        return idle

    def _retention_tick(self) -> Deferred[None]:
        # The timer waits for this Deferred, and a pass still running is
        # waited for rather than doubled, so passes never overlap.
        if self._retention_running is not None:
            return self._retention_running
        running = Deferred.fromCoroutine(self._retention())

        def finished(result: object) -> object:
            if self._retention_running is running:
                self._retention_running = None
            return result

        if not running.called:
            self._retention_running = running
            running.addBoth(finished)
        return running

    async def _retention(self) -> None:
        store = self.store
        if store is None:
            return
        now = datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)
        try:
            self.last_retention = await store.enforce_retention(now)
        except StoreClosedError:
            pass
        except StoreError as exc:
            # Reported through the store's health; try again next time.
            log.warn("Retention failed: {reason}", reason=str(exc))
        except Exception:
            log.failure("Retention failed")
