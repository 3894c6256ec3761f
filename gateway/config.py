"""The configuration file: TOML read into each area's typed settings.

The whole file is checked before the reactor starts, so a typo or an out-of-range
value stops the gateway with one clear line (``key path: reason``) instead of
surfacing hours later at a lane.

Each area declares its settings and their checks once (see :mod:`gateway.schema`):
``[gateway]``, ``[[lane]]`` and ``[occupancy]`` in :mod:`gateway.site`, ``[camera_server]`` in
:mod:`gateway.camera.settings`, ``[admin]`` in :mod:`gateway.admin.settings`,
``[policy]`` in :mod:`gateway.policy.settings`, ``[store]`` in
:mod:`gateway.store.settings`, ``[serial.NAME]`` and ``[lane.serial_bridge]`` in
:mod:`gateway.serial.settings`, ``[lane.display]`` in
:mod:`gateway.display.settings`, ``[upstream]`` in
:mod:`gateway.upstream.settings` and ``[mqtt]`` in
:mod:`gateway.mqtt.settings`. This module only reads the file, composes the
sections and checks what spans them (a port a lane names exists, listeners
apart). Adding a setting means adding one field to its area's class.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from gateway.admin.settings import ADMIN_SECTION, AdminSettings
from gateway.camera.settings import CAMERA_SERVER, CameraServerSettings
from gateway.mqtt.settings import MQTT, MqttSettings, lane_slug
from gateway.policy.settings import POLICY, PolicySettings, UnknownPlate
from gateway.schema import ConfigError, Section, describe, reject_unknown_keys
from gateway.serial.settings import SERIAL_PORT, SerialPortSettings
from gateway.site import (
    DEFAULT_STATE_DIR,
    LANE_KEY,
    OCCUPANCY,
    SITE,
    Lanes,
    LaneSettings,
    OccupancySettings,
    SiteSettings,
    parse_lanes,
)
from gateway.store.settings import STORE, StoreSettings
from gateway.upstream.settings import UPSTREAM, UpstreamSettings

__all__ = [
    "ConfigError",
    "DEFAULT_STATE_DIR",
    "DEFAULTS_SOURCE",
    "GatewayConfig",
    "load_config",
    "main",
    "parse_config",
]

DEFAULTS_SOURCE = "<built-in defaults>"


@attrs.frozen
class GatewayConfig:
    """The whole configuration. ``source`` is the file it came from."""

    gateway: SiteSettings
    camera_server: CameraServerSettings
    admin: AdminSettings
    policy: PolicySettings
    store: StoreSettings
    lanes: Lanes
    source: str
    serial: tuple[SerialPortSettings, ...] = ()
    upstream: UpstreamSettings | None = None  # None: a standalone site
    mqtt: MqttSettings | None = None  # None: nothing is published to a broker
    occupancy: OccupancySettings = attrs.field(factory=OccupancySettings)

    def serial_port(self, name: str) -> SerialPortSettings | None:
        for port in self.serial:
            if port.name == name:
                return port
        return None

    def unknown_plate_for(self, lane: LaneSettings | None) -> UnknownPlate:
        """What to do with an unlisted plate on ``lane`` (or on a camera in no lane)."""
        if lane is not None and lane.unknown_plate is not None:
            return lane.unknown_plate
        return self.policy.unknown_plate

    def summary(self) -> str:
        """One line for logs and the config checker."""
        if self.lanes:
            plural = "" if len(self.lanes) == 1 else "s"
            lanes = f"{len(self.lanes)} lane{plural} ({', '.join(self.lanes.names)})"
        else:
            lanes = "no lanes"
        cameras = ", ".join(self.camera_server.listen)
        admin = ", ".join(self.admin.listen) if self.admin.listen else "disabled"
        return f"{lanes}; cameras on {cameras}; admin on {admin}; state in {self.gateway.state_dir}"


# Top-level tables, in the order they are documented.
_SECTIONS: dict[str, Section[Any]] = {
    "gateway": SITE,
    "camera_server": CAMERA_SERVER,
    "admin": ADMIN_SECTION,
    "policy": POLICY,
    "store": STORE,
    "occupancy": OCCUPANCY,
}
_SERIAL_KEY = "serial"
_UPSTREAM_KEY = "upstream"
_MQTT_KEY = "mqtt"
_TOP_LEVEL_KEYS = (*_SECTIONS, LANE_KEY, _SERIAL_KEY, _UPSTREAM_KEY, _MQTT_KEY)


def _parse_serial(value: object) -> tuple[SerialPortSettings, ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(_SERIAL_KEY, f"must be tables [serial.NAME], got {describe(value)}")
    ports: list[SerialPortSettings] = []
    for name, table in value.items():
        path = f"{_SERIAL_KEY}.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ConfigError(path, "a port name is 1-64 characters of A-Z, a-z, 0-9, _ and -")
        port = SERIAL_PORT.parse(table, path, name=name)
        for other in ports:
            if other.device == port.device:
                raise ConfigError(
                    f"{path}.device",
                    f"{describe(port.device)} is already the device of [serial.{other.name}]",
                )
        ports.append(port)
    return tuple(ports)


def _check_serial_uses(lanes: Lanes, ports: tuple[SerialPortSettings, ...]) -> None:
    """Every port a lane names exists, and each port has one use."""
    names = {port.name for port in ports}
    used: dict[str, str] = {}
    for number_from_one, lane in enumerate(lanes, start=1):
        path = f"{LANE_KEY}[{number_from_one}]"
        uses = []
        if lane.display is not None and lane.display.port is not None:
            uses.append(
                (f"{path}.display.port", lane.display.port, f"the display of lane {describe(lane.name)}")
            )
        if lane.serial_bridge is not None:
            uses.append(
                (
                    f"{path}.serial_bridge.to_port",
                    lane.serial_bridge.to_port,
                    f"the serial bridge of lane {describe(lane.name)}",
                )
            )
        for key_path, port, user in uses:
            if port not in names:
                known = ", ".join(sorted(names)) or "none"
                raise ConfigError(key_path, f"no [serial.{port}] section (ports: {known})")
            if port in used:
                raise ConfigError(key_path, f"port {describe(port)} is already used by {used[port]}")
            used[port] = user


def _check_lane_slugs(lanes: Lanes) -> None:
    # MQTT topics and Home Assistant ids name a lane by its slug: two lanes
    # with one slug would share a state topic.
    seen: dict[str, str] = {}
    for number_from_one, lane in enumerate(lanes, start=1):
        slug = lane_slug(lane.name)
        if slug in seen:
            raise ConfigError(
                f"{LANE_KEY}[{number_from_one}].name",
                f"{describe(lane.name)} and {describe(seen[slug])} have the same MQTT topic "
                f"name {describe(slug)}; rename one",
            )
        seen[slug] = lane.name


def _check_listeners_apart(camera_server: CameraServerSettings, admin: AdminSettings) -> None:
    # The same endpoint twice cannot bind; say which keys collide rather than
    # letting the second listen() fail with "address already in use".
    for number_from_one, endpoint in enumerate(admin.listen, start=1):
        if endpoint in camera_server.listen:
            raise ConfigError(
                f"admin.listen[{number_from_one}]",
                f"{describe(endpoint)} is also a camera_server listener",
            )


def _check_occupancy_lanes(occupancy: OccupancySettings, lanes: Lanes) -> OccupancySettings:
    """Every lane ``[occupancy]`` names is a configured lane, spelled as
    configured."""

    def canonical(names: tuple[str, ...], path: str) -> tuple[str, ...]:
        found = []
        for number_from_one, name in enumerate(names, start=1):
            lane = lanes.canonical(name)
            if lane is None:
                raise ConfigError(
                    f"{path}[{number_from_one}]",
                    f"no lane is called {describe(name)} (lanes: {lanes.describe()})",
                )
            found.append(lane)
        return tuple(found)

    site_lanes = (
        canonical(occupancy.lanes, "occupancy.lanes") if occupancy.lanes is not None else None
    )
    areas = tuple(
        attrs.evolve(area, lanes=canonical(area.lanes, f"occupancy.areas[{index}].lanes"))
        for index, area in enumerate(occupancy.areas, start=1)
    )
    return attrs.evolve(occupancy, lanes=site_lanes, areas=areas)


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
        lanes = parse_lanes(data.get(LANE_KEY, []))
        serial = _parse_serial(data.get(_SERIAL_KEY, {}))
        upstream = (
            UPSTREAM.parse(data[_UPSTREAM_KEY], _UPSTREAM_KEY, gateway_id=sections["gateway"].id)
            if _UPSTREAM_KEY in data
            else None
        )
        mqtt = (
            MQTT.parse(data[_MQTT_KEY], _MQTT_KEY, gateway_id=sections["gateway"].id)
            if _MQTT_KEY in data
            else None
        )
        if mqtt is not None:
            _check_lane_slugs(lanes)
        _check_serial_uses(lanes, serial)
        _check_listeners_apart(sections["camera_server"], sections["admin"])
        occupancy = _check_occupancy_lanes(sections["occupancy"], lanes)
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
        mqtt=mqtt,
        occupancy=occupancy,
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
        warnings = check_machine(config)
    except ConfigError as error:
        print(f"error: {error.full_message()}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {config.source}: {warning}", file=sys.stderr)
    print(f"ok: {config.source}: {config.summary()}")
    return 0


def check_machine(config: GatewayConfig) -> list[str]:
    """Check what the file names on this machine, as the gateway will use it:
    every listener parsed by Twisted's endpoint parser (without listening),
    its TLS files read and matched. Raises :class:`ConfigError`; returns what
    may be fine once the site is wired (an interface or serial device not
    there now, a certificate near its end)."""
    from gateway.listeners import check_endpoint, endpoint_warnings

    warnings: list[str] = []
    for key, endpoints in (
        ("camera_server.listen", config.camera_server.listen),
        ("admin.listen", config.admin.listen),
    ):
        for index, description in enumerate(endpoints, start=1):
            item = f"{key}[{index}]"
            try:
                check_endpoint(description, item)
            except ConfigError as error:
                raise ConfigError(error.path, error.reason, config.source) from None
            warnings.extend(endpoint_warnings(description, item))
    for port in config.serial:
        if not os.path.exists(port.device):
            warnings.append(
                f"{_SERIAL_KEY}.{port.name}.device: {port.device} is not there (yet); "
                "the gateway retries it while it runs"
            )
    return warnings


if __name__ == "__main__":
    sys.exit(main())
