"""Pushes as cameras in the field send them (PROTOCOL.md section 9): every field kept,
both spellings of the serial number, ParkingCam time strings, multi-region and no-plate
licenses, control characters, the body's encoding. Pure parser tests, in memory."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.protocol import (
    NO_PLATE_LICENSES,
    NO_PLATE_MISREADINGS,
    NO_PLATE_SPELLINGS,
    CameraReceipt,
    Dialect,
    Heartbeat,
    IoInput,
    PlateResult,
    SerialData,
    SnapshotUpload,
    WhitelistOperation,
    WhitelistResult,
    is_no_plate_license,
    parse_push,
)
from gateway.protocol.text import for_log, strip_control

SAMPLES = Path(__file__).resolve().parent / "samples"
JSON_TYPE = "application/Json"


def body(obj: Any, *, encoding: str = "utf-8", indent: int | None = 4) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=indent).encode(encoding)


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_bytes())


def parse(obj: Any, **kwargs: Any) -> Any:
    return parse_push(body(obj, **kwargs), JSON_TYPE)


# --------------------------------------------------------------------------- field bodies

# A ParkingCam heartbeat as a real camera sends it: one compact line, lower-case key,
# outageTs / startTs as wall-clock strings.
PARKINGCAM_HEARTBEAT = (
    b'{"heartbeat":{"countid":37,"timeStamp":{"Timeval":{"sec":1738750001,"usec":0}},'
    b'"serialno":"5f2c8a91d03e7b64","outageTs":"2025-02-05 18:03:53",'
    b'"startTs":"2025-02-05 17:40:12"}}'
)


def parkingcam_plate(license: str = "粤FQK883") -> dict[str, Any]:
    """A ParkingCam plate push as a real camera sends it: ``imagePath`` empty, the
    ParkingCam fields beside ``serialno``, ``realplate`` a boolean, a 16-hex serial."""
    return {
        "AlarmInfoPlate": {
            "channel": 0,
            "deviceName": "default",
            "ipaddr": "192.168.1.64",
            "serialno": "5f2c8a91d03e7b64",
            "openflag": 0,
            "entityName": "东门停车场",
            "TaxID": "91440300MA5F000000",
            "latitude": "22.543096",
            "longitude": "114.057865",
            "result": {
                "PlateResult": {
                    "colorType": 1,
                    "direction": 0,
                    "imagePath": "",
                    "license": license,
                    "realplate": True,
                    "triggerType": 1,
                    "type": 1,
                    "Whitelist": 2,
                }
            },
        }
    }


def vzenith_plate(license: str = "京A12345") -> dict[str, Any]:
    """A newer Vzenith plate push: ``rule_id`` and ``user_data`` beside PlateResult."""
    return {
        "AlarmInfoPlate": {
            "channel": 0,
            "deviceName": "IVS",
            "ipaddr": "192.168.1.100",
            "serialno": "d85b1269-8f942256",
            "rule_id": 3,
            "user_data": "lane-2 barrier A",
            "result": {
                "PlateResult": {
                    "license": license,
                    "plateid": 881,
                    "isoffline": 0,
                    "gioouts": [{"ionum": "1", "ctrltype": 0}],
                    "timeStamp": {"Timeval": {"sec": 1740830399, "usec": 870000}},
                    "triggerType": 8,
                }
            },
        }
    }


# --------------------------------------------------------------------------- every field


def test_parkingcam_plate_keeps_the_fields_beside_serialno() -> None:
    message = parse(parkingcam_plate())
    assert isinstance(message, PlateResult)
    assert message.dialect is Dialect.PARKINGCAM
    assert message.serialno == "5f2c8a91d03e7b64"
    assert message.image_path is None  # "" is no path
    for name, value in [
        ("openflag", 0),
        ("entityName", "东门停车场"),
        ("TaxID", "91440300MA5F000000"),
        ("latitude", "22.543096"),
        ("longitude", "114.057865"),
        ("serialno", "5f2c8a91d03e7b64"),
        ("deviceName", "default"),
    ]:
        assert message.fields[name] == value
    assert "result" not in message.fields  # it held only PlateResult
    assert message.raw["realplate"] is True
    assert message.raw["Whitelist"] == 2


def test_vzenith_plate_keeps_rule_id_and_user_data() -> None:
    message = parse(vzenith_plate())
    assert isinstance(message, PlateResult)
    assert message.fields["rule_id"] == 3
    assert message.fields["user_data"] == "lane-2 barrier A"
    assert message.raw["gioouts"] == [{"ionum": "1", "ctrltype": 0}]


def test_fields_at_every_level_are_kept() -> None:
    obj = vzenith_plate()
    obj["AlarmInfoPlate"]["result"]["RecogResult"] = {"score": 97}
    obj["AlarmInfoPlate"]["extension"] = {"nested": {"deeper": [1, {"x": "y"}]}}
    obj["gateway_hint"] = "beside the message key"
    message = parse(obj)
    assert isinstance(message, PlateResult)
    assert message.fields["result"] == {"RecogResult": {"score": 97}}
    assert message.fields["extension"] == {"nested": {"deeper": [1, {"x": "y"}]}}
    assert message.beside == {"gateway_hint": "beside the message key"}


def test_image_data_is_not_kept_in_the_fields() -> None:
    obj = vzenith_plate()
    obj["AlarmInfoPlate"]["result"]["PlateResult"].update(
        imageFile="/9j/4AAQ", imageFileLen=8, imageFragmentFile="/9j/", imageFragmentFileLen=4
    )
    message = parse(obj)
    assert isinstance(message, PlateResult)
    assert "imageFile" not in message.raw and "imageFragmentFile" not in message.raw
    assert message.raw["imageFileLen"] == 8
    assert [image.kind for image in message.images] == ["full", "crop"]


def test_snapshot_keeps_its_fields_and_what_is_beside_it() -> None:
    obj = {
        "ipaddr": "192.168.1.100",
        "serialNo": "d85b1269-8f942256",
        "TriggerImage": {"imageFile": "Y2guY29tFw==", "imageFileLen": 7, "snapId": 12},
    }
    message = parse(obj)
    assert isinstance(message, SnapshotUpload)
    assert message.serialno == "d85b1269-8f942256"
    assert message.raw == {"imageFileLen": 7, "snapId": 12}
    assert message.beside == {"ipaddr": "192.168.1.100", "serialNo": "d85b1269-8f942256"}


# --------------------------------------------------------------------------- serialNo


def test_io_push_with_the_manuals_serial_spelling() -> None:
    obj = {
        "AlarmIoIn": {
            "deviceName": "IVS",
            "ipaddr": "192.168.109.40",
            "result": {"TriggerResult": {"source": 1, "value": 0}},
            "serialNo": "d85b1269-8f942256",
        }
    }
    message = parse(obj)
    assert isinstance(message, IoInput)
    assert message.serialno == "d85b1269-8f942256"
    assert message.raw["serialNo"] == "d85b1269-8f942256"


def test_serial_push_with_the_manuals_serial_spelling() -> None:
    obj = {
        "SerialData": {
            "channel": 0,
            "serialNo": "cead13eb-1a198cd7",
            "ipaddr": "192.168.1.100",
            "serialChannel": 1,
            "data": "Y2guY29tFw",
            "dataLen": 7,
        }
    }
    message = parse(obj)
    assert isinstance(message, SerialData)
    assert message.serialno == "cead13eb-1a198cd7"
    assert message.data == b"ch.com\x17"
    assert message.raw == {key: value for key, value in obj["SerialData"].items() if key != "data"}


@pytest.mark.parametrize("key", ["serialno", "serialNo", "SerialNo", "SERIALNO"])
def test_every_spelling_of_the_serial_number(key: str) -> None:
    plate = vzenith_plate()
    inner = plate["AlarmInfoPlate"]
    inner[key] = inner.pop("serialno")
    assert parse(plate).serialno == "d85b1269-8f942256"
    beat = {"heartbeat": {"countid": 1, key: "5f2c8a91d03e7b64"}}
    assert parse(beat).serialno == "5f2c8a91d03e7b64"


def test_serialno_wins_over_serial_no_when_both_are_sent() -> None:
    obj = {"AlarmGioIn": {"serialno": "aaaaaaaa-00000001", "serialNo": "aaaaaaaa-00000002"}}
    assert parse(obj).serialno == "aaaaaaaa-00000001"


# --------------------------------------------------------------------------- heartbeat times


def test_real_parkingcam_heartbeat_reads_its_time_strings() -> None:
    message = parse_push(PARKINGCAM_HEARTBEAT, None)
    assert isinstance(message, Heartbeat)
    assert message.serialno == "5f2c8a91d03e7b64"
    assert message.countid == 37
    # The camera's wall clock: no time zone, so naive.
    assert message.outage_at == datetime(2025, 2, 5, 18, 3, 53)
    assert message.start_at == datetime(2025, 2, 5, 17, 40, 12)
    assert message.outage_ts is None and message.start_ts is None
    assert message.raw["outageTs"] == "2025-02-05 18:03:53"


def test_manual_heartbeat_times_in_seconds_are_utc() -> None:
    message = parse({"Heartbeat": {"serialno": "e10b2d6c", "outageTs": 1700000000}})
    assert isinstance(message, Heartbeat)
    assert message.outage_at == datetime.fromtimestamp(1700000000, tz=timezone.utc)
    assert message.outage_ts == 1700000000
    assert message.start_at is None


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2025-02-05T18:03:53", datetime(2025, 2, 5, 18, 3, 53)),
        ("2025/2/5 08:03:53", datetime(2025, 2, 5, 8, 3, 53)),
        ("20250205180353", datetime(2025, 2, 5, 18, 3, 53)),
        ("1700000000", datetime.fromtimestamp(1700000000, tz=timezone.utc)),
        ("2025-13-40 99:99:99", None),
        ("yesterday", None),
        ("", None),
        (None, None),
        ([2025], None),
    ],
)
def test_heartbeat_time_forms(sent: Any, expected: datetime | None) -> None:
    message = parse({"heartbeat": {"serialno": "5f2c8a91d03e7b64", "startTs": sent}})
    assert isinstance(message, Heartbeat)
    assert message.start_at == expected


# --------------------------------------------------------------------------- whitelist results


@pytest.mark.parametrize(
    ("key", "operation"),
    [
        ("Response_AddWhiteList", WhitelistOperation.ADD),
        ("Response_DeleteWhiteList", WhitelistOperation.DELETE),
        ("Response_DelWhiteListAll", WhitelistOperation.DELETE_ALL),
        ("Response_whiteList", WhitelistOperation.QUERY),
    ],
)
def test_whitelist_results_of_the_sample_keep_their_operation(
    key: str, operation: WhitelistOperation
) -> None:
    value = sample("whitelist_result_parkingcam_alphadigi_manual_v1.2.json")["pushes"][key]
    message = parse({key: value})
    assert isinstance(message, WhitelistResult)
    assert message.operation is operation
    assert message.key == key
    assert message.raw == value


def test_whitelist_query_result_rows_and_total() -> None:
    value = sample("whitelist_result_parkingcam_alphadigi_manual_v1.2.json")["pushes"][
        "Response_whiteList"
    ]
    message = parse({"Response_whiteList": value})
    assert isinstance(message, WhitelistResult)
    assert message.total == 1000
    assert message.rows == ({"carnum": " ABC8888", "startime": "20181029165012",
                             "endtime": "20181105165012"},)


def test_bare_whitelist_answer_is_kept() -> None:
    message = parse({"Response_AddWhiteList": "ok", "serialno": "5f2c8a91d03e7b64"})
    assert isinstance(message, WhitelistResult)
    assert message.ok is True
    assert message.raw == {"value": "ok"}
    assert message.serialno == "5f2c8a91d03e7b64"
    assert message.beside == {"serialno": "5f2c8a91d03e7b64"}


# --------------------------------------------------------------------------- receipts and wrappers


def test_camera_receipt_of_the_sample() -> None:
    receipt = sample("camera_ack_vzenith_ym_manualtrigger_2024.json")["camera_ack"]
    message = parse(receipt)
    assert message == CameraReceipt(
        serialno="7d13a019-8fab9d91",
        msg_id="7d13a019-8fab9d9116485467538213",
        command="manualTrigger",
        state_code=200,
        error_msg="success",
        ok=True,
        ipaddr="192.168.22.113",
        raw=receipt,
    )


def test_failed_receipt() -> None:
    message = parse({"error_msg": "busy", "msgId": 42, "cmd": "ivs_ioctrl", "state_code": 500})
    assert isinstance(message, CameraReceipt)
    assert (message.ok, message.msg_id, message.state_code) == (False, "42", 500)


def test_cloud_mqtt_sample_body_parses() -> None:
    inner = sample("gio_vzenith_vzicloud_mqtt_2021.json")["payload"]["body"]
    message = parse(inner)
    assert isinstance(message, IoInput)
    assert (message.serialno, message.source, message.value) == ("265e1040-85e01fb7", 0, 1)


# --------------------------------------------------------------------------- licenses


def test_three_region_plate_is_one_license() -> None:
    message = parse(parkingcam_plate("粤ZJ068澳|MX7742|ZM127"))
    assert isinstance(message, PlateResult)
    assert message.license == "粤ZJ068澳|MX7742|ZM127"
    assert message.has_plate


@pytest.mark.parametrize(
    "license",
    ["_无_", "无", "无牌", "未识别", "_Œﬁ_", "_нч_", "", "  ", "_无_|_无_", "＿无＿", "_НЧ_"],
)
def test_no_plate_reads(license: str) -> None:
    message = parse(vzenith_plate(license))
    assert isinstance(message, PlateResult)
    assert not message.has_plate
    assert message.license == license.strip()


@pytest.mark.parametrize("license", ["京A12345", "无A12345", "A", "粤ZJ068澳|无", "WJ011234"])
def test_plates_are_plates(license: str) -> None:
    assert is_no_plate_license(license) is False


def test_no_plate_list_holds_the_spellings_and_their_misreadings() -> None:
    for spelling in NO_PLATE_SPELLINGS:
        gbk = spelling.encode("gbk")
        for page in NO_PLATE_MISREADINGS:
            misread = gbk.decode(page, errors="replace")
            assert misread in NO_PLATE_LICENSES, (spelling, page)
            assert is_no_plate_license(misread), (spelling, page)
    assert {"_Œﬁ_", "_нч_", "_无_", "无", "无牌", "未识别", ""} <= NO_PLATE_LICENSES


def test_no_misreading_looks_like_an_ascii_plate() -> None:
    # A misreading that normalised to ASCII letters and digits could hide a real plate.
    for license in NO_PLATE_LICENSES:
        key = "".join(ch for ch in license.upper() if ch.isalnum())
        assert not (key and key.isascii()), license


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("粤B\x0012345", "粤B12345"),
        ("京A12345\r\n", "京A12345"),
        ("京A1\x1b[2J2345", "京A1[2J2345"),
        ("京A\u202e12345", "京A12345"),
        ("\x00_无_\x00", "_无_"),
    ],
)
def test_control_characters_leave_the_license_but_stay_in_the_raw_record(
    sent: str, kept: str
) -> None:
    message = parse(vzenith_plate(sent))
    assert isinstance(message, PlateResult)
    assert message.license == kept
    assert message.raw["license"] == sent


def test_control_characters_leave_serial_numbers_and_names() -> None:
    obj = vzenith_plate()
    obj["AlarmInfoPlate"]["serialno"] = "d85b1269-8f942256\x00\n"
    obj["AlarmInfoPlate"]["deviceName"] = "IVS\x07"
    message = parse(obj)
    assert isinstance(message, PlateResult)
    assert (message.serialno, message.device_name) == ("d85b1269-8f942256", "IVS")
    assert message.fields["serialno"] == "d85b1269-8f942256\x00\n"


def test_text_helpers() -> None:
    assert strip_control("京A12345") == "京A12345"
    assert strip_control("a\x00b\u2028c\u200bd") == "abcd"
    assert strip_control("京A\u300012345") == "京A\u300012345"  # a blank, not a control
    assert for_log("a\x00b\nc\u202ed") == "a\\x00b\\x0ac\\u202ed"
    assert for_log("x" * 500, limit=20) == "x" * 17 + "..."


# --------------------------------------------------------------------------- encodings


def test_utf8_body_says_utf8() -> None:
    assert parse(parkingcam_plate()).charset == "utf-8"


def test_gb2312_body_says_gb18030() -> None:
    message = parse(parkingcam_plate(), encoding="gb2312")
    assert isinstance(message, PlateResult)
    assert message.license == "粤FQK883"
    assert message.fields["entityName"] == "东门停车场"
    assert message.charset == "gb18030"


def test_ascii_body_says_nothing() -> None:
    heartbeat = parse_push(PARKINGCAM_HEARTBEAT, None)
    assert isinstance(heartbeat, Heartbeat) and heartbeat.charset is None
    assert parse(sample("plate_parkingcam_alphadigi_manual_v1.2.json")).charset is None


def test_gb2312_whitelist_result_says_gb18030() -> None:
    obj = {"Response_whiteList": {"totalList": 1, "data": [{"carnum": "粤B12345"}]}}
    message = parse(obj, encoding="gbk")
    assert isinstance(message, WhitelistResult)
    assert message.rows[0]["carnum"] == "粤B12345"
    assert message.charset == "gb18030"


# --------------------------------------------------------------------------- samples


def test_every_plate_sample_keeps_every_field() -> None:
    for name in sorted(path.name for path in SAMPLES.iterdir()):
        if not name.startswith("plate_") or name.endswith(".jsonc"):
            continue
        obj = sample(name)
        message = parse(obj)
        assert isinstance(message, PlateResult)
        inner = obj["AlarmInfoPlate"]
        for key, value in inner.items():
            if key != "result":
                assert message.fields[key] == value, (name, key)
        assert dict(message.raw) == inner["result"]["PlateResult"]


# --------------------------------------------------------------------------- the documented list

EVENTS_DOC = Path(__file__).resolve().parents[1] / "docs" / "events.md"


def shown(text: str) -> str:
    """A license as docs/events.md writes it: characters that do not print as U+XXXX."""
    return "".join(
        ch if ch.isprintable() and ch not in "\xa0\xad" else f"U+{ord(ch):04X}" for ch in text
    )


def test_docs_list_every_no_plate_read_and_nothing_else() -> None:
    text = EVENTS_DOC.read_text(encoding="utf-8")
    table = text.split("<!-- no-plate list:", 1)[1].split("\n\n", 1)[0]
    cells = {
        cell.strip()[1:-1]
        for line in table.splitlines()[4:]  # after the comment, header, rule and "as sent"
        for cell in line.split("|")[2:-1]
    }
    assert cells == {shown(license) for license in NO_PLATE_LICENSES if license not in
                     NO_PLATE_SPELLINGS and license}, "docs/events.md no-plate table"
    for spelling in NO_PLATE_SPELLINGS:
        assert f"`{spelling}`" in table
