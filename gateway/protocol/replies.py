"""Replies to camera pushes: exactly what camera firmware accepts (PROTOCOL.md sections 4 and 7).

The camera reads only the first JSON value of a reply, only if it is an object, and its
parser does not coerce types. So every reply here is one compact UTF-8 JSON object without a
BOM, with integers as JSON integers and the exact strings firmware compares against
(``"ok"``, ``"retransfer_stop"``). Builders validate their inputs and raise ValueError (or
TypeError) on values no camera could act on: those are programming errors, not camera input.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "MAX_PARKINGCAM_DELETE_ROWS",
    "MAX_PARKINGCAM_WHITELIST_ROWS",
    "MAX_SERIAL_ITEM_BYTES",
    "MAX_WHITELIST_ROWS_PER_REPLY",
    "PARKINGCAM_FOREVER_END",
    "PARKINGCAM_FOREVER_START",
    "HeartbeatReply",
    "IoControl",
    "PlateReply",
    "TriggerImageRequest",
    "VoiceRequest",
    "WhitelistOperate",
    "CameraWhitelistRow",
    "ack_reply",
    "encode_reply",
    "idle_comet_reply",
    "parkingcam_add_whitelist",
    "parkingcam_delete_all_whitelist",
    "parkingcam_delete_whitelist",
    "parkingcam_query_whitelist",
    "serial_data_reply",
    "serial_items",
]

#: Most decoded bytes in one ``serialData`` item. The camera copies exactly ``dataLen`` bytes
#: into a 512-byte buffer, so items stay well below it.
MAX_SERIAL_ITEM_BYTES = 480

#: Most rows in one ``white_list_operate`` (the camera ignores longer lists).
MAX_WHITELIST_ROWS_PER_REPLY = 5

#: Most rows in one ParkingCam ``addWhiteList`` / ``whiteList`` query.
MAX_PARKINGCAM_WHITELIST_ROWS = 1000

#: Most rows in one ParkingCam ``deleteWhiteList``.
MAX_PARKINGCAM_DELETE_ROWS = 10

#: The validity window sent for a ParkingCam whitelist entry without start or end.
#: ParkingCam rows always carry both ``startime`` and ``endtime`` and neither the protocol
#: nor the manual defines an "unlimited" value, so "forever" is a range wider than any
#: real permit: from 2000-01-01 to the last second of 2099 (both 14-digit, as the camera
#: parses them).
PARKINGCAM_FOREVER_START = "20000101000000"
PARKINGCAM_FOREVER_END = "20991231235959"

# Vzenith rows: when only one end of the window is known, the other is filled with the same
# far bounds, since the firmware reads enable_time and overdue_time as a pair.
_VZENITH_FOREVER_START = "2000-01-01 00:00:00"
_VZENITH_FOREVER_END = "2099-12-31 23:59:59"

_MAX_VZENITH_PLATE_CHARS = 15
_MAX_DELAY_MS = 2**31 - 1


def encode_reply(obj: dict[str, Any]) -> bytes:
    """One compact JSON object, UTF-8 without BOM, non-ASCII text kept as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    # bool is an int subclass, and the camera would read true/false, not 0/1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, not {value}")
    return value


