"""Request bodies exactly as camera firmware writes them: pure functions.

JSON pushes are pretty-printed with sorted keys and a 4-space indent, UTF-8
(ParkingCam cameras may be set to GB2312); a ParkingCam heartbeat is one
compact line. Registration is a curl-style ``multipart/form-data`` form with
its text parts in firmware order.

What each dialect and firmware generation puts in a plate push follows
PROTOCOL.md sections 2.1, 7 and 9: Vzenith's newer firmware adds ``plateid``,
``isoffline``, ``gioouts`` and the broken-down time; a ParkingCam body has the
manual's PlateResult fields plus its own, none of Vzenith's.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from gateway.simulator.plates import NO_PLATE, PlateRead, image_path

__all__ = [
    "BOUNDARY_STYLES",
    "CameraIdentity",
    "DETAIL_LEVELS",
    "JSON_CONTENT_TYPE",
    "PlateEvent",
    "PlateImages",
    "REGISTRATION_FIELDS",
    "SERIAL_KEYS",
    "camera_time_text",
    "encode_json",
    "heartbeat_body",
    "io_body",
    "make_boundary",
    "plate_body",
    "registration_form",
    "serial_body",
    "snapshot_body",
]

# What the firmware puts in Content-Type for every JSON push (sic: capital J).
JSON_CONTENT_TYPE = "application/Json"

# Registration text parts, in the order the firmware writes them.
REGISTRATION_FIELDS = (
    "device_name",
    "ipaddr",
    "port",
    "user_name",
    "pass_wd",
    "serialno",
    "channel_num",
)

# "curl": 24 dashes + 16 hex digits; "long": 28 dashes + 12 hex digits.
BOUNDARY_STYLES = {"curl": (24, 16), "long": (28, 12)}

# The camera's "content detail level", most to least.
DETAIL_LEVELS = ("all", "detailed", "short", "brief")

# How the serial number key is spelt in IO and serial pushes: ``serialno`` as
# firmware sends it, ``serialNo`` as the manual writes it (PROTOCOL.md section 9).
SERIAL_KEYS = ("serialno", "serialNo")

# Fields each level drops, cumulatively (PROTOCOL.md 2.1): "detailed" drops
# the extension fields and location, "short" also timeUsed and the
# colour/confidence fields, "brief" also timeStamp.
_EXTENSION_FIELDS = (
    "plate_true_width",
    "plate_distance",
    "is_fake_plate",
    "car_location",
    "car_brand",
    "feature_Code",
)
# PlateResult fields of a ParkingCam push (the ALPHADIGI manual's sample); the
# extension fields and SD-card paths are Vzenith's.
_PARKINGCAM_RESULT_FIELDS = frozenset(
    {
        "bright",
        "carBright",
        "carColor",
        "colorType",
        "colorValue",
        "confidence",
        "direction",
        "license",
        "location",
        "timeStamp",
        "timeUsed",
        "triggerType",
        "type",
    }
)
_DROPPED_AT = {
    "all": (),
    "detailed": _EXTENSION_FIELDS + ("location",),
    "short": _EXTENSION_FIELDS
    + ("location", "timeUsed", "colorValue", "confidence", "bright", "carBright", "carColor"),
    "brief": _EXTENSION_FIELDS
    + (
        "location",
        "timeUsed",
        "colorValue",
        "confidence",
        "bright",
        "carBright",
        "carColor",
        "timeStamp",
    ),
}


@attrs.frozen
class CameraIdentity:
    """Who a camera says it is in its bodies."""

    serialno: str
    ipaddr: str
    dialect: str = "vzenith"  # "vzenith" or "parkingcam"
    device_name: str = "IVS"
    channel: int = 0


@attrs.frozen
class PlateEvent:
    """One recognition, as the camera keeps it (also while stored offline)."""

    read: PlateRead
    plateid: int
    trigger_type: int
    sec: int
    usec: int
    direction: int = 0
    confidence: int = 90
    time_used: int = 30
    rect: tuple[int, int, int, int] = (120, 170, 216, 190)  # left, top, right, bottom
    sequence: int = 0  # the camera's picture counter (file name, vehicleId)


@attrs.frozen
class PlateImages:
    """JPEGs sent inside a plate push (``None``: that picture is not sent)."""

    full: bytes | None = None
    crop: bytes | None = None


def encode_json(value: Any, charset: str = "utf-8", compact: bool = False) -> bytes:
    """A body as the firmware prints it: sorted keys, 4-space indent, raw UTF-8.

    ``charset`` "gb2312" writes GB2312 (as GB18030, its superset) for
    ParkingCam cameras set that way. ``compact``: one line, no spaces (a
    ParkingCam heartbeat).
    """
    if compact:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    else:
        text = json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False)
    codec = "gb18030" if charset.lower() in ("gb2312", "gbk", "gb18030") else "utf-8"
    return text.encode(codec)


def camera_time_text(seconds: float) -> str:
    """A camera-local time as ParkingCam heartbeats write it: ``2025-02-05 18:03:53``."""
    return f"{datetime.fromtimestamp(seconds):%Y-%m-%d %H:%M:%S}"


def _timeval(sec: int, usec: int, with_decimal_fields: bool) -> dict[str, Any]:
    timeval: dict[str, Any] = {"sec": sec, "usec": usec}
    if with_decimal_fields:
        # Newer Vzenith firmware adds the broken-down local time.
        when = datetime.fromtimestamp(sec)
        timeval.update(
            decyear=when.year,
            decmon=when.month,
            decday=when.day,
            dechour=when.hour,
            decmin=when.minute,
            decsec=when.second,
        )
    return timeval


def plate_body(
    identity: CameraIdentity,
    event: PlateEvent,
    *,
    detail: str = "all",
    offline: bool = False,
    newer_firmware: bool = True,
    images: PlateImages = PlateImages(),
    image_len: str = "base64",
    gioouts: Sequence[int] = (0, 0, 0, 0),
    parkingcam_extra: Mapping[str, Any] | None = None,
    beside: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``AlarmInfoPlate`` push.

    Vzenith: ``newer_firmware`` adds ``plateid``, ``isoffline`` and ``gioouts``
    (with ``ionum`` as a string, as real cameras send it) and the broken-down
    local time (``decyear`` ...); the older firmware sends none of them.

    ParkingCam: the manual's PlateResult fields plus ``parkingcam_extra``
    (``Whitelist``, ``realplate`` ...), ``imagePath`` ``""`` and none of
    Vzenith's fields (no ``plateid``, extension fields or SD-card path).

    ``beside`` holds fields at the ``AlarmInfoPlate`` level, beside
    ``serialno`` (Vzenith ``rule_id``/``user_data``; ParkingCam ``openflag``,
    ``entityName`` ...). ``image_len`` says what the ``...Len`` fields hold:
    "base64" (the firmware that was read) or "raw".
    """
    if detail not in _DROPPED_AT:
        raise ValueError(f"unknown detail level {detail!r}")
    read = event.read
    left, top, right, bottom = event.rect
    result: dict[str, Any] = {
        "plate_true_width": 440 if len(read.license) < 8 else 480,
        "plate_distance": 40 + event.sequence % 30,
        "is_fake_plate": 0,
        "car_location": {
            "RECT": {
                "left": left - 80,
                "top": top - 120,
                "right": right + 80,
                "bottom": bottom + 60,
            }
        },
        "car_brand": {"brand": event.sequence % 128, "year": 2018, "type": 1},
        "feature_Code": f"{event.plateid:08x}",
        "bright": 0,
        "carBright": 0,
        "carColor": 0,
        "colorType": read.color_type,
        "colorValue": 0,
        "confidence": event.confidence,
        "direction": event.direction,
        "license": read.license,
        "location": {"RECT": {"left": left, "top": top, "right": right, "bottom": bottom}},
        "timeStamp": {
            "Timeval": _timeval(
                event.sec, event.usec, identity.dialect == "vzenith" and newer_firmware
            )
        },
        "timeUsed": event.time_used,
        "triggerType": event.trigger_type,
        "type": read.plate_type,
    }
    parkingcam = identity.dialect == "parkingcam"
    if parkingcam:
        result = {key: value for key, value in result.items() if key in _PARKINGCAM_RESULT_FIELDS}
    for name in _DROPPED_AT[detail]:
        result.pop(name, None)
    if parkingcam:
        # Real ParkingCam bodies carry an empty imagePath (PROTOCOL.md section 9).
        result["imagePath"] = ""
    elif images.full is None:
        when = datetime.fromtimestamp(event.sec)
        result["imagePath"] = image_path(_file_name_text(read.license), when, event.sequence)
    for key, image in (("imageFile", images.full), ("imageFragmentFile", images.crop)):
        if image is not None:
            encoded = base64.b64encode(image).decode("ascii")
            result[key] = encoded
            result[key + "Len"] = len(encoded) if image_len == "base64" else len(image)
    if parkingcam:
        result.update(parkingcam_extra or {})
    elif newer_firmware:
        result["plateid"] = event.plateid
        result["isoffline"] = 1 if offline else 0
        result["gioouts"] = [
            {"ionum": str(number), "ctrltype": state} for number, state in enumerate(gioouts)
        ]
    alarm: dict[str, Any] = {
        "channel": identity.channel,
        "deviceName": identity.device_name,
        "ipaddr": identity.ipaddr,
        "result": {"PlateResult": result},
        "serialno": identity.serialno,
    }
    alarm.update(beside or {})
    return {"AlarmInfoPlate": alarm}


