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
import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote_to_bytes

import attrs

from gateway.protocol.messages import (
    CameraImage,
    CameraReceipt,
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
from gateway.protocol.text import strip_control

__all__ = [
    "NO_PLATE_LICENSES",
    "NO_PLATE_MISREADINGS",
    "NO_PLATE_SPELLINGS",
    "PARKINGCAM_PLATE_FIELDS",
    "decode_body",
    "decode_image_path",
    "is_no_plate_license",
    "looks_like_vzenith_serial",
    "parse_push",
]

#: How cameras and their peers spell "no plate read" (PROTOCOL.md section 9): the
#: firmware's ``_无_`` (sometimes ``无``), and ``无牌`` / ``未识别`` from peers.
NO_PLATE_SPELLINGS: tuple[str, ...] = ("_无_", "无", "无牌", "未识别")

#: Code pages in which a camera's or a peer's text conversion has read (``_Œﬁ_``: Mac
#: Roman, ``_нч_``: KOI8-R) or can read the GBK bytes of those spellings before the text
#: reached the gateway as UTF-8. "utf-8" is GBK read as UTF-8 with replacement characters.
NO_PLATE_MISREADINGS: tuple[str, ...] = (
    "utf-8",
    "cp1252",
    "latin-1",
    "mac-roman",
    "koi8-r",
    "cp1251",
    "cp866",
    "cp437",
    "cp850",
)


def _misread(spelling: str, code_page: str) -> str:
    return spelling.encode("gbk").decode(code_page, errors="replace")


#: What a camera puts in ``license`` when it read no plate: the spellings, their
#: mis-decoded forms, and empty text (docs/events.md lists them). Compared after
#: normalisation (case, width, separators and blanks do not matter): see
#: :func:`is_no_plate_license`.
NO_PLATE_LICENSES: frozenset[str] = frozenset(
    {
        "",
        *NO_PLATE_SPELLINGS,
        *(
            _misread(spelling, page)
            for spelling in NO_PLATE_SPELLINGS
            for page in NO_PLATE_MISREADINGS
        ),
    }
)


def _plate_key(text: str) -> str:
    # The comparison form of gateway.policy.plates.normalise_plate (one round of it):
    # NFKC, upper case, letters and digits only.
    upper = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).upper())
    return "".join(ch for ch in upper if ch.isalnum())


_NO_PLATE_KEYS = frozenset(_plate_key(license) for license in NO_PLATE_LICENSES)


def is_no_plate_license(license: str) -> bool:
    """Whether a camera's ``license`` says it read no plate: one of
    :data:`NO_PLATE_LICENSES` once normalised, or a multi-region license (regions joined
    with ``|``) none of whose regions is a plate. Such a read is an event, never a plate
    to look up, and never opens a barrier."""
    return all(
        _plate_key(part) in _NO_PLATE_KEYS
        for part in unicodedata.normalize("NFKC", license).split("|")
    )


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
#: The most JSON values (numbers, texts, arrays, objects...) a push may hold.
#: A camera's push holds a few dozen; parsed, each value costs some 50 to 100
#: bytes, so a body of nothing but tiny values (``[[],[],...]``) would cost
#: twenty times its size. Counted (from commas, brackets and braces: an upper
#: bound) before the body is parsed.
MAX_JSON_VALUES = 100_000
_MAX_KEY_CHARS_IN_ERROR = 32


# --------------------------------------------------------------------------- text and JSON


def decode_body(body: bytes) -> str:
    """The text of a push body.

    Strips trailing NUL bytes and whitespace, decodes UTF-8 (a UTF-8 BOM is tolerated) and
    falls back to GB18030, since ParkingCam cameras can be set to send GB2312.
    Raises ProtocolError when the body is neither.
    """
    return _decode_body(body)[0]