def _int_in(low: int, high: int) -> Any:
    """An attrs validator: an int (not a bool) in ``low..high``."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        _check_int(attribute.name, value, low, high)

    return validate


def _optional_int_in(low: int, high: int) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            _check_int(attribute.name, value, low, high)

    return validate


def _check_bytes(name: str, value: Any) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    return bytes(value)


def serial_items(channel: int, data: bytes) -> list[dict[str, Any]]:
    """``serialData`` items writing ``data`` to the camera's serial port ``channel``.

    The data is split into items of at most MAX_SERIAL_ITEM_BYTES decoded bytes, written by
    the camera in order; ``dataLen`` is the exact decoded length. Empty data gives no items.
    """
    _check_int("serialChannel", channel, 0, 255)
    payload = _check_bytes("serial data", data)
    return [
        {
            "serialChannel": channel,
            "data": base64.b64encode(chunk).decode("ascii"),
            "dataLen": len(chunk),
        }
        for chunk in (
            payload[start : start + MAX_SERIAL_ITEM_BYTES]
            for start in range(0, len(payload), MAX_SERIAL_ITEM_BYTES)
        )
    ]


def _serial_array(serial: Iterable[tuple[int, bytes]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for entry in serial:
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise TypeError("serial entries must be (channel, bytes) tuples")
        channel, data = entry
        items.extend(serial_items(channel, data))
    return items


def _validate_serial(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, list):
        raise TypeError(f"{attribute.name} must be a list of (channel, bytes) tuples")
    _serial_array(value)


def _vzenith_time(value: datetime) -> str:
    # The wall-clock time as given: cameras have no time zone, the caller picks local time.
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )


def _parkingcam_time(value: datetime) -> str:
    return (
        f"{value.year:04d}{value.month:02d}{value.day:02d}"
        f"{value.hour:02d}{value.minute:02d}{value.second:02d}"
    )


def _optional_datetime(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, datetime):
        raise TypeError(f"{attribute.name} must be a datetime or None")


def _check_plate(
    name: str, plate: Any, *, allow_empty: bool = False, max_chars: int | None = None
) -> str:
    if not isinstance(plate, str):
        raise TypeError(f"{name} must be a str, not {type(plate).__name__}")
    if plate != plate.strip():
        raise ValueError(f"{name} has surrounding blanks: {plate!r}")
    if not plate and not allow_empty:
        raise ValueError(f"{name} is empty")
    if max_chars is not None and len(plate) > max_chars:
        raise ValueError(f"{name} is longer than {max_chars} characters: {plate!r}")
    return plate


@attrs.frozen
class TriggerImageRequest:
    """Ask the camera for a snapshot, which it POSTs as a ``TriggerImage`` push to ``url``.

    ``absolute``: ``url`` is a full URL (preferred); otherwise a path joined by the camera
    to its configured server address, on ``port``.
    """

    port: int = attrs.field(validator=_int_in(1, 65535))
    url: str = attrs.field(validator=attrs.validators.instance_of(str))
    absolute: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if not self.url:
            raise ValueError("snapshot url is empty")

    def to_dict(self) -> dict[str, Any]:
        key = "snapImageAbsolutelyUrl" if self.absolute else "snapImageRelativeUrl"
        return {"port": self.port, key: self.url}


@attrs.frozen
class IoControl:
    """Drive one of the camera's IO outputs (``ivs_ioctrl``, newer firmware).

    ``value``: 0 off, 1 on, 2 pulse; ``delay`` in milliseconds.
    """

    io: int = attrs.field(validator=_int_in(0, 3))
    value: int = attrs.field(validator=_int_in(0, 2))
    delay: int = attrs.field(default=500, validator=_int_in(0, _MAX_DELAY_MS))

    def to_dict(self) -> dict[str, Any]:
        return {"io": self.io, "value": self.value, "delay": self.delay}


@attrs.frozen
class VoiceRequest:
    """Speak ``text`` through the camera's speaker (``playserver_json_request``)."""

    text: str = attrs.field(validator=attrs.validators.instance_of(str))
    volume: int = attrs.field(default=100, validator=_int_in(1, 100))
    male: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("voice text is empty")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "ps_voice_play",
            "voice": base64.b64encode(self.text.encode("utf-8")).decode("ascii"),
            "voice_volume": self.volume,
            "voice_male": int(self.male),
        }


