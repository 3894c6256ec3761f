"""Parsing camera pushes: the reference samples, and every shape of body cameras send."""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.protocol import (
    CameraReceipt,
    CameraTime,
    Dialect,
    Heartbeat,
    IoInput,
    Message,
    PlateResult,
    ProtocolError,
    Registration,
    SerialData,
    SnapshotUpload,
    WhitelistOperation,
    WhitelistResult,
    decode_body,
    decode_image_path,
    parse_multipart_form,
    parse_push,
)

SAMPLES = Path(__file__).resolve().parent / "samples"
MESSAGE_TYPES = get_args(Message)
JSON_TYPE = "application/Json"


# --------------------------------------------------------------------------- helpers


def strip_jsonc_comments(text: str) -> str:
    """Remove ``// ...`` annotations (outside strings) that the manuals add to samples."""
    out: list[str] = []
    in_string = False
    escaped = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            i += 1
        elif ch == '"':
            in_string = True
            out.append(ch)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def sample_bytes(name: str) -> bytes:
    """A sample body as a camera would send it (annotations removed). A missing sample
    directory fails the test: these samples are the protocol's ground truth."""
    raw = (SAMPLES / name).read_bytes()
    if name.endswith(".jsonc"):
        return strip_jsonc_comments(raw.decode("utf-8")).encode("utf-8")
    return raw


def sample_object(name: str) -> dict[str, Any]:
    value = json.loads(sample_bytes(name))
    assert isinstance(value, dict)
    return value


def body_of(obj: Any, *, indent: int | None = None, ensure_ascii: bool = False) -> bytes:
    return json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii).encode("utf-8")


def plate_body(**plate_fields: Any) -> dict[str, Any]:
    """A minimal AlarmInfoPlate push with the given PlateResult fields."""
    plate: dict[str, Any] = {"license": "京A12345"}
    plate.update(plate_fields)
    return {
        "AlarmInfoPlate": {
            "channel": 0,
            "deviceName": "IVS",
            "ipaddr": "192.168.1.100",
            "serialno": "d85b1269-8f942256",
            "result": {"PlateResult": plate},
        }
    }


def parse_obj(obj: Any) -> Message:
    return parse_push(body_of(obj), JSON_TYPE)


def multipart_body(fields: list[tuple[str | None, bytes]], boundary: str, *,
                   newline: bytes = b"\r\n", closing: bool = True) -> bytes:
    """A form body the way camera firmware writes it."""
    delimiter = b"--" + boundary.encode("ascii")
    out = b""
    for name, value in fields:
        out += delimiter + newline
        if name is None:
            out += b"Content-Disposition: form-data" + newline
        else:
            out += b'Content-Disposition: form-data; name="' + name.encode() + b'"' + newline
        out += newline + value + newline
    if closing:
        out += delimiter + b"--" + newline
    return out


REGISTRATION_FIELDS: list[tuple[str | None, bytes]] = [
    ("device_name", b"IVS"),
    ("ipaddr", b"192.168.1.100"),
    ("port", b"80"),
    ("user_name", b"admin"),
    ("pass_wd", b"s3cret pass"),
    ("serialno", b"d85b1269-8f942256"),
    ("channel_num", b"1"),
]

CURL_BOUNDARY_OLD = "-" * 24 + "0123456789abcdef"  # 24 dashes + 16 hex
CURL_BOUNDARY_NEW = "-" * 28 + "cd9a1a32759b"  # 28 dashes + 12 hex


def assert_registration(message: Message) -> None:
    assert message == Registration(
        serialno="d85b1269-8f942256",
        device_name="IVS",
        ipaddr="192.168.1.100",
        port=80,
        user_name="admin",
        password="s3cret pass",
        channel_num=1,
    )


def expect_error(body: bytes, content_type: str | None = JSON_TYPE) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_push(body, content_type)
    reason = str(info.value)
    assert "\n" not in reason and len(reason) <= 160, reason
    return reason


# --------------------------------------------------------------------------- samples


def test_samples_directory_is_there() -> None:
    assert SAMPLES.is_dir(), f"reference samples missing at {SAMPLES}"
    names = {path.name for path in SAMPLES.iterdir()}
    assert {
        "gio_push_vzenith_manual.json",
        "heartbeat_parkingcam_alphadigi_manual_v1.2.json",
        "plate_parkingcam_alphadigi_manual_v1.2.json",
        "plate_vzenith_manual_offline_record.jsonc",
        "plate_vzenith_nolicense_doc_2015.json",
        "serial_push_vzenith_manual.json",
        "triggerimage_push_vzenith_manual.json",
    } <= names


