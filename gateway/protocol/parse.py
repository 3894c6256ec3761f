"""Camera pushes: bytes on the wire -> typed messages (PROTOCOL.md sections 2, 3 and 7).

Routing is by content, never by URL path: sites point several camera settings at one path
and mix them up. Cameras in the field send every shape of body (pretty or compact JSON,
GB2312 text, a trailing NUL, numbers as strings, fields dropped by the camera's "detail
level"), so every field is optional except the one that identifies the message, and any
bad input ends in a ProtocolError whose text is one short line fit for a 400 response and a
log line. Nothing else may escape: a parser exception must never take a connection down.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Callable, Mapping
from urllib.parse import unquote_to_bytes

from gateway.protocol.messages import (
    CameraImage,
    CameraTime,
    Dialect,
    Heartbeat,
    IoInput,
    Message,
    PlateResult,
    ProtocolError,
    SerialData,
    SnapshotUpload,
    WhitelistOperation,
    WhitelistResult,
)
from gateway.protocol.multipart import (
    boundary_from_body,
    boundary_from_content_type,
    parse_registration,
)

__all__ = [
    "NO_PLATE_LICENSES",
    "PARKINGCAM_PLATE_FIELDS",
    "decode_body",
    "decode_image_path",
    "looks_like_vzenith_serial",
    "parse_push",
]

#: What a camera puts in ``license`` when it read no plate.
NO_PLATE_LICENSES = frozenset({"_无_", "无", ""})

#: PlateResult fields only ParkingCam / Qianyi firmware sends (PROTOCOL.md section 7).
PARKINGCAM_PLATE_FIELDS = frozenset(
    {"openflag", "Whitelist", "realplate", "retryflag", "speed", "vehicleId"}
)

_VZENITH_SERIAL = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{8}")

_IMAGE_FIELDS = (
    ("imageFile", "imageFileLen", "full"),
    ("imageFragmentFile", "imageFragmentFileLen", "crop"),
)
_IMAGE_KEYS = frozenset(field for field, _, _ in _IMAGE_FIELDS)

_WHITELIST_RESULT_KEYS = {
    "response_addwhitelist": WhitelistOperation.ADD,
    "response_deletewhitelist": WhitelistOperation.DELETE,
    "response_delwhitelistall": WhitelistOperation.DELETE_ALL,
    "response_whitelist": WhitelistOperation.QUERY,
}

# Whitespace and NUL a camera may leave after the body (C strings sent with their terminator).
_TRAILING_JUNK = b"\x00\t\n\x0b\x0c\r "
_BASE64_WHITESPACE = b"\t\n\x0b\x0c\r "

# Integers outside SQLite's signed 64-bit range cannot be real camera values.
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
# CameraTime.as_datetime must work for every parsed time: 1970-01-01 .. 9999-12-31.
_MAX_EPOCH_SECONDS = 253_402_300_799

# A JSON \u escape of a UTF-16 surrogate; only such escapes can put a lone surrogate in a str.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")

_MAX_KEYS_IN_ERROR = 4
_MAX_KEY_CHARS_IN_ERROR = 32


# --------------------------------------------------------------------------- text and JSON


def decode_body(body: bytes) -> str:
    """The text of a push body.

    Strips trailing NUL bytes and whitespace, decodes UTF-8 (a UTF-8 BOM is tolerated) and
    falls back to GB18030, since ParkingCam cameras can be set to send GB2312.
    Raises ProtocolError when the body is neither.
    """
    data = body.rstrip(_TRAILING_JUNK)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            raise ProtocolError("body is not text (neither UTF-8 nor GB18030)") from None
    # A GB18030 BOM decodes to U+FEFF, which json refuses.
    return text.removeprefix("\ufeff")


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; they would also break the upstream's JSON later.
    raise ProtocolError(f"malformed JSON: {name} is not a JSON value")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e999 parses to infinity, which no JSON encoder can write back upstream.
        raise ProtocolError(f"malformed JSON: number {_short(text, 24)} is out of range")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string (key or value) in a parsed JSON tree cannot be encoded as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings = [item]
        elif isinstance(item, dict):
            strings = list(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _load_json_object(body: bytes) -> dict[str, Any]:
    text = decode_body(body)
    if not text.strip():
        raise ProtocolError("empty body")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
    except ProtocolError:
        raise
    except json.JSONDecodeError as e:
        raise ProtocolError(
            f"malformed JSON at line {e.lineno} column {e.colno} ({e.msg})"
        ) from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None
    except ValueError as e:
        # e.g. an integer literal longer than Python's int conversion limit
        raise ProtocolError(f"malformed JSON: {_short(str(e), 60)}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"JSON body is a {_json_type(value)}, not an object")
    # Lone surrogates (from \uD800-style escapes) would fail later, when the event is stored
    # or sent upstream; a camera never sends them, so refuse the body here.
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise ProtocolError("malformed JSON: unpaired surrogate escape")
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(text: str, limit: int) -> str:
    """``text`` made safe for a one-line reason: printable, at most ``limit`` characters."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


