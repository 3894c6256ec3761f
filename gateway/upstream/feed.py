"""The sync feed's answers, parsed and checked. Pure: no I/O.

One bad plate entry or command is skipped and reported; it never makes the
rest of the page unusable. A page that is not what the API says (not JSON,
no cursor) is unusable as a whole and is fetched again later.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from json import decoder as json_decoder
from json import scanner as json_scanner
from typing import Any

import attrs

from gateway.policy.codec import EntryCodec, EntryError
from gateway.policy.plates import is_no_plate, normalise_plate
from gateway.policy.whitelist import WhitelistEntry
from gateway.upstream.events import parse_time

__all__ = [
    "COMMAND_TYPES",
    "CloudCommand",
    "RejectedCommand",
    "SyncPage",
    "WhitelistUpdate",
    "command_from_json",
    "parse_sync_page",
]

COMMAND_TYPES = ("open", "snapshot", "trigger", "serial", "display")
MAX_CURSOR = 4096
MAX_COMMAND_ID = 128
MAX_CHANNEL = 15
MAX_SERIAL_BYTES = 4096
MAX_DISPLAY_LINES = 8


@attrs.frozen
class WhitelistUpdate:
    """The plate list part of a sync page.

    With ``replace`` the entries of ``upsert`` are the cloud's whole list
    (rows of source ``cloud`` not in it are removed); otherwise they are added
    or changed, then ``delete`` plates are removed. ``rejected`` describes
    the entries that were skipped.
    """

    replace: bool = False
    upsert: tuple[WhitelistEntry, ...] = ()
    delete: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.replace or self.upsert or self.delete)


@attrs.frozen
class CloudCommand:
    """A command of the sync feed for one camera.

    ``fields`` holds the checked type-specific fields: ``channel`` (open,
    serial; None: the lane's default), ``data`` (serial: the bytes, base64
    in JSON), ``lines`` and ``voice`` (display). It is what the
    :class:`~gateway.upstream.sync.CommandSink` receives.
    """

    id: str
    camera: str
    type: str
    expires_at: datetime | None = None
    fields: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class RejectedCommand:
    """A command that could not be understood, and why. ``id`` and
    ``camera`` are set when they could be read (the rejection is then
    reported back as a ``command_result`` event)."""

    id: str | None
    camera: str | None
    type: str | None
    reason: str


@attrs.frozen
class SyncPage:
    """One answer of ``GET /sync``."""

    cursor: str
    more: bool = False
    whitelist: WhitelistUpdate = WhitelistUpdate()
    commands: tuple[CloudCommand, ...] = ()
    rejected_commands: tuple[RejectedCommand, ...] = ()


def _text(entry: Mapping[str, Any], name: str) -> str:
    value = entry.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f'"{name}" must be a string, not {value!r}')
    return value


def _channel(command: Mapping[str, Any]) -> int | None:
    channel = command.get("channel")
    if channel is None:
        return None
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel <= MAX_CHANNEL:
        raise ValueError(f'"channel" must be an integer from 0 to {MAX_CHANNEL}, not {channel!r}')
    return channel


def command_from_json(command: Any) -> CloudCommand:
    """One command of the feed. Raises ``ValueError`` with the reason."""
    if not isinstance(command, dict):
        raise ValueError(f"a command must be a JSON object, not {command!r}")
    command_id = command.get("id")
    if not isinstance(command_id, str) or not command_id or len(command_id) > MAX_COMMAND_ID:
        raise ValueError(f'"id" must be a string of 1 to {MAX_COMMAND_ID} characters')
    camera = command.get("camera")
    if not isinstance(camera, str) or not camera.strip():
        raise ValueError('"camera" must be the serial number of a camera')
    kind = command.get("type")
    if kind not in COMMAND_TYPES:
        raise ValueError(f'"type" must be one of {", ".join(COMMAND_TYPES)}, not {kind!r}')
    expires_at = parse_time(command.get("expires_at"), '"expires_at"')
    fields: dict[str, Any] = {}
    if kind == "open":
        fields["channel"] = _channel(command)
    elif kind == "serial":
        fields["channel"] = _channel(command)
        data = command.get("data")
        if not isinstance(data, str):
            raise ValueError('"data" must be the bytes to send, in base64')
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError('"data" is not valid base64') from None
        if not 1 <= len(raw) <= MAX_SERIAL_BYTES:
            raise ValueError(f'"data" must hold 1 to {MAX_SERIAL_BYTES} bytes')
        fields["data"] = raw
    elif kind == "display":
        lines = command.get("lines")
        if (
            not isinstance(lines, list)
            or not 1 <= len(lines) <= MAX_DISPLAY_LINES
            or not all(isinstance(line, str) for line in lines)
        ):
            raise ValueError(f'"lines" must be a list of 1 to {MAX_DISPLAY_LINES} strings')
        fields["lines"] = tuple(lines)
        fields["voice"] = _text(command, "voice")
    return CloudCommand(
        id=command_id, camera=camera.strip(), type=kind, expires_at=expires_at, fields=fields
    )


def _describe_entry(index: int, entry: Any) -> str:
    plate = entry.get("plate") if isinstance(entry, dict) else None
    return f"entry {index}" + (f" ({plate})" if isinstance(plate, str) else "")


def _whitelist(part: Any, codec: EntryCodec) -> WhitelistUpdate:
    if part is None:
        return WhitelistUpdate()
    if not isinstance(part, dict):
        raise ValueError('"whitelist" must be an object')
    replace = part.get("replace", False)
    if not isinstance(replace, bool):
        raise ValueError('"whitelist.replace" must be true or false')
    upserts = part.get("upsert") or []
    deletes = part.get("delete") or []
    if not isinstance(upserts, list) or not isinstance(deletes, list):
        raise ValueError('"whitelist.upsert" and "whitelist.delete" must be lists')
    entries: list[WhitelistEntry] = []
    rejected: list[str] = []
    for index, item in enumerate(upserts):
        try:
            entries.append(codec.from_json(item, "cloud"))
        except EntryError as error:
            rejected.append(f"upsert {_describe_entry(index, item)}: {error}")
    plates: list[str] = []
    for index, plate in enumerate(deletes):
        if isinstance(plate, str) and not is_no_plate(plate):
            plates.append(normalise_plate(plate))
        else:
            rejected.append(f"delete entry {index}: not a plate: {plate!r}")
    return WhitelistUpdate(
        replace=replace, upsert=tuple(entries), delete=tuple(plates), rejected=tuple(rejected)
    )


def _read_or_none(command: Any, name: str) -> str | None:
    value = command.get(name) if isinstance(command, dict) else None
    return value if isinstance(value, str) and value else None


# Above this size a page is decoded by the json module's pure-Python decoder:
# the C decoder holds the interpreter lock for the whole body (a page of
# 100 000 entries: a tenth of a second on this machine, longer on a Pi), and
# with it the event loop, although it runs in another thread.
C_DECODER_LIMIT = 256 * 1024


class _YieldingDecoder(json.JSONDecoder):
    """The standard decoder with the pure-Python scanner: slower, but it
    runs as Python code, so other threads get the interpreter lock."""

    def __init__(self) -> None:
        super().__init__()
        self.parse_string = json_decoder.py_scanstring  # type: ignore[attr-defined]
        self.scan_once = json_scanner.py_make_scanner(self)  # type: ignore[attr-defined]


def _loads(body: bytes) -> Any:
    if len(body) <= C_DECODER_LIMIT:
        return json.loads(body)
    return _YieldingDecoder().decode(body.decode("utf-8"))


def parse_sync_page(body: bytes, codec: EntryCodec) -> SyncPage:
    """A ``GET /sync`` answer. Raises ``ValueError`` when the page as a whole
    is unusable; bad entries and commands are listed in the page instead.
    Entries are read by ``codec``, with the same checks as the admin API and
    the CSV file (lanes must be configured ones). A page of thousands of
    entries costs tens of milliseconds: call this off the reactor."""
    try:
        page = _loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError("the answer is not JSON") from None
    if not isinstance(page, dict):
        raise ValueError("the answer is not a JSON object")
    cursor = page.get("cursor")
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR:
        raise ValueError(f'"cursor" must be a string of at most {MAX_CURSOR} characters')
    more = page.get("more", False)
    if not isinstance(more, bool):
        raise ValueError('"more" must be true or false')
    whitelist = _whitelist(page.get("whitelist"), codec)
    raw_commands = page.get("commands") or []
    if not isinstance(raw_commands, list):
        raise ValueError('"commands" must be a list')
    commands: list[CloudCommand] = []
    rejected: list[RejectedCommand] = []
    for item in raw_commands:
        try:
            commands.append(command_from_json(item))
        except ValueError as error:
            rejected.append(
                RejectedCommand(
                    id=_read_or_none(item, "id"),
                    camera=_read_or_none(item, "camera"),
                    type=_read_or_none(item, "type"),
                    reason=str(error),
                )
            )
    return SyncPage(
        cursor=cursor,
        more=more,
        whitelist=whitelist,
        commands=tuple(commands),
        rejected_commands=tuple(rejected),
    )
