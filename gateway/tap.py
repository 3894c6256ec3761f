"""The composition root: twistd's options and the builders of the service tree.

This module and :mod:`gateway.config` are the only ones that know every part of
the gateway. Each ``build_*`` function makes one area's services, adds them to
the tree and returns what the next areas need; :func:`build_service` calls them
in order. Tests and the bench build the gateway, or a part of it, with the same
functions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import attrs
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from gateway import __version__
from gateway.admin import root as admin
from gateway.admin.auth import AdminAccounts
from gateway.admin.metrics import GatewayMetrics
from gateway.background import BackgroundWork, InThread
from gateway.bus import EventBus
from gateway.camera.commands import SendSerial
from gateway.camera.control import CameraControl, CloudCommands
from gateway.camera.http import ConnectionLimits
from gateway.camera.recorder import StoreRecorder, record_limits
from gateway.camera.registry import Camera, CameraRegistry
from gateway.camera.server import CameraServer
from gateway.camera.whitelist_sync import CameraWhitelistSync, LaneListSettings
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.display.lanes import LaneDisplays, Withdraw
from gateway.display.settings import LaneDisplay
from gateway.gate import Gate
from gateway.heap import HeapSweep, share_the_lock
from gateway.listeners import LISTEN_ERROR_EXIT, CannotListen, Listener, parse_endpoint
from gateway.mqtt.client import BrokerClient
from gateway.mqtt.commands import MqttCommands
from gateway.mqtt.service import MqttService
from gateway.mqtt.settings import MqttSettings
from gateway.occupancy import Occupancy
from gateway.platelist import PlateList
from gateway.policy.codec import EntryCodec
from gateway.reactor import IGatewayReactor, as_gateway_reactor
from gateway.serial.bridge import SerialBridge
from gateway.serial.ports import SerialPorts
from gateway.serial.settings import SerialPortSettings
from gateway.site import Lanes
from gateway.store import Store, StoreExecutor, StoreService
from gateway.systemd import SystemdNotifier, listening_status
from gateway.upstream.decisions import CloudGate
from gateway.upstream.service import UpstreamService
from gateway.upstream.settings import UpstreamSettings

log = Logger()


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = (
        "Run the ANPR gateway: the camera server, the gate decisions and the admin "
        "status API. Without --config, built-in demo settings are used (cameras on "
        "tcp:8080, admin on tcp:8081 on localhost, state in ./anpr-gateway-state)."
    )
    optParameters = [
        ["config", "c", None, "Path of the gateway's TOML configuration file."],
    ]

    def postOptions(self) -> None:
        # Everything is validated here, before the reactor starts: a bad
        # configuration stops twistd with one line naming the key.
        try:
            self["gateway_config"] = load_config(self["config"])
        except ConfigError as error:
            refuse_to_start(error)


# The exit status of a configuration error: systemd's RestartPreventExitStatus
# keeps a broken configuration from restarting in a loop.
CONFIG_ERROR_EXIT = 2


def refuse_to_start(error: ConfigError) -> NoReturn:
    """Stop before the reactor runs: one line naming the key, no traceback."""
    print(f"anpr-gateway: configuration error: {error.full_message()}", file=sys.stderr)
    raise SystemExit(CONFIG_ERROR_EXIT)


class GatewayService(MultiService):
    """The root of the service tree, with its parts by name for tests and the bench."""

    def __init__(self, config: GatewayConfig) -> None:
        super().__init__()
        self.config = config
        self.core: Core | None = None
        self.devices: Devices | None = None
        self.cameras: Cameras | None = None
        self.upstream: UpstreamService | None = None
        self.mqtt: MqttService | None = None
        self.occupancy: Occupancy | None = None
        self.admin: admin.AdminRoot | None = None
        self.listeners: list[Listener] = []

    def startService(self) -> None:
        log.info(
            "anpr-gateway {version} starting: {summary}",
            version=__version__,
            summary=self.config.summary(),
        )
        share_the_lock()
        # The ports first: one that cannot be bound stops the start before
        # anything else runs (no store thread to wind down), in one line.
        self._bind()
        super().startService()

    def privilegedStartService(self) -> None:
        # twistd binds the ports here, before it drops privileges.
        self._bind()
        for service in self:
            if not isinstance(service, Listener):
                service.privilegedStartService()

    def _bind(self) -> None:
        try:
            for listener in self.listeners:
                listener.bind()
        except CannotListen as error:
            for listener in self.listeners:
                if listener.bound:
                    listener.stopService()
            print(f"anpr-gateway: cannot listen: {error}", file=sys.stderr)
            raise SystemExit(LISTEN_ERROR_EXIT) from None

    def stopService(self) -> Any:
        if self.admin is not None:
            # Live page streams are requests that never end by themselves.
            self.admin.end_streams()
        return super().stopService()

    # The parts most tests and the bench reach for.

    @property
    def registry(self) -> CameraRegistry:
        assert self.core is not None
        return self.core.registry

    @property
    def store(self) -> StoreService:
        assert self.core is not None
        return self.core.store

    @property
    def plate_list(self) -> PlateList:
        assert self.core is not None
        return self.core.plate_list

    @property
    def bus(self) -> EventBus:
        assert self.core is not None
        return self.core.bus

    @property
    def camera_server(self) -> CameraServer:
        assert self.cameras is not None
        return self.cameras.server

    @property
    def control(self) -> CameraControl:
        assert self.cameras is not None
        return self.cameras.control

    @property
    def camera_sync(self) -> CameraWhitelistSync:
        assert self.cameras is not None
        return self.cameras.sync

    @property
    def displays(self) -> LaneDisplays:
        assert self.devices is not None
        return self.devices.displays

    @property
    def ports(self) -> SerialPorts:
        assert self.devices is not None
        return self.devices.ports

    @property
    def bridge(self) -> SerialBridge:
        assert self.devices is not None
        return self.devices.bridge


@attrs.frozen
class Seams:
    """What a test of the gateway's parts puts in place of the real thing:
    time (a ``Clock``), the store's executor (SQLite at once on the calling
    thread) and the thread bulk work runs in. Each None: the real one."""

    clock: IReactorTime | None = None
    store_executor: Callable[[], StoreExecutor] | None = None
    in_thread: InThread | None = None
    # The broker session for [mqtt], given the settings and the Last Will's topic.
    mqtt_client: Callable[[MqttSettings, str], BrokerClient] | None = None


@attrs.frozen
class Core:
    """What every area of the gateway uses: the cameras known, the store, the
    plate list, the event bus, the recorder of events and the metrics."""

    reactor: IGatewayReactor
    clock: IReactorTime
    in_thread: InThread
    registry: CameraRegistry
    store: StoreService
    codec: EntryCodec
    plate_list: PlateList
    bus: EventBus
    recorder: StoreRecorder
    metrics: GatewayMetrics

    def open_store(self) -> Store | None:
        """The store once events may be kept: open, and the plate list loaded.
        Until then events are refused (connection closed without an answer)
        and cameras send them again."""
        return self.store.store if self.plate_list.loaded else None


@attrs.frozen
class Devices:
    """The gateway's own serial ports, the lane displays and the serial bridges."""

    ports: SerialPorts
    displays: LaneDisplays
    bridge: SerialBridge


