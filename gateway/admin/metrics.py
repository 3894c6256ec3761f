"""Prometheus metrics of the gateway, served at ``/metrics``.

Counters and histograms are fed by the code paths (:meth:`GatewayMetrics.push`,
:meth:`GatewayMetrics.decision`, ...); gauges are read at scrape time from
the callables given to :class:`GatewayMetrics`, which may return a value or
an awaitable of one (the store answers asynchronously).

Each :class:`GatewayMetrics` has its own ``CollectorRegistry``, never the
process-global one, so several can exist side by side (tests, or two
gateways in one process).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.logger import Logger

from gateway import __version__

__all__ = ["CONTENT_TYPE_LATEST", "LATENCY_BUCKETS", "GatewayMetrics", "SERIAL_PORT_STATES"]

log = Logger()

T = TypeVar("T")
Source = Callable[[], T | Awaitable[T]]

#: Seconds, from a millisecond to the camera's patience (about 5 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

#: The states a serial port reports (``gateway.serial.ports.PortState``).
SERIAL_PORT_STATES: tuple[str, ...] = ("closed", "open", "missing", "error")

# A label fed from outside (a reason, a kind) that takes more distinct values
# than this is a bug upstream; further values are counted as "other" rather
# than growing the scrape without bound.
MAX_LABEL_VALUES = 64
OTHER = "other"


class _LabelGuard:
    def __init__(self) -> None:
        self._seen: set[tuple[str, ...]] = set()

    def __call__(self, *values: str) -> tuple[str, ...]:
        key = tuple(str(value) for value in values)
        if key in self._seen:
            return key
        if len(self._seen) >= MAX_LABEL_VALUES:
            return tuple(OTHER for _ in key)
        self._seen.add(key)
        return key


async def _read(source: Source[T] | None) -> T | None:
    if source is None:
        return None
    value = source()
    if inspect.isawaitable(value):
        return await value
    return value


class _MqttCollector:
    """The MQTT link's numbers, as read at the last scrape (a collector,
    since its counters are counted by the link itself)."""

    def __init__(self) -> None:
        self.source: Source[Any] | None = None
        self.status: Any = None
        self.registered = False

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        status = self.status
        if status is None:
            return
        yield GaugeMetricFamily(
            "anpr_gateway_mqtt_connected", "1 while the MQTT link is up.", value=int(status.connected)
        )
        yield GaugeMetricFamily(
            "anpr_gateway_mqtt_queued",
            "Events committed and not yet acknowledged by the MQTT broker.",
            value=status.queued,
        )
        yield CounterMetricFamily(
            "anpr_gateway_mqtt_published",
            "Events the MQTT broker acknowledged since start.",
            value=status.published,
        )
        yield CounterMetricFamily(
            "anpr_gateway_mqtt_failed",
            "MQTT connection attempts that failed or were refused since start.",
            value=status.failed,
        )
        yield _commands_family(status)


class _OccupancyCollector:
    """The cars inside, as read at the last scrape."""

    def __init__(self) -> None:
        self.source: Source[Iterable[Mapping[str, Any]]] | None = None
        self.counts: list[Mapping[str, Any]] = []

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        inside = GaugeMetricFamily(
            "anpr_gateway_occupancy_inside",
            'Cars inside (area="" is the whole site), with the operator\'s correction.',
            labels=["area"],
        )
        capacity = GaugeMetricFamily(
            "anpr_gateway_occupancy_capacity", "Parking spaces configured.", labels=["area"]
        )
        free = GaugeMetricFamily(
            "anpr_gateway_occupancy_free", "Free parking spaces.", labels=["area"]
        )
        for count in self.counts:
            area = str(count.get("area") or "")
            inside.add_metric([area], float(count.get("inside") or 0))
            if count.get("capacity") is not None:
                capacity.add_metric([area], float(count["capacity"]))
            if count.get("free") is not None:
                free.add_metric([area], float(count["free"]))
        yield inside
        yield capacity
        yield free


def _commands_family(status: Any) -> Metric:
    family = CounterMetricFamily(
        "anpr_gateway_mqtt_commands",
        "Commands taken from the MQTT broker since start, rejected or not.",
        labels=["rejected"],
    )
    family.add_metric(["false"], status.commands_taken - status.commands_rejected)
    family.add_metric(["true"], status.commands_rejected)
    return family


class GatewayMetrics:
    """The gateway's metrics and their registry.

    Scrape-time sources (each optional; a metric without one is not
    exported): ``comet_polls_held`` and ``cameras_online`` (and
    ``cameras_known``) are counts; ``outbox_depth`` the number of events
    waiting for the cloud; ``serial_ports`` the ports as dicts with ``name``
    and ``state`` (``serial_status()`` of the status page).
    """

    def __init__(
        self,
        *,
        comet_polls_held: Source[int] | None = None,
        cameras_online: Source[int] | None = None,
        cameras_known: Source[int] | None = None,
        outbox_depth: Source[int | None] | None = None,
        serial_ports: Source[Iterable[Mapping[str, Any]]] | None = None,
        process: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._sources: dict[str, Any] = {
            "comet_polls_held": comet_polls_held,
            "cameras_online": cameras_online,
            "cameras_known": cameras_known,
            "outbox_depth": outbox_depth,
        }
        self._serial_ports = serial_ports
        self._guards: dict[str, _LabelGuard] = {}

        info = Gauge(
            "anpr_gateway_info",
            "The gateway's version (always 1).",
            ["version"],
            registry=registry,
        )
        info.labels(version=__version__).set(1)
        self._pushes = Counter(
            "anpr_gateway_camera_pushes",
            "Requests from cameras, by kind (plate, heartbeat, io, serial, snapshot, ...).",
            ["kind"],
            registry=registry,
        )
        self._decisions = Counter(
            "anpr_gateway_decisions",
            "Gate decisions, by reason and by who decided (local, cloud).",
            ["reason", "source"],
            registry=registry,
        )
        self._reply_latency = Histogram(
            "anpr_gateway_plate_reply_seconds",
            "Time from a plate push arriving to its reply being ready.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._store_commit = Histogram(
            "anpr_gateway_store_commit_seconds",
            "Time to commit an event durably to the store.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._upstream_errors = Counter(
            "anpr_gateway_upstream_errors",
            "Failed exchanges with the cloud, by kind (connectivity, server, auth, endpoint, store).",
            ["kind"],
            registry=registry,
        )
        self._events = Counter(
            "anpr_gateway_events",
            "Events kept in the store, by type.",
            ["type"],
            registry=registry,
        )
        self._commands = Counter(
            "anpr_gateway_commands",
            "Camera commands that reached their final state, by type and state.",
            ["type", "state"],
            registry=registry,
        )
        self._gauges: dict[str, Gauge] = {}
        for name, documentation in (
            ("comet_polls_held", "Comet polls of cameras held open now."),
            ("cameras_online", "Cameras online now."),
            ("cameras_known", "Cameras known (configured or heard from)."),
            ("outbox_depth", "Events waiting to be sent to the cloud."),
        ):
            if self._sources[name] is not None:
                self._gauges[name] = Gauge(f"anpr_gateway_{name}", documentation, registry=registry)
        self._mqtt = _MqttCollector()
        self._port_state: Gauge | None = None
        self._occupancy: _OccupancyCollector | None = None
        if serial_ports is not None:
            self.watch_serial_ports(serial_ports)
        if process:
            # CPU, memory and file descriptors of this process (Linux /proc).
            ProcessCollector(registry=registry)

    def watch_serial_ports(self, serial_ports: Source[Iterable[Mapping[str, Any]]]) -> None:
        """Report the state of the serial ports ``serial_ports`` lists."""
        self._serial_ports = serial_ports
        if self._port_state is None:
            self._port_state = Gauge(
                "anpr_gateway_serial_port_state",
                "1 for the state each serial port is in, 0 for the others.",
                ["port", "state"],
                registry=self.registry,
            )

    def watch_occupancy(self, counts: Source[Iterable[Mapping[str, Any]]]) -> None:
        """Report the cars inside, the capacity and the free spaces of the
        site (``area=""``) and each area: ``counts()`` lists them."""
        if self._occupancy is None:
            self._occupancy = _OccupancyCollector()
            self.registry.register(self._occupancy)
        self._occupancy.source = counts

    def watch_mqtt(self, mqtt: Source[Any]) -> None:
        """Report the MQTT link: ``mqtt()`` gives its
        :class:`gateway.mqtt.service.MqttStatus`."""
        self._mqtt.source = mqtt
        if not self._mqtt.registered:
            self.registry.register(self._mqtt)
            self._mqtt.registered = True

    def _labels(self, metric: str, *values: str) -> tuple[str, ...]:
        guard = self._guards.setdefault(metric, _LabelGuard())
        return guard(*values)

    # -- fed by the code paths ----------------------------------------------------

    def push(self, kind: str) -> None:
        """A camera request of ``kind`` arrived."""
        self._pushes.labels(*self._labels("push", kind)).inc()

    def decision(self, reason: str, source: str) -> None:
        """A gate decision was made for ``reason`` by ``source``."""
        self._decisions.labels(*self._labels("decision", reason, source)).inc()

    def reply_latency(self, seconds: float) -> None:
        """How long a plate push took to answer."""
        self._reply_latency.observe(max(0.0, seconds))

    def store_commit(self, seconds: float) -> None:
        """How long an event commit took."""
        self._store_commit.observe(max(0.0, seconds))

    def upstream_error(self, kind: str) -> None:
        """An exchange with the cloud failed for ``kind`` of reason."""
        self._upstream_errors.labels(*self._labels("upstream", kind)).inc()

    def watch(self, bus: Any) -> Callable[[], None]:
        """Count kept events and finished commands published on ``bus``
        (a :class:`gateway.bus.EventBus`); returns the unsubscribe function."""

        def listener(topic: str, payload: Mapping[str, Any]) -> None:
            if topic == "event":
                self._events.labels(*self._labels("event", str(payload.get("type")))).inc()
            elif topic == "command":
                labels = self._labels(
                    "command", str(payload.get("type")), str(payload.get("state"))
                )
                self._commands.labels(*labels).inc()

        unsubscribe: Callable[[], None] = bus.subscribe(listener)
        return unsubscribe

    # -- scrape ---------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read every scrape-time source into its gauge. A failing source
        leaves its gauge as it was (logged), never fails the scrape."""
        for name, gauge in self._gauges.items():
            try:
                value = await _read(self._sources[name])
            except Exception:
                log.failure("Reading the {name} metric failed", name=name)
                continue
            if value is not None:
                gauge.set(value)
        if self._mqtt.source is not None:
            try:
                self._mqtt.status = await _read(self._mqtt.source)
            except Exception:
                log.failure("Reading the MQTT metrics failed")
        if self._occupancy is not None and self._occupancy.source is not None:
            try:
                self._occupancy.counts = list(await _read(self._occupancy.source) or ())
            except Exception:
                log.failure("Reading the occupancy metrics failed")
        if self._port_state is not None:
            try:
                ports = await _read(self._serial_ports)
            except Exception:
                log.failure("Reading the serial port metrics failed")
                return
            self._port_state.clear()
            for port in ports or ():
                name, current = str(port.get("name")), str(port.get("state"))
                for state in (
                    SERIAL_PORT_STATES
                    if current in SERIAL_PORT_STATES
                    else (
                        *SERIAL_PORT_STATES,
                        current,
                    )
                ):
                    self._port_state.labels(port=name, state=state).set(
                        1 if state == current else 0
                    )

    async def render(self) -> bytes:
        """The text exposition format (content type :data:`CONTENT_TYPE_LATEST`)."""
        await self.refresh()
        return generate_latest(self.registry)
