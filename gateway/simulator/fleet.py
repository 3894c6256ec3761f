"""Many simulated cameras in one process."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater

from gateway.simulator.camera import EventSink, SimulatedCamera
from gateway.simulator.config import CameraConfig
from gateway.simulator.report import fleet_report

__all__ = ["CameraFleet"]

# How often the fleet looks whether its cameras are done.
_POLL = 0.05


class CameraFleet:
    """A set of cameras started, watched and stopped together."""

    def __init__(
        self, reactor: Any, configs: Iterable[CameraConfig], on_event: EventSink | None = None
    ) -> None:
        self._reactor = reactor
        self.cameras = [SimulatedCamera(reactor, config, on_event) for config in configs]
        self._started = 0.0
        self._ended: float | None = None
        self._stopped: Deferred[Any] | None = None

    def start(self) -> None:
        """Start every camera."""
        self._started = self._reactor.seconds()
        for camera in self.cameras:
            camera.start()

    def stop(self) -> Deferred[Any]:
        """Stop every camera (idempotent); fires when connections are closed."""
        if self._stopped is None:
            self._ended = self._reactor.seconds()
            self._stopped = DeferredList(
                [camera.stop() for camera in self.cameras], consumeErrors=True
            )
        return self._stopped

    @property
    def has_work(self) -> bool:
        """Whether any camera has plates, IO events or serial input to send."""
        return any(
            camera.config.plates or camera.config.io_events or camera.config.serial_in
            for camera in self.cameras
        )

    @property
    def drained(self) -> bool:
        return all(camera.drained for camera in self.cameras)

    @property
    def produced(self) -> bool:
        return all(camera.produced for camera in self.cameras)

    async def run(self, duration: float | None = None, drain_timeout: float | None = None) -> bool:
        """Run until done; True if everything was delivered.

        With work to do, "done" is every camera drained (plates read, pushes
        answered, offline records uploaded, ParkingCam plates confirmed), or
        ``drain_timeout`` seconds after the last plate was read, or
        ``duration`` seconds after the start, whichever comes first. With no
        work (heartbeats only), it runs for ``duration`` (forever if ``None``).
        """
        self.start()
        deadline = None if duration is None else self._started + duration
        drain_deadline: float | None = None
        while True:
            now = self._reactor.seconds()
            if deadline is not None and now >= deadline:
                break
            if self.has_work:
                if self.drained:
                    break
                if self.produced and drain_timeout is not None:
                    if drain_deadline is None:
                        drain_deadline = now + drain_timeout
                    elif now >= drain_deadline:
                        break
            await deferLater(self._reactor, _POLL)
        drained = self.drained
        await self.stop()
        return drained

    def report(self) -> dict[str, Any]:
        """The fleet's JSON report (see :func:`gateway.simulator.report.fleet_report`)."""
        ended = self._ended if self._ended is not None else self._reactor.seconds()
        return fleet_report((camera.report() for camera in self.cameras), self._started, ended)