def pushes_in_sample(name: str) -> list[bytes]:
    """The camera bodies a sample holds. Most are one body; some documents wrap theirs:
    a cloud MQTT message (``payload.body``), a command with the camera's receipt
    (``camera_ack``), several pushes by key (``pushes``)."""
    if name.startswith("gio_vzenith_vzicloud_mqtt"):
        return [body_of(sample_object(name)["payload"]["body"])]
    if name.startswith("camera_ack_"):
        return [body_of(sample_object(name)["camera_ack"])]
    if name.startswith("whitelist_result_"):
        pushes = sample_object(name)["pushes"]
        return [body_of({key: value}) for key, value in pushes.items()]
    return [sample_bytes(name)]


def test_every_push_sample_parses_to_its_type() -> None:
    expected_by_prefix: dict[str, type] = {
        "plate_": PlateResult,
        "gio_": IoInput,
        "serial_": SerialData,
        "triggerimage_": SnapshotUpload,
        "heartbeat_": Heartbeat,
        "camera_ack_": CameraReceipt,
        "whitelist_result_": WhitelistResult,
    }
    checked = 0
    for path in sorted(SAMPLES.iterdir()):
        if path.name.startswith("reply_"):
            continue
        prefix = next((p for p in expected_by_prefix if path.name.startswith(p)), None)
        assert prefix is not None, f"no expectation for sample {path.name}"
        for body in pushes_in_sample(path.name):
            message = parse_push(body, JSON_TYPE)
            assert isinstance(message, expected_by_prefix[prefix]), path.name
            checked += 1
    assert checked >= 13


def test_sample_vzenith_io_input() -> None:
    message = parse_push(sample_bytes("gio_push_vzenith_manual.json"), JSON_TYPE)
    assert isinstance(message, IoInput)
    assert message.key == "AlarmGioIn"
    assert (message.serialno, message.source, message.value) == ("d85b1269-8f942256", 3, 1)
    assert (message.device_name, message.ipaddr, message.channel) == ("IVS", "192.168.109.40", None)
    assert message.raw["result"] == {"TriggerResult": {"source": 3, "value": 1}}


def test_sample_parkingcam_heartbeat() -> None:
    message = parse_push(sample_bytes("heartbeat_parkingcam_alphadigi_manual_v1.2.json"), JSON_TYPE)
    assert message == Heartbeat(
        serialno="e10b2d6c8c07b422361457935b518642",
        countid=1,
        camera_time=CameraTime(sec=1441815171, usec=0),
        raw=sample_object("heartbeat_parkingcam_alphadigi_manual_v1.2.json")["Heartbeat"],
    )


def test_sample_parkingcam_plate() -> None:
    message = parse_push(sample_bytes("plate_parkingcam_alphadigi_manual_v1.2.json"), JSON_TYPE)
    assert isinstance(message, PlateResult)
    assert message.dialect is Dialect.PARKINGCAM  # 32-char serial, not Vzenith-shaped
    assert message.serialno == "e10b2d6c8c07b422361457935b518642"
    assert (message.license, message.has_plate) == ("AAA8888", True)
    assert (message.device_name, message.ipaddr, message.channel) == ("default", "192.168.0.100", 0)
    assert (message.trigger_type, message.color_type, message.plate_type) == (1, 0, 0)
    assert (message.direction, message.confidence) == (0, 0)
    assert message.camera_time == CameraTime(sec=1441815171, usec=0)
    assert message.plateid is None and message.offline is False
    assert message.images == () and message.image_path is None
    plate = sample_object("plate_parkingcam_alphadigi_manual_v1.2.json")["AlarmInfoPlate"]
    assert message.raw == plate["result"]["PlateResult"]


def test_sample_vzenith_offline_record_with_annotations() -> None:
    message = parse_push(sample_bytes("plate_vzenith_manual_offline_record.jsonc"), JSON_TYPE)
    assert isinstance(message, PlateResult)
    assert message.dialect is Dialect.VZENITH
    assert message.serialno == "eff50e18-e3d3862b"
    assert (message.license, message.has_plate) == ("_无_", False)
    assert (message.plateid, message.offline, message.trigger_type) == (123, False, 4)
    assert message.camera_time == CameraTime(sec=1441815171, usec=672241)
    assert message.image_path == "xxxxx.jpg"
    assert message.raw["gioouts"] == [{"ionum": 1, "ctrltype": 0}]
    assert message.raw["timeStamp"]["Timeval"]["decyear"] == 2018


