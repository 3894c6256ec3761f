"""twistd plugin options and the service tree: the one place that knows
every part of the gateway."""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, NoReturn
from zoneinfo import ZoneInfo

import attrs

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from gateway import __version__
from gateway.admin.root import AdminRoot, build_admin
from gateway.admin.auth import AdminAccounts
from gateway.admin.metrics import GatewayMetrics
from gateway.admin.settings import AdminSettings
from gateway.camera.registry import CameraRegistry
from gateway.bus import EventBus
from gateway.camera.commands import SendSerial
from gateway.camera.registry import Camera
from gateway.display.lanes import LaneDisplays, Withdraw
from gateway.display.settings import DisplaySettings, LaneDisplay
from gateway.display.templates import MessageTemplate, default_idle, default_messages
from gateway.protocol.board import Colour
from gateway.serial.bridge import SerialBridge, SerialBridgeSettings
from gateway.serial.ports import SerialPorts, SerialPortSettings
from gateway.camera.control import CameraControl, CloudCommands
from gateway.camera.recorder import StoreRecorder
from gateway.camera.server import CameraServer
from gateway.camera.whitelist_sync import CameraWhitelistSync, LaneListSettings
from gateway.config import (
    ConfigError,
    GatewayConfig,
    LaneConfig,
    MessageConfig,
    SerialPortConfig,
    load_config,
)
from gateway.background import BackgroundWork
from gateway.gate import Gate
from gateway.heap import HeapSweep, share_the_lock
from gateway.policy.codec import EntryCodec
from gateway.store import StoreConfig, StoreService
from gateway.upstream.decisions import CloudGate
from gateway.upstream.service import UpstreamService
from gateway.upstream.settings import UpstreamSettingsError
from gateway.systemd import SystemdNotifier, listening_status
from gateway.platelist import PlateList

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


def _listener(
    reactor: Any, description: str, factory: IProtocolFactory, path: str, source: str
) -> StreamServerEndpointService:
    try:
        endpoint = serverFromString(reactor, description)
    except Exception as error:  # endpoint parsers raise many kinds
        raise ConfigError(path, f"not a usable endpoint ({error})", source) from None
    service = StreamServerEndpointService(endpoint, factory)
    # Fail the start-up if the port cannot be bound, rather than logging it.
    service._raiseSynchronously = True
    return service


class GatewayService(MultiService):
    """The root of the service tree."""

    def __init__(
        self,
        config: GatewayConfig,
        registry: CameraRegistry,
        store: StoreService,
        plate_list: PlateList,
    ) -> None:
        super().__init__()
        self.config = config
        self.registry = registry
        self.store = store
        self.plate_list = plate_list
        self.control: CameraControl | None = None
        self.bus: EventBus | None = None
        self.displays: LaneDisplays | None = None
        self.ports: SerialPorts | None = None
        self.bridge: SerialBridge | None = None
        self.upstream: UpstreamService | None = None
        self.admin: AdminRoot | None = None
        self.camera_server: CameraServer | None = None
        self.camera_sync: CameraWhitelistSync | None = None

    def startService(self) -> None:
        log.info(
            "anpr-gateway {version} starting: {summary}",
            version=__version__,
            summary=self.config.summary(),
        )
        share_the_lock()
        super().startService()

    def stopService(self) -> Any:
        if self.admin is not None:
            # Live page streams are requests that never end by themselves.
            self.admin.end_streams()
        # Listeners stop first (MultiService stops children in reverse), so
        # no request re-arms a camera's timers after the registry stops.
        stopping = super().stopService()

        def stop_registry(result: object) -> object:
            self.registry.stop()
            return result

        return stopping.addBoth(stop_registry)


def serial_port_settings(port: SerialPortConfig) -> SerialPortSettings:
    return SerialPortSettings(
        name=port.name,
        device=port.device,
        baudrate=port.baudrate,
        bytesize=port.bytesize,
        parity=port.parity,
        stopbits=port.stopbits,
        gap_ms=port.gap_ms,
        max_queued_frames=port.max_queued_frames,
        retry_min_seconds=port.retry_min_seconds,
        retry_max_seconds=port.retry_max_seconds,
        exclusive=port.exclusive,
    )


def _message(base: MessageTemplate, configured: MessageConfig) -> MessageTemplate:
    """A built-in message with what the configuration changes of it."""
    changes: dict[str, Any] = {}
    if configured.lines is not None:
        changes["lines"] = configured.lines
    if configured.voice is not None:
        changes["voice"] = configured.voice or None
    if configured.colour is not None:
        changes["colour"] = Colour.parse(configured.colour)
    return attrs.evolve(base, **changes)


