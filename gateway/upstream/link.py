"""The state of the cloud link, shared by everything that talks upstream.

Each channel (event delivery, the sync feed) reports how its last exchange
went; the link's state is the worst of them:

* ``connecting``: nothing has been exchanged since start;
* ``up``: the last exchange of every channel that tried succeeded;
* ``backing_off``: a channel failed transiently and waits before retrying
  (this includes a channel that could not read what it sends from the store);
* ``down``: the cloud refused the gateway's credentials (401/403) or its URL
  (404/405): delivery is paused and retried at the back-off cap.

State changes are logged once each, with the error that caused them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime, timezone

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["Backoff", "FailureKind", "Link", "LinkFailure", "LinkState", "LinkStatus"]

log = Logger()


class LinkState(str, enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    BACKING_OFF = "backing_off"
    DOWN = "down"


class FailureKind(str, enum.Enum):
    """Why an exchange failed, which decides how it is retried."""

    CONNECTIVITY = "connectivity"  # no answer: refused, unreachable, TLS failure, time-out
    SERVER = "server"  # an answer saying "later": 408, 409, 429, 5xx, 3xx, or unreadable
    AUTH = "auth"  # 401/403: the credentials are refused; paused until they work
    ENDPOINT = "endpoint"  # 404/405: the URL is wrong; paused like AUTH
    # The gateway could not build what it sends (its store failed): nothing
    # goes until it can, so the link is not up.
    STORE = "store"


class LinkFailure(Exception):
    """An exchange with the cloud failed; see :class:`FailureKind`.

    ``retry_after`` is the delay the cloud asked for (``Retry-After``), in
    seconds, if it did.
    """

    def __init__(
        self,
        kind: FailureKind,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.status = status
        self.retry_after = retry_after

    @property
    def pauses(self) -> bool:
        """Whether this failure pauses the channel (down) rather than backing off."""
        return self.kind in (FailureKind.AUTH, FailureKind.ENDPOINT)


@attrs.define
class Backoff:
    """Exponential back-off with full jitter: the n-th consecutive failure
    waits ``random() * min(cap, base * 2**(n-1))`` seconds."""

    cap: float
    random: Callable[[], float]
    base: float = 1.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures - 1, 60))
        return max(0.0, min(ceiling, self.random() * ceiling))

    def reset(self) -> None:
        self.failures = 0


@attrs.frozen
class LinkStatus:
    """What the status page shows of the link."""

    state: LinkState
    since: datetime
    last_error: str | None = None
    retry_at: datetime | None = None  # when the failing channel tries again


@attrs.define
class _Channel:
    ok: bool = True
    failure: LinkFailure | None = None
    retry_at: float | None = None


LinkObserver = Callable[[LinkStatus], None]


class Link:
    """The cloud link's state, fed by the channels that use it.

    ``on_proven`` observers are called whenever any exchange succeeds (a
    delivery, a sync page, a decision): a channel waiting because the cloud
    could not be reached retries at once instead of at its next back-off
    tick.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        self._status = LinkStatus(LinkState.CONNECTING, self._now())
        self._proven: list[Callable[[], None]] = []
        self._observers: list[LinkObserver] = []
        self._failure_observers: list[Callable[[LinkFailure], None]] = []

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)

    @property
    def status(self) -> LinkStatus:
        return self._status

    @property
    def state(self) -> LinkState:
        return self._status.state

    def on_proven(self, callback: Callable[[], None]) -> None:
        self._proven.append(callback)

    def on_change(self, observer: LinkObserver) -> None:
        """Call ``observer(status)`` on every state change."""
        self._observers.append(observer)

    def on_failure(self, observer: Callable[[LinkFailure], None]) -> None:
        """Call ``observer(failure)`` for every failed exchange (the metrics count them)."""
        self._failure_observers.append(observer)

    def succeeded(self, channel: str) -> None:
        """``channel`` exchanged successfully with the cloud."""
        self._channels[channel] = _Channel()
        self._update()
        self.proven()

    def settled(self, channel: str) -> None:
        """``channel`` finished a pass without failing (maybe without any
        exchange: nothing to send): it no longer counts as failing."""
        current = self._channels.get(channel)
        if current is not None and not current.ok:
            self._channels[channel] = _Channel()
            self._update()

    def failed(self, channel: str, failure: LinkFailure, retry_at: float | None) -> None:
        """``channel`` failed and retries at clock time ``retry_at``."""
        self._channels[channel] = _Channel(ok=False, failure=failure, retry_at=retry_at)
        for observer in list(self._failure_observers):
            try:
                observer(failure)
            except Exception:
                log.failure("Cloud link observer {observer!r} failed", observer=observer)
        self._update()

    def proven(self) -> None:
        """The cloud answered an exchange: whoever waits on reachability retries now."""
        for callback in list(self._proven):
            try:
                callback()
            except Exception:
                log.failure("Cloud link observer {callback!r} failed", callback=callback)

    def _update(self) -> None:
        failing = [channel for channel in self._channels.values() if not channel.ok]
        paused = [channel for channel in failing if channel.failure and channel.failure.pauses]
        if paused:
            state, worst = LinkState.DOWN, paused
        elif failing:
            state, worst = LinkState.BACKING_OFF, failing
        else:
            state, worst = LinkState.UP, []
        error = worst[-1].failure.reason if worst and worst[-1].failure else None
        retries = [channel.retry_at for channel in worst if channel.retry_at is not None]
        retry_at = (
            datetime.fromtimestamp(min(retries), tz=timezone.utc) if retries else None
        )
        previous = self._status
        changed = state is not previous.state
        self._status = LinkStatus(
            state=state,
            since=self._now() if changed else previous.since,
            last_error=error,
            retry_at=retry_at,
        )
        if not changed:
            return
        if state is LinkState.UP:
            log.info(
                "Cloud link is up (it was {previous} since {since})",
                previous=previous.state.value,
                since=previous.since.isoformat(),
            )
        elif state is LinkState.DOWN:
            log.error(
                "Cloud link is down: {error}. Delivery is paused and retried every "
                "back-off cap until the cloud accepts the gateway again.",
                error=error,
            )
        else:
            log.warn(
                "Cloud link is backing off: {error}. Events stay queued and go in order "
                "when it answers again.",
                error=error,
            )
        for observer in list(self._observers):
            try:
                observer(self._status)
            except Exception:
                log.failure("Cloud link observer {observer!r} failed", observer=observer)
