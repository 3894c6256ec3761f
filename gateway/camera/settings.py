"""The ``[camera_server]`` settings: where cameras push, and how their connections are
held. Pure: no Twisted (endpoint strings are only checked for shape here and parsed where
the listeners are built)."""

from __future__ import annotations

import attrs

from gateway.schema import (
    ConfigError,
    Section,
    integer,
    network,
    number,
    setting,
    text,
    text_list,
)

__all__ = ["CAMERA_SERVER", "CameraServerSettings", "endpoint"]

#: A Twisted endpoint string (tcp:, ssl:, unix:, systemd:, ...): non-empty, one line.
endpoint = text(max_length=1024, no_spaces=True)


@attrs.frozen
class CameraServerSettings:
    """``allowed_cameras`` (serial numbers) and ``allowed_networks`` (CIDRs) are
    empty for any camera from any address. A camera that misses
    ``offline_missed_intervals`` heartbeats is offline; held comet polls are
    answered after ``comet_hold_seconds``.

    A request's headers must arrive within ``header_timeout_seconds`` and the
    whole request within ``request_timeout_seconds``; a body slower than
    ``min_body_bytes_per_second`` is cut; the bodies in memory at once are
    bounded by ``body_memory_budget_bytes`` (at least twice the body limit)."""

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
    # A camera gives up on an exchange after 5 s: a request still arriving
    # after this is not a camera's.
    request_timeout_seconds: float = setting(number(2, 600), default=15.0)
    min_body_bytes_per_second: int = setting(integer(0, 104_857_600), default=16_384)
    body_memory_budget_bytes: int = setting(
        integer(131_072, 17_179_869_184), default=67_108_864
    )

    def __attrs_post_init__(self) -> None:
        if self.request_timeout_seconds < self.header_timeout_seconds:
            raise ConfigError(
                "request_timeout_seconds",
                f"must be at least header_timeout_seconds ({self.header_timeout_seconds:g})",
            )
        if self.body_memory_budget_bytes < 2 * self.max_body_bytes:
            raise ConfigError(
                "body_memory_budget_bytes",
                f"must be at least twice max_body_bytes ({2 * self.max_body_bytes})",
            )


CAMERA_SERVER = Section(CameraServerSettings)