def test_sample_no_plate_with_gbk_image_path() -> None:
    message = parse_push(sample_bytes("plate_vzenith_nolicense_doc_2015.json"), JSON_TYPE)
    assert isinstance(message, PlateResult)
    assert message.has_plate is False
    assert message.image_path == "/mmc/VzIPCCap/2015_09_09/1714224504__无_.jpg"
    # raw keeps what the camera sent, still encoded
    assert message.raw["imagePath"].startswith("%2Fmmc%2F")


def test_sample_vzenith_serial_push() -> None:
    message = parse_push(sample_bytes("serial_push_vzenith_manual.json"), JSON_TYPE)
    assert message == SerialData(
        serialno="cead13eb-1a198cd7",
        serial_channel=0,
        data=b"ch.com\x17",
        declared_length=7,
        truncated=False,
        dialect=Dialect.VZENITH,
        device_name="IVS",
        ipaddr="192.168.1.100",
        channel=0,
        raw={key: value for key, value in sample_object("serial_push_vzenith_manual.json")[
            "SerialData"
        ].items() if key != "data"},
    )


def test_sample_snapshot_upload() -> None:
    message = parse_push(sample_bytes("triggerimage_push_vzenith_manual.json"), JSON_TYPE)
    assert isinstance(message, SnapshotUpload)
    assert message.ipaddr == "192.168.1.100"
    assert message.serialno is None
    assert message.image.kind == "full"
    assert message.image.data == b"ch.com\x17"  # not a JPEG: kept anyway
    assert (message.image.declared_length, message.image.length_ok) == (7, True)


# --------------------------------------------------------------------------- body encodings


@pytest.mark.parametrize("indent", [None, 1, 4])
def test_pretty_and_compact_bodies_parse_alike(indent: int | None) -> None:
    obj = sample_object("plate_vzenith_nolicense_doc_2015.json")
    expected = parse_push(sample_bytes("plate_vzenith_nolicense_doc_2015.json"), JSON_TYPE)
    assert parse_push(body_of(obj, indent=indent), JSON_TYPE) == expected
    compact = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    assert parse_push(compact, None) == expected


def test_gb18030_body() -> None:
    body = json.dumps(plate_body(license="粤B12345"), ensure_ascii=False).encode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    message = parse_push(body, JSON_TYPE)
    assert isinstance(message, PlateResult)
    assert message.license == "粤B12345" and message.has_plate


@pytest.mark.parametrize(
    "suffix", [b"\x00", b"\n", b"\r\n\x00", b" \t\x00\x00\n", b"\x00" * 64]
)
def test_trailing_nul_and_whitespace(suffix: bytes) -> None:
    body = sample_bytes("serial_push_vzenith_manual.json") + suffix
    message = parse_push(body, JSON_TYPE)
    assert isinstance(message, SerialData) and message.data == b"ch.com\x17"


def test_utf8_bom() -> None:
    body = b"\xef\xbb\xbf" + body_of(plate_body(license="苏E99999"))
    message = parse_push(body, JSON_TYPE)
    assert isinstance(message, PlateResult) and message.license == "苏E99999"


def test_decode_body() -> None:
    assert decode_body("粤B".encode() + b"\x00 \r\n") == "粤B"
    assert decode_body("粤B".encode("gb18030")) == "粤B"
    assert decode_body(b"\xef\xbb\xbf{}") == "{}"
    with pytest.raises(ProtocolError, match="not text"):
        decode_body(b"{\x80\xff}")


def test_content_type_is_not_required_and_case_does_not_matter() -> None:
    body = sample_bytes("gio_push_vzenith_manual.json")
    content_types = (None, "", "application/json", "APPLICATION/JSON; charset=utf-8", "text/plain")
    for content_type in content_types:
        assert isinstance(parse_push(body, content_type), IoInput)


# --------------------------------------------------------------------------- lenient fields


def test_ints_as_strings_floats_and_bools() -> None:
    obj = plate_body(
        plateid="123",
        isoffline="1",
        triggerType=2.0,
        colorType=True,
        type=" 5 ",
        confidence="87.0",
        direction=1.5,
        timeStamp={"Timeval": {"sec": "1441815171", "usec": 12.0}},
    )
    obj["AlarmInfoPlate"]["channel"] = "1"
    message = parse_obj(obj)
    assert isinstance(message, PlateResult)
    assert (message.plateid, message.offline, message.trigger_type) == (123, True, 2)
    assert (message.color_type, message.plate_type, message.confidence) == (1, 5, 87)
    assert message.direction is None  # 1.5 is not an integer
    assert message.channel == 1
    assert message.camera_time == CameraTime(sec=1441815171, usec=12)


def test_offline_flag() -> None:
    for value, offline in ((1, True), (0, False), (True, True), ("0", False), ("x", False)):
        message = parse_obj(plate_body(isoffline=value, plateid=9))
        assert isinstance(message, PlateResult) and message.offline is offline, value


