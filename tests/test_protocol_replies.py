"""Replies to cameras: byte-exact shapes the firmware accepts, and their invariants."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import (
    MAX_SERIAL_ITEM_BYTES,
    PARKINGCAM_FOREVER_END,
    PARKINGCAM_FOREVER_START,
    CameraWhitelistRow,
    HeartbeatReply,
    IoControl,
    PlateReply,
    TriggerImageRequest,
    VoiceRequest,
    WhitelistOperate,
    ack_reply,
    idle_comet_reply,
    parkingcam_add_whitelist,
    parkingcam_delete_all_whitelist,
    parkingcam_delete_whitelist,
    parkingcam_query_whitelist,
    serial_data_reply,
    serial_items,
)

SAMPLES = Path(__file__).resolve().parent / "samples"

# Keys a vendor sample may leave out because the camera's default equals what we send
# explicitly: channelNum defaults to 0 (manual: "or 0 by default"), and an absent "info"
# opens nothing, exactly like our explicit "no".
FIRMWARE_DEFAULTS = {"channelNum": 0, "info": "no"}

SERIAL_SAMPLE = [(0, b"1123456789"), (1, b"1123456789")]


# --------------------------------------------------------------------------- helpers


def reply_sample(name: str) -> dict[str, Any]:
    """A reply sample; a missing sample directory fails the test."""
    value = json.loads((SAMPLES / name).read_bytes())
    assert isinstance(value, dict)
    return value


def assert_same_reply(ours: dict[str, Any], sample: dict[str, Any]) -> None:
    """Dict-equal, except for keys the sample leaves at the firmware default we spell out."""
    assert list(ours) == list(sample)
    for top in sample:
        mine, theirs = dict(ours[top]), dict(sample[top])
        for key, default in FIRMWARE_DEFAULTS.items():
            if key in mine and key not in theirs:
                assert mine.pop(key) == default, key
        assert mine == theirs


def load_reply(body: bytes) -> dict[str, Any]:
    """Check the wire rules every reply obeys and return the decoded object."""
    assert isinstance(body, bytes)
    assert not body.startswith(b"\xef\xbb\xbf")
    text = body.decode("utf-8")
    value, end = json.JSONDecoder().raw_decode(text)
    assert end == len(text), "exactly one JSON value"
    assert isinstance(value, dict) and len(value) == 1
    assert isinstance(next(iter(value.values())), (dict, int))
    # compact: byte-identical to a compact re-encoding, non-ASCII left as UTF-8
    assert body == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return value


def walk(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        for item in value.values():
            found.extend(walk(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(walk(item))
    return found


INT_KEYS = {
    "channelNum", "plateid", "continue", "serialChannel", "dataLen", "port", "io", "value",
    "delay", "voice_volume", "voice_male", "operate_type", "enable", "need_alarm",
    "queryNumList", "listPosition", "deleteWhiteListAll",
}


def assert_ints_are_ints(value: Any) -> None:
    for node in walk(value):
        assert not isinstance(node, (bool, float)) and node is not None, node
        if isinstance(node, dict):
            for key, item in node.items():
                if key in INT_KEYS:
                    assert type(item) is int, (key, item)


def assert_serial_items(items: list[dict[str, Any]], serial: list[tuple[int, bytes]]) -> None:
    decoded: list[tuple[int, bytes]] = []
    for item in items:
        assert set(item) == {"serialChannel", "data", "dataLen"}
        data = base64.b64decode(item["data"], validate=True)
        assert item["dataLen"] == len(data)
        assert 0 < item["dataLen"] <= MAX_SERIAL_ITEM_BYTES
        decoded.append((item["serialChannel"], data))
    # the same bytes, in the same order, on the same channels
    assert b"".join(d for _, d in decoded) == b"".join(d for _, d in serial)
    assert [c for c, d in decoded for _ in d] == [c for c, d in serial for _ in d]


# --------------------------------------------------------------------------- samples


def test_reply_samples_directory_is_there() -> None:
    names = {path.name for path in SAMPLES.iterdir()}
    assert {
        "reply_heartbeat_parkingcam_alphadigi_manual_v1.2.json",
        "reply_plate_parkingcam_alphadigi_manual_v1.2.json",
        "reply_vzenith_manual_continue_push_offline.json",
    } <= names


def test_sample_parkingcam_heartbeat_reply() -> None:
    reply = HeartbeatReply(open=True, serial=list(SERIAL_SAMPLE), shutoff=True, snapnow=True)
    sample = reply_sample("reply_heartbeat_parkingcam_alphadigi_manual_v1.2.json")
    assert reply.to_dict() == sample
    assert load_reply(reply.to_bytes()) == sample


def test_sample_parkingcam_plate_reply() -> None:
    reply = PlateReply(
        open_channel=0, retransfer_stop=True, is_pay="true", serial=list(SERIAL_SAMPLE)
    )
    sample = reply_sample("reply_plate_parkingcam_alphadigi_manual_v1.2.json")
    assert_same_reply(load_reply(reply.to_bytes()), sample)
    assert reply.to_dict()["Response_AlarmInfoPlate"]["channelNum"] == 0


def test_sample_vzenith_continue_push_offline_reply() -> None:
    reply = PlateReply(continue_offline=123)
    sample = reply_sample("reply_vzenith_manual_continue_push_offline.json")
    assert_same_reply(load_reply(reply.to_bytes()), sample)
    assert reply.to_dict()["Response_AlarmInfoPlate"]["info"] == "no"


# --------------------------------------------------------------------------- fixed replies


def test_fixed_replies() -> None:
    assert idle_comet_reply() == b'{"Response_AlarmInfoPlate":{"info":"no"}}'
    assert ack_reply() == b'{"error_num":0}'
    assert PlateReply().to_bytes() == idle_comet_reply()
    assert serial_data_reply([]) == b'{"Response_SerialData":{"info":"ok"}}'
    assert load_reply(serial_data_reply([(1, b"\x00\x01")])) == {
        "Response_SerialData": {
            "info": "ok",
            "serialData": [{"serialChannel": 1, "data": "AAE=", "dataLen": 2}],
        }
    }
    assert HeartbeatReply().to_bytes() == b'{"Response_Heartbeat":{"info":"no"}}'


# --------------------------------------------------------------------------- serial items


def test_serial_items_split_at_480_bytes() -> None:
    assert serial_items(0, b"") == []
    data = bytes(range(256)) * 4  # 1024 bytes
    items = serial_items(1, data)
    assert [item["dataLen"] for item in items] == [480, 480, 64]
    assert_serial_items(items, [(1, data)])
    assert [item["dataLen"] for item in serial_items(0, b"x" * 480)] == [480]
    assert [item["dataLen"] for item in serial_items(0, b"x" * 481)] == [480, 1]


def test_serial_items_validate() -> None:
    with pytest.raises(TypeError):
        serial_items(True, b"x")
    with pytest.raises(ValueError):
        serial_items(-1, b"x")
    with pytest.raises(TypeError):
        serial_items(0, "text")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- plate reply


def test_plate_reply_with_everything() -> None:
    reply = PlateReply(
        open_channel=1,
        plateid=77,
        retransfer_stop=True,
        continue_offline=76,
        continue_flag=0,
        serial=[(0, b"\x00\x64"), (1, b"")],
        trigger_image=TriggerImageRequest(port=8080, url="http://10.0.0.2:8080/snap"),
        manual_trigger=True,
        io_control=IoControl(io=2, value=1, delay=0),
        voice=VoiceRequest(text="欢迎光临", volume=80, male=True),
        whitelist=WhitelistOperate(
            operate="add",
            rows=(
                CameraWhitelistRow(plate="粤B12345"),
                CameraWhitelistRow(
                    plate="京A00001",
                    blacklist=True,
                    enable_time=datetime(2018, 1, 1, 11, 11, 11),
                    overdue_time=datetime(2019, 1, 1, 9, 5, 3),
                ),
            ),
        ),
        is_pay="false",
    )
    body = reply.to_bytes()
    assert "粤B12345".encode() in body  # UTF-8, not \u escapes
    assert load_reply(body) == {
        "Response_AlarmInfoPlate": {
            "info": "ok",
            "channelNum": 1,
            "plateid": 77,
            "content": "retransfer_stop",
            "ContinuePushOffline": {"plateid": 76, "continue": 0},
            "serialData": [{"serialChannel": 0, "data": "AGQ=", "dataLen": 2}],
            "TriggerImage": {"port": 8080, "snapImageAbsolutelyUrl": "http://10.0.0.2:8080/snap"},
            "manualTrigger": "ok",
            "ivs_ioctrl": {"io": 2, "value": 1, "delay": 0},
            "playserver_json_request": {
                "type": "ps_voice_play",
                "voice": base64.b64encode("欢迎光临".encode()).decode(),
                "voice_volume": 80,
                "voice_male": 1,
            },
            "white_list_operate": {
                "operate_type": 0,
                "white_list_data": [
                    {"plate": "粤B12345", "enable": 1, "need_alarm": 0},
                    {
                        "plate": "京A00001",
                        "enable": 1,
                        "need_alarm": 1,
                        "enable_time": "2018-01-01 11:11:11",
                        "overdue_time": "2019-01-01 09:05:03",
                    },
                ],
            },
            "is_pay": "false",
        }
    }


def test_relative_snapshot_url() -> None:
    path = "/devicemanagement/php/receivedeviceinfo.php"
    request = TriggerImageRequest(port=80, url=path, absolute=False)
    body = PlateReply(trigger_image=request).to_dict()["Response_AlarmInfoPlate"]
    assert body["TriggerImage"] == {
        "port": 80,
        "snapImageRelativeUrl": "/devicemanagement/php/receivedeviceinfo.php",
    }


def test_whitelist_rows_half_open_window_and_delete() -> None:
    row = CameraWhitelistRow(plate="粤B12345", enable=False, overdue_time=datetime(2030, 6, 1))
    assert row.to_add_dict() == {
        "plate": "粤B12345",
        "enable": 0,
        "need_alarm": 0,
        "enable_time": "2000-01-01 00:00:00",
        "overdue_time": "2030-06-01 00:00:00",
    }
    operate = WhitelistOperate(operate="delete", rows=(row, CameraWhitelistRow(plate="京A00001")))
    assert operate.to_dict() == {
        "operate_type": 1,
        "white_list_data": [{"plate": "粤B12345"}, {"plate": "京A00001"}],
    }
    # the manual's "delete all": one delete row with an empty plate
    clear = WhitelistOperate(operate="delete", rows=(CameraWhitelistRow(plate=""),))
    assert clear.to_dict() == {"operate_type": 1, "white_list_data": [{"plate": ""}]}


def test_builder_validation() -> None:
    with pytest.raises(ValueError):
        IoControl(io=7, value=1)
    with pytest.raises(ValueError):
        IoControl(io=0, value=3)
    with pytest.raises(ValueError):
        IoControl(io=0, value=2, delay=-1)
    with pytest.raises(ValueError):
        VoiceRequest(text="hi", volume=0)
    with pytest.raises(ValueError):
        VoiceRequest(text="hi", volume=101)
    with pytest.raises(ValueError):
        VoiceRequest(text="  ")
    with pytest.raises(ValueError):
        TriggerImageRequest(port=0, url="http://x/")
    with pytest.raises(ValueError):
        TriggerImageRequest(port=80, url="")
    rows = tuple(CameraWhitelistRow(plate=f"粤B1234{i}") for i in range(6))
    WhitelistOperate(operate="add", rows=rows[:5])
    with pytest.raises(ValueError):
        WhitelistOperate(operate="add", rows=rows)
    with pytest.raises(ValueError):
        WhitelistOperate(operate="add", rows=())
    with pytest.raises(ValueError):
        WhitelistOperate(operate="replace", rows=rows[:1])
    with pytest.raises(ValueError):
        WhitelistOperate(operate="add", rows=(CameraWhitelistRow(plate=""),))
    with pytest.raises(ValueError):
        CameraWhitelistRow(plate=" 粤B12345")
    with pytest.raises(ValueError):
        CameraWhitelistRow(plate="X" * 16)
    with pytest.raises(ValueError):
        PlateReply(open_channel=4)
    with pytest.raises(TypeError):
        PlateReply(open_channel=True)
    with pytest.raises(TypeError):
        PlateReply(plateid="123")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PlateReply(continue_offline=1, continue_flag=2)
    with pytest.raises(ValueError):
        PlateReply(serial=[(0, b"x"), (-1, b"y")])


def test_mutable_builder_validates_on_assignment() -> None:
    reply = PlateReply(plateid=5, retransfer_stop=True)
    reply.open_channel = 0
    reply.serial.append((0, b"\x01"))
    assert load_reply(reply.to_bytes())["Response_AlarmInfoPlate"]["serialData"][0]["dataLen"] == 1
    with pytest.raises(ValueError):
        reply.open_channel = 9
    reply.serial.append((0, "text"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        reply.to_bytes()


# --------------------------------------------------------------------------- ParkingCam whitelist


def test_parkingcam_add_whitelist() -> None:
    body = parkingcam_add_whitelist(
        [
            ("粤B12345", datetime(2024, 1, 2, 3, 4, 5), datetime(2025, 12, 31, 23, 59, 59)),
            ("京A00001", None, None),
        ]
    )
    assert load_reply(body) == {
        "addWhiteList": {
            "add_data": [
                {"carnum": "粤B12345", "startime": "20240102030405", "endtime": "20251231235959"},
                {
                    "carnum": "京A00001",
                    "startime": PARKINGCAM_FOREVER_START,
                    "endtime": PARKINGCAM_FOREVER_END,
                },
            ]
        }
    }
    assert PARKINGCAM_FOREVER_START == "20000101000000"
    assert PARKINGCAM_FOREVER_END == "20991231235959"
    full = load_reply(parkingcam_add_whitelist([("A1", None, None)] * 1000))
    assert len(full["addWhiteList"]["add_data"]) == 1000
    with pytest.raises(ValueError):
        parkingcam_add_whitelist([("A1", None, None)] * 1001)
    with pytest.raises(ValueError):
        parkingcam_add_whitelist([])
    with pytest.raises(ValueError):
        parkingcam_add_whitelist([("", None, None)])


def test_parkingcam_delete_and_query() -> None:
    assert load_reply(parkingcam_delete_whitelist(["粤B12345", "京A00001"])) == {
        "deleteWhiteList": {"del_data": [{"carnum": "粤B12345"}, {"carnum": "京A00001"}]}
    }
    parkingcam_delete_whitelist(["A1"] * 10)
    with pytest.raises(ValueError):
        parkingcam_delete_whitelist(["A1"] * 11)
    with pytest.raises(TypeError):
        parkingcam_delete_whitelist("粤B12345")
    assert parkingcam_delete_all_whitelist() == b'{"deleteWhiteListAll":1}'
    assert load_reply(parkingcam_query_whitelist()) == {
        "whiteList": {"queryNumList": 1000, "listPosition": 0}
    }
    assert load_reply(parkingcam_query_whitelist(50, 200)) == {
        "whiteList": {"queryNumList": 50, "listPosition": 200}
    }
    with pytest.raises(ValueError):
        parkingcam_query_whitelist(1001)
    with pytest.raises(ValueError):
        parkingcam_query_whitelist(10, -1)


# --------------------------------------------------------------------------- properties

serial_lists = st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=1500)), max_size=4)
plates = st.text(min_size=1, max_size=15).filter(lambda p: p == p.strip() and bool(p))
datetimes = st.none() | st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1))
rows = st.builds(CameraWhitelistRow, plate=plates, enable=st.booleans(), blacklist=st.booleans(),
                 enable_time=datetimes, overdue_time=datetimes)
whitelist_ops = st.builds(
    WhitelistOperate,
    operate=st.sampled_from(["add", "delete"]),
    rows=st.lists(rows, min_size=1, max_size=5).map(tuple),
)
plate_replies = st.builds(
    PlateReply,
    open_channel=st.none() | st.integers(0, 3),
    plateid=st.none() | st.integers(-(2**63), 2**63 - 1),
    retransfer_stop=st.booleans(),
    continue_offline=st.none() | st.integers(0, 2**31),
    continue_flag=st.integers(0, 1),
    serial=serial_lists,
    trigger_image=st.none()
    | st.builds(
        TriggerImageRequest,
        port=st.integers(1, 65535),
        url=st.text(min_size=1, max_size=40),
        absolute=st.booleans(),
    ),
    manual_trigger=st.booleans(),
    io_control=st.none() | st.builds(IoControl, io=st.integers(0, 3), value=st.integers(0, 2),
                                     delay=st.integers(0, 60_000)),
    voice=st.none()
    | st.builds(
        VoiceRequest,
        text=st.text(min_size=1, max_size=40).filter(str.strip),
        volume=st.integers(1, 100),
        male=st.booleans(),
    ),
    whitelist=st.none() | whitelist_ops,
    is_pay=st.none() | st.sampled_from(["true", "false"]),
)


@given(plate_replies)
def test_plate_reply_properties(reply: PlateReply) -> None:
    value = load_reply(reply.to_bytes())
    body = value["Response_AlarmInfoPlate"]
    assert isinstance(body, dict)
    assert_ints_are_ints(value)
    assert (body["info"] == "ok") == (reply.open_channel is not None)
    assert body["info"] in ("ok", "no")
    assert ("channelNum" in body) == (reply.open_channel is not None)
    assert_serial_items(body.get("serialData", []), reply.serial)
    if "white_list_operate" in body:
        assert 1 <= len(body["white_list_operate"]["white_list_data"]) <= 5
    if reply.plateid is not None:
        assert body["plateid"] == reply.plateid
    voice = body.get("playserver_json_request")
    if voice is not None:
        assert reply.voice is not None
        assert base64.b64decode(voice["voice"]).decode("utf-8") == reply.voice.text


heartbeat_replies = st.builds(
    HeartbeatReply,
    open=st.booleans(),
    serial=serial_lists,
    shutoff=st.booleans(),
    snapnow=st.booleans(),
)


@given(heartbeat_replies)
def test_heartbeat_reply_properties(reply: HeartbeatReply) -> None:
    value = load_reply(reply.to_bytes())
    body = value["Response_Heartbeat"]
    assert_ints_are_ints(value)
    assert body["info"] == ("ok" if reply.open else "no")
    assert_serial_items(body.get("serialData", []), reply.serial)
    assert ("shutoff" in body) == reply.shutoff and ("snapnow" in body) == reply.snapnow


@given(serial_lists)
def test_serial_data_reply_properties(serial: list[tuple[int, bytes]]) -> None:
    value = load_reply(serial_data_reply(serial))
    assert_ints_are_ints(value)
    assert value["Response_SerialData"]["info"] == "ok"
    assert_serial_items(value["Response_SerialData"].get("serialData", []), serial)


@given(st.lists(rows, min_size=6, max_size=12))
def test_more_than_five_whitelist_rows_are_refused(many: list[CameraWhitelistRow]) -> None:
    with pytest.raises(ValueError):
        WhitelistOperate(operate="delete", rows=tuple(many))


@given(st.lists(st.tuples(plates, datetimes, datetimes), min_size=1, max_size=30))
def test_parkingcam_add_whitelist_properties(
    entries: list[tuple[str, datetime | None, datetime | None]]
) -> None:
    value = load_reply(parkingcam_add_whitelist(entries))
    rows_out = value["addWhiteList"]["add_data"]
    assert [row["carnum"] for row in rows_out] == [plate for plate, _, _ in entries]
    for row in rows_out:
        assert len(row["startime"]) == 14 and row["startime"].isdigit()
        assert len(row["endtime"]) == 14 and row["endtime"].isdigit()