@attrs.frozen
class Cameras:
    """Commands to cameras, the gate, the camera server and the camera lists."""

    control: CameraControl
    gate: Gate
    server: CameraServer
    sync: CameraWhitelistSync


def make_state_dir(config: GatewayConfig) -> None:
    """Create the state directory, or stop with the key that names it."""
    try:
        os.makedirs(config.gateway.state_dir, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            "gateway.state_dir",
            f"cannot create {config.gateway.state_dir}: {error.strerror}",
            config.source,
        ) from None


def build_core(
    root: MultiService, reactor: IGatewayReactor, config: GatewayConfig, seams: Seams = Seams()
) -> Core:
    """The camera registry, the store, the background thread, the plate list,
    the event bus, the recorder and the metrics."""
    clock: IReactorTime = seams.clock if seams.clock is not None else reactor
    registry = CameraRegistry(
        clock,
        comet_hold=config.camera_server.comet_hold_seconds,
        missed_intervals=config.camera_server.offline_missed_intervals,
    )
    store = StoreService(
        reactor, config.gateway.state_dir, config.store, clock=clock, executor=seams.store_executor
    )
    codec = EntryCodec(tz=config.gateway.tz, lanes=config.lanes)
    # The plate list's bulk work (files, index builds, camera recomputes,
    # sync pages) runs in a low-priority thread of its own.
    background: BackgroundWork | None = None
    in_thread: InThread
    if seams.in_thread is None:
        in_thread = background = BackgroundWork(reactor)
    else:
        in_thread = seams.in_thread
    plate_list = PlateList(
        reactor,
        store,
        codec=codec,
        in_thread=in_thread,
        clock=clock,
        unknown_plate=config.policy.unknown_plate,
        lane_overrides={lane.name: lane.unknown_plate for lane in config.lanes if lane.unknown_plate},
        max_plate_distance=config.policy.max_plate_distance,
        csv_path=config.policy.whitelist_csv,
    )
    bus = EventBus()
    registry.on_state_change(lambda camera, online: bus.publish("camera", camera.describe()))
    recorder = StoreRecorder(
        lambda: store.store if plate_list.loaded else None,
        bus=bus,
        clock=clock,
        outbox=config.upstream is not None,
        limits=record_limits(config.camera_server),
    )
    metrics = GatewayMetrics(
        comet_polls_held=registry.held_polls,
        cameras_online=lambda: sum(1 for camera in registry if camera.online),
        cameras_known=lambda: len(registry),
        outbox_depth=lambda: store.store.outbox_depth() if store.store is not None else None,
    )
    metrics.watch(bus)
    recorder.on_commit_time = metrics.store_commit
    # The registry stops last: the listeners stop first (services stop in
    # reverse), so no request re-arms a camera's timers after it stopped.
    registry.setServiceParent(root)
    store.setServiceParent(root)
    if background is not None:
        background.setServiceParent(root)
    plate_list.setServiceParent(root)
    HeapSweep(clock, config.gateway.tz).setServiceParent(root)
    return Core(
        reactor, clock, in_thread, registry, store, codec, plate_list, bus, recorder, metrics
    )