def test_wrong_types_in_optional_fields_become_none_and_stay_in_raw() -> None:
    obj = plate_body(
        colorType="blue",
        plateid={"id": 1},
        triggerType=[4],
        timeStamp="yesterday",
        imagePath=17,
        gioouts=[{"ionum": "1", "ctrltype": 0}],
        car_brand={"brand": 3, "year": 2019, "type": 1},
        openflag=1,
    )
    obj["AlarmInfoPlate"]["deviceName"] = 5
    obj["AlarmInfoPlate"]["serialno"] = ["d85b1269-8f942256"]
    message = parse_obj(obj)
    assert isinstance(message, PlateResult)
    assert message.color_type is None and message.plateid is None and message.trigger_type is None
    assert message.camera_time is None and message.image_path is None
    assert message.device_name is None and message.serialno is None
    assert message.raw["colorType"] == "blue"
    assert message.raw["gioouts"] == [{"ionum": "1", "ctrltype": 0}]
    assert message.raw["car_brand"] == {"brand": 3, "year": 2019, "type": 1}
    assert message.dialect is Dialect.PARKINGCAM  # openflag is ParkingCam-only


def test_absurd_numbers_are_not_values() -> None:
    message = parse_obj(
        plate_body(plateid=10**30, timeStamp={"Timeval": {"sec": 10**15, "usec": -5}})
    )
    assert isinstance(message, PlateResult)
    assert message.plateid is None and message.camera_time is None
    message = parse_obj(plate_body(timeStamp={"Timeval": {"sec": 1441815171, "usec": 5_000_000}}))
    assert isinstance(message, PlateResult)
    assert message.camera_time == CameraTime(sec=1441815171, usec=0)
    message.camera_time.as_datetime()


def test_brief_detail_level_plate() -> None:
    """The least a real camera sent at the "Briefly" content detail level."""
    obj = {
        "AlarmInfoPlate": {
            "result": {
                "PlateResult": {
                    "colorType": 1,
                    "direction": 0,
                    "imagePath": "%2Fmmc%2FVzIPCCap%2F2024_01_01%2F0800000001_%D4%C1B12345.jpg",
                    "license": " 粤B12345 ",
                    "triggerType": 1,
                    "type": 1,
                }
            }
        }
    }
    message = parse_obj(obj)
    assert isinstance(message, PlateResult)
    assert message.license == "粤B12345" and message.has_plate
    assert message.serialno is None and message.camera_time is None and message.plateid is None
    assert message.image_path == "/mmc/VzIPCCap/2024_01_01/0800000001_粤B12345.jpg"
    assert message.dialect is Dialect.VZENITH


@pytest.mark.parametrize("license_text", ["_无_", "无", "", "   ", " _无_ "])
def test_no_plate_reads(license_text: str) -> None:
    message = parse_obj(plate_body(license=license_text))
    assert isinstance(message, PlateResult)
    assert message.has_plate is False
    assert message.license == license_text.strip()


def test_required_fields() -> None:
    assert "license" in expect_error(body_of({"AlarmInfoPlate": {"result": {"PlateResult": {}}}}))
    assert "license" in expect_error(body_of(plate_body(license=12345)))
    assert "PlateResult" in expect_error(body_of({"AlarmInfoPlate": {"result": []}}))
    assert "AlarmInfoPlate" in expect_error(body_of({"AlarmInfoPlate": "x"}))
    assert "data" in expect_error(body_of({"SerialData": {"serialno": "a", "dataLen": 1}}))
    assert "data" in expect_error(body_of({"SerialData": {"data": 5}}))
    assert "imageFile" in expect_error(body_of({"TriggerImage": {"imageFileLen": 7}}))
    assert "imageFile" in expect_error(body_of({"TriggerImage": {"imageFile": []}}))
    assert "imageFile" in expect_error(body_of({"TriggerImage": {"imageFile": ""}}))
    assert "serialno" in expect_error(body_of({"heartbeat": {"countid": 1}}))
    assert "serialno" in expect_error(body_of({"heartbeat": {"serialno": 42}}))
    assert "serialno" in expect_error(body_of({"heartbeat": {"serialno": "  "}}))


# --------------------------------------------------------------------------- image path


def test_image_path_decoding() -> None:
    assert decode_image_path("%2Fsd%2F%D4%C1B12345.jpg") == "/sd/粤B12345.jpg"
    assert decode_image_path("%CE%DE") == "无"
    assert decode_image_path("/snapshot/lpr/tri_snap_24.jpg") == "/snapshot/lpr/tri_snap_24.jpg"
    assert decode_image_path("/sd/粤B12345.jpg") == "/sd/粤B12345.jpg"  # not percent-encoded
    assert decode_image_path("%FF%FF.jpg").endswith(".jpg")  # bad GBK: replaced, not raised
    assert decode_image_path("100%") == "100%"


