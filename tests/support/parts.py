"""The gateway's camera-side parts in memory, wired the way ``gateway.tap``
wires them: the camera registry, the store, the plate list, the gate, the
recorder, command control, the camera server and the camera whitelist sync,
with the bus between them.

Everything runs on a ``Clock``; the store runs its SQLite work at once (an
inline executor) and the plate list and camera sync their bulk work too, so
nothing waits for a thread or for the reactor. This is the one place the
unit tests wire these parts; the end-to-end tests start the real service
tree (``support.start_gateway``).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock

from gateway.bus import EventBus
from gateway.camera.control import CameraControl
from gateway.camera.recorder import StoreRecorder
from gateway.camera.registry import CameraRegistry
from gateway.camera.server import CameraServer
from gateway.camera.whitelist_sync import CameraWhitelistSync, LaneListSettings
from gateway.config import GatewayConfig, parse_config
from gateway.gate import Gate
from gateway.platelist import PlateList
from gateway.policy.codec import EntryCodec
from gateway.store import Store, StoreService
from support.store import InlineExecutor
from support.threads import inline_threads

__all__ = ["GatewayParts", "build_parts", "parts_config"]

global_reactor: Any = _reactor


def parts_config(data: dict[str, Any], state_dir: str) -> GatewayConfig:
    """``data`` (a configuration dict, e.g. ``loopback_config(...)``) with
    ``state_dir`` as the gateway's state directory."""
    data = {**data, "gateway": {**data.get("gateway", {}), "state_dir": state_dir}}
    return parse_config(data, source="<test>")


@attrs.define
class GatewayParts:
    """The parts, not yet started: :meth:`start` opens the store and loads
    the plate list (at once: nothing waits)."""

    config: GatewayConfig
    clock: Clock
    registry: CameraRegistry
    store_service: StoreService
    codec: EntryCodec
    plate_list: PlateList
    bus: EventBus
    recorder: StoreRecorder
    control: CameraControl
    gate: Gate
    camera_server: CameraServer
    camera_sync: CameraWhitelistSync
    root: MultiService

    @property
    def store(self) -> Store | None:
        """The store as the recorder sees it: None until the plate list is loaded."""
        return self.store_service.store if self.plate_list.loaded else None

    async def start(self) -> None:
        self.root.startService()
        await self.store_service.when_open()
        await self.plate_list.when_loaded()

    async def stop(self) -> None:
        if self.root.running:
            await self.root.stopService()


def build_parts(config: GatewayConfig, clock: Clock) -> GatewayParts:
    """Build the parts for ``config`` on ``clock`` (as ``gateway.tap`` does)."""
    registry = CameraRegistry(
        clock,
        comet_hold=config.camera_server.comet_hold_seconds,
        missed_intervals=config.camera_server.offline_missed_intervals,
    )
    store_service = StoreService(
        global_reactor,  # takes no results from threads: the executor is inline
        config.gateway.state_dir,
        config.store,
        clock=clock,
        executor=InlineExecutor,
    )
    tz = config.gateway.tz
    codec = EntryCodec(tz=tz, lanes=config.lanes)
    plate_list = PlateList(
        clock,
        store_service,
        codec=codec,
        in_thread=inline_threads,
        unknown_plate=config.policy.unknown_plate,
        lane_overrides={
            lane.name: lane.unknown_plate for lane in config.lanes if lane.unknown_plate
        },
        max_plate_distance=config.policy.max_plate_distance,
        csv_path=config.policy.whitelist_csv,
        clock=clock,
    )
    bus = EventBus()
    registry.on_state_change(lambda camera, online: bus.publish("camera", camera.describe()))

    def open_store() -> Store | None:
        return store_service.store if plate_list.loaded else None

    recorder = StoreRecorder(
        open_store, bus=bus, clock=clock, outbox=config.upstream is not None
    )
    control = CameraControl(
        clock=clock, registry=registry, lanes=config.lanes, recorder=recorder, bus=bus
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
        settings=config.camera_server,
        lanes=config.lanes,
        registry=registry,
        gate=gate,
        recorder=recorder,
        control=control,
    )
    camera_sync = CameraWhitelistSync(
        clock=clock,
        registry=registry,
        snapshot=plate_list.snapshot,
        store=open_store,
        tz=tz,
        cameras={
            lane.camera: LaneListSettings(lane=lane.name, capacity=lane.camera_list_max)
            for lane in config.lanes
            if lane.sync_whitelist
        },
        in_thread=inline_threads,
    )
    plate_list.on_change(camera_sync.list_changed)
    camera_server.whitelist_result_listeners.append(camera_sync.whitelist_result)
    root = MultiService()
    # The registry first, so that it stops last (as in gateway.tap).
    for service in (registry, store_service, plate_list, camera_sync):
        service.setServiceParent(root)
    return GatewayParts(
        config=config,
        clock=clock,
        registry=registry,
        store_service=store_service,
        codec=codec,
        plate_list=plate_list,
        bus=bus,
        recorder=recorder,
        control=control,
        gate=gate,
        camera_server=camera_server,
        camera_sync=camera_sync,
        root=root,
    )