def build_devices(
    root: MultiService,
    core: Core,
    lanes: Lanes,
    serial: Sequence[SerialPortSettings],
    tz: ZoneInfo,
) -> Devices:
    """The gateway's serial ports, the lanes' displays and serial bridges."""
    clock, registry = core.clock, core.registry
    ports = SerialPorts(core.reactor, serial)
    core.metrics.watch_serial_ports(lambda: [status.to_dict() for status in ports.statuses()])
    # A port failing or coming back is the page's to see (a display fault).
    ports.on_state_change(
        lambda status: core.bus.publish("status", {"serial_port": status.to_dict()})
    )

    def queue_camera_serial(serialno: str, channel: int, data: bytes, expires_at: float) -> Withdraw:
        command = SendSerial(channel=channel, data=data, expires_at=expires_at)
        camera = registry.queue(serialno, command)

        def withdraw() -> None:
            # A newer message supersedes this one before the camera got it.
            registry.withdraw(camera, command)

        return withdraw

    displays = LaneDisplays(
        clock=clock,
        tz=tz,
        lanes=[
            LaneDisplay(lane.name, lane.camera, lane.direction, lane.display)
            for lane in lanes
            if lane.display is not None
        ],
        ports=ports,
        queue_camera_serial=queue_camera_serial,
    )
    bridge = SerialBridge(
        clock=clock,
        ports=ports,
        bridges=[lane.serial_bridge for lane in lanes if lane.serial_bridge is not None],
    )

    def bridge_bytes_waiting(serialno: str) -> None:
        # Bytes from the local port go back in the camera's next reply.
        for channel, data in bridge.drain(serialno):
            registry.queue(
                serialno,
                SendSerial(channel=channel, data=data, expires_at=clock.seconds() + 30.0),
            )

    bridge.on_pending(bridge_bytes_waiting)
    registry.on_state_change(
        lambda camera, online: displays.camera_online(camera.serialno) if online else None
    )
    # Ports before the displays and the bridge that write to them (services
    # stop in reverse order).
    for name, part in (("serial-ports", ports), ("displays", displays), ("serial-bridge", bridge)):
        part.setName(name)
        part.setServiceParent(root)
    return Devices(ports, displays, bridge)