# --------------------------------------------------------------------------- images


def test_images_full_and_crop() -> None:
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3 + b"\xff\xd9"
    crop = b"\xff\xd8crop\xff\xd9"
    full_b64 = base64.b64encode(jpeg).decode()
    # wrapped at 76 characters and stripped of its padding, as some encoders do
    wrapped = "\r\n".join(full_b64[i : i + 76] for i in range(0, len(full_b64), 76)).rstrip("=")
    crop_b64 = base64.b64encode(crop).decode()
    obj = plate_body(
        imageFile=wrapped,
        imageFileLen=len(full_b64),  # base64 length (firmware that was read)
        imageFragmentFile=crop_b64,
        imageFragmentFileLen=len(crop),  # raw length (manual)
    )
    message = parse_obj(obj)
    assert isinstance(message, PlateResult)
    full, fragment = message.images
    assert (full.kind, full.data, full.length_ok) == ("full", jpeg, True)
    assert full.declared_length == len(full_b64)
    assert (fragment.kind, fragment.data, fragment.length_ok) == ("crop", crop, True)
    assert "imageFile" not in message.raw and "imageFragmentFile" not in message.raw
    assert message.raw["imageFileLen"] == len(full_b64)


def test_image_length_mismatch_is_flagged_not_fatal() -> None:
    data = b"\xff\xd8" + b"x" * 100
    message = parse_obj(plate_body(imageFile=base64.b64encode(data).decode(), imageFileLen=5))
    assert isinstance(message, PlateResult)
    (image,) = message.images
    assert image.data == data and image.declared_length == 5 and image.length_ok is False
    message = parse_obj(plate_body(imageFile=base64.b64encode(data).decode()))
    assert isinstance(message, PlateResult)
    assert message.images[0].declared_length is None and message.images[0].length_ok is True


def test_absent_or_empty_images() -> None:
    for value in ("", 17, None):
        message = parse_obj(plate_body(imageFile=value, imageFileLen=0))
        assert isinstance(message, PlateResult) and message.images == ()


def test_corrupt_plate_image_is_dropped_but_the_plate_kept() -> None:
    good = base64.b64encode(b"\xff\xd8crop\xff\xd9").decode()
    message = parse_obj(
        plate_body(imageFile="not base64 at all!!", imageFragmentFile=good)
    )
    assert isinstance(message, PlateResult)
    assert message.license == "京A12345"
    assert [image.kind for image in message.images] == ["crop"]
    assert len(message.image_errors) == 1 and "imageFile" in message.image_errors[0]
    message = parse_obj(plate_body(imageFragmentFile="QUJD=x"))
    assert isinstance(message, PlateResult) and message.images == ()
    assert "imageFragmentFile" in message.image_errors[0]


def test_bad_base64_names_the_field() -> None:
    assert "imageFile" in expect_error(body_of({"TriggerImage": {"imageFile": "粤粤"}}))
    assert "data" in expect_error(body_of({"SerialData": {"data": "A"}}))


def test_five_megabyte_image_body() -> None:
    jpeg = b"\xff\xd8" + os.urandom(5 * 1024 * 1024) + b"\xff\xd9"
    encoded = base64.b64encode(jpeg).decode()
    body = body_of(plate_body(imageFile=encoded, imageFileLen=len(encoded), plateid=7), indent=4)
    assert len(body) > 6_000_000
    message = parse_push(body + b"\x00", JSON_TYPE)
    assert isinstance(message, PlateResult)
    assert message.images[0].data == jpeg and message.images[0].length_ok
    assert message.plateid == 7


# --------------------------------------------------------------------------- dialects


def test_dialect_detection() -> None:
    assert parse_obj(plate_body()).dialect is Dialect.VZENITH  # type: ignore[union-attr]
    for field in ("openflag", "Whitelist", "realplate", "retryflag", "speed", "vehicleId"):
        message = parse_obj(plate_body(**{field: 0}))
        assert isinstance(message, PlateResult) and message.dialect is Dialect.PARKINGCAM, field
        assert message.raw[field] == 0
    obj = plate_body()
    obj["AlarmInfoPlate"]["serialno"] = "QFX2182310150262"
    assert parse_obj(obj).dialect is Dialect.PARKINGCAM  # type: ignore[union-attr]
    obj["AlarmInfoPlate"]["serialno"] = "D85B1269-8F942256"
    assert parse_obj(obj).dialect is Dialect.VZENITH  # type: ignore[union-attr]


