"""Request bodies exactly as camera firmware writes them: pure functions.

JSON pushes are pretty-printed with sorted keys and a 4-space indent, UTF-8
(ParkingCam cameras may be set to GB2312). Registration is a curl-style
``multipart/form-data`` form with its text parts in firmware order.
"""

from __future__ import annotations

import base64
import json
import random
from datetime import datetime
from typing import Any, Sequence

import attrs

from gateway.simulator.plates import PlateRead, image_path

__all__ = [
    "BOUNDARY_STYLES",
    "CameraIdentity",
    "DETAIL_LEVELS",
    "JSON_CONTENT_TYPE",
    "PlateEvent",
    "PlateImages",
    "REGISTRATION_FIELDS",
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


def encode_json(value: Any, charset: str = "utf-8") -> bytes:
    """A body as the firmware prints it: sorted keys, 4-space indent, raw UTF-8.

    ``charset`` "gb2312" writes GB2312 (as GB18030, its superset) for
    ParkingCam cameras set that way.
    """
    text = json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False)
    codec = "gb18030" if charset.lower() in ("gb2312", "gbk", "gb18030") else "utf-8"
    return text.encode(codec)


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
    parkingcam_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``AlarmInfoPlate`` push.

    ``newer_firmware`` adds ``plateid``, ``isoffline`` and ``gioouts`` (with
    ``ionum`` as a string, as real cameras send it); ParkingCam bodies carry
    no ``plateid`` but their own extra fields. ``image_len`` says what the
    ``...Len`` fields hold: "base64" (the firmware that was read) or "raw".
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
        "timeStamp": {"Timeval": _timeval(event.sec, event.usec, identity.dialect == "vzenith")},
        "timeUsed": event.time_used,
        "triggerType": event.trigger_type,
        "type": read.plate_type,
    }
    for name in _DROPPED_AT[detail]:
        result.pop(name, None)
    if images.full is None:
        when = datetime.fromtimestamp(event.sec)
        result["imagePath"] = image_path(read.license, when, event.sequence)
    for key, image in (("imageFile", images.full), ("imageFragmentFile", images.crop)):
        if image is not None:
            encoded = base64.b64encode(image).decode("ascii")
            result[key] = encoded
            result[key + "Len"] = len(encoded) if image_len == "base64" else len(image)
    if identity.dialect == "parkingcam":
        result.update(parkingcam_extra or {})
    elif newer_firmware:
        result["plateid"] = event.plateid
        result["isoffline"] = 1 if offline else 0
        result["gioouts"] = [
            {"ionum": str(number), "ctrltype": state} for number, state in enumerate(gioouts)
        ]
    return {
        "AlarmInfoPlate": {
            "channel": identity.channel,
            "deviceName": identity.device_name,
            "ipaddr": identity.ipaddr,
            "result": {"PlateResult": result},
            "serialno": identity.serialno,
        }
    }


def io_body(identity: CameraIdentity, source: int, value: int) -> dict[str, Any]:
    """``AlarmGioIn``: IO input ``source`` (0-3) changed to ``value``."""
    return {
        "AlarmGioIn": {
            "deviceName": identity.device_name,
            "ipaddr": identity.ipaddr,
            "result": {"TriggerResult": {"source": source, "value": value}},
            "serialno": identity.serialno,
        }
    }


def serial_body(identity: CameraIdentity, serial_channel: int, data: bytes) -> dict[str, Any]:
    """``SerialData``: bytes received on a serial port.

    Reproduces the firmware bug: ``data`` is cut at the first NUL byte while
    ``dataLen`` keeps the true length.
    """
    sent = data.split(b"\x00", 1)[0]
    return {
        "SerialData": {
            "channel": identity.channel,
            "serialno": identity.serialno,
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
    start_ts: int | None = None,
    outage_ts: int | None = None,
) -> dict[str, Any]:
    """ParkingCam JSON heartbeat."""
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