def build_cameras(root: MultiService, core: Core, devices: Devices, config: GatewayConfig) -> Cameras:
    """Camera commands, the gate, the camera server and the cameras' own lists."""
    clock, registry, displays = core.clock, core.registry, devices.displays

    def say_on_display(camera: Camera, text: str) -> bool:
        if camera.lane is None or not displays.has_display(camera.lane):
            return False
        displays.test_message(camera.lane, text)
        return True

    control = CameraControl(
        clock=clock,
        registry=registry,
        lanes=config.lanes,
        recorder=core.recorder,
        bus=core.bus,
        display_say=say_on_display,
    )
    gate = Gate(
        clock=clock,
        local=core.plate_list,
        duplicate_window=config.policy.duplicate_window_seconds,
        budget=config.upstream.decision_timeout_seconds if config.upstream else 1.5,
    )
    core.plate_list.on_change(gate.plate_list_changed)
    server = CameraServer(
        clock=clock,
        settings=config.camera_server,
        lanes=config.lanes,
        registry=registry,
        gate=gate,
        recorder=core.recorder,
        control=control,
        displays=displays,
        bridge=devices.bridge,
        metrics=core.metrics,
        ready=core.plate_list.when_loaded(),
    )
    sync = CameraWhitelistSync(
        clock=clock,
        registry=registry,
        snapshot=core.plate_list.snapshot,
        store=core.open_store,
        tz=config.gateway.tz,
        cameras={
            lane.camera: LaneListSettings(lane=lane.name, capacity=lane.camera_list_max)
            for lane in config.lanes
            if lane.sync_whitelist
        },
        in_thread=core.in_thread,
    )
    sync.setServiceParent(root)
    core.plate_list.on_change(sync.list_changed)
    server.whitelist_result_listeners.append(sync.whitelist_result)
    return Cameras(control, gate, server, sync)


def build_occupancy(
    root: MultiService, core: Core, devices: Devices, config: GatewayConfig
) -> Occupancy:
    """The parking sessions and the cars inside, shown on the lanes' displays
    (``{free}``) when a capacity is known."""
    clock, displays = core.clock, devices.displays

    async def store_once_events_are_kept() -> Store:
        # No event is kept before the plate list is loaded: the occupancy's
        # reading back waits until then, behind the start-up's own reads.
        await core.plate_list.when_loaded()
        return await core.store.when_open()

    occupancy = Occupancy(
        clock=clock,
        settings=config.occupancy,
        lanes=config.lanes,
        bus=core.bus,
        open_store=lambda: Deferred.fromCoroutine(store_once_events_are_kept()),
        keep=core.recorder.keep,
    )
    pending: list[object] = []

    def show_free() -> None:
        pending.clear()
        for lane in displays.lanes:
            free = occupancy.lane_free(lane)
            if free is not None:
                displays.set_free_spaces(lane, free)

    def counts_changed() -> None:
        # After the plate reply's own frames (a board shows the decision
        # first, the new count with its idle text), once per turn.
        if not pending:
            pending.append(clock.callLater(0, show_free))

    occupancy.on_change(counts_changed)
    core.metrics.watch_occupancy(
        lambda: [count.to_json() | {"area": count.area} for count in occupancy.counts()]
    )
    # After the store: it stops before it (what is pending is written on the way).
    occupancy.setServiceParent(root)
    return occupancy


