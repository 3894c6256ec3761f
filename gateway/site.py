"""The site: the box itself (``[gateway]``) and its lanes (``[[lane]]``).

A lane is one camera, its barrier relay, its direction and what it shows; the
parts of the gateway that work per lane receive :class:`Lanes`, never the whole
configuration. Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal
from zoneinfo import ZoneInfo

import attrs

from gateway.display.settings import DISPLAY, DisplaySettings
from gateway.policy.settings import UNKNOWN_PLATE, UnknownPlate
from gateway.schema import (
    ConfigError,
    Section,
    boolean,
    describe,
    directory,
    integer,
    is_timezone,
    network,
    number,
    one_of,
    optional,
    setting,
    table,
    tables,
    text,
    text_list,
    timezone_name,
)
from gateway.serial.settings import SERIAL_BRIDGE, SerialBridgeSettings

__all__ = [
    "DEFAULT_STATE_DIR",
    "Direction",
    "HeartbeatMode",
    "LANE",
    "AREA",
    "AreaSettings",
    "LaneSettings",
    "Lanes",
    "OCCUPANCY",
    "OccupancySettings",
    "SITE",
    "SiteSettings",
    "UnknownPlate",
    "system_timezone",
]

DEFAULT_STATE_DIR = "./anpr-gateway-state"

Direction = Literal["in", "out"]
HeartbeatMode = Literal["auto", "comet", "common", "off"]


def default_gateway_id() -> str:
    """The host name, trimmed to what a gateway id may hold."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64]
    return cleaned or "anpr-gateway"


def system_timezone() -> str:
    """The machine's local IANA zone name if it can be told, else ``UTC``.

    Looks at ``TZ``, then ``/etc/timezone`` (Debian), then where
    ``/etc/localtime`` points. Only names ``zoneinfo`` knows are returned.
    """
    candidates: list[str] = []
    tz = os.environ.get("TZ", "").strip().lstrip(":")
    if tz:
        candidates.append(tz)
    try:
        with open("/etc/timezone", encoding="utf-8") as timezone_file:
            candidates.append(timezone_file.read().strip())
    except OSError:
        pass
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        target = ""
    marker = "/zoneinfo/"
    if marker in target:
        name = target.split(marker, 1)[1]
        for prefix in ("posix/", "right/"):
            name = name.removeprefix(prefix)
        candidates.append(name)
    for candidate in candidates:
        if candidate and not candidate.startswith("/") and is_timezone(candidate):
            return candidate
    return "UTC"


def _default_state_dir() -> str:
    return os.path.abspath(DEFAULT_STATE_DIR)


@attrs.frozen
class SiteSettings:
    """``[gateway]``: the box itself. ``state_dir`` is absolute; ``id`` names
    the gateway upstream; ``timezone`` is the site's, for validity times and
    the daily work."""

    state_dir: str = setting(directory, factory=_default_state_dir)
    id: str = setting(
        text(
            pattern=r"[A-Za-z0-9._-]{1,64}",
            rule="1-64 characters of A-Z, a-z, 0-9, \".\", \"_\", \"-\"",
        ),
        factory=default_gateway_id,
    )
    timezone: str = setting(timezone_name, factory=system_timezone)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


SITE = Section(SiteSettings)


@attrs.frozen
class LaneSettings:
    """``[[lane]]``: one camera, its barrier relay and its direction.

    ``camera`` is the camera's serial number as configured (matched without
    regard to case). ``unknown_plate`` is None when the lane follows
    ``[policy]``. The local blacklist wins over the cloud unless
    ``cloud_overrides_blacklist``; ``camera_list_max`` is the most rows synced
    into the camera (its model's capacity).
    """

    name: str = setting(text(max_length=64))
    camera: str = setting(text(max_length=128, no_spaces=True))
    direction: Direction = setting(one_of("in", "out"), default="in")
    barrier_channel: int = setting(integer(0, 3), default=0)
    heartbeat: HeartbeatMode = setting(
        one_of("auto", "comet", "common", "off"), default="auto"
    )
    unknown_plate: UnknownPlate | None = setting(optional(UNKNOWN_PLATE), default=None)
    sync_whitelist: bool = setting(boolean, default=True)
    ask_cloud: bool = setting(boolean, default=False)
    display: DisplaySettings | None = setting(optional(table(DISPLAY)), default=None)
    serial_bridge: SerialBridgeSettings | None = setting(
        optional(table(SERIAL_BRIDGE)), default=None
    )
    cloud_overrides_blacklist: bool = setting(boolean, default=False)
    camera_list_max: int = setting(integer(1, 200_000), default=10_000)
    # Where the lane's camera pushes from (an address or a network): a push
    # claiming its serial number from elsewhere is not taken as this lane's
    # camera. None: from anywhere (the protocol has no camera authentication).
    address: str | None = setting(optional(network), default=None)

    def __attrs_post_init__(self) -> None:
        # The bridge is known by its lane and camera in logs and status.
        if self.serial_bridge is not None and (
            self.serial_bridge.lane != self.name or self.serial_bridge.camera != self.camera
        ):
            bridge = attrs.evolve(self.serial_bridge, lane=self.name, camera=self.camera)
            object.__setattr__(self, "serial_bridge", bridge)