def test_parkingcam_plate_extras_are_kept() -> None:
    extras = {
        "openflag": 1,
        "Whitelist": 2,
        "realplate": "粤B12345",
        "retryflag": 1,
        "speed": 12,
        "vehicleId": 88,
    }
    message = parse_obj(plate_body(**extras))
    assert isinstance(message, PlateResult)
    for key, value in extras.items():
        assert message.raw[key] == value


# --------------------------------------------------------------------------- other pushes


def test_io_input_manual_key_and_missing_result() -> None:
    trigger = {"TriggerResult": {"source": "0", "value": 0}}
    message = parse_obj({"AlarmIoIn": {"serialno": "d85b1269-8f942256", "result": trigger}})
    assert isinstance(message, IoInput)
    assert (message.key, message.source, message.value) == ("AlarmIoIn", 0, 0)
    message = parse_obj({"AlarmGioIn": {"serialno": "d85b1269-8f942256"}})
    assert isinstance(message, IoInput)
    assert (message.key, message.source, message.value) == ("AlarmGioIn", None, None)


def test_serial_truncated_at_nul() -> None:
    # The camera received 01 02 00 03 04 but cut data at the NUL and kept dataLen 5.
    obj = {"SerialData": {"serialno": "cead13eb-1a198cd7", "serialChannel": 1,
                          "data": base64.b64encode(b"\x01\x02").decode(), "dataLen": 5}}
    message = parse_obj(obj)
    assert isinstance(message, SerialData)
    assert (message.data, message.declared_length, message.truncated) == (b"\x01\x02", 5, True)
    assert message.serial_channel == 1


def test_serial_declared_smaller_and_defaults() -> None:
    obj = {"SerialData": {"serialno": "QFX2182310150262", "data": "AQIDBA", "dataLen": "2"}}
    message = parse_obj(obj)
    assert isinstance(message, SerialData)
    assert (message.data, message.declared_length) == (b"\x01\x02\x03\x04", 2)
    assert message.truncated is False
    assert message.serial_channel == 0
    assert message.dialect is Dialect.PARKINGCAM


def test_snapshot_with_serialno_beside_and_base64_length_field() -> None:
    image = b"\xff\xd8snap\xff\xd9"
    encoded = base64.b64encode(image).decode()
    obj = {
        "serialno": "d85b1269-8f942256",
        "ipaddr": "10.0.0.9",
        "TriggerImage": {"imageFile": encoded, "imageFileBase64Len": len(encoded)},
    }
    message = parse_obj(obj)
    assert isinstance(message, SnapshotUpload)
    assert (message.serialno, message.ipaddr) == ("d85b1269-8f942256", "10.0.0.9")
    assert message.image.data == image and message.image.length_ok


def test_lowercase_heartbeat_with_outage_fields() -> None:
    obj = {
        "heartbeat": {
            "countid": "12",
            "serialno": " QFX2182310150262 ",
            "outageTs": 1700000000,
            "startTs": 1690000000,
            "timeStamp": {"Timeval": {"sec": 1700000100, "usec": 5}},
        }
    }
    message = parse_obj(obj)
    assert message == Heartbeat(
        serialno="QFX2182310150262",
        countid=12,
        camera_time=CameraTime(sec=1700000100, usec=5),
        outage_ts=1700000000,
        start_ts=1690000000,
        raw=obj["heartbeat"],
        outage_at=datetime.fromtimestamp(1700000000, tz=timezone.utc),
        start_at=datetime.fromtimestamp(1690000000, tz=timezone.utc),
    )


@pytest.mark.parametrize(
    ("key", "operation"),
    [
        ("Response_AddWhiteList", WhitelistOperation.ADD),
        ("response_addwhitelist", WhitelistOperation.ADD),
        ("Response_DeleteWhiteList", WhitelistOperation.DELETE),
        ("RESPONSE_DELETEWHITELIST", WhitelistOperation.DELETE),
        ("Response_DelWhiteListAll", WhitelistOperation.DELETE_ALL),
        ("Response_whiteList", WhitelistOperation.QUERY),
        ("Response_WhiteList", WhitelistOperation.QUERY),
    ],
)
def test_whitelist_results(key: str, operation: WhitelistOperation) -> None:
    message = parse_obj({key: {"reponse": "ok", "serialno": "QFX2182310150262"}})
    assert isinstance(message, WhitelistResult)
    assert (message.operation, message.ok) == (operation, True)
    assert message.serialno == "QFX2182310150262"
    message = parse_obj({key: {"response": "no"}})
    assert isinstance(message, WhitelistResult) and message.ok is False


