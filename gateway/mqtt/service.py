"""The MQTT link: one broker session, reconnected with back-off, and what
goes over it (see docs/mqtt.md).

States, shown on the status page and logged once per change:

* ``connecting``: not connected since start;
* ``up``: connected;
* ``backing_off``: the connection failed or dropped; retried after an
  exponential back-off with jitter (1, 2, 4... s up to ``max_backoff_seconds``);
* ``down``: the broker refused the gateway's credentials, or its certificate
  is not trusted; retried every ``max_backoff_seconds`` until the site's
  settings or the broker change.
"""

from __future__ import annotations

import enum
import json
import random as random_module
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.mqtt.client import BrokerClient
from gateway.mqtt.commands import MqttCommands
from gateway.mqtt.discovery import discovery_configs, gateway_state_topic
from gateway.mqtt.lanes import LaneStates, lane_topic
from gateway.mqtt.publisher import EventPublisher
from gateway.mqtt.settings import MqttSettings
from gateway.site import Lanes
from gateway.store import EventRecord, ImageState, StoreError, StoreService
from gateway.timers import Every
from gateway.upstream.events import dump_json, format_time
from gateway.upstream.link import Backoff

__all__ = ["MqttLinkState", "MqttService", "MqttStatus", "ONLINE", "OFFLINE"]

log = Logger()

ONLINE = b"online"
OFFLINE = b"offline"
POLL_SECONDS = 5.0
"""How often the store is looked at without being told of a new event."""
GOODBYE_SECONDS = 2.0
"""How long a clean stop waits for the broker to take the ``offline`` status."""
GATEWAY_STATE_SECONDS = 30.0
"""How often the gateway's own state (store, outboxes, cloud link) is published."""
DISCOVERY_KEY = "mqtt:discovery_topics"
"""The store's record of the discovery configs published (to remove old lanes')."""


