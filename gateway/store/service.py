"""The store as a Twisted service: opened at start, image retention on a timer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

import attrs
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
from gateway.store.database import StoreClosedError, StoreError, StoreOpenError
from gateway.store.records import RetentionResult
from gateway.store.settings import StoreSettings
from gateway.store.store import Store, StoreExecutor
from gateway.timers import Every

__all__ = ["OPEN_RETRY_FIRST", "OPEN_RETRY_MAX", "OpenProblem", "StoreService", "RETENTION_INTERVAL"]

log = Logger()

RETENTION_INTERVAL = 3600.0
"""Seconds between retention passes (one also runs right after opening)."""

CHECK_DELAY = 10.0
"""Seconds after opening before the whole-file check of a database the last
run did not close: the plate list is loaded and cameras answered first."""

OPEN_RETRY_FIRST = 10.0
"""Seconds before the store is tried again after it could not open; each
further failure doubles the wait, up to :data:`OPEN_RETRY_MAX`."""
OPEN_RETRY_MAX = 60.0


@attrs.frozen
class OpenProblem:
    """Why the store cannot open, while it is tried again."""

    reason: str
    since: datetime  # the first failed attempt
    attempts: int
    retry_in: float  # seconds until the next attempt

    def notice(self) -> str:
        """One line for systemd's status and the page."""
        return (
            f"NOT KEEPING EVENTS: the event store cannot open ({self.reason}); "
            f"trying again every {self.retry_in:.0f} s (attempt {self.attempts}, "
            f"since {self.since.isoformat(timespec='seconds')})"
        )