def test_whitelist_query_result_rows() -> None:
    rows = [{"carnum": "粤B12345", "startime": "20240101000000", "endtime": "20991231235959"},
            {"carnum": "京A00001", "startime": "20240101000000", "endtime": "20250101000000"}]
    result = {"serialno": "QFX2182310150262", "totalList": "2", "data": rows + ["junk"]}
    obj = {"Response_whiteList": result}
    message = parse_obj(obj)
    assert isinstance(message, WhitelistResult)
    assert message.operation is WhitelistOperation.QUERY
    assert message.total == 2 and list(message.rows) == rows
    assert message.ok is None


# --------------------------------------------------------------------------- bad bodies


def test_unknown_top_level_keys() -> None:
    reason = expect_error(body_of({"Foo": 1, "Bar": {}}))
    assert reason == "unrecognised push: top-level keys Foo, Bar"
    reason = expect_error(body_of({f"key{i}": i for i in range(50)}))
    assert reason.startswith("unrecognised push: top-level keys key0, key1")
    assert "key10" not in reason and reason.endswith("...")
    reason = expect_error(body_of({"x" * 500 + "\n": 1}))
    assert "unrecognised push" in reason
    assert "unrecognised push" in expect_error(b"{}")
    # keys are case-sensitive except where firmware is known to vary
    assert "unrecognised push" in expect_error(body_of({"alarminfoplate": {}}))


def test_truncated_json() -> None:
    body = sample_bytes("plate_vzenith_nolicense_doc_2015.json")
    reason = expect_error(body[: len(body) // 2])
    assert re.fullmatch(r"malformed JSON at line \d+ column \d+ \(.*\)", reason), reason


@pytest.mark.parametrize("body", [b"", b"   ", b"\x00\x00", b"\r\n\x00 "])
def test_empty_body(body: bytes) -> None:
    assert expect_error(body) == "empty body"
    assert expect_error(body, None) == "empty body"


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b'"ok"',
        b"42",
        b"null",
        b'{"a": 1}{"b": 2}',
        b'{"AlarmInfoPlate": NaN}',
        b'{"AlarmInfoPlate": {"result": {"PlateResult": {"license": "A", "x": 1e999}}}}',
        b'{"AlarmInfoPlate": {"result": {"PlateResult": {"license": "\\ud800"}}}}',
        b'{"n": ' + b"9" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe\x00{\x00}",
        b"<html>502 Bad Gateway</html>",
    ],
)
def test_bad_bodies_are_protocol_errors(body: bytes) -> None:
    expect_error(body)


def test_paired_surrogate_escapes_are_fine() -> None:
    body = b'{"AlarmInfoPlate": {"result": {"PlateResult": {"license": "\\ud83d\\ude97A1"}}}}'
    message = parse_push(body)
    assert isinstance(message, PlateResult) and message.license == "\U0001f697A1"


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize("boundary", [CURL_BOUNDARY_OLD, CURL_BOUNDARY_NEW, "x", "b" * 70])
def test_registration_boundary_styles(boundary: str) -> None:
    body = multipart_body(REGISTRATION_FIELDS, boundary)
    assert_registration(parse_push(body, f"multipart/form-data; boundary={boundary}"))
    quoted = f'Multipart/Form-Data; charset=utf-8; boundary="{boundary}"'
    assert_registration(parse_push(body, quoted))


def test_registration_without_header_takes_boundary_from_body() -> None:
    body = multipart_body(REGISTRATION_FIELDS, CURL_BOUNDARY_NEW)
    assert_registration(parse_push(body, None))
    assert_registration(parse_push(body, "application/Json"))  # wrong header: content wins
    assert_registration(parse_push(body, "multipart/form-data"))  # header without boundary
    # a header boundary that does not match the body
    assert_registration(parse_push(body, f"multipart/form-data; boundary={CURL_BOUNDARY_OLD}"))


def test_registration_lf_only_and_without_closing_delimiter() -> None:
    for newline in (b"\n", b"\r\n"):
        for closing in (True, False):
            body = multipart_body(
                REGISTRATION_FIELDS, CURL_BOUNDARY_OLD, newline=newline, closing=closing
            )
            header = f"multipart/form-data; boundary={CURL_BOUNDARY_OLD}"
            assert_registration(parse_push(body, header))
            assert_registration(parse_push(body, None))


def test_registration_without_serialno() -> None:
    fields = [field for field in REGISTRATION_FIELDS if field[0] != "serialno"]
    body = multipart_body(fields, CURL_BOUNDARY_OLD)
    assert expect_error(body, None) == "registration without serialno"
    body = multipart_body(fields + [("serialno", b"  ")], CURL_BOUNDARY_OLD)
    assert expect_error(body, None) == "registration without serialno"


