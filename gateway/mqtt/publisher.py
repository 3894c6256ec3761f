"""Every stored event to the broker, from the store's own MQTT cursor.

The cursor is the seq of the newest event such that it and every event
before it were acknowledged by the broker (QoS 1). Events are read after
the newest one handed to the connection, in commit order (so in order per
camera), at most :data:`WINDOW` unacknowledged at a time and read at most
:data:`READ_BYTES` at a time; while the broker is
away nothing more is read (memory stays bounded whatever the outage) and the
session resends what was in flight when it returns. After a restart the
events after the cursor go again: at least once, deduplicated on the event id
by whoever needs exactly once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.mqtt.client import BrokerClient
from gateway.store import EventRecord, Store, StoreClosedError, StoreError, StoreService
from gateway.upstream.events import dump_json, event_json

__all__ = ["CONSUMER", "EventPublisher", "WINDOW"]

log = Logger()

CONSUMER = "mqtt"
"""The store's name for the MQTT cursor."""

WINDOW = 200
"""Events published and not yet acknowledged, at most."""

READ_BYTES = 1_048_576
"""Events read from the store at a time, at most, in bytes (raw records and
overhead; at least one event)."""

RETRY_SECONDS = 5.0
"""Wait after a store failure before reading again."""


def event_topic(prefix: str, record: EventRecord) -> str:
    return f"{prefix}/events/{record.type.value}"


def event_payload(record: EventRecord) -> bytes:
    """The event as the upstream API's event JSON (docs/upstream-api.md)."""
    return dump_json(event_json(record))


class EventPublisher:
    """Publishes the events after the MQTT cursor while the link is up.

    ``on_event`` is told of each event as it is published (the lanes'
    retained state follows the events).
    """

    def __init__(
        self,
        *,
        store: StoreService,
        clock: IReactorTime,
        prefix: str,
        qos: int,
        window: int = WINDOW,
        on_event: Callable[[EventRecord], None] | None = None,
    ) -> None:
        self._store_service = store
        self._clock = clock
        self._prefix = prefix
        self._qos = qos
        self._window = window
        self._on_event = on_event
        self._client: BrokerClient | None = None
        self._pending: OrderedDict[int, bool] = OrderedDict()  # seq -> acknowledged
        self._read_seq: int | None = None  # newest event handed to the connection
        self.acked_seq: int | None = None  # the cursor, as it will be saved
        self._saved_seq: int | None = None
        self._saving = False
        self._pumping = False
        self._again = False
        self._retry: IDelayedCall | None = None
        self._loaded: Deferred[None] | None = None
        self.running = False
        self.published = 0  # acknowledged since start
        self.failed = 0  # store failures since start
        self.last_error: str | None = None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- the link tells ---------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._loaded = Deferred.fromCoroutine(self._load())
        self._loaded.addErrback(self._crashed)

    async def _load(self) -> None:
        store = await self._store_service.when_open()
        start = await store.start_cursor(CONSUMER)
        self._read_seq = self.acked_seq = self._saved_seq = start
        self.kick()

    def stop(self) -> None:
        self.running = False
        self._client = None
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def connected(self, client: BrokerClient) -> None:
        """The link is up: publish what is due."""
        self._client = client
        self.kick()

    def disconnected(self) -> None:
        """The link is down: publish nothing more until it is up again (what
        is in flight stays with the session and is resent)."""
        self._client = None

    def kick(self) -> None:
        """An event may have been committed: publish it if the link allows."""
        if not self.running or self._client is None or self._read_seq is None:
            return
        if self._pumping:
            self._again = True
            return
        Deferred.fromCoroutine(self._pump()).addErrback(self._crashed)

    # -- publishing -------------------------------------------------------------

    async def queued(self) -> int:
        """Events committed and not yet acknowledged by the broker."""
        store = self._store_service.store
        if store is None or self.acked_seq is None:
            return 0
        return await store.events_behind(self.acked_seq)

    async def _pump(self) -> None:
        self._pumping = True
        try:
            while True:
                self._again = False
                store = await self._store_service.when_open()
                assert self._read_seq is not None
                while self.running and self._client is not None:
                    room = self._window - len(self._pending)
                    if room <= 0:
                        break
                    events = await store.events_after(
                        self._read_seq, room, max_bytes=READ_BYTES
                    )
                    if not events:
                        break
                    for record in events:
                        self._publish(record)
                if not self._again:
                    return
        except StoreError as error:
            self.failed += 1
            self.last_error = f"store: {error}"
            log.warn(
                "MQTT: cannot read the events to publish ({reason}); trying again in {delay} s",
                reason=str(error),
                delay=RETRY_SECONDS,
            )
            self._retry = self._clock.callLater(RETRY_SECONDS, self.kick)
        finally:
            self._pumping = False

    def _publish(self, record: EventRecord) -> None:
        client = self._client
        assert client is not None and record.seq is not None
        seq = record.seq
        self._read_seq = seq
        self._pending[seq] = False
        acked = client.publish(
            event_topic(self._prefix, record), event_payload(record), qos=self._qos, retain=False
        )
        acked.addCallback(lambda _: self._acked(seq))
        acked.addErrback(self._crashed)
        if self._on_event is not None:
            try:
                self._on_event(record)
            except Exception:
                log.failure("MQTT: following event {event_id} failed", event_id=record.id)

    def _acked(self, seq: int) -> None:
        if seq not in self._pending:
            return
        self._pending[seq] = True
        self.published += 1
        advanced = False
        while self._pending:
            first, done = next(iter(self._pending.items()))
            if not done:
                break
            del self._pending[first]
            self.acked_seq = first
            advanced = True
        if advanced:
            self._save()
        if len(self._pending) <= self._window // 2:
            self.kick()

    def _save(self) -> None:
        if self._saving or self.acked_seq is None or self.acked_seq == self._saved_seq:
            return
        store = self._store_service.store
        if store is None:
            return
        self._saving = True
        Deferred.fromCoroutine(self._save_cursor(store, self.acked_seq)).addErrback(self._crashed)

    async def _save_cursor(self, store: Store, seq: int) -> None:
        try:
            await store.set_cursor(CONSUMER, seq)
        except StoreError as error:
            # Not saved: after a restart these events go again (at least
            # once); the next acknowledgement tries again.
            self.last_error = f"store: {error}"
            log.warn("MQTT: cannot save the publishing cursor: {reason}", reason=str(error))
            return
        finally:
            self._saving = False
        self._saved_seq = seq
        if self.acked_seq != self._saved_seq:
            self._save()

    def _crashed(self, failure: Failure) -> Any:
        if failure.check(StoreClosedError) and not self.running:
            return None  # stopped before the store opened
        log.failure("MQTT publishing failed", failure)
        return None