# --------------------------------------------------------------------------- lenient fields


def _int(value: Any) -> int | None:
    """An integer from what a camera sent: an int, a bool, an integral float or a numeric
    string. Anything else (or an absurd magnitude) is None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        result = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 24:
            return None
        try:
            result = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            if not math.isfinite(number) or not number.is_integer():
                return None
            result = int(number)
    else:
        return None
    return result if _INT_MIN <= result <= _INT_MAX else None


def _str(value: Any) -> str | None:
    """A text field, stripped; None when absent, blank or not a string."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text or None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _camera_time(value: Any) -> CameraTime | None:
    """``timeStamp.Timeval.sec/usec``; None when absent or unusable."""
    time_stamp = _dict(value)
    timeval = _dict(time_stamp.get("Timeval")) if time_stamp is not None else None
    if timeval is None:
        return None
    sec = _int(timeval.get("sec"))
    if sec is None or not 0 <= sec <= _MAX_EPOCH_SECONDS:
        return None
    usec = _int(timeval.get("usec"))
    if usec is None or not 0 <= usec < 1_000_000:
        usec = 0
    return CameraTime(sec=sec, usec=usec)


def looks_like_vzenith_serial(serialno: str | None) -> bool:
    """Whether a serial number has the Vzenith shape (``d85b1269-8f942256``)."""
    return serialno is not None and _VZENITH_SERIAL.fullmatch(serialno) is not None


def _serial_dialect(serialno: str | None) -> Dialect:
    # A missing serial number says nothing; the manual's (Vzenith) dialect is the default.
    if serialno is None or looks_like_vzenith_serial(serialno):
        return Dialect.VZENITH
    return Dialect.PARKINGCAM


def _b64decode(value: str, what: str) -> bytes:
    """Standard base64, tolerating whitespace, line breaks and missing padding."""
    try:
        data = value.encode("ascii")
    except UnicodeEncodeError:
        raise ProtocolError(f"{what} is not valid base64") from None
    # translate/rstrip are linear: multi-megabyte images must not cost more than a copy.
    data = data.translate(None, _BASE64_WHITESPACE).rstrip(b"=")
    data += b"=" * (-len(data) % 4)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{what} is not valid base64") from None