def test_registration_lenient_values_and_secrets() -> None:
    fields = [
        (None, b"ignored"),  # a part without a name is skipped
        ("device_name", "车道一".encode("gb18030")),
        ("port", b"http"),
        ("username", b"admin"),  # the old manual's spelling
        ("password", b"pw"),
        ("serialno", b"d85b1269-8f942256"),
    ]
    message = parse_push(multipart_body(fields, CURL_BOUNDARY_NEW), None)
    assert isinstance(message, Registration)
    assert message.device_name == "车道一"
    assert message.port is None and message.channel_num is None
    assert (message.user_name, message.password) == ("admin", "pw")
    assert "pw" not in repr(message) and "admin" not in repr(message)


def test_parse_multipart_form() -> None:
    boundary = CURL_BOUNDARY_OLD
    body = multipart_body(
        [
            ("a", b"1"),
            ("b", b"line one\r\nline two"),
            ("c", b""),
            ("a", b"second"),
            ("bin", b"\xff\xfe\x80"),
        ],
        boundary,
    )
    assert parse_multipart_form(body, boundary) == {"a": "1", "b": "line one\r\nline two", "c": ""}
    file_part = (
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="f"; filename="x.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\r\n--" + boundary.encode() + b"--\r\n"
    )
    assert parse_multipart_form(file_part, boundary) == {}
    assert parse_multipart_form(b"no parts here", boundary) == {}


def test_multipart_with_only_junk_is_a_protocol_error() -> None:
    assert expect_error(b"--", None) == "multipart body without a boundary"
    assert expect_error(b"--abc\r\ngarbage", None) == "registration without serialno"


# --------------------------------------------------------------------------- fuzzing

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths.extend(_paths(item, prefix + (key,)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths.extend(_paths(item, prefix + (index,)))
    return paths


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


FUZZ_SAMPLES = [
    "gio_push_vzenith_manual.json",
    "heartbeat_parkingcam_alphadigi_manual_v1.2.json",
    "plate_parkingcam_alphadigi_manual_v1.2.json",
    "plate_vzenith_manual_offline_record.jsonc",
    "plate_vzenith_nolicense_doc_2015.json",
    "serial_push_vzenith_manual.json",
    "triggerimage_push_vzenith_manual.json",
]


def assert_usable(message: Message) -> None:
    """What a parsed message promises the rest of the gateway."""
    assert isinstance(message, MESSAGE_TYPES)
    raw = getattr(message, "raw", None)
    if raw is not None:
        json.dumps(raw, ensure_ascii=False, allow_nan=False).encode("utf-8")
    camera_time = getattr(message, "camera_time", None)
    if camera_time is not None:
        camera_time.as_datetime()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FUZZ_SAMPLES), st.data())
def test_mutated_samples_parse_or_raise_protocol_error(name: str, data: st.DataObject) -> None:
    obj: Any = sample_object(name)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(obj)))
        obj = _replace(obj, path, data.draw(json_values))
    text = json.dumps(obj, ensure_ascii=data.draw(st.booleans()))
    body = text.encode("utf-8", errors="surrogatepass")
    content_type = data.draw(st.sampled_from([None, JSON_TYPE, "multipart/form-data"]))
    try:
        message = parse_push(body, content_type)
    except ProtocolError as e:
        assert "\n" not in str(e)
    else:
        assert_usable(message)


@given(
    st.binary(max_size=300),
    st.sampled_from([None, JSON_TYPE, "multipart/form-data; boundary=abc"]),
)
def test_arbitrary_bytes_parse_or_raise_protocol_error(
    body: bytes, content_type: str | None
) -> None:
    try:
        message = parse_push(body, content_type)
    except ProtocolError:
        pass
    else:
        assert_usable(message)


@given(
    st.lists(st.tuples(st.none() | st.text(max_size=12), st.binary(max_size=30)), max_size=8),
    st.sampled_from([CURL_BOUNDARY_OLD, CURL_BOUNDARY_NEW]),
    st.booleans(),
    st.booleans(),
)
def test_arbitrary_forms_parse_or_raise_protocol_error(
    fields: list[tuple[str | None, bytes]], boundary: str, lf_only: bool, closing: bool
) -> None:
    fields = [(None if name is None else name.replace('"', ""), value) for name, value in fields]
    body = multipart_body(fields, boundary, newline=b"\n" if lf_only else b"\r\n", closing=closing)
    try:
        message = parse_push(body, None)
    except ProtocolError:
        pass
    else:
        assert isinstance(message, Registration) and message.serialno
