"""How camera firmware reads the server's replies: pure functions, no I/O.

These rules are deliberately the camera's, not the gateway's: strict where the
firmware is strict, so a gateway reply that a real camera would ignore is
ignored here too and shows up in the simulator's report.

Which replies a camera reads, and which fields of them, depends on its dialect
and firmware generation (:class:`CameraFirmware`, PROTOCOL.md sections 3, 4, 7
and 9):

* Vzenith reads the reply to a plate push, to an offline record, to a comet
  poll (``Response_AlarmInfoPlate``) and to a serial push
  (``Response_SerialData.serialData``). It never reads the reply to a
  registration in common-heartbeat mode, nor to an IO push or a snapshot
  upload. ``content`` and ``is_pay`` mean nothing to it.
* Older Vzenith firmware (plate pushes without ``plateid``) reads only
  ``info``, ``channelNum``, ``TriggerImage``, ``serialData`` and
  ``manualTrigger``.
* ParkingCam reads ``info``, ``content`` and ``serialData`` in a plate reply
  (``info`` always drives output 0), ``Response_Heartbeat`` (``info``,
  ``serialData``, ``shutoff``, ``snapnow``) or a whitelist command as the
  entire reply to a heartbeat or to a whitelist confirmation, and
  ``serialData`` in a serial reply. It has no ``ivs_ioctrl``,
  ``manualTrigger``, ``TriggerImage``, voice or ``white_list_operate``.

Every field a camera does not read is reported as ignored, with the kind of
reply it came in.

* Only a body that is exactly one JSON object (UTF-8, trailing blanks or NUL
  allowed; GB2312 for a ParkingCam camera set to it) is read. A bare string,
  an array, two concatenated objects, a BOM or broken JSON: the whole reply
  is ignored.
* ``info`` opens the barrier only when it is exactly ``"ok"``.
* ``serialData`` must be an array; each item needs an integer ``serialChannel``
  (0 or 1), a base64 ``data`` string and an integer ``dataLen`` of at most 512
  (the camera's copy buffer); exactly ``dataLen`` bytes are written. Anything
  else rejects that item.
* ``manualTrigger: "ok"`` (or a whole reply ``{"type": "AVS_TRIGGER"}``)
  triggers a recognition; the manual's misspelling ``manualTigger`` does nothing.
* ``white_list_operate`` applies at most 5 rows; further rows are ignored.
* Numbers sent as strings are wrong types: the field is not honoured.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeGuard

import attrs

__all__ = [
    "CameraFirmware",
    "ContinueOffline",
    "IoControl",
    "MAX_SERIAL_ITEM",
    "PARKINGCAM_HEARTBEAT_FIELDS",
    "PARKINGCAM_PLATE_FIELDS",
    "ParkingCamCommand",
    "REPLY_KINDS",
    "ReplyEffects",
    "SerialWrite",
    "SnapshotRequest",
    "VZENITH_LEGACY_PLATE_FIELDS",
    "VZENITH_PLATE_FIELDS",
    "VoiceRequest",
    "WHITELIST_ROWS_PER_REPLY",
    "Whitelist",
    "WhitelistEdit",
    "HeldPlate",
    "apply_parkingcam_command",
    "apply_whitelist_edit",
    "heartbeat_reply_effects",
    "local_open_allowed",
    "plate_reply_effects",
    "read_reply",
    "serial_reply_effects",
]

# The camera copies each serialData item into a 512-byte buffer.
MAX_SERIAL_ITEM = 512
# Rows of one white_list_operate the firmware honours.
WHITELIST_ROWS_PER_REPLY = 5
# ParkingCam whitelist command limits (PROTOCOL.md section 7).
PARKINGCAM_ADD_MAX = 1000
PARKINGCAM_DELETE_MAX = 10
PARKINGCAM_QUERY_MAX = 1000
# IO outputs a camera has (IO OUT 1-4).
IO_OUTPUTS = 4

# Response_AlarmInfoPlate fields each firmware reads (PROTOCOL.md sections 4 and 9).
VZENITH_LEGACY_PLATE_FIELDS = frozenset(
    {"info", "channelNum", "TriggerImage", "serialData", "manualTrigger"}
)
VZENITH_PLATE_FIELDS = VZENITH_LEGACY_PLATE_FIELDS | {
    "plateid",
    "ContinuePushOffline",
    "ivs_ioctrl",
    "playserver_json_request",
    "white_list_operate",
}
# A ParkingCam plate reply defines info, content, is_pay and serialData; is_pay
# is informational, so the camera acts on three of them.
PARKINGCAM_PLATE_FIELDS = frozenset({"info", "content", "serialData"})
PARKINGCAM_HEARTBEAT_FIELDS = frozenset({"info", "serialData", "shutoff", "snapnow"})
SERIAL_REPLY_FIELDS = frozenset({"serialData"})

# The requests a camera gets replies to: plate push (and its re-sends), offline
# record, comet poll, heartbeat (Vzenith registration in common-heartbeat mode,
# ParkingCam JSON heartbeat), ParkingCam whitelist confirmation, serial push,
# IO push, snapshot upload.
REPLY_KINDS = (
    "plate",
    "offline",
    "comet",
    "heartbeat",
    "whitelist_response",
    "serial",
    "io",
    "snapshot",
)

_VZENITH_TIME = "%Y-%m-%d %H:%M:%S"
_PARKINGCAM_TIME = "%Y%m%d%H%M%S"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def read_reply(body: bytes, charset: str = "utf-8") -> dict[str, Any] | None:
    """The reply as the firmware reads it: one JSON object, else ``None`` (ignored).

    ``charset`` is the camera's character encoding setting: "gb2312" reads
    the body as GB2312 (GB18030, its superset), as a ParkingCam camera set so
    does; a UTF-8 reply then reads as whatever those bytes mean in GB2312.
    """
    codec = "gb18030" if charset.lower() in ("gb2312", "gbk", "gb18030") else "utf-8"
    try:
        text = body.decode(codec)
    except UnicodeDecodeError:
        return None
    text = text.lstrip(" \t\r\n")
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    if text[end:].strip(" \t\r\n\x00"):
        # Something after the object (a second object, stray text): the
        # firmware's parser fails on it and the reply is dropped.
        return None
    return value


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@attrs.frozen
class SerialWrite:
    """Bytes the camera writes to one of its serial ports.

    ``data`` is exactly ``dataLen`` bytes. When the decoded ``data`` was
    shorter, the camera copies whatever its buffer held: modelled as NUL bytes
    and flagged ``short``.
    """

    channel: int
    data: bytes
    decoded_length: int
    short: bool = False


@attrs.frozen
class SnapshotRequest:
    """``TriggerImage`` in a reply: where to POST the grabbed frame."""

    absolute_url: str | None = None
    relative_url: str | None = None
    port: int | None = None


@attrs.frozen
class IoControl:
    """``ivs_ioctrl``: drive IO output ``io`` (0 off, 1 on, 2 pulse)."""

    io: int
    value: int
    delay_ms: int | None = None


@attrs.frozen
class VoiceRequest:
    """``playserver_json_request``: text the camera speaks."""

    text: str
    volume: int | None = None
    male: int | None = None


@attrs.frozen
class HeldPlate:
    """One row of the camera's own whitelist.

    Times are camera-local; ``None`` means open-ended on that side.
    """

    plate: str
    enable: int = 1
    need_alarm: int = 0
    enable_time: datetime | None = None
    overdue_time: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "plate": self.plate,
            "enable": self.enable,
            "need_alarm": self.need_alarm,
            "enable_time": (
                None if self.enable_time is None else f"{self.enable_time:{_VZENITH_TIME}}"
            ),
            "overdue_time": (
                None if self.overdue_time is None else f"{self.overdue_time:{_VZENITH_TIME}}"
            ),
        }


# The whitelist table, keyed by plate text.
Whitelist = Mapping[str, HeldPlate]


@attrs.frozen
class WhitelistEdit:
    """A ``white_list_operate`` as the firmware applies it.

    ``operation`` is ``"add"``, ``"delete"`` or ``"delete_all"`` (a delete of
    the empty plate). ``ignored_rows`` counts rows past the 5th.
    """

    operation: str
    rows: tuple[HeldPlate, ...] = ()
    ignored_rows: int = 0


@attrs.frozen
class ContinueOffline:
    """``ContinuePushOffline``: may the next stored record follow?"""

    plateid: int
    go_on: bool


@attrs.frozen
class ParkingCamCommand:
    """A ParkingCam whitelist command (the entire heartbeat reply)."""

    kind: str  # "add", "delete", "delete_all", "query"
    body: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ReplyEffects:
    """Everything a camera does because of one reply.

    ``readable`` is False when the body was not one JSON object (the camera
    ignored it). ``rejected`` lists, in words, fields the firmware refused.
    ``executed`` names the reply fields the camera acted on; ``ignored`` the
    ones it does not read at all (in this kind of reply, with this firmware),
    whatever their value.
    """

    readable: bool = True
    info_ok: bool = False
    open_channel: int | None = None
    close_barrier: bool = False
    plateid_echo: int | None = None
    retransfer_stop: bool = False
    continue_offline: ContinueOffline | None = None
    serial_writes: tuple[SerialWrite, ...] = ()
    snapshot: SnapshotRequest | None = None
    manual_trigger: bool = False
    io_controls: tuple[IoControl, ...] = ()
    voices: tuple[VoiceRequest, ...] = ()
    whitelist_edit: WhitelistEdit | None = None
    parkingcam_command: ParkingCamCommand | None = None
    rejected: tuple[str, ...] = ()
    executed: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


UNREADABLE = ReplyEffects(readable=False)


def _serial_items(value: Any, rejected: list[str]) -> tuple[SerialWrite, ...]:
    if not isinstance(value, list):
        rejected.append("serialData is not an array")
        return ()
    writes = []
    for index, item in enumerate(value):
        where = f"serialData[{index}]"
        if not isinstance(item, dict):
            rejected.append(f"{where} is not an object")
            continue
        channel = item.get("serialChannel")
        data = item.get("data")
        length = item.get("dataLen")
        if not _is_int(channel) or channel not in (0, 1):
            rejected.append(f"{where}.serialChannel is not 0 or 1")
            continue
        if not isinstance(data, str):
            rejected.append(f"{where}.data is not a string")
            continue
        if not _is_int(length):
            rejected.append(f"{where}.dataLen is not an integer")
            continue
        if not 0 <= length <= MAX_SERIAL_ITEM:
            rejected.append(f"{where}.dataLen {length} is outside 0-{MAX_SERIAL_ITEM}")
            continue
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            rejected.append(f"{where}.data is not base64")
            continue
        if length == 0:
            continue
        payload = decoded[:length] + b"\x00" * max(0, length - len(decoded))
        writes.append(SerialWrite(channel, payload, len(decoded), short=len(decoded) < length))
    return tuple(writes)


def _parse_time(value: Any, fmt: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return datetime.strptime(value, fmt)


def _whitelist_edit(value: Any, rejected: list[str]) -> WhitelistEdit | None:
    if not isinstance(value, dict):
        rejected.append("white_list_operate is not an object")
        return None
    operate = value.get("operate_type")
    data = value.get("white_list_data")
    if not _is_int(operate) or operate not in (0, 1):
        rejected.append("white_list_operate.operate_type is not 0 or 1")
        return None
    if not isinstance(data, list):
        rejected.append("white_list_operate.white_list_data is not an array")
        return None
    honoured, extra = data[:WHITELIST_ROWS_PER_REPLY], len(data) - WHITELIST_ROWS_PER_REPLY
    rows: list[HeldPlate] = []
    for index, item in enumerate(honoured):
        where = f"white_list_data[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("plate"), str):
            rejected.append(f"{where} has no plate string")
            continue
        plate = item["plate"]
        if operate == 1:
            if plate == "":
                return WhitelistEdit("delete_all", (), max(0, extra))
            rows.append(HeldPlate(plate))
            continue
        try:
            plate.encode("gb2312")
        except UnicodeEncodeError:
            rejected.append(f"{where}.plate is not GB2312")
            continue
        if not 7 <= len(plate) <= 15:
            rejected.append(f"{where}.plate length {len(plate)} is outside 7-15")
            continue
        enable, need_alarm = item.get("enable"), item.get("need_alarm")
        if not _is_int(enable) or enable not in (0, 1):
            rejected.append(f"{where}.enable is not 0 or 1")
            continue
        if not _is_int(need_alarm) or need_alarm not in (0, 1):
            rejected.append(f"{where}.need_alarm is not 0 or 1")
            continue
        try:
            start = (
                None
                if item.get("enable_time") is None
                else _parse_time(item["enable_time"], _VZENITH_TIME)
            )
            end = (
                None
                if item.get("overdue_time") is None
                else _parse_time(item["overdue_time"], _VZENITH_TIME)
            )
        except ValueError:
            rejected.append(f"{where} time is not YYYY-MM-DD hh:mm:ss")
            continue
        rows.append(HeldPlate(plate, enable, need_alarm, start, end))
    return WhitelistEdit("add" if operate == 0 else "delete", tuple(rows), max(0, extra))


def _unread_keys(reply: Mapping[str, Any], read: frozenset[str]) -> list[str]:
    """Top-level keys of ``reply`` the camera does not look at."""
    return [key for key in reply if key not in read]


def plate_reply_effects(
    reply: Mapping[str, Any] | None,
    fields: frozenset[str] = VZENITH_PLATE_FIELDS,
    whole_reply_trigger: bool = True,
) -> ReplyEffects:
    """Effects of a reply to a plate push or a comet poll (``Response_AlarmInfoPlate``).

    Only ``fields`` of it are read (the newer Vzenith firmware's by default);
    the others are reported as ignored. ``whole_reply_trigger``: a whole reply
    ``{"type": "AVS_TRIGGER"}`` triggers a recognition (Vzenith).
    """
    if reply is None:
        return UNREADABLE
    rejected: list[str] = []
    manual = whole_reply_trigger and reply.get("type") == "AVS_TRIGGER"
    top = {"Response_AlarmInfoPlate"} | ({"type"} if whole_reply_trigger else set())
    ignored = _unread_keys(reply, frozenset(top))
    raw = reply.get("Response_AlarmInfoPlate")
    if not isinstance(raw, dict):
        if "Response_AlarmInfoPlate" in reply:
            ignored.append("Response_AlarmInfoPlate")
        return ReplyEffects(
            manual_trigger=manual,
            executed=("type",) if manual else (),
            ignored=tuple(ignored),
        )
    response = {key: value for key, value in raw.items() if key in fields}
    ignored.extend(key for key in raw if key not in fields)

    open_channel: int | None = None
    channel_honoured = False
    if response.get("info") == "ok":
        channel = response.get("channelNum", 0)
        channel_honoured = "channelNum" in response
        if not _is_int(channel):
            rejected.append("channelNum is not an integer: output 0 used")
            channel = 0
            channel_honoured = False
        if 0 <= channel < IO_OUTPUTS:
            open_channel = channel
        else:
            rejected.append(f"channelNum {channel} is not an IO output")

    plateid = response.get("plateid")
    plateid_echo = plateid if _is_int(plateid) else None
    if plateid is not None and plateid_echo is None:
        rejected.append("plateid is not an integer")

    continue_offline = None
    if "ContinuePushOffline" in response:
        cpo = response["ContinuePushOffline"]
        if isinstance(cpo, dict) and _is_int(cpo.get("plateid")) and _is_int(cpo.get("continue")):
            continue_offline = ContinueOffline(cpo["plateid"], cpo["continue"] == 1)
        else:
            rejected.append("ContinuePushOffline needs integer plateid and continue")

    writes: tuple[SerialWrite, ...] = ()
    if "serialData" in response:
        writes = _serial_items(response["serialData"], rejected)

    snapshot = None
    if "TriggerImage" in response:
        trigger = response["TriggerImage"]
        if isinstance(trigger, dict):
            absolute = trigger.get("snapImageAbsolutelyUrl")
            relative = trigger.get("snapImageRelativeUrl")
            port = trigger.get("port")
            snapshot = SnapshotRequest(
                absolute if isinstance(absolute, str) and absolute else None,
                relative if isinstance(relative, str) and relative else None,
                port if _is_int(port) else None,
            )
            if snapshot.absolute_url is None and snapshot.relative_url is None:
                rejected.append("TriggerImage has no URL")
                snapshot = None
        else:
            rejected.append("TriggerImage is not an object")

    controls: tuple[IoControl, ...] = ()
    if "ivs_ioctrl" in response:
        ctrl = response["ivs_ioctrl"]
        if (
            isinstance(ctrl, dict)
            and _is_int(ctrl.get("io"))
            and 0 <= ctrl["io"] < IO_OUTPUTS
            and _is_int(ctrl.get("value"))
            and ctrl["value"] in (0, 1, 2)
        ):
            delay = ctrl.get("delay")
            controls = (IoControl(ctrl["io"], ctrl["value"], delay if _is_int(delay) else None),)
        else:
            rejected.append("ivs_ioctrl needs integer io 0-3 and value 0-2")

    voices: tuple[VoiceRequest, ...] = ()
    if "playserver_json_request" in response:
        play = response["playserver_json_request"]
        voice = _voice(play)
        if voice is None:
            rejected.append(
                "playserver_json_request is not a ps_voice_play with base64 UTF-8 voice"
            )
        else:
            voices = (voice,)

    edit = None
    if "white_list_operate" in response:
        edit = _whitelist_edit(response["white_list_operate"], rejected)

    retransfer_stop = response.get("content") == "retransfer_stop"
    manual_field = response.get("manualTrigger") == "ok"
    done = {
        "type": manual,
        "info": open_channel is not None,
        "channelNum": open_channel is not None and channel_honoured,
        "plateid": plateid_echo is not None,
        "content": retransfer_stop,
        "ContinuePushOffline": continue_offline is not None,
        "serialData": bool(writes),
        "TriggerImage": snapshot is not None,
        "manualTrigger": manual_field,
        "ivs_ioctrl": bool(controls),
        "playserver_json_request": bool(voices),
        "white_list_operate": edit is not None,
    }
    return ReplyEffects(
        info_ok=response.get("info") == "ok",
        open_channel=open_channel,
        plateid_echo=plateid_echo,
        retransfer_stop=retransfer_stop,
        continue_offline=continue_offline,
        serial_writes=writes,
        snapshot=snapshot,
        manual_trigger=manual or manual_field,
        io_controls=controls,
        voices=voices,
        whitelist_edit=edit,
        rejected=tuple(rejected),
        executed=tuple(name for name, happened in done.items() if happened),
        ignored=tuple(ignored),
    )


def _voice(play: Any) -> VoiceRequest | None:
    if not isinstance(play, dict) or play.get("type") != "ps_voice_play":
        return None
    voice = play.get("voice")
    if not isinstance(voice, str):
        return None
    try:
        text = base64.b64decode(voice, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    volume, male = play.get("voice_volume"), play.get("voice_male")
    return VoiceRequest(text, volume if _is_int(volume) else None, male if _is_int(male) else None)


def serial_reply_effects(reply: Mapping[str, Any] | None) -> ReplyEffects:
    """Effects of a reply to a serial push: ``Response_SerialData.serialData`` is
    written; nothing else in it is read."""
    if reply is None:
        return UNREADABLE
    ignored = _unread_keys(reply, frozenset({"Response_SerialData"}))
    response = reply.get("Response_SerialData")
    if not isinstance(response, dict):
        if "Response_SerialData" in reply:
            ignored.append("Response_SerialData")
        return ReplyEffects(ignored=tuple(ignored))
    ignored.extend(key for key in response if key not in SERIAL_REPLY_FIELDS)
    if "serialData" not in response:
        return ReplyEffects(ignored=tuple(ignored))
    rejected: list[str] = []
    writes = _serial_items(response["serialData"], rejected)
    return ReplyEffects(
        serial_writes=writes,
        rejected=tuple(rejected),
        executed=("serialData",) if writes else (),
        ignored=tuple(ignored),
    )


_PARKINGCAM_COMMANDS = {
    "addWhiteList": "add",
    "deleteWhiteList": "delete",
    "deleteWhiteListAll": "delete_all",
    "whiteList": "query",
}


def heartbeat_reply_effects(reply: Mapping[str, Any] | None) -> ReplyEffects:
    """Effects of a reply to a ParkingCam heartbeat (or to a whitelist confirmation).

    Either ``Response_Heartbeat`` (``info: "ok"`` opens output 0, ``shutoff:
    "ok"`` closes, ``snapnow: "yes"`` captures, ``serialData`` is written) or a
    whitelist command as the entire reply.
    """
    if reply is None:
        return UNREADABLE
    for key, kind in _PARKINGCAM_COMMANDS.items():
        if key in reply:
            return ReplyEffects(
                parkingcam_command=ParkingCamCommand(kind, {key: reply[key]}),
                executed=(key,),
                ignored=tuple(other for other in reply if other != key),
            )
    ignored = _unread_keys(reply, frozenset({"Response_Heartbeat"}))
    raw = reply.get("Response_Heartbeat")
    if not isinstance(raw, dict):
        if "Response_Heartbeat" in reply:
            ignored.append("Response_Heartbeat")
        return ReplyEffects(ignored=tuple(ignored))
    response = {key: value for key, value in raw.items() if key in PARKINGCAM_HEARTBEAT_FIELDS}
    ignored.extend(key for key in raw if key not in PARKINGCAM_HEARTBEAT_FIELDS)
    rejected: list[str] = []
    writes: tuple[SerialWrite, ...] = ()
    if "serialData" in response:
        writes = _serial_items(response["serialData"], rejected)
    done = {
        "info": response.get("info") == "ok",
        "serialData": bool(writes),
        "shutoff": response.get("shutoff") == "ok",
        "snapnow": response.get("snapnow") == "yes",
    }
    return ReplyEffects(
        info_ok=done["info"],
        open_channel=0 if done["info"] else None,
        close_barrier=done["shutoff"],
        manual_trigger=done["snapnow"],
        serial_writes=writes,
        rejected=tuple(rejected),
        executed=tuple(name for name, happened in done.items() if happened),
        ignored=tuple(ignored),
    )


def _every_field(reply: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The fields of a reply nobody reads: those inside each ``Response_*``
    object, and any other top-level key."""
    if reply is None:
        return ()
    fields: list[str] = []
    for key, value in reply.items():
        if key.startswith("Response_") and isinstance(value, dict):
            fields.extend(value)
        else:
            fields.append(key)
    return tuple(fields)


@attrs.frozen
class CameraFirmware:
    """What one camera's firmware reads in the replies it gets.

    ``dialect`` is "vzenith" or "parkingcam"; ``generation`` (Vzenith) is
    "current" (pushes carry ``plateid``) or "legacy" (the 2016-17 firmware);
    ``charset`` the camera's character encoding setting. :meth:`effects` is
    the whole decision, pure: which reply kinds are read, which fields of
    them are acted on, which are ignored (PROTOCOL.md sections 3, 4, 7, 9).
    The heartbeat mode decides which kind a registration reply is: "comet"
    (read) or "heartbeat" (a common heartbeat: never read by Vzenith).
    """

    dialect: str = "vzenith"
    generation: str = "current"
    charset: str = "utf-8"

    @property
    def plate_fields(self) -> frozenset[str]:
        """The ``Response_AlarmInfoPlate`` fields this firmware reads."""
        if self.dialect == "parkingcam":
            return PARKINGCAM_PLATE_FIELDS
        if self.generation == "legacy":
            return VZENITH_LEGACY_PLATE_FIELDS
        return VZENITH_PLATE_FIELDS

    def reads(self, kind: str) -> bool:
        """Whether the camera reads the reply to this kind of request at all."""
        if kind not in REPLY_KINDS:
            raise ValueError(f"unknown reply kind {kind!r}")
        if self.dialect == "parkingcam":
            return kind in ("plate", "heartbeat", "whitelist_response", "serial")
        # Vzenith: a common heartbeat's reply is ignored (section 3); IO pushes
        # and snapshot uploads have no reply to act on (section 2.2).
        return kind in ("plate", "offline", "comet", "serial")

    def effects(self, kind: str, body: bytes) -> ReplyEffects:
        """What the camera does with ``body``, the reply to a ``kind`` request."""
        reply = read_reply(body, self.charset)
        if not self.reads(kind):
            return ReplyEffects(ignored=_every_field(reply))
        if kind == "serial":
            return serial_reply_effects(reply)
        if self.dialect == "parkingcam":
            if kind == "plate":
                return plate_reply_effects(reply, self.plate_fields, whole_reply_trigger=False)
            return heartbeat_reply_effects(reply)
        return plate_reply_effects(reply, self.plate_fields, whole_reply_trigger=True)


def apply_whitelist_edit(table: Whitelist, edit: WhitelistEdit) -> dict[str, HeldPlate]:
    """The camera's whitelist after a ``white_list_operate`` (a new table)."""
    result = dict(table)
    if edit.operation == "delete_all":
        return {}
    for row in edit.rows:
        if edit.operation == "add":
            result[row.plate] = row
        else:
            result.pop(row.plate, None)
    return result


def local_open_allowed(table: Whitelist, plate: str, now: datetime) -> bool:
    """Whether the camera opens by itself for ``plate`` at camera time ``now``:
    listed, enabled, not a blacklist row, within its validity window."""
    row = table.get(plate)
    if row is None or row.enable != 1 or row.need_alarm != 0:
        return False
    if row.enable_time is not None and now < row.enable_time:
        return False
    if row.overdue_time is not None and now > row.overdue_time:
        return False
    return True


def _parkingcam_row(item: Any) -> HeldPlate | None:
    if not isinstance(item, dict) or not isinstance(item.get("carnum"), str) or not item["carnum"]:
        return None
    try:
        start = (
            None if not item.get("startime") else _parse_time(item["startime"], _PARKINGCAM_TIME)
        )
        end = None if not item.get("endtime") else _parse_time(item["endtime"], _PARKINGCAM_TIME)
    except ValueError:
        return None
    return HeldPlate(item["carnum"], 1, 0, start, end)


def _parkingcam_time(value: datetime | None) -> str:
    return "" if value is None else f"{value:{_PARKINGCAM_TIME}}"


def apply_parkingcam_command(
    table: Whitelist, command: ParkingCamCommand, serialno: str
) -> tuple[dict[str, HeldPlate], dict[str, Any]]:
    """Apply a ParkingCam whitelist command; returns the new table and the
    confirmation the camera POSTs back (``Response_AddWhiteList`` etc.).

    A malformed or oversized command changes nothing and is answered ``"no"``
    (the firmware's spelling ``reponse`` is kept).
    """
    result = dict(table)
    body = command.body
    if command.kind == "add":
        data = (
            body["addWhiteList"].get("add_data") if isinstance(body["addWhiteList"], dict) else None
        )
        parsed = [_parkingcam_row(item) for item in data] if isinstance(data, list) else []
        ok = isinstance(data, list) and len(data) <= PARKINGCAM_ADD_MAX and None not in parsed
        if ok:
            for row in parsed:
                if row is not None:
                    result[row.plate] = row
        return (result if ok else dict(table)), {
            "Response_AddWhiteList": {"reponse": "ok" if ok else "no", "serialno": serialno}
        }
    if command.kind == "delete":
        outer = body["deleteWhiteList"]
        data = outer.get("del_data") if isinstance(outer, dict) else None
        ok = (
            isinstance(data, list)
            and len(data) <= PARKINGCAM_DELETE_MAX
            and all(isinstance(item, dict) and isinstance(item.get("carnum"), str) for item in data)
        )
        if ok:
            assert isinstance(data, list)
            for item in data:
                result.pop(item["carnum"], None)
        return (result if ok else dict(table)), {
            "Response_DeleteWhiteList": {"reponse": "ok" if ok else "no", "serialno": serialno}
        }
    if command.kind == "delete_all":
        ok = body["deleteWhiteListAll"] == 1 and _is_int(body["deleteWhiteListAll"])
        return ({} if ok else dict(table)), {
            "Response_DelWhiteListAll": {"reponse": "ok" if ok else "no", "serialno": serialno}
        }
    query = body["whiteList"]
    count = query.get("queryNumList") if isinstance(query, dict) else None
    position = query.get("listPosition", 0) if isinstance(query, dict) else None
    if (
        not (_is_int(count) and _is_int(position))
        or not 0 <= count <= PARKINGCAM_QUERY_MAX
        or position < 0
    ):
        return result, {"Response_whiteList": {"reponse": "no", "serialno": serialno}}
    rows = list(table.values())[position : position + count]
    return result, {
        "Response_whiteList": {
            "serialno": serialno,
            "totalList": len(table),
            "data": [
                {
                    "carnum": row.plate,
                    "startime": _parkingcam_time(row.enable_time),
                    "endtime": _parkingcam_time(row.overdue_time),
                }
                for row in rows
            ],
        }
    }