def _decode_body(body: bytes) -> tuple[str, str | None]:
    """The text of a push body and the encoding it was in: "utf-8", "gb18030", or None
    for plain ASCII (which says nothing about the camera's encoding setting)."""
    data = body.rstrip(_TRAILING_JUNK)
    if data.isascii():
        return data.decode("ascii"), None
    try:
        text, charset = data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        try:
            text, charset = data.decode("gb18030"), "gb18030"
        except UnicodeDecodeError:
            raise ProtocolError("body is not text (neither UTF-8 nor GB18030)") from None
    # A GB18030 BOM decodes to U+FEFF, which json refuses.
    return text.removeprefix("\ufeff"), charset


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


def _json_values_at_most(body: bytes) -> int:
    """An upper bound on the number of JSON values in ``body``: each value but
    the first follows a comma or opens an array or object (commas and brackets
    inside texts count too, so this only ever overestimates)."""
    return body.count(b",") + body.count(b"[") + body.count(b"{") + 1


def _load_json_object(body: bytes) -> tuple[dict[str, Any], str | None]:
    if _json_values_at_most(body) > MAX_JSON_VALUES:
        # Checked again exactly only when the bound is passed (a text full
        # of commas is still a valid push).
        if _count_json_values(body, MAX_JSON_VALUES) > MAX_JSON_VALUES:
            raise ProtocolError(
                f"JSON body holds more than {MAX_JSON_VALUES} values "
                "(a camera's push holds a few dozen)"
            )
    text, charset = _decode_body(body)
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
    return value, charset


# Possessive: a text without its closing quote never backtracks.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[,\[{]')


def _count_json_values(body: bytes, stop: int) -> int:
    """The number of JSON values in ``body`` as its text reads (outside texts:
    commas, arrays and objects), without building them, counted up to just past
    ``stop``."""
    count = 1
    for match in _JSON_TOKEN.finditer(body):
        if match.end() - match.start() == 1:
            count += 1
            if count > stop:
                break
    return count


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
    """A text field without control characters, stripped; None when absent, blank or
    not a string."""
    if not isinstance(value, str):
        return None
    text = strip_control(value).strip()
    return text or None


def _serialno_key(container: Mapping[str, Any]) -> str | None:
    """The key that holds the serial number: firmware writes ``serialno``, the manual
    ``serialNo`` in some pushes; any other capitalisation is accepted too."""
    for key in ("serialno", "serialNo"):
        if key in container:
            return key
    return next(
        (key for key in container if isinstance(key, str) and key.lower() == "serialno"), None
    )


def _serialno(*containers: Mapping[str, Any]) -> str | None:
    """The serial number from the first of ``containers`` that gives one."""
    for container in containers:
        key = _serialno_key(container)
        if key is not None:
            value = _str(container[key])
            if value is not None:
                return value
    return None


def _beside(top: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The fields at the top of a body beside the message's own key."""
    return {name: value for name, value in top.items() if name != key} if len(top) > 1 else {}


_WALL_CLOCK = re.compile(
    r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})[ T](\d{1,2}):(\d{2}):(\d{2})|"
    r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})"
)


def _camera_clock(value: Any) -> datetime | None:
    """A time a camera sent either as epoch seconds (timezone-aware, UTC) or as its own
    wall-clock time ``YYYY-MM-DD hh:mm:ss`` / ``YYYYMMDDhhmmss`` (naive: a camera has no
    time zone). None when absent or unusable."""
    if isinstance(value, str):
        match = _WALL_CLOCK.fullmatch(value.strip())
        if match is not None:
            year, month, day, hour, minute, second = (
                int(group) for group in match.groups() if group is not None
            )
            try:
                return datetime(year, month, day, hour, minute, second)
            except ValueError:
                return None
    seconds = _int(value)
    if seconds is None or not 0 <= seconds <= _MAX_EPOCH_SECONDS:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


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