def build_upstream(
    root: MultiService, core: Core, cameras: Cameras, settings: UpstreamSettings, source: str
) -> UpstreamService:
    """The cloud link: the outbox, the cloud's decisions and the sync feed."""
    try:
        upstream = UpstreamService(
            core.reactor,
            core.store,
            settings,
            whitelist=core.plate_list,
            commands=CloudCommands(cameras.control, core.clock),
            codec=core.codec,
            in_thread=core.in_thread,
        )
    except ConfigError as error:
        raise ConfigError(error.within("upstream").path, error.reason, source) from None
    # After the store and the plate list: it stops before them.
    upstream.setServiceParent(root)
    core.recorder.on_commit = upstream.notify_new_event
    cameras.gate.cloud = CloudGate(upstream.decider)
    upstream.link.on_failure(lambda failure: core.metrics.upstream_error(failure.kind.value))
    upstream.link.on_change(
        lambda status: core.bus.publish(
            "status", {"upstream": status.state.value, "last_error": status.last_error}
        )
    )
    return upstream


def build_mqtt(
    root: MultiService,
    core: Core,
    cameras: Cameras,
    settings: MqttSettings,
    lanes: Lanes,
    upstream: UpstreamService | None = None,
    seams: Seams = Seams(),
) -> MqttService:
    """The MQTT link: events from the store's own cursor, retained state,
    discovery and, with ``commands``, the camera and plate list commands
    (through the same camera commands as the admin page; docs/mqtt.md)."""
    will_topic = f"{settings.prefix}/status"
    if seams.mqtt_client is not None:
        client = seams.mqtt_client(settings, will_topic)
    else:
        from gateway.mqtt.paho import PahoBroker

        client = PahoBroker(core.reactor, settings, will_topic=will_topic)
    async def gateway_state() -> dict[str, Any]:
        store = core.store.store
        state: dict[str, Any] = {
            "outbox_depth": await store.outbox_depth() if store is not None else None,
            "cloud_link": upstream.link.state.value if upstream is not None else "none",
        }
        return state

    mqtt = MqttService(
        client=client,
        store=core.store,
        config=settings,
        clock=core.clock,
        lanes=lanes,
        gateway_state=gateway_state,
    )
    if settings.commands:
        mqtt.take_commands(
            MqttCommands(
                prefix=settings.prefix,
                lanes=lanes,
                control=cameras.control,
                plate_list=core.plate_list,
                codec=core.codec,
                keep=core.recorder.keep,
                send=mqtt.send,
                clock=core.clock,
                image_max_bytes=settings.image_max_bytes,
            )
        )
    core.metrics.watch_mqtt(lambda: mqtt.status())
    # After the store: it stops before it (the cursor is saved on the way).
    mqtt.setServiceParent(root)
    core.bus.subscribe(lambda topic, payload: mqtt.notify_new_event() if topic == "event" else None)
    return mqtt


def build_listeners(
    root: MultiService,
    reactor: IGatewayReactor,
    factory: IProtocolFactory,
    endpoints: Sequence[str],
    key: str,
    source: str,
) -> list[Listener]:
    """One listener per endpoint of ``key`` (``camera_server.listen``), bound
    at start: a port that cannot be bound fails the start-up."""
    listeners = []
    name = key.split(".", 1)[0].replace("_server", "")
    for index, description in enumerate(endpoints, start=1):
        item = f"{key}[{index}]"
        try:
            endpoint = parse_endpoint(reactor, description, item)
        except ConfigError as error:
            raise ConfigError(error.path, error.reason, source) from None
        service = Listener(endpoint, factory, item, description)
        service.setName(f"{name}-listener-{index}")
        service.setServiceParent(root)
        listeners.append(service)
    return listeners