class StoreService(MultiService):
    """Opens the :class:`Store` when started, closes it when stopped, and
    enforces retention (images, then events) at start and then every ``retention_interval``
    seconds of ``clock`` (default: the reactor; the store's own timestamps
    use it too). ``executor``, when given, makes the :class:`StoreExecutor`
    for each opening (default: a dedicated thread). ``checker`` runs the
    whole-file check after an unclean shutdown (default: the reactor's pool).

    A store that cannot open (the state directory read-only or not writable
    by the gateway, a database of a newer release, another gateway on it) is
    tried again after :data:`OPEN_RETRY_FIRST` seconds, then at doubling
    intervals up to :data:`OPEN_RETRY_MAX`, until it opens or the service
    stops; meanwhile :attr:`problem` says why and events are refused.

    Parts that need the store wait for :meth:`when_open`. Observers added
    with :meth:`on_change` are called whenever :meth:`notice` may have
    changed (the store opened or could not, damage acknowledged).
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
        self.problem: OpenProblem | None = None
        """Why the store cannot open, while it is tried again (else None)."""
        self._open_failure: Failure | None = None
        self._retry_call: IDelayedCall | None = None
        self._retry_wait: Deferred[None] | None = None
        self._observers: list[Callable[[], None]] = []
        self._waiters: list[Deferred[Store]] = []
        self._opening: Deferred[None] | None = None
        self._retention_running: Deferred[None] | None = None
        Every(
            self._clock, retention_interval, self._retention_tick, name="retention"
        ).setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self._open_failure = None
        self.problem = None
        self._opening = Deferred.fromCoroutine(self._open())

    def stopService(self) -> Deferred[None]:
        # The retention timer stops first, waiting for a pass in progress.
        timers = super().stopService()
        # A store that could not open is not tried again; whoever waits for
        # it is told now (the shutdown waits for them).
        call, waiting = self._retry_call, self._retry_wait
        if call is not None and call.active():
            call.cancel()
        if waiting is not None and not waiting.called:
            waiting.callback(None)
        return Deferred.fromCoroutine(self._stop(timers))

    def when_open(self) -> Deferred[Store]:
        """Fires with the store once it is open. A store that cannot open is
        tried again meanwhile (see :attr:`problem`); fails with
        :class:`StoreClosedError` when the service stops before it opens."""
        if self.store is not None:
            return succeed(self.store)
        if self._open_failure is not None:
            return fail(self._open_failure)
        waiter: Deferred[Store] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def on_change(self, observer: Callable[[], None]) -> None:
        """Call ``observer()`` whenever :meth:`notice` may have changed."""
        self._observers.append(observer)

    def _changed(self) -> None:
        for observer in list(self._observers):
            try:
                observer()
            except Exception:
                log.failure("Store observer {observer!r} failed", observer=observer)

    def notice(self) -> str | None:
        """What an operator must know of the store, in one line: that it
        cannot open (and why), or that its database was replaced and not yet
        acknowledged. None when neither."""
        if self.problem is not None:
            return self.problem.notice()
        store = self.store
        if store is None:
            return None
        notices = [
            found.notice() for found in (store.replacement, store.log_damage) if found is not None
        ]
        return "; ".join(notices) if notices else None

    async def acknowledge_damage(self) -> bool:
        """An admin has seen that the database was replaced or its log found
        damaged: stop saying so (durably). False when there was nothing."""
        store = self.store
        if store is None:
            raise StoreClosedError("the store is not open")
        replacement, damage = await store.acknowledge_damage()
        if replacement is not None:
            log.info(
                "The replacement of the database (moved aside to {moved_to} at {at}) was "
                "acknowledged",
                moved_to=replacement.moved_to,
                at=replacement.at.isoformat(),
            )
        if damage is not None:
            log.info(
                "The damaged write-ahead log (found {at}) was acknowledged",
                at=damage.at.isoformat(),
            )
        self._changed()
        return replacement is not None or damage is not None

    async def _open(self) -> None:
        delay = OPEN_RETRY_FIRST
        attempts = 0
        while True:
            attempts += 1
            try:
                store = await Store.open(
                    self._reactor,
                    self._state_dir,
                    self._config,
                    clock=self._clock,
                    executor=self._executor() if self._executor is not None else None,
                )
            except Exception as exc:
                self._cannot_open(exc, attempts, delay)
                if not await self._wait_to_retry(delay):
                    self._refuse_waiters(StoreClosedError("the store was stopped before it opened"))
                    return
                delay = min(delay * 2, OPEN_RETRY_MAX)
                continue
            break
        if self.problem is not None:
            log.info(
                "The store in {state_dir} is open: events are kept again (it could not "
                "open since {since}, {attempts} attempts)",
                state_dir=str(self._state_dir),
                since=self.problem.since.isoformat(timespec="seconds"),
                attempts=attempts - 1,
            )
            self.problem = None
        if not self.running:
            # Stopped while opening: close it again, and tell whoever waits
            # that it will not be open (they must not wait forever: the
            # shutdown waits for them).
            await store.close()
            self._refuse_waiters(StoreClosedError("the store was stopped while it opened"))
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
        self._changed()

    def _cannot_open(self, exc: Exception, attempts: int, delay: float) -> None:
        reason = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
        previous = self.problem
        now = datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)
        self.problem = OpenProblem(
            reason=reason,
            since=previous.since if previous is not None else now,
            attempts=attempts,
            retry_in=delay,
        )
        # Said once per reason, not at every attempt.
        if previous is None or previous.reason != reason:
            if isinstance(exc, StoreOpenError):
                log.critical(
                    "The store in {state_dir} cannot open ({reason}): no events are kept, "
                    "cameras are not answered and keep them. Trying again in {delay:.0f} s, "
                    "then every {most:.0f} s at most.",
                    state_dir=str(self._state_dir),
                    reason=reason,
                    delay=delay,
                    most=OPEN_RETRY_MAX,
                )
            else:
                log.failure(
                    "The store in {state_dir} cannot open: trying again in {delay:.0f} s",
                    failure=Failure(exc),
                    state_dir=str(self._state_dir),
                    delay=delay,
                )

    async def _wait_to_retry(self, delay: float) -> bool:
        """Wait ``delay`` seconds; False when the service stopped meanwhile.
        Observers are told of the problem once the next attempt is due."""
        if not self.running:
            return False
        waiting: Deferred[None] = Deferred()
        self._retry_wait = waiting
        self._retry_call = self._clock.callLater(delay, waiting.callback, None)
        self._changed()
        try:
            await waiting
        finally:
            self._retry_wait = self._retry_call = None
        return bool(self.running)

    def _refuse_waiters(self, error: Exception) -> None:
        failure = Failure(error)
        self._open_failure = failure
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(failure)

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