@attrs.frozen
class _Push:
    """One JSON push as the message handlers see it."""

    top: dict[str, Any]  # the whole body
    key: str  # the top-level key that names the message, as sent
    inner: dict[str, Any]  # the object under it
    charset: str | None

    @property
    def beside(self) -> dict[str, Any]:
        return _beside(self.top, self.key)


def _parse_plate(push: _Push) -> PlateResult:
    inner = push.inner
    result = _dict(inner.get("result"))
    plate = _dict(result.get("PlateResult")) if result is not None else None
    if result is None or plate is None:
        raise ProtocolError("AlarmInfoPlate without result.PlateResult object")
    if "license" not in plate:
        raise ProtocolError("plate result without license")
    license_value = plate["license"]
    if not isinstance(license_value, str):
        raise ProtocolError(f"plate result: license is a {_json_type(license_value)}, not a string")
    # The raw record keeps the license as sent; the typed one is safe for plates, displays
    # and log lines (a NUL or a line break inside a license has been seen).
    license_text = strip_control(license_value).strip()

    serialno = _serialno(inner, push.top)
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
    # Every field beside PlateResult, at every level, as sent (rule_id, user_data,
    # openflag, entityName, TaxID, latitude, longitude...).
    fields: dict[str, Any] = {}
    for name, value in inner.items():
        if name != "result":
            fields[name] = value
            continue
        rest = {key: item for key, item in result.items() if key != "PlateResult"}
        if rest:
            fields[name] = rest
    offline = _int(plate.get("isoffline"))
    return PlateResult(
        dialect=dialect,
        serialno=serialno,
        license=license_text,
        has_plate=not is_no_plate_license(license_text),
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
        fields=fields,
        beside=push.beside,
        charset=push.charset,
    )


def _parse_io_input(push: _Push) -> IoInput:
    inner = push.inner
    result = _dict(inner.get("result"))
    trigger = _dict(result.get("TriggerResult")) if result is not None else None
    if trigger is None:
        trigger = {}
    return IoInput(
        serialno=_serialno(inner, push.top),
        source=_int(trigger.get("source")),
        value=_int(trigger.get("value")),
        device_name=_str(inner.get("deviceName")),
        ipaddr=_str(inner.get("ipaddr")),
        channel=_int(inner.get("channel")),
        key=push.key,
        raw=dict(inner),
        beside=push.beside,
        charset=push.charset,
    )


def _parse_serial(push: _Push) -> SerialData:
    inner = push.inner
    if "data" not in inner:
        raise ProtocolError("serial push without data")
    encoded = inner["data"]
    if not isinstance(encoded, str):
        raise ProtocolError(f"serial push: data is a {_json_type(encoded)}, not a string")
    data = _b64decode(encoded, "serial push: data")
    declared = _int(inner.get("dataLen"))
    serial_channel = _int(inner.get("serialChannel"))
    serialno = _serialno(inner, push.top)
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
        raw={key: value for key, value in inner.items() if key != "data"},
        beside=push.beside,
        charset=push.charset,
    )


def _parse_snapshot(push: _Push) -> SnapshotUpload:
    top, inner = push.top, push.inner
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
        serialno=_serialno(top, inner),
        raw={key: value for key, value in inner.items() if key != "imageFile"},
        beside=push.beside,
        charset=push.charset,
    )


def _epoch_seconds(moment: datetime | None) -> int | None:
    if moment is None or moment.tzinfo is None:
        return None
    return int(moment.timestamp())


