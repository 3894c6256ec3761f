"""Typed messages a camera pushes, as parsed from the wire.

Every field a camera may leave out is optional here; what a camera sent is kept
beside the typed fields (``raw``, ``fields``, ``beside``: every field at every level,
without image data) so nothing is lost on the way upstream. Typed text fields are
stripped of control characters (:func:`gateway.protocol.text.strip_control`); the kept
fields hold the text exactly as sent.

``charset`` is the character encoding the body arrived in: ``"utf-8"``, ``"gb18030"``
(a camera set to GB2312), or None when the body was plain ASCII and so says nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs


class Dialect(str, enum.Enum):
    """The two camera families in the field (PROTOCOL.md section 1)."""

    VZENITH = "vzenith"
    PARKINGCAM = "parkingcam"


class ProtocolError(ValueError):
    """A body that is not a message we understand.

    ``str(error)`` is a one-line reason fit for a 400 response and a log line.
    """


@attrs.frozen
class CameraTime:
    """The camera's own clock at the event (it may be wrong: keep it beside
    the gateway's receive time, never instead of it)."""

    sec: int
    usec: int = 0

    def as_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.sec + self.usec / 1_000_000, tz=timezone.utc)


@attrs.frozen
class CameraImage:
    """An image carried in a push, already base64-decoded.

    ``declared_length`` is what the camera put in its ``...Len`` field (the
    base64 length on some firmware, the raw length on others);
    ``length_ok`` says whether it matched either.
    """

    kind: str  # "full" (whole frame) or "crop" (plate)
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    declared_length: int | None = None
    length_ok: bool = True


@attrs.frozen
class PlateResult:
    """``AlarmInfoPlate``: one plate read (or a no-plate read)."""

    dialect: Dialect
    serialno: str | None  # ``serialno`` (or the manual's ``serialNo``)
    # As the camera sent it, without control characters and surrounding blanks. A
    # multi-region plate keeps its regions joined with "|" (粤ZJ068澳|MX7742|ZM127).
    license: str
    has_plate: bool  # False for no-plate reads (parse.NO_PLATE_LICENSES) and empty ones
    device_name: str | None = None
    ipaddr: str | None = None
    channel: int | None = None
    plateid: int | None = None
    offline: bool = False
    trigger_type: int | None = None
    camera_time: CameraTime | None = None
    color_type: int | None = None
    plate_type: int | None = None
    direction: int | None = None
    confidence: int | None = None
    image_path: str | None = None  # decoded (percent-unquoted, GBK)
    images: tuple[CameraImage, ...] = ()
    # Images that came corrupt and were dropped (the plate read is kept).
    image_errors: tuple[str, ...] = ()
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)  # PlateResult minus image data
    # Every other field of AlarmInfoPlate as sent (serialno, deviceName, rule_id, user_data,
    # openflag, entityName, TaxID, latitude, longitude, ...); ``result`` only when it held
    # more than PlateResult, and then without it.
    fields: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    # Fields at the top of the body beside AlarmInfoPlate.
    beside: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    # How the body was encoded, not what it said: not part of equality.
    charset: str | None = attrs.field(default=None, eq=False)


@attrs.frozen
class IoInput:
    """``AlarmGioIn`` (firmware) / ``AlarmIoIn`` (manual): an IO input changed."""

    serialno: str | None
    source: int | None
    value: int | None
    device_name: str | None = None
    ipaddr: str | None = None
    channel: int | None = None
    key: str = "AlarmGioIn"
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)  # the object as sent
    beside: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    # How the body was encoded, not what it said: not part of equality.
    charset: str | None = attrs.field(default=None, eq=False)


