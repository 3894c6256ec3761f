"""Typed settings of the gateway's own serial ports (``[serial.NAME]``) and of a lane's
camera serial bridge (``[lane.serial_bridge]``). Pure: no Twisted."""

from __future__ import annotations

import attrs

from gateway.schema import (
    ConfigError,
    Section,
    boolean,
    describe,
    integer,
    number,
    one_of,
    setting,
    text,
)

__all__ = [
    "PARITIES",
    "SERIAL_BRIDGE",
    "SERIAL_PORT",
    "STOPBITS",
    "SerialBridgeSettings",
    "SerialPortSettings",
]

#: Parity letters as pyserial spells them: none, even, odd, mark, space.
PARITIES = ("N", "E", "O", "M", "S")
STOPBITS = (1.0, 1.5, 2.0)


def _stopbits(value: object, path: str) -> float:
    checked: float = number(1, 2)(value, path)
    if checked not in STOPBITS:
        raise ConfigError(path, f"must be 1, 1.5 or 2, got {describe(value)}")
    return checked


@attrs.frozen
class SerialPortSettings:
    """One named port (``[serial.NAME]``; ``name`` is the table's name).

    ``device`` is the path (``/dev/ttyUSB0``, or better a stable udev link such as
    ``/dev/serial/by-id/...``). ``gap_ms`` is the silence left after each frame's
    transmission time; ``max_queued_frames`` bounds the queue (newest kept).
    ``retry_min_seconds`` / ``retry_max_seconds`` bound the reopening back-off.
    ``exclusive`` takes an advisory lock on the device so that two programs never
    interleave frames on one bus.
    """

    name: str = setting(text(max_length=64), key=False)
    device: str = setting(text(max_length=4096))
    baudrate: int = setting(integer(50, 4_000_000), default=9600)
    bytesize: int = setting(integer(5, 8), default=8)
    parity: str = setting(one_of(*PARITIES), default="N")
    stopbits: float = setting(_stopbits, default=1.0)
    gap_ms: int = setting(integer(0, 10_000), default=50)
    max_queued_frames: int = setting(integer(1, 4096), default=16)
    retry_min_seconds: float = setting(number(0.01, 3600), default=0.5)
    retry_max_seconds: float = setting(number(0.01, 3600), default=10.0)
    exclusive: bool = setting(boolean, default=True)

    def __attrs_post_init__(self) -> None:
        if self.retry_max_seconds < self.retry_min_seconds:
            raise ConfigError("retry_max_seconds", "must not be below retry_min_seconds")

    @property
    def bits_per_byte(self) -> float:
        """Bits on the wire per byte: start bit, data bits, parity bit, stop bits."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    def transmit_seconds(self, byte_count: int) -> float:
        """How long ``byte_count`` bytes take on the wire at this baud rate."""
        return byte_count * self.bits_per_byte / self.baudrate


SERIAL_PORT = Section(SerialPortSettings)


@attrs.frozen
class SerialBridgeSettings:
    """``[lane.serial_bridge]`` of one lane.

    ``lane`` and ``camera`` are the lane's (filled in from the lane); ``camera_channel`` is
    the camera serial port that is bridged (pushes from its other port are not), also the
    port the camera writes the answers to; ``max_pending_bytes`` bounds what waits for the
    camera (the newest bytes are kept).
    """

    to_port: str = setting(text(max_length=64))
    camera_channel: int = setting(integer(0, 1), default=0)
    max_pending_bytes: int = setting(integer(1, 1 << 20), default=4096)
    lane: str = setting(text(max_length=64), default="", key=False)
    camera: str = setting(text(max_length=128), default="", key=False)


SERIAL_BRIDGE = Section(SerialBridgeSettings)
