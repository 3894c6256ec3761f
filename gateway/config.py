"""TOML configuration -> typed, validated, frozen values.

The whole file is checked before the reactor starts, so a typo or an out-of-range
value stops the gateway with one clear line (``key path: reason``) instead of
surfacing hours later at a lane.

Each section is described by one declarative table of :class:`Key` entries built
from a small set of reusable validators (:func:`integer`, :func:`number`,
:func:`one_of`, :func:`text`, :func:`text_list`, ...). Adding a section means
writing an attrs class, its table, and one entry in ``_SECTIONS``.

Array items are numbered from 1 in error paths, the way an installer counts the
``[[lane]]`` blocks in the file: ``lane[1]`` is the first lane,
``camera_server.listen[2]`` the second listener.

This module knows nothing of Twisted; endpoint strings are only checked for
shape here and parsed where the listeners are built.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
import socket
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from gateway.admin.settings import (
    DEFAULT_SESSION_HOURS,
    MAX_SESSION_HOURS,
    MIN_SESSION_HOURS,
    AdminToken,
    AdminUser,
    SettingError,
    tokens_from_toml,
    users_from_toml,
)
from gateway.policy.lanes import Lanes
from gateway.display.templates import MESSAGE_KEYS, validate_template
from gateway.upstream.settings import UpstreamConfig, UpstreamSettingsError

__all__ = [
    "AdminConfig",
    "CameraServerConfig",
    "ConfigError",
    "DEFAULT_STATE_DIR",
    "GatewayConfig",
    "GatewaySection",
    "LaneConfig",
    "PolicyConfig",
    "StoreSection",
    "UpstreamSection",
    "SerialPortConfig",
    "DisplayConfig",
    "MessageConfig",
    "SerialBridgeConfig",
    "load_config",
    "main",
    "parse_config",
]

DEFAULT_STATE_DIR = "./anpr-gateway-state"
DEFAULTS_SOURCE = "<built-in defaults>"

UnknownPlate = Literal["deny", "allow"]
Direction = Literal["in", "out"]
HeartbeatMode = Literal["auto", "comet", "common", "off"]


class ConfigError(Exception):
    """A configuration problem, located by key path.

    ``path`` is a dotted key path such as ``camera_server.comet_hold_seconds`` or
    ``lane[1].barrier_channel`` (array items numbered from 1), or the file name
    when the file itself cannot be read or is not valid TOML. ``reason`` says
    what is wrong and what was found. ``source`` is the file (or
    ``<built-in defaults>``) the error is in, when known.
    """

    def __init__(self, path: str, reason: str, source: str | None = None) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason
        self.source = source

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def full_message(self) -> str:
        """The message prefixed with the file it is in, for a human at a console."""
        if self.source is None or self.source == self.path:
            return str(self)
        return f"{self.source}: {self}"


# --------------------------------------------------------------------------
# Describing values in messages, TOML-style, so the installer recognises what
# they typed: strings in double quotes, booleans lower-case.


def describe(value: object) -> str:
    """Render a value the way it would look in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an empty array" if not value else "an array"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return type(value).__name__


def _bound(value: float) -> str:
    # 1.0 reads better as 1 in a range message.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------
# Field validators. Each takes (value, path) and returns the converted value or
# raises ConfigError(path, reason).

Validator = Callable[[object, str], Any]