@attrs.frozen
class SerialData:
    """``SerialData``: bytes the camera received on one of its serial ports.

    ``truncated`` flags the firmware bug that cuts ``data`` at the first NUL
    while ``dataLen`` keeps the true length; the missing bytes are not invented.
    """

    serialno: str | None
    serial_channel: int
    data: bytes
    declared_length: int | None = None
    truncated: bool = False
    dialect: Dialect = Dialect.VZENITH
    device_name: str | None = None
    ipaddr: str | None = None
    channel: int | None = None
    # Every field of SerialData as sent except ``data`` (whose bytes are ``data`` above).
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    beside: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    # How the body was encoded, not what it said: not part of equality.
    charset: str | None = attrs.field(default=None, eq=False)


@attrs.frozen
class SnapshotUpload:
    """``TriggerImage``: the frame a camera grabbed because a reply asked it to."""

    image: CameraImage
    ipaddr: str | None = None
    serialno: str | None = None
    # Every field of TriggerImage as sent except the image data.
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    beside: Mapping[str, Any] = attrs.field(factory=dict, repr=False)  # e.g. ipaddr
    # How the body was encoded, not what it said: not part of equality.
    charset: str | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Registration:
    """Vzenith multipart registration: a heartbeat or a comet poll (same body).

    ``password`` is the camera's web login in clear text: never log it, never
    send it upstream (it is excluded from repr).
    """

    serialno: str
    device_name: str | None = None
    ipaddr: str | None = None
    port: int | None = None  # the camera's own web port
    user_name: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    channel_num: int | None = None


@attrs.frozen
class Heartbeat:
    """ParkingCam JSON heartbeat (``heartbeat`` or ``Heartbeat``).

    ``outageTs`` and ``startTs`` come as epoch seconds (the manual) or as the camera's
    wall-clock time ``"2025-02-05 18:03:53"`` (real cameras). ``outage_at`` / ``start_at``
    read both: timezone-aware (UTC) from seconds, naive from a wall-clock string (a camera
    has no time zone). ``outage_ts`` / ``start_ts`` are the seconds, when seconds were sent.
    """

    serialno: str
    countid: int | None = None
    camera_time: CameraTime | None = None
    outage_ts: int | None = None
    start_ts: int | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    outage_at: datetime | None = None
    start_at: datetime | None = None
    beside: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    # How the body was encoded, not what it said: not part of equality.
    charset: str | None = attrs.field(default=None, eq=False)


class WhitelistOperation(str, enum.Enum):
    ADD = "add"
    DELETE = "delete"
    DELETE_ALL = "delete_all"
    QUERY = "query"


@attrs.frozen
class WhitelistResult:
    """A ParkingCam camera's answer to a whitelist command (``Response_*``).

    ``operation`` is the command it answers, from the response's key (``key``, as sent).
    """

    operation: WhitelistOperation
    serialno: str | None = None
    ok: bool | None = None  # "reponse": "ok" / "no" (None when not said)
    total: int | None = None  # Response_whiteList: totalList
    rows: tuple[Mapping[str, Any], ...] = ()
    # The response object as sent ({"value": ...} when the camera sent a bare value).
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    key: str = ""
    beside: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    # How the body was encoded, not what it said: not part of equality.
    charset: str | None = attrs.field(default=None, eq=False)


@attrs.frozen
class CameraReceipt:
    """A newer camera's receipt for a command it was sent
    (``{"error_msg": "success", "msgId": ..., "cmd": "manualTrigger", "state_code": 200}``).

    ``ok`` is True for state code 200 or ``error_msg`` "success", False for another code,
    None when the receipt says neither.
    """

    serialno: str | None = None
    msg_id: str | None = None
    command: str | None = None
    state_code: int | None = None
    error_msg: str | None = None
    ok: bool | None = None
    ipaddr: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)  # the body as sent
    # How the body was encoded, not what it said: not part of equality.
    charset: str | None = attrs.field(default=None, eq=False)


Message = (
    PlateResult
    | IoInput
    | SerialData
    | SnapshotUpload
    | Registration
    | Heartbeat
    | WhitelistResult
    | CameraReceipt
)