def _image(
    container: Mapping[str, Any],
    field: str,
    length_field: str,
    kind: str,
    what: str,
    *,
    fallback_length_field: str | None = None,
) -> CameraImage | None:
    """The image in ``container[field]``, or None when absent, empty or not a string."""
    encoded = container.get(field)
    if not isinstance(encoded, str) or not encoded.strip():
        return None
    data = _b64decode(encoded, what)
    declared = _int(container.get(length_field))
    if declared is None and fallback_length_field is not None:
        declared = _int(container.get(fallback_length_field))
    if declared is None:
        length_ok = True
    else:
        # Firmware disagrees on whether the length is of the base64 text or of the JPEG.
        base64_lengths = {
            4 * ((len(data) + 2) // 3),  # padded
            (4 * len(data) + 2) // 3,  # unpadded
            len(encoded),  # as sent, line breaks included
        }
        length_ok = declared == len(data) or declared in base64_lengths
    return CameraImage(kind=kind, data=data, declared_length=declared, length_ok=length_ok)


def decode_image_path(path: str) -> str:
    """A camera's ``imagePath`` made readable.

    The file name embeds the plate in GBK, percent-encoded (``%D4%C1`` = 粤): unquote to
    bytes, then decode GBK (through its superset GB18030), replacing undecodable bytes.
    A path that is not percent-encoded is returned as is.
    """
    if "%" not in path or not path.isascii():
        return path
    return unquote_to_bytes(path).decode("gb18030", errors="replace")


# --------------------------------------------------------------------------- messages


def _parse_plate(top: dict[str, Any], inner: dict[str, Any]) -> PlateResult:
    result = _dict(inner.get("result"))
    plate = _dict(result.get("PlateResult")) if result is not None else None
    if plate is None:
        raise ProtocolError("AlarmInfoPlate without result.PlateResult object")
    if "license" not in plate:
        raise ProtocolError("plate result without license")
    license_value = plate["license"]
    if not isinstance(license_value, str):
        raise ProtocolError(f"plate result: license is a {_json_type(license_value)}, not a string")
    license_text = license_value.strip()

    serialno = _str(inner.get("serialno"))
    # A corrupt image must not cost the plate: a 400 would make the camera
    # drop the whole event (PROTOCOL.md section 4). Keep the read, note the loss.
    images: list[CameraImage] = []
    image_errors: list[str] = []
    for field, length_field, kind in _IMAGE_FIELDS:
        try:
            image = _image(plate, field, length_field, kind, field)
        except ProtocolError as error:
            image_errors.append(str(error))
            continue
        if image is not None:
            images.append(image)
    image_path = _str(plate.get("imagePath"))
    has_parkingcam_fields = not PARKINGCAM_PLATE_FIELDS.isdisjoint(plate) or not (
        PARKINGCAM_PLATE_FIELDS.isdisjoint(inner)
    )
    if has_parkingcam_fields or _serial_dialect(serialno) is Dialect.PARKINGCAM:
        dialect = Dialect.PARKINGCAM
    else:
        dialect = Dialect.VZENITH
    offline = _int(plate.get("isoffline"))
    return PlateResult(
        dialect=dialect,
        serialno=serialno,
        license=license_text,
        has_plate=license_text not in NO_PLATE_LICENSES,
        device_name=_str(inner.get("deviceName")),
        ipaddr=_str(inner.get("ipaddr")),
        channel=_int(inner.get("channel")),
        plateid=_int(plate.get("plateid")),
        offline=bool(offline),
        trigger_type=_int(plate.get("triggerType")),
        camera_time=_camera_time(plate.get("timeStamp")),
        color_type=_int(plate.get("colorType")),
        plate_type=_int(plate.get("type")),
        direction=_int(plate.get("direction")),
        confidence=_int(plate.get("confidence")),
        image_path=decode_image_path(image_path) if image_path is not None else None,
        images=tuple(images),
        image_errors=tuple(image_errors),
        raw={key: value for key, value in plate.items() if key not in _IMAGE_KEYS},
    )


def _parse_io_input(key: str, top: dict[str, Any], inner: dict[str, Any]) -> IoInput:
    result = _dict(inner.get("result"))
    trigger = _dict(result.get("TriggerResult")) if result is not None else None
    if trigger is None:
        trigger = {}
    return IoInput(
        serialno=_str(inner.get("serialno")),
        source=_int(trigger.get("source")),
        value=_int(trigger.get("value")),
        device_name=_str(inner.get("deviceName")),
        ipaddr=_str(inner.get("ipaddr")),
        channel=_int(inner.get("channel")),
        key=key,
        raw=dict(inner),
    )


def _parse_serial(top: dict[str, Any], inner: dict[str, Any]) -> SerialData:
    if "data" not in inner:
        raise ProtocolError("serial push without data")
    encoded = inner["data"]
    if not isinstance(encoded, str):
        raise ProtocolError(f"serial push: data is a {_json_type(encoded)}, not a string")
    data = _b64decode(encoded, "serial push: data")
    declared = _int(inner.get("dataLen"))
    serial_channel = _int(inner.get("serialChannel"))
    serialno = _str(inner.get("serialno"))
    return SerialData(
        serialno=serialno,
        serial_channel=serial_channel if serial_channel is not None else 0,
        data=data,
        declared_length=declared,
        # Firmware cuts ``data`` at the first NUL but reports the true length: flag it, never
        # pad. A declared length below what arrived is just a wrong count.
        truncated=declared is not None and declared > len(data),
        dialect=_serial_dialect(serialno),
        device_name=_str(inner.get("deviceName")),
        ipaddr=_str(inner.get("ipaddr")),
        channel=_int(inner.get("channel")),
    )


def _parse_snapshot(top: dict[str, Any], inner: dict[str, Any]) -> SnapshotUpload:
    encoded = inner.get("imageFile")
    if encoded is None:
        raise ProtocolError("snapshot upload without imageFile")
    if not isinstance(encoded, str):
        raise ProtocolError(f"snapshot upload: imageFile is a {_json_type(encoded)}, not a string")
    # imageFileLen is the raw length here; some firmware adds imageFileBase64Len instead.
    image = _image(
        inner,
        "imageFile",
        "imageFileLen",
        "full",
        "snapshot upload: imageFile",
        fallback_length_field="imageFileBase64Len",
    )
    if image is None:
        raise ProtocolError("snapshot upload with an empty imageFile")
    # ipaddr (and serialno on some firmware) sit beside TriggerImage, not inside it.
    return SnapshotUpload(
        image=image,
        ipaddr=_str(top.get("ipaddr")) or _str(inner.get("ipaddr")),
        serialno=_str(top.get("serialno")) or _str(inner.get("serialno")),
    )


def _parse_heartbeat(top: dict[str, Any], inner: dict[str, Any]) -> Heartbeat:
    if "serialno" not in inner:
        raise ProtocolError("heartbeat without serialno")
    serialno = inner["serialno"]
    if not isinstance(serialno, str):
        raise ProtocolError(f"heartbeat: serialno is a {_json_type(serialno)}, not a string")
    if not serialno.strip():
        raise ProtocolError("heartbeat with an empty serialno")
    return Heartbeat(
        serialno=serialno.strip(),
        countid=_int(inner.get("countid")),
        camera_time=_camera_time(inner.get("timeStamp")),
        outage_ts=_int(inner.get("outageTs")),
        start_ts=_int(inner.get("startTs")),
        raw=dict(inner),
    )


def _parse_whitelist_result(
    operation: WhitelistOperation, top: dict[str, Any], value: Any
) -> WhitelistResult:
    if isinstance(value, dict):
        # Firmware spells these inconsistently ("reponse", sic): match names case-insensitively.
        fields = {str(key).lower(): item for key, item in value.items()}
        raw: dict[str, Any] = dict(value)
    else:
        # Some builds answer with a bare "ok" under the key.
        fields = {"response": value}
        raw = {}
    answer = fields.get("reponse", fields.get("response"))
    ok: bool | None = None
    if isinstance(answer, str):
        ok = {"ok": True, "no": False}.get(answer.strip().lower())
    rows_value = fields.get("data")
    rows: tuple[dict[str, Any], ...] = ()
    if isinstance(rows_value, list):
        rows = tuple(row for row in rows_value if isinstance(row, dict))
    return WhitelistResult(
        operation=operation,
        serialno=_str(fields.get("serialno")) or _str(top.get("serialno")),
        ok=ok,
        total=_int(fields.get("totallist")),
        rows=rows,
        raw=raw,
    )


def _inner_object(top: dict[str, Any], key: str) -> dict[str, Any]:
    inner = top[key]
    if not isinstance(inner, dict):
        name = _short(key, _MAX_KEY_CHARS_IN_ERROR)
        raise ProtocolError(f"{name} is a {_json_type(inner)}, not an object")
    return inner


_Handler = Callable[[dict[str, Any], dict[str, Any]], Message]

# In priority order: a body with several recognised keys is read as the first one listed.
_HANDLERS: tuple[tuple[str, _Handler], ...] = (
    ("AlarmInfoPlate", _parse_plate),
    ("AlarmGioIn", lambda top, inner: _parse_io_input("AlarmGioIn", top, inner)),
    ("AlarmIoIn", lambda top, inner: _parse_io_input("AlarmIoIn", top, inner)),
    ("SerialData", _parse_serial),
    ("TriggerImage", _parse_snapshot),
    ("heartbeat", _parse_heartbeat),
    ("Heartbeat", _parse_heartbeat),
)


def _parse_json_push(body: bytes) -> Message:
    top = _load_json_object(body)
    for key, handler in _HANDLERS:
        if key in top:
            return handler(top, _inner_object(top, key))
    for key, value in top.items():
        operation = _WHITELIST_RESULT_KEYS.get(key.lower())
        if operation is not None:
            return _parse_whitelist_result(operation, top, value)
    if not top:
        raise ProtocolError("unrecognised push: empty JSON object")
    keys = [_short(key, _MAX_KEY_CHARS_IN_ERROR) for key in list(top)[:_MAX_KEYS_IN_ERROR]]
    more = ", ..." if len(top) > _MAX_KEYS_IN_ERROR else ""
    raise ProtocolError(f"unrecognised push: top-level keys {', '.join(keys)}{more}")


def _is_multipart_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


_BODY_START = re.compile(rb"(?:\xef\xbb\xbf)?[\s\x00]*(.{0,2})", re.DOTALL)


def _first_non_blank(body: bytes) -> bytes:
    """The first two bytes of the body after a UTF-8 BOM and leading blanks."""
    match = _BODY_START.match(body)
    return match.group(1) if match else b""


def parse_push(body: bytes, content_type: str | None = None) -> Message:
    """Parse one camera push into a typed message, by content (the URL path is irrelevant).

    ``content_type`` is the request's Content-Type header value, if any. A multipart body
    (by header, or starting with ``--`` when the header was lost) is a Vzenith registration;
    anything else must be a JSON object whose top-level key names the message.
    Raises ProtocolError, and nothing else, for any body it cannot read.
    """
    start = _first_non_blank(body)
    if not start:
        raise ProtocolError("empty body")
    if start == b"--" or (_is_multipart_type(content_type) and not start.startswith(b"{")):
        header_boundary = (
            boundary_from_content_type(content_type) if _is_multipart_type(content_type) else None
        )
        body_boundary = boundary_from_body(body)
        boundary = header_boundary or body_boundary
        if boundary is None:
            raise ProtocolError("multipart body without a boundary")
        try:
            return parse_registration(body, boundary)
        except ProtocolError:
            # A header whose boundary does not match the body (a proxy rewrote one of them):
            # the body's own first line is the better witness.
            if body_boundary is None or body_boundary == boundary:
                raise
            return parse_registration(body, body_boundary)
    return _parse_json_push(body)