def _file_name_text(license: str) -> str:
    """The plate as the camera writes it into a file name (GBK, no control characters)."""
    text = "".join(char for char in license if char >= " " and char != "\x7f")
    try:
        text.encode("gbk")
    except UnicodeEncodeError:
        return NO_PLATE
    return text


def io_body(
    identity: CameraIdentity, source: int, value: int, serial_key: str = "serialno"
) -> dict[str, Any]:
    """``AlarmGioIn``: IO input ``source`` (0-3) changed to ``value``.

    ``serial_key`` ``"serialNo"`` spells the key as the manual does."""
    return {
        "AlarmGioIn": {
            "deviceName": identity.device_name,
            "ipaddr": identity.ipaddr,
            "result": {"TriggerResult": {"source": source, "value": value}},
            serial_key: identity.serialno,
        }
    }


def serial_body(
    identity: CameraIdentity, serial_channel: int, data: bytes, serial_key: str = "serialno"
) -> dict[str, Any]:
    """``SerialData``: bytes received on a serial port.

    Reproduces the firmware bug: ``data`` is cut at the first NUL byte while
    ``dataLen`` keeps the true length. ``serial_key`` ``"serialNo"`` spells
    the key as the manual does.
    """
    sent = data.split(b"\x00", 1)[0]
    return {
        "SerialData": {
            "channel": identity.channel,
            serial_key: identity.serialno,
            "ipaddr": identity.ipaddr,
            "deviceName": identity.device_name,
            "serialChannel": serial_channel,
            "data": base64.b64encode(sent).decode("ascii"),
            "dataLen": len(data),
        }
    }