def build_admin(
    root: MultiService,
    core: Core,
    devices: Devices,
    cameras: Cameras,
    upstream: UpstreamService | None,
    config: GatewayConfig,
    mqtt: MqttService | None = None,
    occupancy: Occupancy | None = None,
) -> admin.AdminRoot:
    """The staff page and API (not listening: see :func:`build_listeners`)."""
    accounts = AdminAccounts(
        config.admin,
        reactor=core.reactor,
        state_dir=config.gateway.state_dir,
        open_store=core.store.when_open,
    )
    accounts.setServiceParent(root)
    sessions = admin.session_store(core.clock, config.admin, core.store.when_open)
    sessions.setServiceParent(root)

    def upstream_status() -> dict[str, Any] | None:
        if upstream is None:
            return None
        status = upstream.link.status
        return {"state": status.state.value, "last_error": status.last_error}

    async def mqtt_status() -> dict[str, Any] | None:
        return (await mqtt.status()).to_json() if mqtt is not None else None

    ports = devices.ports
    return admin.build_admin(
        reactor=core.reactor,
        clock=core.clock,
        site=config.gateway,
        lanes=config.lanes,
        store_settings=config.store,
        settings=config.admin,
        users=accounts,
        registry=core.registry,
        control=cameras.control,
        store=core.open_store,
        plate_list=core.plate_list,
        codec=core.codec,
        camera_sync=cameras.sync,
        bus=core.bus,
        metrics=core.metrics,
        display_test=devices.displays.test_message,
        has_display=devices.displays.has_display,
        serial_status=lambda: [status.to_dict() for status in ports.statuses()],
        upstream_status=upstream_status,
        mqtt_status=mqtt_status if mqtt is not None else None,
        on_replay=upstream.notify_new_event if upstream is not None else None,
        sessions=sessions,
        store_state=core.store,
        occupancy=occupancy,
        recorder=core.recorder,
        gate=cameras.gate,
    )


def build_systemd(
    root: MultiService,
    core: Core,
    listeners: Sequence[Listener],
    environ: Mapping[str, str],
) -> SystemdNotifier:
    """Tell systemd when the gateway serves (READY=1 means events are kept:
    the store is open, the plate list loaded and every listener listens),
    and what is wrong with the store meanwhile (its status line)."""

    async def serving() -> str:
        await core.plate_list.when_loaded()
        return await listening_status(listeners)

    # Last in the tree: started after the listeners, stopped first, so that
    # STOPPING=1 comes before anything closes.
    notifier = SystemdNotifier(
        core.clock, ready=serving, environ=environ, notice=core.store.notice
    )
    notifier.setName("systemd")
    notifier.setServiceParent(root)
    # A store that cannot open, or a replaced database, leads the unit's status.
    core.store.on_change(notifier.refresh)
    return notifier


def build_service(
    config: GatewayConfig,
    reactor: IGatewayReactor,
    environ: Mapping[str, str] | None = None,
    seams: Seams = Seams(),
) -> GatewayService:
    """Build the whole gateway for ``config`` on ``reactor`` (not started).

    ``environ`` is the process environment when run as a service (systemd's
    ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``); None tells systemd nothing.
    ``seams`` replaces time, the store's executor and the bulk thread in tests.
    """
    make_state_dir(config)
    root = GatewayService(config)
    root.core = core = build_core(root, reactor, config, seams)
    root.devices = devices = build_devices(
        root, core, config.lanes, config.serial, config.gateway.tz
    )
    root.cameras = cameras = build_cameras(root, core, devices, config)
    root.occupancy = build_occupancy(root, core, devices, config)
    if config.upstream is not None:
        root.upstream = build_upstream(root, core, cameras, config.upstream, config.source)
    if config.mqtt is not None:
        root.mqtt = build_mqtt(
            root, core, cameras, config.mqtt, config.lanes, root.upstream, seams
        )
    root.listeners = build_listeners(
        root,
        reactor,
        cameras.server.listening_factory(),
        config.camera_server.listen,
        "camera_server.listen",
        config.source,
    )
    if config.admin.listen:
        root.admin = build_admin(
            root, core, devices, cameras, root.upstream, config, root.mqtt, root.occupancy
        )
        admin_site = ConnectionLimits(
            root.admin.site(),
            max_connections=config.admin.max_connections,
            max_per_address=config.admin.max_connections_per_address,
        )
        root.listeners += build_listeners(
            root, reactor, admin_site, config.admin.listen, "admin.listen", config.source
        )
    build_systemd(root, core, root.listeners, environ or {})
    return root


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    try:
        return build_service(
            options["gateway_config"], as_gateway_reactor(reactor), environ=os.environ
        )
    except ConfigError as error:
        refuse_to_start(error)
