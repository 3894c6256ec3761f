"""The simulated camera reads replies by the firmware's rules, not the gateway's."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from gateway.simulator.firmware import (
    PARKINGCAM_PLATE_FIELDS,
    ContinueOffline,
    HeldPlate,
    ParkingCamCommand,
    apply_parkingcam_command,
    apply_whitelist_edit,
    heartbeat_reply_effects,
    local_open_allowed,
    plate_reply_effects,
    read_reply,
    serial_reply_effects,
)


def plate(**fields: Any) -> Any:
    return plate_reply_effects(read_reply(json.dumps({"Response_AlarmInfoPlate": fields}).encode()))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------- reading the body


def test_one_object_is_read_with_trailing_blanks_and_nul() -> None:
    assert read_reply(b' \r\n{"a": 1}\r\n\x00') == {"a": 1}


def test_bodies_a_camera_ignores() -> None:
    for body in (
        b'"ok"',
        b'[{"Response_AlarmInfoPlate": {"info": "ok"}}]',
        b'{"Response_AlarmInfoPlate": {"info": "ok"}}{"Response_AlarmInfoPlate": {"info": "ok"}}',
        '\ufeff{"Response_AlarmInfoPlate": {"info": "ok"}}'.encode("utf-8"),
        b'{"Response_AlarmInfoPlate": {"info": "ok"}',
        b"ok",
        b"",
        b'{"a": NaN}',
        '{"Response_AlarmInfoPlate": {"info": "好"}}'.encode("gbk"),
    ):
        effects = plate_reply_effects(read_reply(body))
        assert not effects.readable, body
        assert effects.open_channel is None


# ------------------------------------------------------------------- the barrier


def test_info_ok_opens_channel_zero_by_default() -> None:
    effects = plate(info="ok")
    assert effects.info_ok
    assert effects.open_channel == 0


def test_info_must_be_exactly_ok() -> None:
    for info in ("OK", "Ok", "ok ", "yes", True, 1):
        assert plate(info=info).open_channel is None, info


def test_channel_num_selects_the_output() -> None:
    assert plate(info="ok", channelNum=2).open_channel == 2


def test_channel_num_as_a_string_is_not_honoured() -> None:
    effects = plate(info="ok", channelNum="2")
    assert effects.open_channel == 0
    assert any("channelNum" in reason for reason in effects.rejected)


def test_channel_num_past_the_outputs_opens_nothing() -> None:
    assert plate(info="ok", channelNum=7).open_channel is None


# ---------------------------------------------------------------- manual trigger


def test_manual_trigger_spellings() -> None:
    assert plate(manualTrigger="ok").manual_trigger
    assert not plate(manualTigger="ok").manual_trigger
    assert not plate(manualTrigger="OK").manual_trigger
    assert plate_reply_effects(read_reply(b'{"type": "AVS_TRIGGER"}')).manual_trigger


# ------------------------------------------------------------------- serial data


def test_serial_items_written_in_order_exactly_data_len_bytes() -> None:
    effects = plate(
        serialData=[
            {"serialChannel": 0, "data": b64(b"\x00\x64\xff\xff"), "dataLen": 4},
            {"serialChannel": 1, "data": b64(b"abcdef"), "dataLen": 3},
        ]
    )
    assert [(write.channel, write.data) for write in effects.serial_writes] == [
        (0, b"\x00\x64\xff\xff"),
        (1, b"abc"),
    ]


def test_a_string_data_len_rejects_that_item_only() -> None:
    effects = plate(
        serialData=[
            {"serialChannel": 0, "data": b64(b"first"), "dataLen": "5"},
            {"serialChannel": 0, "data": b64(b"second"), "dataLen": 6},
        ]
    )
    assert [write.data for write in effects.serial_writes] == [b"second"]
    assert any("dataLen is not an integer" in reason for reason in effects.rejected)


def test_data_len_over_the_buffer_is_rejected() -> None:
    effects = plate(serialData=[{"serialChannel": 0, "data": b64(b"x" * 513), "dataLen": 513}])
    assert effects.serial_writes == ()
    assert effects.rejected


def test_data_len_longer_than_data_copies_buffer_contents() -> None:
    (write,) = plate(
        serialData=[{"serialChannel": 0, "data": b64(b"ab"), "dataLen": 4}]
    ).serial_writes
    assert write.data == b"ab\x00\x00"
    assert write.short and write.decoded_length == 2


def test_serial_data_must_be_an_array() -> None:
    effects = plate(serialData={"serialChannel": 0, "data": b64(b"ab"), "dataLen": 2})
    assert effects.serial_writes == ()
    assert "serialData is not an array" in effects.rejected


def test_bad_base64_and_bad_channel_are_rejected() -> None:
    effects = plate(
        serialData=[
            {"serialChannel": 0, "data": "not base64!", "dataLen": 3},
            {"serialChannel": 2, "data": b64(b"abc"), "dataLen": 3},
            {"serialChannel": "0", "data": b64(b"abc"), "dataLen": 3},
        ]
    )
    assert effects.serial_writes == ()
    assert len(effects.rejected) == 3


def test_response_serial_data_is_written() -> None:
    body = {
        "Response_SerialData": {
            "info": "ok",
            "serialData": [{"serialChannel": 1, "data": b64(b"hi"), "dataLen": 2}],
        }
    }
    effects = serial_reply_effects(read_reply(json.dumps(body).encode()))
    assert [(w.channel, w.data) for w in effects.serial_writes] == [(1, b"hi")]
    assert effects.open_channel is None


# -------------------------------------------------------------- offline records


def test_continue_push_offline() -> None:
    effects = plate(plateid=7, ContinuePushOffline={"plateid": 7, "continue": 1})
    assert effects.continue_offline == ContinueOffline(7, True)
    assert effects.plateid_echo == 7
    assert plate(
        ContinuePushOffline={"plateid": 7, "continue": 0}
    ).continue_offline == ContinueOffline(7, False)


def test_continue_push_offline_with_string_numbers_is_ignored() -> None:
    effects = plate(plateid="7", ContinuePushOffline={"plateid": "7", "continue": 1})
    assert effects.continue_offline is None
    assert effects.plateid_echo is None
    assert len(effects.rejected) == 2


def test_retransfer_stop() -> None:
    # Only ParkingCam cameras read content; Vzenith ignores it (PROTOCOL.md section 4).
    def parkingcam(**fields: Any) -> Any:
        body = json.dumps({"Response_AlarmInfoPlate": fields}).encode()
        return plate_reply_effects(read_reply(body), PARKINGCAM_PLATE_FIELDS)

    assert parkingcam(content="retransfer_stop").retransfer_stop
    assert not parkingcam(content="retransfer").retransfer_stop
    vzenith = plate(content="retransfer_stop")
    assert not vzenith.retransfer_stop and vzenith.ignored == ("content",)


# -------------------------------------------------------------- other commands


def test_snapshot_request_prefers_what_is_there() -> None:
    absolute = plate(TriggerImage={"snapImageAbsolutelyUrl": "http://10.0.0.1/snap"}).snapshot
    assert absolute is not None and absolute.absolute_url == "http://10.0.0.1/snap"
    relative = plate(TriggerImage={"port": 8080, "snapImageRelativeUrl": "/snap"}).snapshot
    assert relative is not None and (relative.relative_url, relative.port) == ("/snap", 8080)
    assert plate(TriggerImage={"port": 80}).snapshot is None


def test_io_control_and_voice() -> None:
    effects = plate(
        ivs_ioctrl={"io": 1, "value": 2, "delay": 500},
        playserver_json_request={
            "type": "ps_voice_play",
            "voice": b64("欢迎光临".encode()),
            "voice_volume": 80,
            "voice_male": 0,
        },
    )
    assert [(c.io, c.value, c.delay_ms) for c in effects.io_controls] == [(1, 2, 500)]
    assert [(v.text, v.volume, v.male) for v in effects.voices] == [("欢迎光临", 80, 0)]
    assert plate(ivs_ioctrl={"io": "1", "value": 1}).io_controls == ()


# ----------------------------------------------------------------- whitelist


def row(plate_text: str, **fields: Any) -> dict[str, Any]:
    return {"plate": plate_text, "enable": 1, "need_alarm": 0, **fields}


def test_only_the_first_five_whitelist_rows_apply() -> None:
    plates = ["京A1234" + str(n) for n in range(6)]
    effects = plate(
        white_list_operate={"operate_type": 0, "white_list_data": [row(p) for p in plates]}
    )
    assert effects.whitelist_edit is not None
    assert effects.whitelist_edit.ignored_rows == 1
    table = apply_whitelist_edit({}, effects.whitelist_edit)
    assert sorted(table) == sorted(plates[:5])


def test_whitelist_rows_with_wrong_types_are_refused() -> None:
    effects = plate(
        white_list_operate={
            "operate_type": 0,
            "white_list_data": [
                row("京A12345", enable="1"),
                row("京A12346", enable_time="2024-01-01"),
                row("A123"),
                row(
                    "京A12347",
                    enable_time="2024-01-01 00:00:00",
                    overdue_time="2030-01-01 00:00:00",
                ),
            ],
        }
    )
    assert effects.whitelist_edit is not None
    assert [r.plate for r in effects.whitelist_edit.rows] == ["京A12347"]
    assert effects.whitelist_edit.rows[0].enable_time == datetime(2024, 1, 1)
    assert len(effects.rejected) == 3


def test_whitelist_delete_and_delete_all() -> None:
    table = {p: HeldPlate(p) for p in ("京A11111", "京A22222")}
    delete = plate(
        white_list_operate={"operate_type": 1, "white_list_data": [{"plate": "京A11111"}]}
    )
    assert delete.whitelist_edit is not None
    assert list(apply_whitelist_edit(table, delete.whitelist_edit)) == ["京A22222"]
    clear = plate(white_list_operate={"operate_type": 1, "white_list_data": [{"plate": ""}]})
    assert clear.whitelist_edit is not None and clear.whitelist_edit.operation == "delete_all"
    assert apply_whitelist_edit(table, clear.whitelist_edit) == {}


def test_local_opening_rules() -> None:
    now = datetime(2025, 6, 1, 12, 0, 0)
    table = {
        "京A00001": HeldPlate("京A00001"),
        "京A00002": HeldPlate("京A00002", enable=0),
        "京A00003": HeldPlate("京A00003", need_alarm=1),
        "京A00004": HeldPlate("京A00004", overdue_time=datetime(2025, 5, 31)),
        "京A00005": HeldPlate("京A00005", enable_time=datetime(2025, 6, 2)),
        "京A00006": HeldPlate(
            "京A00006", enable_time=datetime(2025, 1, 1), overdue_time=datetime(2026, 1, 1)
        ),
    }
    allowed = [p for p in [*table, "京A00007"] if local_open_allowed(table, p, now)]
    assert allowed == ["京A00001", "京A00006"]


# ----------------------------------------------------------------- ParkingCam


def heartbeat(reply: Any) -> Any:
    return heartbeat_reply_effects(read_reply(json.dumps(reply).encode()))


def test_response_heartbeat() -> None:
    effects = heartbeat(
        {
            "Response_Heartbeat": {
                "info": "ok",
                "shutoff": "ok",
                "snapnow": "yes",
                "serialData": [{"serialChannel": 0, "data": b64(b"1123456789"), "dataLen": 10}],
            }
        }
    )
    assert effects.open_channel == 0
    assert effects.close_barrier
    assert effects.manual_trigger
    assert [w.data for w in effects.serial_writes] == [b"1123456789"]
    assert heartbeat({"Response_Heartbeat": {"info": "no"}}).open_channel is None


def test_parkingcam_whitelist_commands() -> None:
    effects = heartbeat(
        {
            "addWhiteList": {
                "add_data": [
                    {
                        "carnum": "京A12345",
                        "startime": "20240101000000",
                        "endtime": "20301231235959",
                    }
                ]
            }
        }
    )
    assert effects.parkingcam_command is not None
    table, response = apply_parkingcam_command({}, effects.parkingcam_command, "QFX1")
    assert response == {"Response_AddWhiteList": {"reponse": "ok", "serialno": "QFX1"}}
    assert table["京A12345"].overdue_time == datetime(2030, 12, 31, 23, 59, 59)

    query = ParkingCamCommand("query", {"whiteList": {"queryNumList": 10, "listPosition": 0}})
    _, listed = apply_parkingcam_command(table, query, "QFX1")
    assert listed["Response_whiteList"]["totalList"] == 1
    assert listed["Response_whiteList"]["data"][0]["carnum"] == "京A12345"

    too_many = ParkingCamCommand(
        "delete", {"deleteWhiteList": {"del_data": [{"carnum": str(n)} for n in range(11)]}}
    )
    unchanged, refused = apply_parkingcam_command(table, too_many, "QFX1")
    assert refused["Response_DeleteWhiteList"]["reponse"] == "no"
    assert unchanged == table

    cleared, done = apply_parkingcam_command(
        table, ParkingCamCommand("delete_all", {"deleteWhiteListAll": 1}), "QFX1"
    )
    assert cleared == {} and done["Response_DelWhiteListAll"]["reponse"] == "ok"


def test_parkingcam_add_with_a_bad_row_changes_nothing() -> None:
    command = ParkingCamCommand(
        "add",
        {
            "addWhiteList": {
                "add_data": [{"carnum": "京A1"}, {"carnum": "京A2", "startime": "2024"}]
            }
        },
    )
    table, response = apply_parkingcam_command({}, command, "QFX1")
    assert table == {}
    assert response["Response_AddWhiteList"]["reponse"] == "no"