def _parse_heartbeat(push: _Push) -> Heartbeat:
    inner = push.inner
    key = _serialno_key(inner)
    if key is None:
        raise ProtocolError("heartbeat without serialno")
    serialno = inner[key]
    if not isinstance(serialno, str):
        raise ProtocolError(f"heartbeat: serialno is a {_json_type(serialno)}, not a string")
    serialno = strip_control(serialno).strip()
    if not serialno:
        raise ProtocolError("heartbeat with an empty serialno")
    # Real cameras send these as wall-clock strings ("2025-02-05 18:03:53"), the manual as
    # epoch seconds.
    outage_at = _camera_clock(inner.get("outageTs"))
    start_at = _camera_clock(inner.get("startTs"))
    return Heartbeat(
        serialno=serialno,
        countid=_int(inner.get("countid")),
        camera_time=_camera_time(inner.get("timeStamp")),
        outage_ts=_epoch_seconds(outage_at),
        start_ts=_epoch_seconds(start_at),
        raw=dict(inner),
        outage_at=outage_at,
        start_at=start_at,
        beside=push.beside,
        charset=push.charset,
    )


def _parse_whitelist_result(
    operation: WhitelistOperation, top: dict[str, Any], key: str, charset: str | None
) -> WhitelistResult:
    value = top[key]
    if isinstance(value, dict):
        # Firmware spells these inconsistently ("reponse", sic): match names case-insensitively.
        fields = {str(name).lower(): item for name, item in value.items()}
        raw: dict[str, Any] = dict(value)
    else:
        # Some builds answer with a bare "ok" under the key.
        fields = {"response": value}
        raw = {"value": value}
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
        serialno=_str(fields.get("serialno")) or _serialno(top),
        ok=ok,
        total=_int(fields.get("totallist")),
        rows=rows,
        raw=raw,
        key=key,
        beside=_beside(top, key),
        charset=charset,
    )


#: Keys that make a body without a message key a camera's receipt for a command.
_RECEIPT_KEYS = frozenset({"state_code", "error_msg"})


def _is_receipt(top: dict[str, Any]) -> bool:
    return not _RECEIPT_KEYS.isdisjoint(top) and ("msgId" in top or "cmd" in top)


def _parse_receipt(top: dict[str, Any], charset: str | None) -> CameraReceipt:
    state_code = _int(top.get("state_code"))
    error_msg = _str(top.get("error_msg"))
    ok: bool | None = None
    if state_code is not None:
        ok = state_code == 200
    elif error_msg is not None:
        ok = error_msg.lower() == "success"
    msg_id = top.get("msgId")
    if isinstance(msg_id, int) and not isinstance(msg_id, bool):
        msg_id = str(msg_id)
    return CameraReceipt(
        serialno=_serialno(top),
        msg_id=_str(msg_id),
        command=_str(top.get("cmd")),
        state_code=state_code,
        error_msg=error_msg,
        ok=ok,
        ipaddr=_str(top.get("ipaddr")),
        raw=dict(top),
        charset=charset,
    )


def _inner_object(top: dict[str, Any], key: str) -> dict[str, Any]:
    inner = top[key]
    if not isinstance(inner, dict):
        name = _short(key, _MAX_KEY_CHARS_IN_ERROR)
        raise ProtocolError(f"{name} is a {_json_type(inner)}, not an object")
    return inner


_Handler = Callable[[_Push], Message]

# In priority order: a body with several recognised keys is read as the first one listed
# (the others are kept, beside it).
_HANDLERS: tuple[tuple[str, _Handler], ...] = (
    ("AlarmInfoPlate", _parse_plate),
    ("AlarmGioIn", _parse_io_input),
    ("AlarmIoIn", _parse_io_input),
    ("SerialData", _parse_serial),
    ("TriggerImage", _parse_snapshot),
    ("heartbeat", _parse_heartbeat),
    ("Heartbeat", _parse_heartbeat),
)


def _parse_json_push(body: bytes) -> Message:
    top, charset = _load_json_object(body)
    for key, handler in _HANDLERS:
        if key in top:
            return handler(_Push(top=top, key=key, inner=_inner_object(top, key), charset=charset))
    for key in top:
        operation = _WHITELIST_RESULT_KEYS.get(key.lower())
        if operation is not None:
            return _parse_whitelist_result(operation, top, key, charset)
    if _is_receipt(top):
        return _parse_receipt(top, charset)
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