def display_settings(lane: LaneConfig) -> DisplaySettings:
    display = lane.display
    assert display is not None
    defaults = default_messages(lane.direction)
    return DisplaySettings(
        via=display.via,
        camera_channel=display.camera_channel,
        port=display.port,
        address=display.address,
        messages={key: _message(defaults[key], message) for key, message in display.messages},
        idle=_message(default_idle(lane.direction), display.idle) if display.idle else None,
        dwell_seconds=display.dwell_seconds,
        free_spaces=display.free_spaces,
        display_lines=display.display_lines,
    )


def build_service(
    config: GatewayConfig, reactor: Any, environ: Mapping[str, str] | None = None
) -> GatewayService:
    """Build the whole gateway for ``config`` on ``reactor`` (not started).

    ``environ`` is the process environment when run as a service (systemd's
    ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``); None tells systemd nothing.
    """
    clock: IReactorTime = reactor
    try:
        os.makedirs(config.gateway.state_dir, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            "gateway.state_dir",
            f"cannot create {config.gateway.state_dir}: {error.strerror}",
            config.source,
        ) from None

    tz = ZoneInfo(config.gateway.timezone)
    registry = CameraRegistry(
        clock,
        comet_hold=config.camera_server.comet_hold_seconds,
        missed_intervals=config.camera_server.offline_missed_intervals,
    )
    store = StoreService(
        reactor,
        config.gateway.state_dir,
        StoreConfig(
            image_retention_days=config.store.image_retention_days,
            image_max_bytes=config.store.image_max_bytes,
        ),
    )
    codec = EntryCodec(tz=tz, lanes=config.lane_names)
    # The plate list's bulk work (files, index builds, camera recomputes,
    # sync pages) runs in a low-priority thread of its own.
    in_thread = BackgroundWork(reactor)
    plate_list = PlateList(
        reactor,
        store,
        codec=codec,
        in_thread=in_thread,
        unknown_plate=config.policy.unknown_plate,
        lane_overrides={lane.name: lane.unknown_plate for lane in config.lanes if lane.unknown_plate},
        max_plate_distance=config.policy.max_plate_distance,
        csv_path=config.policy.whitelist_csv,
    )
    bus = EventBus()
    registry.on_state_change(lambda camera, online: bus.publish("camera", camera.describe()))
    ports = SerialPorts(reactor, [serial_port_settings(port) for port in config.serial])

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
            LaneDisplay(lane.name, lane.camera, lane.direction, display_settings(lane))
            for lane in config.lanes
            if lane.display is not None
        ],
        ports=ports,
        queue_camera_serial=queue_camera_serial,
    )
    bridge = SerialBridge(
        clock=clock,
        ports=ports,
        bridges=[
            SerialBridgeSettings(
                lane=lane.name,
                camera=lane.camera,
                to_port=lane.serial_bridge.to_port,
                camera_channel=lane.serial_bridge.camera_channel,
                max_pending_bytes=lane.serial_bridge.max_pending_bytes,
            )
            for lane in config.lanes
            if lane.serial_bridge is not None
        ],
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

    def say_on_display(camera: Camera, text: str) -> bool:
        if camera.lane is None or not displays.has_display(camera.lane):
            return False
        displays.test_message(camera.lane, text)
        return True

    # Until the store is open and the plate list loaded, events are refused
    # (connection closed without an answer) and cameras send them again: the
    # listeners need not wait, and bind (or fail) at once.
    recorder = StoreRecorder(
        lambda: store.store if plate_list.loaded else None,
        bus=bus,
        clock=clock,
        outbox=config.upstream is not None,
    )
    metrics = GatewayMetrics(
        comet_polls_held=registry.held_polls,
        cameras_online=lambda: sum(1 for camera in registry if camera.online),
        cameras_known=lambda: len(registry),
        outbox_depth=lambda: store.store.outbox_depth() if store.store is not None else None,
        serial_ports=lambda: [status.to_dict() for status in ports.statuses()],
    )
    metrics.watch(bus)
    recorder.on_commit_time = metrics.store_commit
    control = CameraControl(
        clock=clock,
        registry=registry,
        config=config,
        recorder=recorder,
        bus=bus,
        display_say=say_on_display,
    )
    gate = Gate(
        clock=clock,
        local=plate_list,
        duplicate_window=config.policy.duplicate_window_seconds,
        budget=config.upstream.decision_timeout_seconds if config.upstream else 1.5,
    )
    plate_list.on_change(gate.plate_list_changed)
    camera_server = CameraServer(
        clock=clock,
        config=config,
        registry=registry,
        gate=gate,
        recorder=recorder,
        control=control,
        displays=displays,
        bridge=bridge,
        metrics=metrics,
    )
    root = GatewayService(config, registry, store, plate_list)
    root.camera_server = camera_server
    root.control = control
    root.bus = bus
    store.setServiceParent(root)
    in_thread.setServiceParent(root)
    plate_list.setServiceParent(root)
    # Ports before the displays and the bridge that write to them (services
    # stop in reverse order).
    for name, part in (("serial-ports", ports), ("displays", displays), ("serial-bridge", bridge)):
        part.setName(name)
        part.setServiceParent(root)
    root.displays = displays
    root.ports = ports
    root.bridge = bridge
    camera_sync = CameraWhitelistSync(
        clock=clock,
        registry=registry,
        snapshot=plate_list.snapshot,
        store=lambda: store.store if plate_list.loaded else None,
        tz=tz,
        cameras={
            lane.camera: LaneListSettings(lane=lane.name, capacity=lane.camera_list_max)
            for lane in config.lanes
            if lane.sync_whitelist
        },
        in_thread=in_thread,
    )
    camera_sync.setServiceParent(root)
    root.camera_sync = camera_sync
    HeapSweep(clock, tz).setServiceParent(root)
    plate_list.on_change(camera_sync.list_changed)
    camera_server.whitelist_result_listeners.append(camera_sync.whitelist_result)

    upstream: UpstreamService | None = None
    if config.upstream is not None:
        try:
            upstream = UpstreamService(
                reactor,
                store,
                config.upstream,
                whitelist=plate_list,
                commands=CloudCommands(control, clock),
                codec=codec,
                in_thread=in_thread,
            )
        except UpstreamSettingsError as error:
            raise ConfigError(f"upstream.{error.key}", error.reason, config.source) from None
        # After the store and the plate list: it stops before them.
        upstream.setServiceParent(root)
        recorder.on_commit = upstream.notify_new_event
        gate.cloud = CloudGate(upstream.decider)
        upstream.link.on_change(
            lambda status: bus.publish(
                "status", {"upstream": status.state.value, "last_error": status.last_error}
            )
        )
    root.upstream = upstream
    camera_site = camera_server.listening_factory()
    listeners: list[StreamServerEndpointService] = []
    for index, description in enumerate(config.camera_server.listen, start=1):
        service = _listener(
            reactor, description, camera_site, f"camera_server.listen[{index}]", config.source
        )
        service.setName(f"camera-listener-{index}")
        service.setServiceParent(root)
        listeners.append(service)
    if config.admin.listen:
        admin_settings = AdminSettings(
            users=config.admin.users,
            tokens=config.admin.tokens,
            metrics_public=config.admin.metrics_public,
            session_hours=config.admin.session_hours,
        )
        accounts = AdminAccounts(
            admin_settings,
            reactor=reactor,
            state_dir=config.gateway.state_dir,
            open_store=store.when_open,
        )
        accounts.setServiceParent(root)

        def upstream_status() -> dict[str, Any] | None:
            if upstream is None:
                return None
            status = upstream.link.status
            return {"state": status.state.value, "last_error": status.last_error}

        admin = build_admin(
            reactor=reactor,
            clock=clock,
            site_id=config.gateway.id,
            state_dir=config.gateway.state_dir,
            lanes=config.lanes,
            image_retention_days=config.store.image_retention_days,
            image_max_bytes=config.store.image_max_bytes,
            settings=admin_settings,
            users=accounts,
            registry=registry,
            control=control,
            store=lambda: store.store if plate_list.loaded else None,
            plate_list=plate_list,
            codec=codec,
            camera_sync=camera_sync,
            bus=bus,
            metrics=metrics,
            display_test=displays.test_message,
            has_display=displays.has_display,
            serial_status=lambda: [status.to_dict() for status in ports.statuses()],
            upstream_status=upstream_status,
            on_replay=upstream.notify_new_event if upstream is not None else None,
        )
        root.admin = admin
        admin_site = admin.site()
        for index, description in enumerate(config.admin.listen, start=1):
            service = _listener(
                reactor, description, admin_site, f"admin.listen[{index}]", config.source
            )
            service.setName(f"admin-listener-{index}")
            service.setServiceParent(root)
            listeners.append(service)

    async def serving() -> str:
        # READY=1 means events are kept: the store is open and the plate list
        # loaded (before that, plates are refused), and every listener listens.
        await plate_list.when_loaded()
        return await listening_status(listeners)

    # Last in the tree: started after the listeners, stopped first, so that
    # STOPPING=1 comes before anything closes.
    notifier = SystemdNotifier(clock, ready=serving, environ=environ or {})
    notifier.setName("systemd")
    notifier.setServiceParent(root)
    return root


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    try:
        return build_service(options["gateway_config"], reactor, environ=os.environ)
    except ConfigError as error:
        refuse_to_start(error)
