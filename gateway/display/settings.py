"""Typed settings of a lane's display and voice board (``[lane.display]``)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from gateway.display.templates import (
    MESSAGE_KEYS,
    Direction,
    MessageTemplate,
    default_idle,
    default_messages,
    validate_template,
)
from gateway.protocol.board import MAX_LINES, Colour
from gateway.schema import (
    ConfigError,
    Section,
    describe,
    integer,
    number,
    one_of,
    optional,
    reject_unknown_keys,
    setting,
    text,
)

__all__ = ["DISPLAY", "DisplaySettings", "LaneDisplay", "MESSAGE", "MessageChange", "Via"]

Via = Literal["camera", "serial"]


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
    if len(value) > MAX_LINES:
        raise ConfigError(path, f"a display has at most {MAX_LINES} lines, got {len(value)}")
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


@attrs.frozen
class MessageChange:
    """What the configuration changes of a built-in message (``[lane.display.messages.KEY]``
    or ``[lane.display.idle]``): each field None when not set, so the built-in value
    stays. ``voice = ""`` silences the message; ``colour`` is ``RRGGBB``."""

    lines: tuple[str, ...] | None = setting(optional(_template_lines), default=None)
    voice: str | None = setting(optional(_voice), default=None)
    colour: str | None = setting(optional(_colour), default=None)

    def applied_to(self, base: MessageTemplate) -> MessageTemplate:
        """``base`` with this change."""
        changes: dict[str, Any] = {}
        if self.lines is not None:
            changes["lines"] = self.lines
        if self.voice is not None:
            changes["voice"] = self.voice or None
        if self.colour is not None:
            changes["colour"] = Colour.parse(self.colour)
        return attrs.evolve(base, **changes)


MESSAGE = Section(MessageChange)

#: A message as configured: a whole template (from code) or a change of the built-in one.
ConfiguredMessage = MessageTemplate | MessageChange


def _message(value: object, path: str) -> ConfiguredMessage:
    if isinstance(value, (MessageTemplate, MessageChange)):
        return value
    return MESSAGE.parse(value, path)


_NO_MESSAGES: Mapping[str, ConfiguredMessage] = MappingProxyType({})


def _messages(value: object, path: str) -> Mapping[str, ConfiguredMessage]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"must be a table of messages, got {describe(value)}")
    reject_unknown_keys(value, MESSAGE_KEYS, path)
    return MappingProxyType(
        {key: _message(message, f"{path}.{key}") for key, message in value.items()}
    )


@attrs.frozen
class DisplaySettings:
    """How a lane's display is reached and what it shows (``[lane.display]``).

    * ``via = "camera"``: frames ride in the camera's replies and the camera writes them to
      its serial port ``camera_channel`` (0 = RS-485 #1, 1 = the second port);
    * ``via = "serial"``: frames go out of the gateway's own serial port named ``port``;
    * ``address``: the board's address on the bus (DA), both ways.

    ``messages`` changes built-in messages by key (see ``templates.MESSAGE_KEYS``);
    ``idle`` changes the idle text, shown again ``dwell_seconds`` after a message;
    ``free_spaces`` fills ``{free}``; ``display_lines`` is how many lines the board has:
    every message is sent with exactly that many, blank ones included, so nothing of the
    previous message stays behind.
    """

    via: Via = setting(one_of("camera", "serial"), default="camera")
    camera_channel: int = setting(integer(0, 1), default=0)
    port: str | None = setting(optional(text(max_length=64)), default=None)
    address: int = setting(integer(0, 255), default=0)
    # Left out of the hash (a mapping has none); equality still compares it.
    messages: Mapping[str, ConfiguredMessage] = setting(
        _messages, default=_NO_MESSAGES, hash=False
    )
    idle: ConfiguredMessage | None = setting(optional(_message), default=None)
    dwell_seconds: float = setting(number(1, 3600), default=10.0)
    free_spaces: int | None = setting(optional(integer(0, 1_000_000)), default=None)
    display_lines: int = setting(integer(1, MAX_LINES), default=MAX_LINES)

    def __attrs_post_init__(self) -> None:
        if self.via == "serial" and not self.port:
            raise ConfigError("port", 'a display reached via "serial" needs a port')
        if self.via == "camera" and self.port is not None:
            raise ConfigError("port", 'a display reached via "camera" takes no port')

    def message(self, key: str, direction: Direction) -> MessageTemplate:
        """The message for ``key`` on a lane of ``direction``: configured, else built in."""
        return _resolved(self.messages.get(key), default_messages(direction)[key])

    def idle_message(self, direction: Direction) -> MessageTemplate:
        """The idle text of a lane of ``direction``."""
        return _resolved(self.idle, default_idle(direction))


DISPLAY = Section(DisplaySettings)


def _resolved(configured: ConfiguredMessage | None, built_in: MessageTemplate) -> MessageTemplate:
    if configured is None:
        return built_in
    if isinstance(configured, MessageChange):
        return configured.applied_to(built_in)
    return configured


@attrs.frozen
class LaneDisplay:
    """A lane with a display: its name, its camera, its direction and display settings."""

    lane: str = attrs.field(validator=attrs.validators.instance_of(str))
    camera: str = attrs.field(validator=attrs.validators.instance_of(str))
    direction: Direction = attrs.field(validator=attrs.validators.in_(("in", "out")))
    settings: DisplaySettings = attrs.field(
        factory=DisplaySettings, validator=attrs.validators.instance_of(DisplaySettings)
    )