@attrs.frozen
class CameraWhitelistRow:
    """One row of the camera's own whitelist (Vzenith ``white_list_data``).

    ``blacklist`` is the camera's ``need_alarm``. Without ``enable_time`` and
    ``overdue_time`` the row is valid forever. Delete operations send only ``plate``
    (an empty plate in a delete clears the whole list, per the manual).
    """

    plate: str
    enable: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    blacklist: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    enable_time: datetime | None = attrs.field(default=None, validator=_optional_datetime)
    overdue_time: datetime | None = attrs.field(default=None, validator=_optional_datetime)

    def __attrs_post_init__(self) -> None:
        _check_plate("plate", self.plate, allow_empty=True, max_chars=_MAX_VZENITH_PLATE_CHARS)

    def to_add_dict(self) -> dict[str, Any]:
        if not self.plate:
            raise ValueError("a whitelist row to add needs a plate")
        row: dict[str, Any] = {
            "plate": self.plate,
            "enable": int(self.enable),
            "need_alarm": int(self.blacklist),
        }
        if self.enable_time is not None or self.overdue_time is not None:
            row["enable_time"] = (
                _vzenith_time(self.enable_time) if self.enable_time else _VZENITH_FOREVER_START
            )
            row["overdue_time"] = (
                _vzenith_time(self.overdue_time) if self.overdue_time else _VZENITH_FOREVER_END
            )
        return row

    def to_delete_dict(self) -> dict[str, Any]:
        return {"plate": self.plate}


def _rows_tuple(rows: Iterable[CameraWhitelistRow]) -> tuple[CameraWhitelistRow, ...]:
    return tuple(rows)


def _validate_rows(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(row, CameraWhitelistRow) for row in value):
        raise TypeError("rows must be a tuple of CameraWhitelistRow")
    if not 1 <= len(value) <= MAX_WHITELIST_ROWS_PER_REPLY:
        raise ValueError(
            f"a reply carries 1..{MAX_WHITELIST_ROWS_PER_REPLY} whitelist rows, not {len(value)}"
        )


@attrs.frozen
class WhitelistOperate:
    """Edit the camera's own whitelist (``white_list_operate``): at most 5 rows per reply."""

    operate: str = attrs.field(validator=attrs.validators.in_(("add", "delete")))
    rows: tuple[CameraWhitelistRow, ...] = attrs.field(
        converter=_rows_tuple, validator=_validate_rows
    )

    def __attrs_post_init__(self) -> None:
        if self.operate == "add":
            for row in self.rows:
                row.to_add_dict()  # raises on a row that cannot be added

    def to_dict(self) -> dict[str, Any]:
        if self.operate == "add":
            return {"operate_type": 0, "white_list_data": [row.to_add_dict() for row in self.rows]}
        return {"operate_type": 1, "white_list_data": [row.to_delete_dict() for row in self.rows]}


def _optional_instance(kind: type) -> Any:
    return attrs.validators.optional(attrs.validators.instance_of(kind))


