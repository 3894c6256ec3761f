"""The camera simulator against the gateway on loopback: a test case that
starts simulated cameras pointed at the running gateway, and reads back what
the store kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.config import CameraConfig
from gateway.store import EventType
from support import RunningGateway
from support.gateway import GatewayTestCase

VZENITH = "d85b1269-8f942256"
PARKINGCAM = "QFX2182310150262"


class SimulatorTestCase(GatewayTestCase):
    async def until(self, condition: Callable[[], Any], seconds: float = 10.0, what: str = "") -> None:
        """Wait (bounded) until ``condition()`` is true."""
        for _ in range(int(seconds / 0.02)):
            if condition():
                return
            await deferLater(reactor, 0.02, lambda: None)
        self.fail(f"timed out waiting for {what or condition}")

    def camera(self, gateway: RunningGateway | None = None, **settings: Any) -> SimulatedCamera:
        port = (gateway or self.gateway).camera_port
        settings.setdefault("serialno", VZENITH)
        settings.setdefault("servers", (f"http://127.0.0.1:{port}",))
        camera = SimulatedCamera(reactor, CameraConfig(**settings))
        camera.start()
        self.addCleanup(camera.stop)
        return camera

    async def plate_events(self) -> list[Any]:
        """Every plate event, newest first (paging through the store)."""
        store = self.gateway.store
        events: list[Any] = []
        before = None
        while True:
            page = await store.recent_events(limit=1000, before_seq=before, type=EventType.PLATE)
            events.extend(page)
            if len(page) < 1000:
                return events
            before = page[-1].seq
