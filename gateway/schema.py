"""The configuration schema: validators, settings and sections. Pure: no
Twisted, no I/O beyond checking that a named file exists.

Each area of the gateway declares its settings once, as a frozen attrs class
whose fields are made with :func:`setting`::

    @attrs.frozen
    class StoreSettings:
        image_retention_days: int = setting(integer(1, 3650), default=30)

The field's validator converts and checks the value whether it comes from the
TOML file or from code, so there is one set of ranges and one wording of each
message. :class:`Section` reads a TOML table into such a class: unknown keys
first (a misspelt key usually explains whatever else fails), then missing
ones, then each value, and names the key of any problem by its full path
(``lane[2].display.port``). Array items are numbered from 1, the way an
installer counts the ``[[lane]]`` blocks in the file.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Generic, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

__all__ = [
    "ConfigError",
    "REQUIRED",
    "Section",
    "Validator",
    "boolean",
    "describe",
    "directory",
    "existing_file",
    "integer",
    "is_timezone",
    "network",
    "number",
    "one_of",
    "optional",
    "reject_unknown_keys",
    "setting",
    "table",
    "tables",
    "text",
    "text_list",
    "timezone_name",
]

class ConfigError(ValueError):
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

    def within(self, prefix: str) -> ConfigError:
        """This error seen from the table at ``prefix`` (``lane[2]`` makes
        ``display.port`` into ``lane[2].display.port``)."""
        if not prefix:
            return self
        path = f"{prefix}{self.path}" if self.path.startswith("[") else f"{prefix}.{self.path}"
        return ConfigError(path, self.reason, self.source)

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
    if not is_timezone(checked):
        raise ConfigError(
            path, f"must be an IANA time zone name such as \"Europe/Paris\", got {describe(checked)}"
        )
    return checked


def is_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA zone this machine knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def optional(check: Validator) -> Validator:
    """``check``, or None left as it is (for code that builds settings with
    an optional value absent)."""

    def check_optional(value: object, path: str) -> Any:
        return None if value is None else check(value, path)

    return check_optional


# --------------------------------------------------------------------------
# Settings and sections.


class _Required:
    """Marker for a key without a default."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_CHECK = "gateway.schema.check"
_KEY = "gateway.schema.key"

T = TypeVar("T")


def _converter(check: Validator, default: object) -> attrs.Converter[Any, Any]:
    def convert(value: object, field: attrs.Attribute[Any]) -> Any:
        # A default is a checked value already; None stays None for an
        # optional key left out.
        if value is default:
            return value
        return check(value, field.name)

    return attrs.Converter(convert, takes_field=True)


def setting(
    check: Validator,
    *,
    default: Any = REQUIRED,
    factory: Callable[[], Any] | None = None,
    key: bool = True,
    **field: Any,
) -> Any:
    """An attrs field checked (and converted) by ``check`` on construction.

    ``default`` is the value when the key is absent (REQUIRED: there is
    none); ``factory`` makes a default that depends on the machine (its host
    name, its time zone). ``key=False`` keeps the field out of the file's
    table: its value comes from elsewhere (the table's own name, another
    section). A bad value raises :class:`ConfigError` naming the field.
    """
    metadata = {_CHECK: check, _KEY: key}
    if factory is not None:
        return attrs.field(
            factory=factory, converter=_converter(check, REQUIRED), metadata=metadata, **field
        )
    if default is REQUIRED:
        return attrs.field(converter=_converter(check, REQUIRED), metadata=metadata, **field)
    return attrs.field(
        default=default, converter=_converter(check, default), metadata=metadata, **field
    )


class Section(Generic[T]):
    """A table of the file, read into the settings class ``build``.

    ``build``'s fields made with :func:`setting` are the table's keys (those
    with ``key=False`` are given by the caller of :meth:`parse`).
    """

    def __init__(self, build: type[T]) -> None:
        self.build = build
        fields = [field for field in attrs.fields(cast(Any, build)) if field.metadata.get(_KEY)]
        self._checks: dict[str, Validator] = {field.name: field.metadata[_CHECK] for field in fields}
        self.key_names: tuple[str, ...] = tuple(field.name for field in fields)
        self.required: tuple[str, ...] = tuple(
            field.name for field in fields if field.default is attrs.NOTHING
        )

    def parse(self, table: object, path: str, **given: Any) -> T:
        """Check ``table`` against this section and build its value."""
        if not isinstance(table, Mapping):
            raise ConfigError(path, f"must be a table, got {describe(table)}")
        reject_unknown_keys(table, self.key_names, path)
        for name in self.required:
            if name not in table:
                raise ConfigError(f"{path}.{name}" if path else name, "missing required key")
        # Checked here with the whole path first, so that a message naming
        # another key (an item listed twice) names it in full; the class
        # checks the values again, which leaves checked values as they are.
        values = {
            name: check(table[name], f"{path}.{name}" if path else name)
            for name, check in self._checks.items()
            if name in table
        }
        try:
            return self.build(**values, **given)
        except ConfigError as error:
            raise error.within(path) from None


def table(section: Section[T]) -> Validator:
    """A sub-table (``[lane.display]``) read by ``section``."""

    def check(value: object, path: str) -> T:
        if isinstance(value, section.build):
            return value
        return section.parse(value, path)

    return check


def tables(section: Section[T], *, unique: str | None = None) -> Validator:
    """An array of tables (``[[admin.users]]``), each read by ``section``.

    ``unique`` names a field no two items may share (compared without
    regard to case).
    """

    def check(value: object, path: str) -> tuple[T, ...]:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be an array of tables, got {describe(value)}")
        items: list[T] = []
        seen: dict[str, int] = {}
        for number_from_one, item in enumerate(value, start=1):
            item_path = f"{path}[{number_from_one}]"
            built = item if isinstance(item, section.build) else section.parse(item, item_path)
            if unique is not None:
                name = str(getattr(built, unique)).casefold()
                if name in seen:
                    raise ConfigError(
                        f"{item_path}.{unique}",
                        f"{describe(getattr(built, unique))} is already used by "
                        f"{path}[{seen[name]}]",
                    )
                seen[name] = number_from_one
            items.append(built)
        return tuple(items)

    return check


def reject_unknown_keys(table: Mapping[str, Any], known: Sequence[str], path: str) -> None:
    """Raise for the first key of ``table`` not in ``known``."""
    for name in table:
        if name not in known:
            key_path = f"{path}.{name}" if path else str(name)
            raise ConfigError(key_path, f"unknown key (known: {', '.join(known)})")
