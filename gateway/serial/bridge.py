"""The camera serial bridge: a device on a camera's serial port, relayed to a gateway port.

Some lanes have a device (a ticket machine, a card reader) wired to the camera's serial
port. The camera pushes what it receives there as ``SerialData``; the bridge writes those
bytes, byte for byte, to a serial port of the gateway (``[lane.serial_bridge] to_port``),
and collects what that port answers into a per-camera buffer, to be written back by the
camera on its next reply (``serialData``).

Camera firmware cuts ``SerialData`` at the first NUL byte while ``dataLen`` keeps the true
length (PROTOCOL.md section 2.2). The bridge forwards what arrived and logs the loss; it
never pads the missing bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.protocol.messages import SerialData
from gateway.serial.ports import SerialPorts
from gateway.serial.settings import SerialBridgeSettings

__all__ = ["BridgeStatus", "PendingCallback", "SerialBridge"]

log = Logger()

#: How often a camera's truncated pushes are reported at most (the rest are counted).
TRUNCATION_LOG_INTERVAL_SECONDS = 60.0


@attrs.frozen
class BridgeStatus:
    """Counters of one bridge, for the status page."""

    lane: str
    camera: str
    port: str
    bytes_to_port: int
    pushes_truncated: int
    bytes_from_port: int
    bytes_pending: int
    bytes_dropped: int

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


#: ``callback(camera serial number)``: bytes are waiting for that camera.
PendingCallback = Callable[[str], None]


@attrs.define(eq=False)
class _Bridge:
    settings: SerialBridgeSettings
    pending: bytearray = attrs.Factory(bytearray)
    bytes_to_port: int = 0
    pushes_truncated: int = 0
    bytes_from_port: int = 0
    bytes_dropped: int = 0
    truncation_logged_at: float | None = None
    truncations_unlogged: int = 0
    overflowing: bool = False
    settling: IDelayedCall | None = None


class SerialBridge(Service):
    """Relays camera serial data to gateway serial ports and back.

    A device answers in pieces as the bytes trickle in at its baud rate: the camera is told
    about waiting bytes ``settle_seconds`` after the first of them arrives, so one answer
    usually travels in one reply.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        ports: SerialPorts,
        bridges: Sequence[SerialBridgeSettings],
        settle_seconds: float = 0.05,
    ) -> None:
        self._clock = clock
        self._settle_seconds = settle_seconds
        self._ports = ports
        self._by_camera: dict[str, _Bridge] = {}
        self._pending_callbacks: list[PendingCallback] = []
        used_ports: dict[str, str] = {}
        for settings in bridges:
            if settings.to_port not in ports:
                raise ValueError(
                    f"lane {settings.lane!r}: serial bridge port {settings.to_port!r} "
                    "is not configured"
                )
            if settings.to_port in used_ports:
                # Bytes read from a port could not be told apart between two cameras.
                raise ValueError(
                    f"lanes {used_ports[settings.to_port]!r} and {settings.lane!r} "
                    f"both bridge to serial port {settings.to_port!r}"
                )
            key = settings.camera.casefold()
            if key in self._by_camera:
                raise ValueError(f"camera {settings.camera!r} has two serial bridges")
            used_ports[settings.to_port] = settings.lane
            bridge = _Bridge(settings)
            self._by_camera[key] = bridge
            ports.on_receive(settings.to_port, self._reader(bridge))

    def on_pending(self, callback: PendingCallback) -> None:
        """Call ``callback(camera)`` when bytes from the port wait for that camera
        (``settle_seconds`` after the first of them arrived, once until drained)."""
        self._pending_callbacks.append(callback)

    def from_camera(self, message: SerialData, camera: str | None = None) -> bool:
        """Relay a camera's ``SerialData`` push to its bridged port.

        ``camera`` is the camera's key as the registry knows it (defaults to the push's
        serial number). Returns False when the push is not for a bridge (no bridge for
        that camera, or from its other serial port).
        """
        key = (camera or message.serialno or "").casefold()
        bridge = self._by_camera.get(key)
        if bridge is None or message.serial_channel != bridge.settings.camera_channel:
            return False
        if message.truncated:
            self._truncated(bridge, message)
        if message.data:
            self._ports.send(bridge.settings.to_port, message.data)
            bridge.bytes_to_port += len(message.data)
        return True

    def drain(self, camera: str) -> list[tuple[int, bytes]]:
        """Take the bytes waiting for ``camera`` as ``(serial channel, bytes)`` items for
        a reply's ``serialData`` (``PlateReply.serial``, ``HeartbeatReply.serial``,
        ``serial_data_reply``). Empty when nothing waits."""
        bridge = self._by_camera.get(camera.casefold())
        if bridge is None or not bridge.pending:
            return []
        data = bytes(bridge.pending)
        bridge.pending.clear()
        bridge.overflowing = False
        return [(bridge.settings.camera_channel, data)]

    def status(self) -> list[BridgeStatus]:
        return [
            BridgeStatus(
                lane=bridge.settings.lane,
                camera=bridge.settings.camera,
                port=bridge.settings.to_port,
                bytes_to_port=bridge.bytes_to_port,
                pushes_truncated=bridge.pushes_truncated,
                bytes_from_port=bridge.bytes_from_port,
                bytes_pending=len(bridge.pending),
                bytes_dropped=bridge.bytes_dropped,
            )
            for bridge in self._by_camera.values()
        ]

    # -- internals --------------------------------------------------------

    def _reader(self, bridge: _Bridge) -> Callable[[bytes], None]:
        def received(data: bytes) -> None:
            self._from_port(bridge, data)

        return received

    def _from_port(self, bridge: _Bridge, data: bytes) -> None:
        was_empty = not bridge.pending
        bridge.bytes_from_port += len(data)
        bridge.pending += data
        excess = len(bridge.pending) - bridge.settings.max_pending_bytes
        if excess > 0:
            # The camera is not collecting (offline, or no replies): keep the newest.
            del bridge.pending[:excess]
            bridge.bytes_dropped += excess
            if not bridge.overflowing:
                bridge.overflowing = True
                log.warn(
                    "Serial bridge of lane {lane}: more than {limit} bytes from port {port} "
                    "wait for camera {camera}; dropping the oldest",
                    lane=bridge.settings.lane,
                    limit=bridge.settings.max_pending_bytes,
                    port=bridge.settings.to_port,
                    camera=bridge.settings.camera,
                )
        if was_empty and bridge.settling is None:
            bridge.settling = self._clock.callLater(self._settle_seconds, self._notify, bridge)

    def _notify(self, bridge: _Bridge) -> None:
        bridge.settling = None
        if not bridge.pending:
            return
        for callback in list(self._pending_callbacks):
            try:
                callback(bridge.settings.camera)
            except Exception:
                log.failure(
                    "Serial bridge of lane {lane}: notifying waiting bytes failed",
                    lane=bridge.settings.lane,
                )

    def stopService(self) -> Any:
        # Waiting bytes stay for a reply; only the pending announcements are cancelled.
        for bridge in self._by_camera.values():
            if bridge.settling is not None and bridge.settling.active():
                bridge.settling.cancel()
            bridge.settling = None
        return super().stopService()

    def _truncated(self, bridge: _Bridge, message: SerialData) -> None:
        bridge.pushes_truncated += 1
        now = self._clock.seconds()
        last = bridge.truncation_logged_at
        if last is not None and now - last < TRUNCATION_LOG_INTERVAL_SECONDS:
            bridge.truncations_unlogged += 1
            return
        log.warn(
            "Camera {camera} sent {received} of {declared} serial bytes (its firmware cuts "
            "serial data at a NUL byte); forwarded what arrived to port {port}, nothing "
            "added{more}",
            camera=bridge.settings.camera,
            received=len(message.data),
            declared=message.declared_length,
            port=bridge.settings.to_port,
            more=(
                f" ({bridge.truncations_unlogged} more truncated pushes since the last report)"
                if bridge.truncations_unlogged
                else ""
            ),
        )
        bridge.truncation_logged_at = now
        bridge.truncations_unlogged = 0