class MqttLinkState(str, enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    BACKING_OFF = "backing_off"
    DOWN = "down"


@attrs.frozen
class MqttStatus:
    """The MQTT link for the status page and the metrics."""

    state: MqttLinkState
    since: datetime
    connected: bool
    queued: int  # events committed, not yet acknowledged by the broker
    published: int  # events acknowledged since start
    failed: int  # connection attempts that failed since start
    last_error: str | None
    url: str
    in_flight: int = 0  # published, not yet acknowledged
    commands: bool = False  # obeys commands from the broker
    commands_taken: int = 0
    commands_rejected: int = 0

    def to_json(self) -> dict[str, Any]:
        """The link as ``/api/status`` shows it (``mqtt``)."""
        return {
            "state": self.state.value,
            "since": format_time(self.since),
            "connected": self.connected,
            "url": self.url,
            "queued": self.queued,
            "in_flight": self.in_flight,
            "published": self.published,
            "failed": self.failed,
            "last_error": self.last_error,
            "commands": self.commands,
            "commands_taken": self.commands_taken,
            "commands_rejected": self.commands_rejected,
        }


class MqttService(MultiService):
    """Everything that talks to the broker, for a site with ``[mqtt]``.

    ``client`` is the broker session (:class:`gateway.mqtt.paho.PahoBroker`
    in the gateway, an in-memory broker in unit tests); its Last Will must be
    :data:`OFFLINE` retained on :attr:`status_topic`. ``clock`` times the
    back-off; ``random`` draws its jitter.
    """

    def __init__(
        self,
        *,
        client: BrokerClient,
        store: StoreService,
        config: MqttSettings,
        clock: IReactorTime,
        lanes: Lanes | None = None,
        gateway_state: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.setName("mqtt")
        self.config = config
        self.client = client
        self._clock = clock
        self._store_service = store
        self._backoff = Backoff(
            cap=float(config.max_backoff_seconds),
            random=random if random is not None else random_module.random,
        )
        lanes = lanes if lanes is not None else Lanes()
        self.lanes = LaneStates(lanes, config.prefix, self._retain)
        self._site_lanes = lanes
        self._gateway_state = gateway_state
        self.publisher = EventPublisher(
            store=store, clock=clock, prefix=config.prefix, qos=config.qos,
            on_event=self._followed,
        )
        self._state = MqttLinkState.CONNECTING
        self._since = self._now()
        self._connected = False
        self._attempting = False
        self._reconnect: IDelayedCall | None = None
        self.last_error: str | None = None
        self.failed_attempts = 0
        # Told on every connection, after the status is published: retained
        # state and discovery, subscriptions.
        self.on_connected: list[Callable[[], None]] = []
        self.on_message: Callable[[str, bytes], None] | None = None
        self.commands: MqttCommands | None = None
        self._retained_logged: set[str] = set()
        Every(clock, POLL_SECONDS, self.publisher.kick, name="mqtt-poll").setServiceParent(self)
        Every(
            clock, GATEWAY_STATE_SECONDS, self._publish_gateway_state, name="mqtt-gateway-state"
        ).setServiceParent(self)

    @property
    def status_topic(self) -> str:
        return f"{self.config.prefix}/status"

    @property
    def state(self) -> MqttLinkState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._connected

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.publisher.start()
        self._connect()

    def stopService(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.publisher.stop()
        if self._reconnect is not None and self._reconnect.active():
            self._reconnect.cancel()
        self._reconnect = None
        await super().stopService()
        if self._connected:
            # The Last Will is not sent after a clean disconnect: say it.
            said = self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            timeout = self._clock.callLater(GOODBYE_SECONDS, said.cancel)
            try:
                await said
            except Exception:
                pass
            if timeout.active():
                timeout.cancel()
            self._connected = False
            await self.client.disconnect()

    def notify_new_event(self) -> None:
        """An event was committed: publish it now if the link is up."""
        self.publisher.kick()

    # -- connecting -------------------------------------------------------------

    def _connect(self) -> None:
        self._reconnect = None
        if not self.running or self._attempting or self._connected:
            return
        self._attempting = True
        self.client.connect(self)

    def connected(self, session_present: bool) -> None:
        self._attempting = False
        if not self.running:
            return
        self._connected = True
        self._backoff.reset()
        self.last_error = None
        self._set_state(MqttLinkState.UP, None)
        self.client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        self.lanes.publish_all()
        Deferred.fromCoroutine(self._on_connect_work()).addErrback(
            lambda failure: log.failure("MQTT: discovery and state failed", failure)
        )
        for callback in list(self.on_connected):
            try:
                callback()
            except Exception:
                log.failure("MQTT: on-connect work {callback!r} failed", callback=callback)
        self.publisher.connected(self.client)

    def refused(self, reason: str, credentials: bool) -> None:
        self._attempting = False
        self._connected = False
        self.publisher.disconnected()
        self.failed_attempts += 1
        if credentials:
            self._retry(MqttLinkState.DOWN, reason, float(self.config.max_backoff_seconds))
        else:
            self._retry(MqttLinkState.BACKING_OFF, reason, self._backoff.next_delay())

    def lost(self, reason: str) -> None:
        self._attempting = False
        was_up = self._connected
        self._connected = False
        self.publisher.disconnected()
        if not was_up:
            self.failed_attempts += 1
        self._retry(MqttLinkState.BACKING_OFF, reason, self._backoff.next_delay())

    def message(self, topic: str, payload: bytes, retained: bool) -> None:
        if self.on_message is None:
            return
        if retained:
            # A retained command would be obeyed again on every reconnect.
            if topic not in self._retained_logged:
                self._retained_logged.add(topic)
                log.warn(
                    "MQTT: a retained message on {topic} is ignored: commands must be "
                    "published without retain (clear it with an empty retained message)",
                    topic=topic,
                )
            return
        try:
            self.on_message(topic, payload)
        except Exception:
            log.failure("MQTT: handling a message on {topic} failed", topic=topic)

    def take_commands(self, commands: MqttCommands) -> None:
        """Obey ``commands``' topics. Subscribed at QoS 0, so the broker keeps
        no command for the gateway while it is away: a barrier never opens
        because of a command sent minutes before the gateway came back."""
        self.commands = commands
        self.on_connected.append(lambda: self.client.subscribe(commands.filters, 0))
        self.on_message = commands.handle

    def send(self, topic: str, payload: bytes) -> None:
        """Publish a message that is not kept (QoS 1, not retained) if the
        link is up (a command's answer, a snapshot)."""
        if not self._connected:
            return
        sent = self.client.publish(topic, payload, qos=1, retain=False)
        sent.addErrback(lambda failure: None)  # cancelled by a stop

    def _retry(self, state: MqttLinkState, reason: str, delay: float) -> None:
        self.last_error = reason
        if not self.running:
            return
        self._set_state(state, reason, delay)
        if self._reconnect is None or not self._reconnect.active():
            self._reconnect = self._clock.callLater(delay, self._connect)

    def _set_state(self, state: MqttLinkState, error: str | None, delay: float = 0.0) -> None:
        previous, since = self._state, self._since
        if state is previous:
            return
        self._state, self._since = state, self._now()
        url = self.config.url
        if state is MqttLinkState.UP:
            log.info(
                "MQTT link to {url} is up (it was {previous} since {since})",
                url=url,
                previous=previous.value,
                since=since.isoformat(),
            )
        elif state is MqttLinkState.DOWN:
            log.error(
                "MQTT link to {url} is down: {error}. Check [mqtt] username, password, "
                "ca_file and client_cert, and the broker's users and ACL; events stay "
                "queued; retried every {delay:.0f} s.",
                url=url,
                error=error,
                delay=delay,
            )
        else:
            log.warn(
                "MQTT link to {url} is backing off: {error}. Events stay queued and "
                "go in order when the broker is back.",
                url=url,
                error=error,
            )

    # -- retained state and discovery -------------------------------------------

    def _retain(self, topic: str, payload: bytes) -> None:
        if not self._connected:
            return  # published again on connect
        sent = self.client.publish(topic, payload, qos=1, retain=True)
        sent.addErrback(lambda failure: None)  # cancelled by a stop

    def _followed(self, record: EventRecord) -> None:
        self.lanes.follow(record)
        if (
            self.config.images == "crop"
            and record.image_state("crop") is ImageState.PRESENT
            and self.lanes.lane_of(record) is not None
        ):
            Deferred.fromCoroutine(self._publish_crop(record)).addErrback(
                lambda failure: log.failure("MQTT: publishing a crop failed", failure)
            )

    async def _publish_crop(self, record: EventRecord) -> None:
        lane = self.lanes.lane_of(record)
        store = self._store_service.store
        if lane is None or store is None:
            return
        if record.image_crop_bytes > self.config.image_max_bytes:
            return
        try:
            data = await store.read_image(record.id, "crop")
        except StoreError:
            return
        if data is not None and len(data) <= self.config.image_max_bytes:
            self._retain(lane_topic(self.config.prefix, lane, "image"), data)

    async def _on_connect_work(self) -> None:
        if self.config.discovery:
            await self._publish_discovery()
        await self._publish_gateway_state()

    async def _publish_discovery(self) -> None:
        configs = discovery_configs(self.config, self._site_lanes)
        store = await self._store_service.when_open()
        try:
            known = json.loads(await store.kv_get(DISCOVERY_KEY) or "[]")
        except ValueError:
            known = []
        # A lane removed or renamed since: its configs go (empty retained).
        for topic in known:
            if isinstance(topic, str) and topic not in configs:
                self._retain(topic, b"")
        for topic, payload in configs.items():
            self._retain(topic, dump_json(payload))
        await store.kv_set(DISCOVERY_KEY, json.dumps(sorted(configs)))

    async def _publish_gateway_state(self) -> None:
        if not self._connected:
            return
        state: dict[str, Any] = {"mqtt_queued": await self.publisher.queued()}
        store = self._store_service.store
        if store is not None:
            state["store"] = "degraded" if store.degraded else "ok"
        if self._gateway_state is not None:
            state.update(await self._gateway_state())
        self._retain(gateway_state_topic(self.config.prefix), dump_json(state))

    # -- for the status page ----------------------------------------------------

    async def status(self) -> MqttStatus:
        return MqttStatus(
            state=self._state,
            since=self._since,
            connected=self._connected,
            queued=await self.publisher.queued(),
            published=self.publisher.published,
            failed=self.failed_attempts,
            last_error=self.last_error or self.publisher.last_error,
            url=self.config.url,
            in_flight=self.publisher.in_flight,
            commands=self.commands is not None,
            commands_taken=self.commands.taken if self.commands is not None else 0,
            commands_rejected=self.commands.rejected if self.commands is not None else 0,
        )