@attrs.define
class PlateReply:
    """``Response_AlarmInfoPlate``: the reply to a plate push and to a Vzenith comet poll.

    A mutable builder: fill in what the reply must carry, then ``to_bytes()``.

    * ``open_channel``: open the barrier on that IO output (``info: "ok"``); None answers
      ``info: "no"``. Never set it for an offline record or as a mere acknowledgement.
    * ``plateid``: echo of the push's ``plateid`` (always echo when present).
    * ``retransfer_stop``: stops ParkingCam re-sending the plate; set it on every plate reply.
    * ``continue_offline``: the ``plateid`` of an offline record being acknowledged, with
      ``continue_flag`` 1 (send the next stored record) or 0 (pause the upload).
    * ``serial``: (serial channel, bytes) written by the camera to its ports, in order.
    """

    open_channel: int | None = attrs.field(default=None, validator=_optional_int_in(0, 3))
    plateid: int | None = attrs.field(default=None, validator=_optional_int_in(-(2**63), 2**63 - 1))
    retransfer_stop: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    continue_offline: int | None = attrs.field(
        default=None, validator=_optional_int_in(-(2**63), 2**63 - 1)
    )
    continue_flag: int = attrs.field(default=1, validator=_int_in(0, 1))
    serial: list[tuple[int, bytes]] = attrs.field(factory=list, validator=_validate_serial)
    trigger_image: TriggerImageRequest | None = attrs.field(
        default=None, validator=_optional_instance(TriggerImageRequest)
    )
    manual_trigger: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    io_control: IoControl | None = attrs.field(
        default=None, validator=_optional_instance(IoControl)
    )
    voice: VoiceRequest | None = attrs.field(
        default=None, validator=_optional_instance(VoiceRequest)
    )
    whitelist: WhitelistOperate | None = attrs.field(
        default=None, validator=_optional_instance(WhitelistOperate)
    )
    is_pay: str | None = attrs.field(default=None, validator=_optional_instance(str))

    def to_dict(self) -> dict[str, Any]:
        """The reply as a JSON-ready dict (validated again: the builder is mutable)."""
        attrs.validate(self)
        body: dict[str, Any] = {}
        if self.open_channel is None:
            body["info"] = "no"
        else:
            # channelNum defaults to 0 on the camera; it is always sent so the reply says
            # which output opens without relying on a firmware default.
            body["info"] = "ok"
            body["channelNum"] = self.open_channel
        if self.plateid is not None:
            body["plateid"] = self.plateid
        if self.retransfer_stop:
            body["content"] = "retransfer_stop"
        if self.continue_offline is not None:
            body["ContinuePushOffline"] = {
                "plateid": self.continue_offline,
                "continue": self.continue_flag,
            }
        serial = _serial_array(self.serial)
        if serial:
            body["serialData"] = serial
        if self.trigger_image is not None:
            body["TriggerImage"] = self.trigger_image.to_dict()
        if self.manual_trigger:
            body["manualTrigger"] = "ok"
        if self.io_control is not None:
            body["ivs_ioctrl"] = self.io_control.to_dict()
        if self.voice is not None:
            body["playserver_json_request"] = self.voice.to_dict()
        if self.whitelist is not None:
            body["white_list_operate"] = self.whitelist.to_dict()
        if self.is_pay is not None:
            body["is_pay"] = self.is_pay
        return {"Response_AlarmInfoPlate": body}

    def to_bytes(self) -> bytes:
        """The reply body."""
        return encode_reply(self.to_dict())


@attrs.define
class HeartbeatReply:
    """``Response_Heartbeat``: the reply to a ParkingCam JSON heartbeat.

    ``open`` pulses the barrier relay (``info: "ok"``), ``shutoff`` closes the barrier,
    ``snapnow`` makes the camera capture; ``serial`` as in PlateReply.
    """

    open: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    serial: list[tuple[int, bytes]] = attrs.field(factory=list, validator=_validate_serial)
    shutoff: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    snapnow: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def to_dict(self) -> dict[str, Any]:
        """The reply as a JSON-ready dict."""
        attrs.validate(self)
        body: dict[str, Any] = {"info": "ok" if self.open else "no"}
        serial = _serial_array(self.serial)
        if serial:
            body["serialData"] = serial
        if self.shutoff:
            body["shutoff"] = "ok"
        if self.snapnow:
            body["snapnow"] = "yes"
        return {"Response_Heartbeat": body}

    def to_bytes(self) -> bytes:
        """The reply body."""
        return encode_reply(self.to_dict())


def idle_comet_reply() -> bytes:
    """The reply to a comet poll with nothing to deliver."""
    return encode_reply({"Response_AlarmInfoPlate": {"info": "no"}})


def serial_data_reply(serial: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """``Response_SerialData``: the reply to a serial push (both dialects), optionally
    carrying bytes for the camera to write to its ports."""
    body: dict[str, Any] = {"info": "ok"}
    items = _serial_array(serial)
    if items:
        body["serialData"] = items
    return encode_reply({"Response_SerialData": body})


def ack_reply() -> bytes:
    """The reply to pushes whose answer the camera ignores: IO input changes, snapshot
    uploads and ParkingCam whitelist results."""
    # It must be one JSON object (anything else can upset the camera's sender), and it must
    # carry no key the firmware acts on: a Response_AlarmInfoPlate here would be read as a
    # plate reply, where a stray "info" or "serialData" opens gates or writes to displays.
    # {"error_num": 0} means nothing to the firmware and reads as "no error" in the camera's
    # own log of server replies.
    return encode_reply({"error_num": 0})


def _check_row_count(what: str, count: int, most: int) -> None:
    if not 1 <= count <= most:
        raise ValueError(f"{what} takes 1..{most} rows, not {count}")


#: How ParkingCam whitelist bodies with plates may be written: the camera's "character
#: encoding" setting is UTF-8 or GB2312 (written as its superset GB18030: the same bytes
#: for every GB2312 character).
_PARKINGCAM_CHARSETS = {
    "utf-8": "utf-8",
    "gb18030": "gb18030",
    "gbk": "gb18030",
    "gb2312": "gb18030",
}


def _parkingcam_text_body(obj: dict[str, Any], charset: str) -> bytes:
    """A whitelist command in the camera's character encoding (PROTOCOL.md section 9):
    one compact JSON object, non-ASCII text as ``charset`` bytes."""
    codec = _PARKINGCAM_CHARSETS.get(charset.lower())
    if codec is None:
        raise ValueError(f"ParkingCam cameras read UTF-8 or GB2312, not {charset!r}")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        codec
    )