def integer(minimum: int, maximum: int) -> Validator:
    """An integer in ``minimum..maximum`` (inclusive). Booleans are not integers."""

    def check(value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {describe(value)}")
        if not minimum <= value <= maximum:
            raise ConfigError(path, f"must be between {minimum} and {maximum}, got {value}")
        return value

    return check


def number(minimum: float, maximum: float) -> Validator:
    """An integer or float in ``minimum..maximum`` (inclusive), stored as float."""

    def check(value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"must be a number, got {describe(value)}")
        converted = float(value)
        # nan fails every comparison, so it is rejected here too.
        if not minimum <= converted <= maximum:
            raise ConfigError(
                path,
                f"must be between {_bound(minimum)} and {_bound(maximum)}, got {describe(value)}",
            )
        return converted

    return check


def boolean(value: object, path: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {describe(value)}")
    return value


def one_of(*choices: str) -> Validator:
    """One of a fixed set of strings (case-sensitive, as TOML keys are)."""
    listed = ", ".join(describe(choice) for choice in choices)

    def check(value: object, path: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, one of {listed}, got {describe(value)}")
        if value not in choices:
            raise ConfigError(path, f"must be one of {listed}, got {describe(value)}")
        return value

    return check


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def text(
    *,
    max_length: int = 256,
    pattern: str | None = None,
    rule: str = "",
    no_spaces: bool = False,
) -> Validator:
    """A non-empty single-line string.

    ``pattern`` (a full-match regular expression) with ``rule`` (its
    human-readable wording) restricts the characters further; ``no_spaces``
    rejects any whitespace, for identifiers pasted from elsewhere.
    """
    compiled = re.compile(pattern) if pattern is not None else None

    def check(value: object, path: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {describe(value)}")
        if not value.strip():
            raise ConfigError(path, "must not be empty")
        if compiled is not None:
            if compiled.fullmatch(value) is None:
                raise ConfigError(path, f"must be {rule}, got {describe(value)}")
            return value
        if len(value) > max_length:
            raise ConfigError(
                path, f"must be at most {max_length} characters, got {len(value)}"
            )
        if _CONTROL_CHARACTERS.search(value):
            raise ConfigError(path, f"must not contain control characters, got {describe(value)}")
        if no_spaces and any(character.isspace() for character in value):
            raise ConfigError(path, f"must not contain spaces, got {describe(value)}")
        if value != value.strip():
            raise ConfigError(
                path, f"must not start or end with spaces, got {describe(value)}"
            )
        return value

    return check


def text_list(*, item: Validator, min_items: int = 0, what: str = "item") -> Validator:
    """An array of strings, each checked by ``item``, without repeats.

    Items are reported as ``path[n]`` numbered from 1.
    """

    def check(value: object, path: str) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be an array of strings, got {describe(value)}")
        if len(value) < min_items:
            plural = "" if min_items == 1 else "s"
            raise ConfigError(
                path, f"must list at least {min_items} {what}{plural}, got {describe(value)}"
            )
        items: list[str] = []
        for number_from_one, element in enumerate(value, start=1):
            item_path = f"{path}[{number_from_one}]"
            checked = item(element, item_path)
            if checked in items:
                first = items.index(checked) + 1
                raise ConfigError(
                    item_path, f"{describe(checked)} is already listed at {path}[{first}]"
                )
            items.append(checked)
        return tuple(items)

    return check


def directory(value: object, path: str) -> str:
    """A directory path; a relative one is resolved against the current directory now,
    so a later chdir (twistd may daemonise) cannot move the state."""
    checked: str = text(max_length=4096)(value, path)
    return os.path.abspath(os.path.expanduser(checked))


def network(value: object, path: str) -> str:
    """An IP network in CIDR form (``192.168.1.0/24``, ``10.0.0.5``, ``fd00::/8``)."""
    checked: str = text(max_length=64, no_spaces=True)(value, path)
    try:
        return str(ipaddress.ip_network(checked, strict=False))
    except ValueError:
        raise ConfigError(
            path, f"must be a network such as \"192.168.1.0/24\", got {describe(checked)}"
        ) from None


def existing_file(value: object, path: str) -> str:
    """A path to a file that exists now, made absolute against the current
    directory (a typo is caught at start, not when the file is first read)."""
    checked: str = text(max_length=4096)(value, path)
    resolved = os.path.abspath(os.path.expanduser(checked))
    if not os.path.isfile(resolved):
        raise ConfigError(path, f"no such file: {resolved}")
    return resolved


def timezone_name(value: object, path: str) -> str:
    """An IANA time zone name known to this machine (``Europe/Paris``, ``UTC``)."""
    checked: str = text(max_length=256)(value, path)
    if not _is_timezone(checked):
        raise ConfigError(
            path, f"must be an IANA time zone name such as \"Europe/Paris\", got {describe(checked)}"
        )
    return checked


def _is_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


# --------------------------------------------------------------------------
# Declarative section tables.


class _Required:
    """Marker for a key without a default."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

T = TypeVar("T")


@attrs.frozen
class Key:
    """One key of a section: its name, validator and default.

    ``default_factory`` is called at load time, for defaults that depend on the
    machine (host name, local time zone). A key whose default is ``None`` is
    optional and stays ``None`` when absent.
    """

    name: str
    check: Validator
    default: Any = REQUIRED
    default_factory: Callable[[], Any] | None = None

    def value_in(self, table: Mapping[str, Any], path: str) -> Any:
        """The validated value of this key in ``table`` (or its default)."""
        key_path = f"{path}.{self.name}" if path else self.name
        if self.name in table:
            return self.check(table[self.name], key_path)
        if self.default_factory is not None:
            return self.default_factory()
        if self.default is REQUIRED:
            raise ConfigError(key_path, "missing required key")
        return self.default


@attrs.frozen
class Section(Generic[T]):
    """A table of the file: its keys, and the attrs class it becomes."""

    build: Callable[..., T]
    keys: tuple[Key, ...]

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)

    def parse(self, table: object, path: str) -> T:
        """Check ``table`` against this section and build its value."""
        if not isinstance(table, Mapping):
            raise ConfigError(path, f"must be a table, got {describe(table)}")
        # Unknown keys first: a misspelt key usually explains whatever else fails.
        reject_unknown_keys(table, self.key_names, path)
        return self.build(**{key.name: key.value_in(table, path) for key in self.keys})


def reject_unknown_keys(table: Mapping[str, Any], known: Sequence[str], path: str) -> None:
    """Raise for the first key of ``table`` not in ``known``."""
    for name in table:
        if name not in known:
            key_path = f"{path}.{name}" if path else str(name)
            raise ConfigError(key_path, f"unknown key (known: {', '.join(known)})")


# --------------------------------------------------------------------------
# The configuration values.


def _default_gateway_id() -> str:
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
        if candidate and not candidate.startswith("/") and _is_timezone(candidate):
            return candidate
    return "UTC"


@attrs.frozen
class GatewaySection:
    """``[gateway]``: the box itself."""

    state_dir: str  # absolute
    id: str
    timezone: str


@attrs.frozen
class CameraServerConfig:
    """``[camera_server]``: where cameras push, and how their connections are held."""

    listen: tuple[str, ...]
    comet_hold_seconds: float
    max_body_bytes: int
    offline_missed_intervals: int
    idle_timeout_seconds: int
    allowed_cameras: tuple[str, ...] = ()  # serial numbers; empty = any camera
    allowed_networks: tuple[str, ...] = ()  # CIDRs; empty = any address
    header_timeout_seconds: float = 10.0
    max_connections: int = 1024
    max_connections_per_address: int = 32


@attrs.frozen
class AdminConfig:
    """``[admin]``: the staff web page and API. No listeners means it is off."""

    listen: tuple[str, ...]
    users: tuple[AdminUser, ...] = ()
    tokens: tuple[AdminToken, ...] = ()
    metrics_public: bool = False
    session_hours: float = DEFAULT_SESSION_HOURS


@attrs.frozen
class PolicyConfig:
    """``[policy]``: the gate decision when the cloud does not answer."""

    unknown_plate: UnknownPlate
    duplicate_window_seconds: float
    max_plate_distance: int
    whitelist_csv: str | None  # absolute path, or None


@attrs.frozen
class StoreSection:
    """``[store]``: how long and how much of the images the SD card keeps."""

    image_retention_days: int
    image_max_bytes: int


@attrs.frozen
class SerialPortConfig:
    """``[serial.NAME]``: one of the gateway's own serial ports (RS-485 adapters)."""

    name: str
    device: str
    baudrate: int
    bytesize: int
    parity: str
    stopbits: float
    gap_ms: int
    max_queued_frames: int
    retry_min_seconds: float
    retry_max_seconds: float
    exclusive: bool


@attrs.frozen
class MessageConfig:
    """A message of a lane display: each field None when not set (the
    built-in message's value stays)."""

    lines: tuple[str, ...] | None = None
    voice: str | None = None  # "" = silent
    colour: str | None = None  # "RRGGBB"


@attrs.frozen
class DisplayConfig:
    """``[lane.display]``: the lane's LED display and voice board."""

    via: Literal["camera", "serial"]
    camera_channel: int
    port: str | None
    address: int
    dwell_seconds: float
    free_spaces: int | None
    display_lines: int
    idle: MessageConfig | None
    messages: tuple[tuple[str, MessageConfig], ...]


@attrs.frozen
class SerialBridgeConfig:
    """``[lane.serial_bridge]``: the camera's serial port mirrored on a local one."""

    to_port: str
    camera_channel: int
    max_pending_bytes: int


@attrs.frozen
class LaneConfig:
    """``[[lane]]``: one camera, its barrier relay and its direction.

    ``unknown_plate`` is ``None`` when the lane follows ``[policy]``.
    """

    name: str
    camera: str  # the camera's serial number, as configured
    direction: Direction
    barrier_channel: int
    heartbeat: HeartbeatMode
    unknown_plate: UnknownPlate | None
    sync_whitelist: bool
    ask_cloud: bool = False
    display: DisplayConfig | None = None
    serial_bridge: SerialBridgeConfig | None = None
    # The local blacklist wins over the cloud unless this is set.
    cloud_overrides_blacklist: bool = False
    # The most rows synced into the lane's camera (its model's capacity).
    camera_list_max: int = 10_000


@attrs.frozen
class GatewayConfig:
    """The whole configuration. ``source`` is the file it came from."""

    gateway: GatewaySection
    camera_server: CameraServerConfig
    admin: AdminConfig
    policy: PolicyConfig
    store: StoreSection
    lanes: tuple[LaneConfig, ...]
    source: str
    serial: tuple[SerialPortConfig, ...] = ()
    upstream: UpstreamConfig | None = None  # None: a standalone site

    def serial_port(self, name: str) -> SerialPortConfig | None:
        for port in self.serial:
            if port.name == name:
                return port
        return None

    def lane_for_camera(self, serialno: str) -> LaneConfig | None:
        """The lane whose camera has this serial number (case-insensitive)."""
        wanted = serialno.casefold()
        for lane in self.lanes:
            if lane.camera.casefold() == wanted:
                return lane
        return None

    @property
    def lane_names(self) -> Lanes:
        """The lanes as the plate list knows them (names only)."""
        return Lanes(lane.name for lane in self.lanes)

    def lane_named(self, name: str) -> LaneConfig | None:
        """The lane with this name (case-insensitive, as names are unique that way)."""
        wanted = name.casefold()
        for lane in self.lanes:
            if lane.name.casefold() == wanted:
                return lane
        return None

    def unknown_plate_for(self, lane: LaneConfig | None) -> UnknownPlate:
        """What to do with an unlisted plate on ``lane`` (or on a camera in no lane)."""
        if lane is not None and lane.unknown_plate is not None:
            return lane.unknown_plate
        return self.policy.unknown_plate

    def summary(self) -> str:
        """One line for logs and the config checker."""
        if self.lanes:
            plural = "" if len(self.lanes) == 1 else "s"
            names = ", ".join(lane.name for lane in self.lanes)
            lanes = f"{len(self.lanes)} lane{plural} ({names})"
        else:
            lanes = "no lanes"
        cameras = ", ".join(self.camera_server.listen)
        admin = ", ".join(self.admin.listen) if self.admin.listen else "disabled"
        return f"{lanes}; cameras on {cameras}; admin on {admin}; state in {self.gateway.state_dir}"


# Endpoint strings are Twisted's (tcp:, ssl:, unix:, systemd:, ...); their full
# parse happens where the listeners are built. Here: non-empty, one line.
_endpoint = text(max_length=1024, no_spaces=True)

_GATEWAY = Section(
    GatewaySection,
    (
        Key("state_dir", directory, default_factory=lambda: os.path.abspath(DEFAULT_STATE_DIR)),
        Key(
            "id",
            text(
                pattern=r"[A-Za-z0-9._-]{1,64}",
                rule="1-64 characters of A-Z, a-z, 0-9, \".\", \"_\", \"-\"",
            ),
            default_factory=_default_gateway_id,
        ),
        Key("timezone", timezone_name, default_factory=system_timezone),
    ),
)

_CAMERA_SERVER = Section(
    CameraServerConfig,
    (
        Key("listen", text_list(item=_endpoint, min_items=1, what="endpoint"), default=("tcp:8080",)),
        # Below the camera's ~30 s request timeout, or held polls fail.
        Key("comet_hold_seconds", number(1, 28), default=20.0),
        Key("max_body_bytes", integer(65_536, 67_108_864), default=8_388_608),
        Key("offline_missed_intervals", integer(1, 100), default=3),
        Key("idle_timeout_seconds", integer(5, 3600), default=75),
        Key(
            "allowed_cameras",
            text_list(item=text(max_length=128, no_spaces=True), what="serial number"),
            default=(),
        ),
        Key("allowed_networks", text_list(item=network, what="network"), default=()),
        Key("header_timeout_seconds", number(1, 120), default=10.0),
        Key("max_connections", integer(16, 100_000), default=1024),
        Key("max_connections_per_address", integer(2, 10_000), default=32),
    ),
)

def _admin_items(reader: Callable[[object], Any]) -> Validator:
    def check(value: object, path: str) -> Any:
        try:
            return reader(value)
        except SettingError as error:
            raise ConfigError(f"{path}{error.where}", error.reason) from None

    return check


_ADMIN = Section(
    AdminConfig,
    (
        Key(
            "listen",
            text_list(item=_endpoint, what="endpoint"),
            default=("tcp:8081:interface=127.0.0.1",),
        ),
        Key("users", _admin_items(users_from_toml), default=()),
        Key("tokens", _admin_items(tokens_from_toml), default=()),
        Key("metrics_public", boolean, default=False),
        Key("session_hours", number(MIN_SESSION_HOURS, MAX_SESSION_HOURS), default=DEFAULT_SESSION_HOURS),
    ),
)

_UNKNOWN_PLATE = one_of("deny", "allow")

_POLICY = Section(
    PolicyConfig,
    (
        Key("unknown_plate", _UNKNOWN_PLATE, default="deny"),
        Key("duplicate_window_seconds", number(0, 300), default=10.0),
        # Two edits match most random reads against a large list (and cost
        # several times the memory): one is the most that stays safe.
        Key("max_plate_distance", integer(0, 1), default=0),
        Key("whitelist_csv", existing_file, default=None),
    ),
)

_STORE = Section(
    StoreSection,
    (
        Key("image_retention_days", integer(1, 3650), default=30),
        Key("image_max_bytes", integer(16 * 1024 * 1024, 1 << 40), default=2 * 1024**3),
    ),
)

def _template(value: object, path: str) -> str:
    checked: str = text(max_length=256)(value, path)
    try:
        validate_template(checked)
    except ValueError as error:
        raise ConfigError(path, str(error)) from None
    return checked


def _template_lines(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(path, f"must be an array of strings, got {describe(value)}")
    if len(value) > 4:
        raise ConfigError(path, f"a display has at most 4 lines, got {len(value)}")
    lines: list[str] = []
    for number_from_one, line in enumerate(value, start=1):
        item_path = f"{path}[{number_from_one}]"
        if not isinstance(line, str):
            raise ConfigError(item_path, f"must be a string, got {describe(line)}")
        lines.append(_template(line, item_path) if line.strip() else line)
    return tuple(lines)


def _voice(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {describe(value)}")
    return _template(value, path) if value.strip() else ""


def _colour(value: object, path: str) -> str:
    checked: str = text(
        pattern=r"#?[0-9A-Fa-f]{6}", rule='a colour written "RRGGBB" in hex, e.g. "FF0000"'
    )(value, path)
    return checked.lstrip("#").upper()


_MESSAGE = Section(
    MessageConfig,
    (
        Key("lines", _template_lines, default=None),
        Key("voice", _voice, default=None),
        Key("colour", _colour, default=None),
    ),
)


def _message(value: object, path: str) -> MessageConfig:
    message: MessageConfig = _MESSAGE.parse(value, path)
    return message


def _messages(value: object, path: str) -> tuple[tuple[str, MessageConfig], ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"must be a table of messages, got {describe(value)}")
    reject_unknown_keys(value, MESSAGE_KEYS, path)
    return tuple((key, _message(table, f"{path}.{key}")) for key, table in value.items())


_DISPLAY = Section(
    DisplayConfig,
    (
        Key("via", one_of("camera", "serial"), default="camera"),
        Key("camera_channel", integer(0, 1), default=0),
        Key("port", text(max_length=64), default=None),
        Key("address", integer(0, 255), default=0),
        Key("dwell_seconds", number(1, 3600), default=10.0),
        Key("free_spaces", integer(0, 1_000_000), default=None),
        Key("display_lines", integer(1, 4), default=4),
        Key("idle", _message, default=None),
        Key("messages", _messages, default=()),
    ),
)


def _display(value: object, path: str) -> DisplayConfig:
    display: DisplayConfig = _DISPLAY.parse(value, path)
    if display.via == "serial" and display.port is None:
        raise ConfigError(f"{path}.port", 'a display reached via "serial" needs a port')
    if display.via == "camera" and display.port is not None:
        raise ConfigError(f"{path}.port", 'a display reached via "camera" takes no port')
    return display


_SERIAL_BRIDGE = Section(
    SerialBridgeConfig,
    (
        Key("to_port", text(max_length=64)),
        Key("camera_channel", integer(0, 1), default=0),
        Key("max_pending_bytes", integer(1, 1 << 20), default=4096),
    ),
)


def _serial_bridge(value: object, path: str) -> SerialBridgeConfig:
    bridge: SerialBridgeConfig = _SERIAL_BRIDGE.parse(value, path)
    return bridge


_STOPBITS = (1, 1.5, 2)


def _stopbits(value: object, path: str) -> float:
    checked: float = number(1, 2)(value, path)
    if checked not in _STOPBITS:
        raise ConfigError(path, f"must be 1, 1.5 or 2, got {describe(value)}")
    return float(checked)


_SERIAL_PORT = Section(
    SerialPortConfig,
    (
        Key("name", text(max_length=64)),
        Key("device", text(max_length=4096)),
        Key("baudrate", integer(50, 4_000_000), default=9600),
        Key("bytesize", integer(5, 8), default=8),
        Key("parity", one_of("N", "E", "O", "M", "S"), default="N"),
        Key("stopbits", _stopbits, default=1.0),
        Key("gap_ms", integer(0, 10_000), default=50),
        Key("max_queued_frames", integer(1, 4096), default=16),
        Key("retry_min_seconds", number(0.01, 3600), default=0.5),
        Key("retry_max_seconds", number(0.01, 3600), default=10.0),
        Key("exclusive", boolean, default=True),
    ),
)


def _parse_serial(value: object) -> tuple[SerialPortConfig, ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(_SERIAL_KEY, f"must be tables [serial.NAME], got {describe(value)}")
    ports: list[SerialPortConfig] = []
    for name, table in value.items():
        path = f"{_SERIAL_KEY}.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ConfigError(path, "a port name is 1-64 characters of A-Z, a-z, 0-9, _ and -")
        if not isinstance(table, Mapping):
            raise ConfigError(path, f"must be a table, got {describe(table)}")
        port: SerialPortConfig = _SERIAL_PORT.parse({**table, "name": name}, path)
        if port.retry_max_seconds < port.retry_min_seconds:
            raise ConfigError(
                f"{path}.retry_max_seconds", "must not be below retry_min_seconds"
            )
        for other in ports:
            if other.device == port.device:
                raise ConfigError(
                    f"{path}.device",
                    f"{describe(port.device)} is already the device of [serial.{other.name}]",
                )
        ports.append(port)
    return tuple(ports)


def _check_serial_uses(lanes: tuple[LaneConfig, ...], ports: tuple[SerialPortConfig, ...]) -> None:
    """Every port a lane names exists, and each port has one use."""
    names = {port.name for port in ports}
    used: dict[str, str] = {}
    for number_from_one, lane in enumerate(lanes, start=1):
        path = f"{_LANE_KEY}[{number_from_one}]"
        uses = []
        if lane.display is not None and lane.display.port is not None:
            uses.append((f"{path}.display.port", lane.display.port, f"the display of lane {describe(lane.name)}"))
        if lane.serial_bridge is not None:
            uses.append((f"{path}.serial_bridge.to_port", lane.serial_bridge.to_port, f"the serial bridge of lane {describe(lane.name)}"))
        for key_path, port, user in uses:
            if port not in names:
                known = ", ".join(sorted(names)) or "none"
                raise ConfigError(key_path, f"no [serial.{port}] section (ports: {known})")
            if port in used:
                raise ConfigError(key_path, f"port {describe(port)} is already used by {used[port]}")
            used[port] = user


_LANE = Section(
    LaneConfig,
    (
        Key("name", text(max_length=64)),
        Key("camera", text(max_length=128, no_spaces=True)),
        Key("direction", one_of("in", "out"), default="in"),
        Key("barrier_channel", integer(0, 3), default=0),
        Key("heartbeat", one_of("auto", "comet", "common", "off"), default="auto"),
        Key("unknown_plate", _UNKNOWN_PLATE, default=None),
        Key("sync_whitelist", boolean, default=True),
        Key("ask_cloud", boolean, default=False),
        Key("display", _display, default=None),
        Key("serial_bridge", _serial_bridge, default=None),
        Key("cloud_overrides_blacklist", boolean, default=False),
        Key("camera_list_max", integer(1, 200_000), default=10_000),
    ),
)

# Top-level tables, in the order they are documented.
_SECTIONS: dict[str, Section[Any]] = {
    "gateway": _GATEWAY,
    "camera_server": _CAMERA_SERVER,
    "admin": _ADMIN,
    "policy": _POLICY,
    "store": _STORE,
}
@attrs.frozen
class UpstreamSection:
    """``[upstream]`` as written (the link's settings are built from it)."""

    url: str
    secret: str = attrs.field(repr=False)
    decision_timeout_seconds: float
    sync_interval_seconds: float
    ca_file: str | None
    client_cert: str | None
    client_key: str | None
    images: str
    batch_size: int
    outbox_max_events: int
    max_backoff_seconds: float
    request_timeout_seconds: float


_UPSTREAM = Section(
    UpstreamSection,
    (
        Key("url", text(max_length=2048, no_spaces=True)),
        Key("secret", text(max_length=1024, no_spaces=True)),
        Key("decision_timeout_seconds", number(0.1, 10), default=1.5),
        Key("sync_interval_seconds", number(1, 3600), default=10.0),
        Key("ca_file", existing_file, default=None),
        Key("client_cert", existing_file, default=None),
        Key("client_key", existing_file, default=None),
        Key("images", one_of("none", "crop", "all"), default="crop"),
        Key("batch_size", integer(1, 1000), default=200),
        Key("outbox_max_events", integer(10, 100_000_000), default=1_000_000),
        Key("max_backoff_seconds", number(1, 86400), default=300.0),
        Key("request_timeout_seconds", number(1, 600), default=30.0),
    ),
)


def _parse_upstream(value: object, gateway_id: str) -> UpstreamConfig:
    section: UpstreamSection = _UPSTREAM.parse(value, _UPSTREAM_KEY)
    try:
        return UpstreamConfig(
            url=section.url,
            secret=section.secret,
            gateway_id=gateway_id,
            decision_timeout_seconds=section.decision_timeout_seconds,
            sync_interval_seconds=section.sync_interval_seconds,
            ca_file=section.ca_file,
            client_cert=section.client_cert,
            client_key=section.client_key,
            images=section.images,
            batch_size=section.batch_size,
            outbox_max_events=section.outbox_max_events,
            max_backoff_seconds=section.max_backoff_seconds,
            request_timeout_seconds=section.request_timeout_seconds,
        )
    except UpstreamSettingsError as error:
        raise ConfigError(f"{_UPSTREAM_KEY}.{error.key}", error.reason) from None


_LANE_KEY = "lane"
_SERIAL_KEY = "serial"
_UPSTREAM_KEY = "upstream"
_TOP_LEVEL_KEYS = (*_SECTIONS, _LANE_KEY, _SERIAL_KEY, _UPSTREAM_KEY)


def _parse_lanes(value: object) -> tuple[LaneConfig, ...]:
    if isinstance(value, Mapping):
        raise ConfigError(
            _LANE_KEY, "must be an array of tables (write [[lane]], not [lane]), got a table"
        )
    if not isinstance(value, (list, tuple)):
        raise ConfigError(_LANE_KEY, f"must be an array of tables ([[lane]]), got {describe(value)}")
    lanes: list[LaneConfig] = []
    for number_from_one, table in enumerate(value, start=1):
        path = f"{_LANE_KEY}[{number_from_one}]"
        lane = _LANE.parse(table, path)
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
    return tuple(lanes)


def _check_listeners_apart(camera_server: CameraServerConfig, admin: AdminConfig) -> None:
    # The same endpoint twice cannot bind; say which keys collide rather than
    # letting the second listen() fail with "address already in use".
    for number_from_one, endpoint in enumerate(admin.listen, start=1):
        if endpoint in camera_server.listen:
            raise ConfigError(
                f"admin.listen[{number_from_one}]",
                f"{describe(endpoint)} is also a camera_server listener",
            )


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> GatewayConfig:
    """Validate a parsed TOML document and build the configuration.

    Raises :class:`ConfigError` for the first problem found, with ``source``
    recorded on it.
    """
    try:
        if not isinstance(data, Mapping):
            raise ConfigError(source, f"must be a table, got {describe(data)}")
        reject_unknown_keys(data, _TOP_LEVEL_KEYS, "")
        sections = {name: spec.parse(data.get(name, {}), name) for name, spec in _SECTIONS.items()}
        lanes = _parse_lanes(data.get(_LANE_KEY, []))
        serial = _parse_serial(data.get(_SERIAL_KEY, {}))
        upstream = (
            _parse_upstream(data[_UPSTREAM_KEY], sections["gateway"].id)
            if _UPSTREAM_KEY in data
            else None
        )
        _check_serial_uses(lanes, serial)
        _check_listeners_apart(sections["camera_server"], sections["admin"])
    except ConfigError as error:
        if error.source is None:
            raise ConfigError(error.path, error.reason, source) from None
        raise
    return GatewayConfig(
        gateway=sections["gateway"],
        camera_server=sections["camera_server"],
        admin=sections["admin"],
        policy=sections["policy"],
        store=sections["store"],
        lanes=lanes,
        source=source,
        serial=serial,
        upstream=upstream,
    )


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_error(name: str, text_: str, error: tomllib.TOMLDecodeError) -> ConfigError:
    """A ConfigError naming the file, line and column of a TOML syntax error."""
    message = str(error)
    position = _TOML_POSITION.search(message)
    if position is not None:
        line, column = int(position.group(1)), int(position.group(2))
        message = message[: position.start()]
    else:
        # tomllib says "at end of document": point at the end of the last line.
        message = _TOML_END.sub("", message)
        lines = text_.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    return ConfigError(name, f"invalid TOML at line {line}, column {column}: {message}", name)


def load_config(path: str | os.PathLike[str] | None) -> GatewayConfig:
    """Load and validate a configuration file; ``None`` gives the built-in defaults.

    The defaults are a demo site: cameras on ``tcp:8080``, the admin page on
    ``tcp:8081:interface=127.0.0.1``, state in ``./anpr-gateway-state``, no lanes.
    """
    if path is None:
        return parse_config({}, DEFAULTS_SOURCE)
    name = os.fspath(path)
    try:
        with open(name, "rb") as config_file:
            raw = config_file.read()
    except OSError as error:
        raise ConfigError(name, f"cannot read: {error.strerror or error}", name) from None
    try:
        document = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(name, f"not UTF-8 text (byte {error.start})", name) from None
    try:
        data = tomllib.loads(document)
    except tomllib.TOMLDecodeError as error:
        raise _syntax_error(name, document, error) from None
    return parse_config(data, name)


def main(argv: Sequence[str] | None = None) -> int:
    """``anpr-gateway-check-config [PATH]``: check a file, print ok or the error.

    Exit status 0 when the configuration is valid, 2 when it is not.
    """
    parser = argparse.ArgumentParser(
        prog="anpr-gateway-check-config",
        description="Check an anpr-gateway configuration file without starting the gateway.",
    )
    parser.add_argument(
        "path", nargs="?", default=None, help="the TOML file (default: the built-in defaults)"
    )
    arguments = parser.parse_args(argv)
    try:
        config = load_config(arguments.path)
    except ConfigError as error:
        print(f"error: {error.full_message()}", file=sys.stderr)
        return 2
    print(f"ok: {config.source}: {config.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
