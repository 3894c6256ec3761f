"""Typed settings of a lane's display and voice board (``[lane.display]``)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Literal, Mapping

import attrs

from gateway.display.templates import (
    MESSAGE_KEYS,
    Direction,
    MessageTemplate,
    default_idle,
    default_messages,
)
from gateway.protocol.board import MAX_LINES

__all__ = ["DisplaySettings", "LaneDisplay", "Via"]

Via = Literal["camera", "serial"]


def _int_in(low: int, high: int) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an int, not {type(value).__name__}")
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be in {low}..{high}, not {value}")

    return validate


def _messages(value: Any) -> Mapping[str, MessageTemplate]:
    return MappingProxyType(dict(value))


def _validate_messages(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    for key, template in value.items():
        if key not in MESSAGE_KEYS:
            raise ValueError(f"unknown message {key!r} (known: {', '.join(MESSAGE_KEYS)})")
        if not isinstance(template, MessageTemplate):
            raise TypeError(f"message {key!r} must be a MessageTemplate")


def _optional_template(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, MessageTemplate):
        raise TypeError(f"{attribute.name} must be a MessageTemplate or None")


def _dwell(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number of seconds")
    if not 1 <= value <= 3600:
        raise ValueError(f"{attribute.name} must be in 1..3600 seconds, not {value}")


def _optional_free(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _int_in(0, 1_000_000)(instance, attribute, value)


@attrs.frozen
class DisplaySettings:
    """How a lane's display is reached and what it shows.

    * ``via = "camera"``: frames ride in the camera's replies and the camera writes them to
      its serial port ``camera_channel`` (0 = RS-485 #1, 1 = the second port);
    * ``via = "serial"``: frames go out of the gateway's own serial port named ``port``;
    * ``address``: the board's address on the bus (DA), both ways.

    ``messages`` replaces built-in messages by key (see ``templates.MESSAGE_KEYS``);
    ``idle`` replaces the idle text (None: the built-in one), shown again
    ``dwell_seconds`` after a message; ``free_spaces`` fills ``{free}``;
    ``display_lines`` is how many lines the board has: every message is sent with exactly
    that many, blank ones included, so nothing of the previous message stays behind.
    """

    via: Via = attrs.field(default="camera", validator=attrs.validators.in_(("camera", "serial")))
    camera_channel: int = attrs.field(default=0, validator=_int_in(0, 1))
    port: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    address: int = attrs.field(default=0, validator=_int_in(0, 255))
    # Left out of the hash (a mapping has none); equality still compares it.
    messages: Mapping[str, MessageTemplate] = attrs.field(
        factory=dict, converter=_messages, validator=_validate_messages, hash=False
    )
    idle: MessageTemplate | None = attrs.field(default=None, validator=_optional_template)
    dwell_seconds: float = attrs.field(default=10.0, validator=_dwell)
    free_spaces: int | None = attrs.field(default=None, validator=_optional_free)
    display_lines: int = attrs.field(default=MAX_LINES, validator=_int_in(1, MAX_LINES))

    def __attrs_post_init__(self) -> None:
        if self.via == "serial" and not self.port:
            raise ValueError('a display reached via "serial" needs a port')
        if self.via == "camera" and self.port is not None:
            raise ValueError('a display reached via "camera" takes no port')

    def message(self, key: str, direction: Direction) -> MessageTemplate:
        """The message for ``key`` on a lane of ``direction``: configured, else built in."""
        configured = self.messages.get(key)
        if configured is not None:
            return configured
        return default_messages(direction)[key]

    def idle_message(self, direction: Direction) -> MessageTemplate:
        """The idle text of a lane of ``direction``."""
        return self.idle if self.idle is not None else default_idle(direction)


@attrs.frozen
class LaneDisplay:
    """A lane with a display: its name, its camera, its direction and display settings."""

    lane: str = attrs.field(validator=attrs.validators.instance_of(str))
    camera: str = attrs.field(validator=attrs.validators.instance_of(str))
    direction: Direction = attrs.field(validator=attrs.validators.in_(("in", "out")))
    settings: DisplaySettings = attrs.field(
        factory=DisplaySettings, validator=attrs.validators.instance_of(DisplaySettings)
    )