def parkingcam_add_whitelist(
    rows: Sequence[tuple[str, datetime | None, datetime | None]], *, charset: str | None = None
) -> bytes:
    """ParkingCam ``addWhiteList`` (sent as the entire heartbeat reply; up to 1000 rows).

    Each row is (plate, start, end); a missing start or end means unlimited on that side
    (PARKINGCAM_FOREVER_START / PARKINGCAM_FOREVER_END). The camera answers with a
    ``Response_AddWhiteList`` push. ``charset`` is the encoding the camera's pushes come
    in ("utf-8" or "gb18030"); None (not known yet) writes UTF-8, as the ALPHADIGI manual
    does.
    """
    _check_row_count("addWhiteList", len(rows), MAX_PARKINGCAM_WHITELIST_ROWS)
    add_data = []
    for row in rows:
        if not isinstance(row, tuple) or len(row) != 3:
            raise TypeError("addWhiteList rows must be (plate, start, end) tuples")
        plate, start, end = row
        _check_plate("carnum", plate)
        for when in (start, end):
            if when is not None and not isinstance(when, datetime):
                raise TypeError("addWhiteList times must be datetime or None")
        add_data.append(
            {
                "carnum": plate,
                "startime": PARKINGCAM_FOREVER_START if start is None else _parkingcam_time(start),
                "endtime": PARKINGCAM_FOREVER_END if end is None else _parkingcam_time(end),
            }
        )
    return _parkingcam_text_body({"addWhiteList": {"add_data": add_data}}, charset or "utf-8")


def parkingcam_delete_whitelist(plates: Sequence[str], *, charset: str | None = None) -> bytes:
    """ParkingCam ``deleteWhiteList`` (entire heartbeat reply; up to 10 plates).

    ``charset`` is the encoding the camera's pushes come in: the ALPHADIGI manual's GB2312
    ``carnum`` is that of a camera set to GB2312, and a camera reads every body in its own
    setting. None (not known yet) writes UTF-8, the manual's encoding for bodies.
    """
    if isinstance(plates, str):
        raise TypeError("plates must be a sequence of plates, not one str")
    _check_row_count("deleteWhiteList", len(plates), MAX_PARKINGCAM_DELETE_ROWS)
    del_data = [{"carnum": _check_plate("carnum", plate)} for plate in plates]
    return _parkingcam_text_body(
        {"deleteWhiteList": {"del_data": del_data}}, charset or "utf-8"
    )


def parkingcam_delete_all_whitelist() -> bytes:
    """ParkingCam ``deleteWhiteListAll`` (entire heartbeat reply)."""
    return encode_reply({"deleteWhiteListAll": 1})


def parkingcam_query_whitelist(
    count: int = MAX_PARKINGCAM_WHITELIST_ROWS, position: int = 0
) -> bytes:
    """ParkingCam ``whiteList`` query (entire heartbeat reply): ``count`` rows (<= 1000)
    from ``position``; the camera answers with a ``Response_whiteList`` push."""
    _check_int("queryNumList", count, 1, MAX_PARKINGCAM_WHITELIST_ROWS)
    _check_int("listPosition", position, 0, 2**31 - 1)
    return encode_reply({"whiteList": {"queryNumList": count, "listPosition": position}})
