"""The gateway's camera-side parts in memory, built by the composition root's
own builders (``gateway.tap.build_core``, ``build_devices``, ``build_cameras``):
the camera registry, the store, the plate list, the gate, the recorder, command
control, the displays, the camera server, the camera whitelist sync and the
occupancy, with the bus between them.

Everything runs on a ``Clock``; the store runs its SQLite work at once (an
inline executor) and the plate list and camera sync their bulk work too, so
nothing waits for a thread or for the reactor (``gateway.tap.Seams``). The
end-to-end tests start the real service tree (``support.start_gateway``).
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
from gateway.camera.whitelist_sync import CameraWhitelistSync
from gateway.config import GatewayConfig, parse_config
from gateway.gate import Gate
from gateway.occupancy import Occupancy
from gateway.platelist import PlateList
from gateway.policy.codec import EntryCodec
from gateway.store import Store, StoreService
from gateway.tap import (
    Cameras,
    Core,
    Devices,
    Seams,
    build_cameras,
    build_core,
    build_devices,
    build_occupancy,
)
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
    core: Core
    devices: Devices
    cameras: Cameras
    occupancy: Occupancy

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
    """Build the parts for ``config`` on ``clock`` with the composition root's
    own builders, time on the Clock, the store's work and the bulk work run
    at once."""
    root = MultiService()
    seams = Seams(clock=clock, store_executor=InlineExecutor, in_thread=inline_threads)
    core = build_core(root, global_reactor, config, seams)
    devices = build_devices(root, core, config.lanes, config.serial, config.gateway.tz)
    cameras = build_cameras(root, core, devices, config)
    occupancy = build_occupancy(root, core, devices, config)
    return GatewayParts(
        config=config,
        clock=clock,
        registry=core.registry,
        store_service=core.store,
        codec=core.codec,
        plate_list=core.plate_list,
        bus=core.bus,
        recorder=core.recorder,
        control=cameras.control,
        gate=cameras.gate,
        camera_server=cameras.server,
        camera_sync=cameras.sync,
        root=root,
        core=core,
        devices=devices,
        cameras=cameras,
        occupancy=occupancy,
    )
