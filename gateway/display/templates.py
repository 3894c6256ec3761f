"""What a lane display shows and its voice board says: templates, their defaults, rendering.

A message is up to four display lines and an optional voice text, each a template with
named fields in braces: ``{plate}``, ``{lane}``, ``{reason}``, ``{valid_until}``, ``{time}``,
``{date}``, ``{free}``. A display line that names a field without a value (no plate read,
no end date, no free-space count) is left out, so ``"有效期至{valid_until}"`` disappears for
a permanent permit instead of showing half a sentence; in the voice text such a field is
simply silent.

Which message a decision gets is its *message key*: ``open`` for any opened barrier, the
decision reason for a refusal (``unknown``, ``blacklist``, ``expired``, ...), ``denied``
for a refusal with any other reason, and ``offline_record`` / ``duplicate`` whose default
is to show nothing (the car left long ago, or the display already answered it).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from gateway.policy import decision as reasons
from gateway.protocol.board import GREEN, MAX_LINES, RED, YELLOW, Colour

__all__ = [
    "DENIED",
    "FIELDS",
    "IDLE",
    "MESSAGE_KEYS",
    "OPEN",
    "REASON_TEXTS",
    "SILENT",
    "Direction",
    "MessageTemplate",
    "default_idle",
    "default_messages",
    "message_key",
    "render",
    "render_voice",
    "template_fields",
    "validate_template",
]

Direction = Literal["in", "out"]

#: Every field a template may name.
FIELDS = frozenset({"plate", "lane", "reason", "valid_until", "time", "date", "free"})

OPEN = "open"
DENIED = "denied"
IDLE = "idle"

#: The keys of the per-decision messages a lane can override.
MESSAGE_KEYS = (
    OPEN,
    reasons.UNKNOWN,
    reasons.BLACKLIST,
    reasons.EXPIRED,
    reasons.NOT_YET_VALID,
    reasons.OUTSIDE_HOURS,
    reasons.DISABLED,
    reasons.WRONG_LANE,
    reasons.NO_PLATE,
    DENIED,
    reasons.OFFLINE_RECORD,
    reasons.DUPLICATE,
)

#: ``{reason}`` as drivers read it.
REASON_TEXTS: Mapping[str, str] = MappingProxyType(
    {
        reasons.WHITELIST: "授权车辆",
        reasons.UNKNOWN: "未授权车辆",
        reasons.BLACKLIST: "黑名单车辆",
        reasons.EXPIRED: "月卡已过期",
        reasons.NOT_YET_VALID: "月卡未生效",
        reasons.OUTSIDE_HOURS: "非通行时段",
        reasons.DISABLED: "车辆已停用",
        reasons.WRONG_LANE: "请走其他车道",
        reasons.NO_PLATE: "未识别车牌",
        reasons.OFFLINE_RECORD: "离线记录",
        reasons.DUPLICATE: "重复识别",
    }
)

_FORMATTER = string.Formatter()


def template_fields(template: str) -> frozenset[str]:
    """The field names ``template`` uses. Raises ValueError for a malformed template or a
    field that is not one of :data:`FIELDS` (no attribute access, indexing, conversions
    or format specs: a template is text with plain ``{name}`` fields, ``{{`` for a brace)."""
    if not isinstance(template, str):
        raise TypeError(f"a template must be a str, not {type(template).__name__}")
    names = set()
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as error:
        raise ValueError(f"malformed template {template!r}: {error}") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in FIELDS:
            known = ", ".join("{" + field + "}" for field in sorted(FIELDS))
            raise ValueError(f"unknown field {{{name}}} in {template!r} (known: {known})")
        if spec or conversion:
            raise ValueError(f"field {{{name}}} in {template!r} takes no format or conversion")
        names.add(name)
    return frozenset(names)


def validate_template(template: str) -> str:
    """``template`` itself if it is a valid template, else ValueError (see
    :func:`template_fields`)."""
    template_fields(template)
    return template


def render(template: str, values: Mapping[str, str | None]) -> str | None:
    """``template`` with its fields filled in; None when a field it names has no value."""
    needed = template_fields(template)
    if any(values.get(name) is None for name in needed):
        return None
    return template.format_map({name: values[name] for name in needed})


def render_voice(template: str, values: Mapping[str, str | None]) -> str:
    """Like :func:`render`, with fields that have no value left silent (and the phrase
    separators they leave at either end dropped)."""
    needed = template_fields(template)
    spoken = template.format_map({name: values.get(name) or "" for name in needed})
    return spoken.strip(" ，,、")


def _lines(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("lines must be a sequence of templates, not one str")
    return tuple(value)


def _validate_lines(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if len(value) > MAX_LINES:
        raise ValueError(f"a display shows at most {MAX_LINES} lines, not {len(value)}")
    for line in value:
        validate_template(line)


def _validate_voice(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        validate_template(value)


def _validate_colour(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Colour):
        raise TypeError(f"{attribute.name} must be a Colour, not {type(value).__name__}")


@attrs.frozen
class MessageTemplate:
    """One message: display line templates (0-4), a voice template (None: silent) and the
    text colour. A message with no lines and no voice shows nothing."""

    lines: tuple[str, ...] = attrs.field(default=(), converter=_lines, validator=_validate_lines)
    voice: str | None = attrs.field(default=None, validator=_validate_voice)
    colour: Colour = attrs.field(default=RED, validator=_validate_colour)

    @property
    def silent(self) -> bool:
        """True when the message shows and says nothing."""
        return not self.lines and not self.voice


#: A message that shows nothing.
SILENT = MessageTemplate()


def default_messages(direction: Direction = "in") -> Mapping[str, MessageTemplate]:
    """The built-in message for every key, for an entry (``in``) or exit (``out``) lane."""
    greeting = "欢迎光临" if direction == "in" else "一路顺风"

    def refusal(text: str) -> MessageTemplate:
        return MessageTemplate(lines=("{plate}", text), voice=text, colour=RED)

    return MappingProxyType(
        {
            OPEN: MessageTemplate(
                lines=("{plate}", greeting), voice="{plate}，" + greeting, colour=GREEN
            ),
            reasons.UNKNOWN: refusal("未授权车辆"),
            reasons.BLACKLIST: refusal("黑名单车辆"),
            reasons.EXPIRED: refusal("月卡已过期"),
            reasons.NOT_YET_VALID: refusal("月卡未生效"),
            reasons.OUTSIDE_HOURS: refusal("非通行时段"),
            reasons.DISABLED: refusal("车辆已停用"),
            reasons.WRONG_LANE: refusal("请走其他车道"),
            reasons.NO_PLATE: MessageTemplate(
                lines=("请稍候", "未识别车牌"), voice="未识别车牌，请稍候", colour=YELLOW
            ),
            DENIED: refusal("禁止通行"),
            reasons.OFFLINE_RECORD: SILENT,
            reasons.DUPLICATE: SILENT,
        }
    )


def default_idle(direction: Direction = "in") -> MessageTemplate:
    """The built-in idle text: the greeting, the time, and the free spaces when known."""
    greeting = "欢迎光临" if direction == "in" else "一路顺风"
    return MessageTemplate(lines=(greeting, "{time}", "剩余车位 {free}"), colour=GREEN)


def message_key(open_: bool, reason: str) -> str:
    """The message key of a decision (see the module docstring)."""
    if reason in (reasons.OFFLINE_RECORD, reasons.DUPLICATE):
        return reason
    if open_:
        return OPEN
    if reason in MESSAGE_KEYS:
        return reason
    return DENIED