LANE = Section(LaneSettings)


def _lanes(lanes: Iterable[LaneSettings]) -> tuple[LaneSettings, ...]:
    return tuple(lanes)


@attrs.frozen
class Lanes:
    """The site's lanes, in configuration order, found by camera or by name.

    Names and cameras are unique regardless of case (the configuration
    refuses two that differ only in case), so a lane written ``entrance`` in a
    spreadsheet is the lane ``Entrance``.
    """

    lanes: tuple[LaneSettings, ...] = attrs.field(default=(), converter=_lanes)
    _by_camera: dict[str, LaneSettings] = attrs.field(init=False, eq=False, repr=False)
    _by_name: dict[str, LaneSettings] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_camera", {lane.camera.casefold(): lane for lane in self.lanes})
        object.__setattr__(self, "_by_name", {lane.name.casefold(): lane for lane in self.lanes})

    @classmethod
    def of_names(cls, *names: str) -> Lanes:
        """Lanes known only by name (each its own camera), for the plate list's tools."""
        return cls(LaneSettings(name=name, camera=f"lane-{number}") for number, name in enumerate(names))

    def __iter__(self) -> Iterator[LaneSettings]:
        return iter(self.lanes)

    def __len__(self) -> int:
        return len(self.lanes)

    def __getitem__(self, index: int) -> LaneSettings:
        return self.lanes[index]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(lane.name for lane in self.lanes)

    def for_camera(self, serialno: str) -> LaneSettings | None:
        """The lane whose camera has this serial number (case-insensitive)."""
        return self._by_camera.get(serialno.casefold())

    def named(self, name: str) -> LaneSettings | None:
        """The lane called ``name`` (case-insensitive)."""
        return self._by_name.get(name.casefold())

    def canonical(self, name: str) -> str | None:
        """The configured spelling of lane ``name`` (matched without regard
        to case or surrounding spaces), or None when no lane has that name."""
        lane = self._by_name.get(name.strip().casefold())
        return lane.name if lane is not None else None

    def describe(self) -> str:
        """The lane names for an error message."""
        return ", ".join(self.names) or "none configured"


_LANE_NAMES = text_list(item=text(max_length=64), what="lane")


@attrs.frozen
class AreaSettings:
    """``[[occupancy.areas]]``: a part of the site with spaces of its own,
    counted on the passages of its ``lanes``."""

    name: str = setting(text(max_length=64))
    lanes: tuple[str, ...] = setting(text_list(item=text(max_length=64), min_items=1, what="lane"))
    capacity: int | None = setting(optional(integer(0, 1_000_000)), default=None)


AREA = Section(AreaSettings)


@attrs.frozen
class OccupancySettings:
    """``[occupancy]``: the site's spaces and how cars inside are counted.

    ``capacity`` None: the free spaces are not known (``{free}`` keeps the
    display's own ``free_spaces``). ``lanes`` are the lanes whose passages
    count for the whole site (None: every lane). An entry still open after
    ``max_stay_days`` is flagged as never closed; ``max_inside`` bounds the
    open sessions kept per scope.
    """

    capacity: int | None = setting(optional(integer(0, 1_000_000)), default=None)
    lanes: tuple[str, ...] | None = setting(optional(_LANE_NAMES), default=None)
    areas: tuple[AreaSettings, ...] = setting(tables(AREA, unique="name"), default=())
    max_stay_days: float = setting(number(1, 3650), default=30.0)
    max_inside: int = setting(integer(10, 1_000_000), default=100_000)


OCCUPANCY = Section(OccupancySettings)


LANE_KEY = "lane"


def parse_lanes(value: object) -> Lanes:
    """``[[lane]]`` tables: each a lane, no two with one name or one camera."""
    if isinstance(value, Mapping):
        raise ConfigError(
            LANE_KEY, "must be an array of tables (write [[lane]], not [lane]), got a table"
        )
    if not isinstance(value, (list, tuple)):
        raise ConfigError(LANE_KEY, f"must be an array of tables ([[lane]]), got {describe(value)}")
    lanes: list[LaneSettings] = []
    for number_from_one, item in enumerate(value, start=1):
        path = f"{LANE_KEY}[{number_from_one}]"
        lane = LANE.parse(item, path)
        for other in lanes:
            if other.name.casefold() == lane.name.casefold():
                raise ConfigError(
                    f"{path}.name", f"lane name {describe(lane.name)} is already used by another lane"
                )
            if other.camera.casefold() == lane.camera.casefold():
                raise ConfigError(
                    f"{path}.camera",
                    f"camera {describe(lane.camera)} is already in lane {describe(other.name)}",
                )
        lanes.append(lane)
    return Lanes(lanes)
