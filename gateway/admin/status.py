"""The admin listener's read-only status API: what the gateway is doing.

It shows no secret (camera passwords stay in memory, unexposed) and binds to
localhost by default.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from werkzeug.exceptions import MethodNotAllowed, NotFound
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from gateway import __version__
from gateway.camera.registry import CameraRegistry
from gateway.config import GatewayConfig


def _json(request: IRequest, value: Any) -> bytes:
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(value, ensure_ascii=False, indent=1).encode()


class StatusApi:
    """``/api/status`` and ``/api/cameras``."""

    app = Klein()

    def __init__(self, *, clock: IReactorTime, config: GatewayConfig, registry: CameraRegistry):
        self._clock = clock
        self._config = config
        self._registry = registry
        self._started = clock.seconds()

    def resource(self) -> IResource:
        return self.app.resource()

    @app.route("/api/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        cameras = list(self._registry)
        return _json(
            request,
            {
                "version": __version__,
                "gateway": self._config.gateway.id,
                "uptime_seconds": round(self._clock.seconds() - self._started, 1),
                "cameras": {
                    "known": len(cameras),
                    "online": sum(1 for c in cameras if c.online),
                    "comet_polls_held": self._registry.held_polls(),
                },
                "lanes": [
                    {
                        "name": lane.name,
                        "camera": lane.camera,
                        "direction": lane.direction,
                        "barrier_channel": lane.barrier_channel,
                    }
                    for lane in self._config.lanes
                ],
            },
        )

    @app.route("/api/cameras", methods=["GET"])
    def cameras(self, request: IRequest) -> bytes:
        return _json(request, {"cameras": [camera.describe() for camera in self._registry]})

    @app.handle_errors(NotFound, MethodNotAllowed)
    def _not_here(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        request.setResponseCode(error.code)
        return _json(request, {"error": error.name.lower()})
