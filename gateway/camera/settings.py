"""The ``[camera_server]`` settings: where cameras push, and how their connections are
held. Pure: no Twisted (endpoint strings are only checked for shape here and parsed where
the listeners are built)."""

from __future__ import annotations

import attrs

from gateway.schema import Section, integer, network, number, setting, text, text_list

__all__ = ["CAMERA_SERVER", "CameraServerSettings", "endpoint"]

#: A Twisted endpoint string (tcp:, ssl:, unix:, systemd:, ...): non-empty, one line.
endpoint = text(max_length=1024, no_spaces=True)


@attrs.frozen
class CameraServerSettings:
    """``allowed_cameras`` (serial numbers) and ``allowed_networks`` (CIDRs) are
    empty for any camera from any address. A camera that misses
    ``offline_missed_intervals`` heartbeats is offline; held comet polls are
    answered after ``comet_hold_seconds``."""

    listen: tuple[str, ...] = setting(
        text_list(item=endpoint, min_items=1, what="endpoint"), default=("tcp:8080",)
    )
    # Below the camera's ~30 s request timeout, or held polls fail.
    comet_hold_seconds: float = setting(number(1, 28), default=20.0)
    max_body_bytes: int = setting(integer(65_536, 67_108_864), default=8_388_608)
    # What an event's raw record keeps of a push (gateway.store.bounded).
    max_record_bytes: int = setting(integer(4_096, 1_048_576), default=65_536)
    max_field_chars: int = setting(integer(64, 1_048_576), default=4_096)
    max_field_items: int = setting(integer(8, 100_000), default=256)
    max_field_nesting: int = setting(integer(4, 64), default=16)
    offline_missed_intervals: int = setting(integer(1, 100), default=3)
    idle_timeout_seconds: int = setting(integer(5, 3600), default=75)
    allowed_cameras: tuple[str, ...] = setting(
        text_list(item=text(max_length=128, no_spaces=True), what="serial number"), default=()
    )
    allowed_networks: tuple[str, ...] = setting(
        text_list(item=network, what="network"), default=()
    )
    header_timeout_seconds: float = setting(number(1, 120), default=10.0)
    max_connections: int = setting(integer(16, 100_000), default=1024)
    max_connections_per_address: int = setting(integer(2, 10_000), default=32)


CAMERA_SERVER = Section(CameraServerSettings)
