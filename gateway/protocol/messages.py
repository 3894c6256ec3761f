"""Typed messages a camera pushes, as parsed from the wire.

Every field a camera may leave out is optional here; what a camera sent is kept
in ``raw`` (without image data) so nothing is lost on the way upstream.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, Mapping, Union

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
    serialno: str | None
    license: str  # as the camera sent it, stripped of surrounding blanks
    has_plate: bool  # False for "_无_", "无" and empty reads
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
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


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


@attrs.frozen
class SnapshotUpload:
    """``TriggerImage``: the frame a camera grabbed because a reply asked it to."""

    image: CameraImage
    ipaddr: str | None = None
    serialno: str | None = None


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
    """ParkingCam JSON heartbeat (``heartbeat`` or ``Heartbeat``)."""

    serialno: str
    countid: int | None = None
    camera_time: CameraTime | None = None
    outage_ts: int | None = None
    start_ts: int | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


class WhitelistOperation(str, enum.Enum):
    ADD = "add"
    DELETE = "delete"
    DELETE_ALL = "delete_all"
    QUERY = "query"


@attrs.frozen
class WhitelistResult:
    """A ParkingCam camera's answer to a whitelist command (``Response_*``)."""

    operation: WhitelistOperation
    serialno: str | None = None
    ok: bool | None = None  # "reponse": "ok" / "no" (None when not said)
    total: int | None = None  # Response_whiteList: totalList
    rows: tuple[Mapping[str, Any], ...] = ()
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


Message = Union[
    PlateResult, IoInput, SerialData, SnapshotUpload, Registration, Heartbeat, WhitelistResult
]