def snapshot_body(identity: CameraIdentity, image: bytes) -> dict[str, Any]:
    """``TriggerImage``: a grabbed frame; ``imageFileLen`` is the raw length here."""
    return {
        "TriggerImage": {
            "imageFile": base64.b64encode(image).decode("ascii"),
            "imageFileLen": len(image),
        },
        "ipaddr": identity.ipaddr,
    }


def heartbeat_body(
    identity: CameraIdentity,
    countid: int,
    sec: int,
    usec: int,
    start_ts: str | None = None,
    outage_ts: str | None = None,
) -> dict[str, Any]:
    """ParkingCam JSON heartbeat, lower-case ``heartbeat`` as real cameras send it.

    ``start_ts`` (camera start) and ``outage_ts`` (start of the current
    outage) are strings like ``"2025-02-05 18:03:53"``, not numbers
    (PROTOCOL.md section 9; see :func:`camera_time_text`).
    """
    beat: dict[str, Any] = {
        "countid": countid,
        "timeStamp": {"Timeval": {"sec": sec, "usec": usec}},
        "serialno": identity.serialno,
    }
    if start_ts is not None:
        beat["startTs"] = start_ts
    if outage_ts is not None:
        beat["outageTs"] = outage_ts
    return {"heartbeat": beat}


def make_boundary(rng: random.Random, style: str = "curl") -> str:
    """A fresh multipart boundary in one of the firmware builds' styles."""
    dashes, digits = BOUNDARY_STYLES[style]
    return "-" * dashes + f"{rng.getrandbits(4 * digits):0{digits}x}"


def registration_form(fields: Sequence[tuple[str, str]], boundary: str) -> tuple[bytes, str]:
    """A curl-style multipart form: (body, Content-Type header value)."""
    parts = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode("ascii")
            + value.encode("utf-8")
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode("ascii")
    return body, f"multipart/form-data; boundary={boundary}"
