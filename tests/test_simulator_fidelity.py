"""A simulated camera is as faithful as PROTOCOL.md: it reads only the replies,
and the fields of them, that its dialect, firmware generation and heartbeat
mode read (sections 3, 4, 7 and 9), records what it ignored, sends bodies as
the field sends them, and can be slow (``link_delay``) or unable to decode a
chunked reply (``decodes_chunked=False``).

Most tests are pure (the firmware's decision, bodies, plates) or run the
camera on a ``Clock`` with an in-memory link; the loopback tests at the end
are marked ``e2e``.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import attrs
import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial import unittest
from twisted.web import resource, server

from gateway.simulator.bodies import (
    CameraIdentity,
    PlateEvent,
    camera_time_text,
    encode_json,
    heartbeat_body,
    io_body,
    plate_body,
    serial_body,
)
from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.cli import build_parser, configs_from_args
from gateway.simulator.config import CameraConfig, fleet_configs, parkingcam_serial
from gateway.simulator.firmware import CameraFirmware
from gateway.simulator.http import HttpReply, TransportFailure
from gateway.simulator.plates import (
    GARBLED_NO_PLATES,
    NO_PLATE,
    NO_PLATE_TEXTS,
    PlateSource,
    generate_plate,
    image_path,
    read_for_license,
    three_region_plate,
)

global_reactor: Any = _reactor

VZENITH = "d85b1269-8f942256"
PARKINGCAM = "QFX2182310150262"

CURRENT = CameraFirmware("vzenith", "current")
LEGACY = CameraFirmware("vzenith", "legacy")
PARKING = CameraFirmware("parkingcam")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def body(value: Any, codec: str = "utf-8") -> bytes:
    return json.dumps(value, ensure_ascii=False).encode(codec)


# Every field PROTOCOL.md section 4 (and 7) defines, each valid, in one reply.
EVERY_PLATE_FIELD: dict[str, Any] = {
    "info": "ok",
    "channelNum": 2,
    "plateid": 7,
    "content": "retransfer_stop",
    "is_pay": "true",
    "ContinuePushOffline": {"plateid": 7, "continue": 1},
    "serialData": [{"serialChannel": 0, "data": b64(b"\x00\x64"), "dataLen": 2}],
    "TriggerImage": {"port": 8080, "snapImageAbsolutelyUrl": "http://10.0.0.1:8080/snap"},
    "manualTrigger": "ok",
    "ivs_ioctrl": {"io": 1, "value": 1, "delay": 500},
    "playserver_json_request": {
        "type": "ps_voice_play",
        "voice": b64("欢迎光临".encode()),
        "voice_volume": 80,
        "voice_male": 0,
    },
    "white_list_operate": {
        "operate_type": 0,
        "white_list_data": [{"plate": "京A12345", "enable": 1, "need_alarm": 0}],
    },
    "shutoff": "ok",
    "snapnow": "yes",
}
EVERY_REPLY = body({"Response_AlarmInfoPlate": EVERY_PLATE_FIELD})
VZENITH_NEWER_ONLY = {
    "plateid",
    "ContinuePushOffline",
    "ivs_ioctrl",
    "playserver_json_request",
    "white_list_operate",
}


# ------------------------------------------------ what each firmware executes


def test_newer_vzenith_executes_its_fields_and_ignores_parkingcam_ones() -> None:
    for kind in ("plate", "offline", "comet"):
        effects = CURRENT.effects(kind, EVERY_REPLY)
        assert set(effects.ignored) == {"content", "is_pay", "shutoff", "snapnow"}, kind
        assert set(effects.executed) == set(EVERY_PLATE_FIELD) - set(effects.ignored)
        assert effects.open_channel == 2
        assert not effects.retransfer_stop and not effects.close_barrier


def test_older_vzenith_reads_only_the_five_fields_of_its_generation() -> None:
    effects = LEGACY.effects("plate", EVERY_REPLY)
    # PROTOCOL.md section 9, "Firmware generations".
    assert set(effects.executed) == {
        "info",
        "channelNum",
        "TriggerImage",
        "serialData",
        "manualTrigger",
    }
    assert VZENITH_NEWER_ONLY <= set(effects.ignored)
    assert effects.io_controls == () and effects.voices == ()
    assert effects.whitelist_edit is None and effects.continue_offline is None
    assert effects.plateid_echo is None
    assert effects.open_channel == 2 and effects.manual_trigger and effects.snapshot is not None


def test_parkingcam_plate_reply_reads_info_content_and_serial_data_only() -> None:
    effects = PARKING.effects("plate", EVERY_REPLY)
    assert set(effects.executed) == {"info", "content", "serialData"}
    assert set(effects.ignored) == set(EVERY_PLATE_FIELD) - {"info", "content", "serialData"}
    # No channelNum in this dialect: info always drives output 0 (section 9).
    assert effects.open_channel == 0
    assert effects.retransfer_stop
    assert not effects.manual_trigger and effects.snapshot is None
    assert effects.io_controls == () and effects.whitelist_edit is None
    # shutoff / snapnow exist only inside Response_Heartbeat.
    assert not effects.close_barrier


def test_whole_reply_avs_trigger_is_vzenith_only() -> None:
    trigger = body({"type": "AVS_TRIGGER"})
    assert CURRENT.effects("plate", trigger).manual_trigger
    assert LEGACY.effects("comet", trigger).manual_trigger
    parking = PARKING.effects("plate", trigger)
    assert not parking.manual_trigger and parking.ignored == ("type",)


def test_vzenith_common_heartbeat_reply_is_never_read() -> None:
    # PROTOCOL.md sections 3 and 9: a command put in the reply to a
    # registration in common-heartbeat mode is lost, whatever it is.
    reply = body(
        {
            "Response_AlarmInfoPlate": {
                "info": "ok",
                "white_list_operate": EVERY_PLATE_FIELD["white_list_operate"],
            }
        }
    )
    for firmware in (CURRENT, LEGACY):
        effects = firmware.effects("heartbeat", reply)
        assert effects.readable and effects.executed == ()
        assert effects.open_channel is None and effects.whitelist_edit is None
        assert set(effects.ignored) == {"info", "white_list_operate"}
    # Not even read: a broken body is not "unreadable", it is unread.
    assert CURRENT.effects("heartbeat", b"<html>").readable


def test_replies_nobody_reads() -> None:
    reply = body({"Response_AlarmInfoPlate": {"info": "ok"}, "extra": 1})
    for firmware in (CURRENT, LEGACY, PARKING):
        for kind in ("io", "snapshot"):
            effects = firmware.effects(kind, reply)
            assert effects.open_channel is None
            assert set(effects.ignored) == {"info", "extra"}
    # A ParkingCam camera neither polls nor uploads offline records.
    assert not PARKING.reads("comet") and not PARKING.reads("offline")
    assert not CURRENT.reads("whitelist_response")
    with pytest.raises(ValueError):
        CURRENT.reads("teleport")


def test_parkingcam_heartbeat_reply() -> None:
    reply = body(
        {
            "Response_Heartbeat": {
                "info": "ok",
                "shutoff": "ok",
                "snapnow": "yes",
                "manualTrigger": "ok",
                "serialData": [{"serialChannel": 1, "data": b64(b"hi"), "dataLen": 2}],
            }
        }
    )
    for kind in ("heartbeat", "whitelist_response"):
        effects = PARKING.effects(kind, reply)
        assert set(effects.executed) == {"info", "shutoff", "snapnow", "serialData"}
        assert effects.ignored == ("manualTrigger",)
        assert effects.open_channel == 0 and effects.close_barrier
    # A Vzenith-style reply to a ParkingCam heartbeat opens nothing.
    wrong = PARKING.effects("heartbeat", body({"Response_AlarmInfoPlate": {"info": "ok"}}))
    assert wrong.open_channel is None and wrong.ignored == ("Response_AlarmInfoPlate",)
    command = PARKING.effects("heartbeat", body({"deleteWhiteListAll": 1, "Response_x": {}}))
    assert command.parkingcam_command is not None
    assert command.executed == ("deleteWhiteListAll",) and command.ignored == ("Response_x",)


def test_serial_reply_writes_serial_data_only() -> None:
    reply = body(
        {
            "Response_SerialData": {
                "info": "ok",
                "serialData": [{"serialChannel": 0, "data": b64(b"ab"), "dataLen": 2}],
            }
        }
    )
    for firmware in (CURRENT, LEGACY, PARKING):
        effects = firmware.effects("serial", reply)
        assert [w.data for w in effects.serial_writes] == [b"ab"]
        assert effects.executed == ("serialData",) and effects.ignored == ("info",)
        assert effects.open_channel is None


def test_replies_are_read_in_the_cameras_character_encoding() -> None:
    command = {"addWhiteList": {"add_data": [{"carnum": "粤B12345"}]}}
    gb2312 = CameraFirmware("parkingcam", charset="gb2312")
    effects = gb2312.effects("heartbeat", body(command, "gb18030"))
    assert effects.parkingcam_command is not None
    assert effects.parkingcam_command.body == command
    # A UTF-8 camera cannot read GBK bytes; a GB2312 camera garbles UTF-8 ones.
    assert not PARKING.effects("heartbeat", body(command, "gb18030")).readable
    garbled = gb2312.effects("heartbeat", body(command))
    assert garbled.parkingcam_command is not None
    assert garbled.parkingcam_command.body != command


def test_config_gives_the_firmware() -> None:
    config = CameraConfig(serialno=VZENITH, servers=("http://127.0.0.1:1",))
    assert config.firmware == CURRENT
    assert attrs.evolve(config, newer_firmware=False).firmware == LEGACY
    parking = attrs.evolve(config, dialect="parkingcam", charset="gb2312")
    assert parking.firmware == CameraFirmware("parkingcam", "current", "gb2312")
    # Only ParkingCam cameras have an encoding setting (PROTOCOL.md section 2).
    with pytest.raises(ValueError, match="character encoding"):
        attrs.evolve(config, charset="gb2312")
    with pytest.raises(ValueError, match="no-plate text"):
        attrs.evolve(config, no_plate_texts=("NONE",))


# ------------------------------------------------------ bodies as the field sends


PARKING_IDENTITY = CameraIdentity(PARKINGCAM, "192.168.1.101", "parkingcam", "default")
VZENITH_IDENTITY = CameraIdentity(VZENITH, "192.168.1.100")
EVENT = PlateEvent(
    read_for_license("京A12345"), plateid=12, trigger_type=1, sec=1738749833, usec=5
)
VZENITH_ONLY_RESULT_FIELDS = {
    "plateid",
    "isoffline",
    "gioouts",
    "plate_true_width",
    "plate_distance",
    "is_fake_plate",
    "car_location",
    "car_brand",
    "feature_Code",
}


def test_parkingcam_plate_body_has_no_vzenith_fields() -> None:
    extra = {"Whitelist": 0, "realplate": True, "retryflag": 0, "speed": 0, "vehicleId": 3}
    beside = {"openflag": 0, "entityName": "", "TaxID": "", "latitude": 0.0, "longitude": 0.0}
    alarm = plate_body(PARKING_IDENTITY, EVENT, parkingcam_extra=extra, beside=beside)[
        "AlarmInfoPlate"
    ]
    result = alarm["result"]["PlateResult"]
    assert not VZENITH_ONLY_RESULT_FIELDS & set(result)
    assert set(result["timeStamp"]["Timeval"]) == {"sec", "usec"}
    assert result["imagePath"] == ""  # PROTOCOL.md section 9
    assert result["realplate"] is True
    assert "openflag" not in result
    assert set(alarm) == {"channel", "deviceName", "ipaddr", "result", "serialno", *beside}


def test_vzenith_generations_in_plate_bodies() -> None:
    newer = plate_body(VZENITH_IDENTITY, EVENT, beside={"rule_id": 0, "user_data": ""})
    alarm = newer["AlarmInfoPlate"]
    assert (alarm["rule_id"], alarm["user_data"]) == (0, "")
    result = alarm["result"]["PlateResult"]
    assert VZENITH_ONLY_RESULT_FIELDS <= set(result)
    assert "decyear" in result["timeStamp"]["Timeval"]
    older = plate_body(VZENITH_IDENTITY, EVENT, newer_firmware=False)["AlarmInfoPlate"]
    assert not {"plateid", "isoffline", "gioouts"} & set(older["result"]["PlateResult"])
    assert set(older["result"]["PlateResult"]["timeStamp"]["Timeval"]) == {"sec", "usec"}
    assert "rule_id" not in older


def test_parkingcam_heartbeat_is_one_compact_line_with_string_times() -> None:
    beat = heartbeat_body(
        PARKING_IDENTITY,
        3,
        1738749833,
        0,
        start_ts=camera_time_text(1738749833),
        outage_ts=camera_time_text(1738749900),
    )
    data = encode_json(beat, compact=True)
    assert b"\n" not in data and b": " not in data
    inner = json.loads(data)["heartbeat"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", inner["startTs"])
    assert isinstance(inner["outageTs"], str)


def test_serial_no_spelling_of_the_manual() -> None:
    assert io_body(VZENITH_IDENTITY, 0, 1, "serialNo")["AlarmGioIn"]["serialNo"] == VZENITH
    serial = serial_body(VZENITH_IDENTITY, 0, b"x", "serialNo")["SerialData"]
    assert serial["serialNo"] == VZENITH and "serialno" not in serial
    assert "serialno" in io_body(VZENITH_IDENTITY, 0, 1)["AlarmGioIn"]


def test_parkingcam_serial_styles() -> None:
    rng = random.Random(1)
    assert re.fullmatch(r"QFX\d{13}", parkingcam_serial(rng))
    assert re.fullmatch(r"[0-9a-f]{16}", parkingcam_serial(rng, "hex16"))
    assert re.fullmatch(r"[0-9a-f]{32}", parkingcam_serial(rng, "hex32"))
    template = CameraConfig(serialno="-", servers=("http://192.0.2.1:80",), dialect="parkingcam")
    (config,) = fleet_configs(1, template, serial_style="hex32")
    assert len(config.serialno) == 32


# ------------------------------------------------------------------- plates


def test_three_region_plates() -> None:
    rng = random.Random(5)
    for _ in range(50):
        read = three_region_plate(rng)
        assert re.fullmatch(
            r"粤Z[A-HJ-NP-Z]\d{3}[港澳]\|M[A-HJ-NP-Z]\d{4}\|[A-HJ-NP-Z]{2}\d{1,4}", read.license
        ), read.license
        assert read.has_plate and read.color_type == 4
    sample = read_for_license("粤ZJ068澳|MX7742|ZM127")
    assert (sample.color_type, sample.plate_type, sample.has_plate) == (4, 14, True)


def test_every_no_plate_text_is_no_plate() -> None:
    # The mis-decoded forms are the GBK bytes of _无_ (PROTOCOL.md section 9).
    assert GARBLED_NO_PLATES == ("_Œﬁ_", "_нч_")
    assert {"_无_", "无", "无牌", "未识别", "_Œﬁ_", "_нч_"} == set(NO_PLATE_TEXTS)
    for text in NO_PLATE_TEXTS:
        read = read_for_license(text)
        assert read.license == text and not read.has_plate
    assert read_for_license("").license == NO_PLATE
    when = datetime(2015, 9, 9, 17, 14, 22)
    assert image_path("_Œﬁ_", when, 4504).endswith("__%CE%DE_.jpg")


def test_generated_mix() -> None:
    rng = random.Random(3)
    reads = [
        generate_plate(rng, no_plate_rate=0.3, three_region_rate=0.2, no_plate_texts=NO_PLATE_TEXTS)
        for _ in range(600)
    ]
    no_plates = {read.license for read in reads if not read.has_plate}
    assert no_plates == set(NO_PLATE_TEXTS)
    assert any("|" in read.license for read in reads)


def test_control_characters_inside_licenses() -> None:
    source = PlateSource(random.Random(4), ["京A12345"], control_char_rate=1.0)
    licenses = [read.license for read in source.take(30)]
    for text in licenses:
        assert len(text) == 8
        assert "".join(char for char in text if char >= " ") == "京A12345"
    assert any("\x00" in text[1:] for text in licenses)
    body_text = encode_json(
        plate_body(VZENITH_IDENTITY, attrs.evolve(EVENT, read=read_for_license("京A1\x002345")))
    )
    assert b"\\u0000" in body_text


# ---------------------------------------------------------------- the CLI


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["--server", "http://127.0.0.1:8080", *argv])


def test_cli_options_reach_the_cameras() -> None:
    (config,) = configs_from_args(
        parse(
            "--link-delay", "1.5", "--no-chunked", "--firmware", "legacy",
            "--field-mix", "--serial-key", "serialNo", "--extra-fields", "off", "--no-bind",
        ),
        0.0,
    )
    assert config.link_delay == 1.5 and not config.decodes_chunked
    assert config.firmware == LEGACY
    assert config.no_plate_texts == NO_PLATE_TEXTS
    assert config.three_region_rate > 0 and config.control_char_rate > 0
    assert config.serial_key == "serialNo" and not config.extra_fields

    (plain,) = configs_from_args(parse("--no-bind"), 0.0)
    assert (plain.link_delay, plain.decodes_chunked) == (0.0, True)
    assert plain.no_plate_texts == (NO_PLATE,)
    assert (plain.three_region_rate, plain.control_char_rate) == (0.0, 0.0)
    assert plain.serial_key == "serialno" and plain.extra_fields

    (chosen,) = configs_from_args(
        parse("--field-mix", "--three-region-rate", "0", "--no-plate-text", "无牌", "--no-bind"),
        0.0,
    )
    assert chosen.three_region_rate == 0.0 and chosen.no_plate_texts == ("无牌",)
    (every,) = configs_from_args(parse("--no-plate-text", "all", "--no-bind"), 0.0)
    assert every.no_plate_texts == NO_PLATE_TEXTS
    with pytest.raises(SystemExit):
        parse("--no-plate-text", "NONE")


def test_cli_refuses_an_encoding_setting_on_a_vzenith_camera() -> None:
    with pytest.raises(ValueError, match="character encoding"):
        configs_from_args(parse("--charset", "gb2312", "--no-bind"), 0.0)


# ---------------------------------------- the camera on a Clock, link in memory


Respond = Callable[[str, bytes], Any]


class MemoryLink:
    """The camera's HTTP client, in memory: each request is answered by
    ``respond(kind, body)`` ``latency`` seconds later on the clock. ``kind`` is
    the request's top JSON key, or ``"registration"`` for the multipart form.
    ``respond`` returns a reply object (sent as JSON), bytes, or a
    :class:`TransportFailure` to raise."""

    def __init__(self, clock: Clock, respond: Respond, latency: float = 0.01) -> None:
        self.clock = clock
        self.respond = respond
        self.latency = latency
        # (sent at, kind, body) and when each answer arrived.
        self.requests: list[tuple[float, str, bytes]] = []
        self.answered: list[float] = []

    async def post(self, url: str, data: bytes, content_type: str, timeout: float) -> HttpReply:
        kind = "registration" if content_type.startswith("multipart/") else next(
            key for key in json.loads(data) if key != "ipaddr"
        )
        self.requests.append((self.clock.seconds(), kind, data))
        await deferLater(self.clock, self.latency)
        answer = self.respond(kind, data)
        if isinstance(answer, TransportFailure):
            raise answer
        self.answered.append(self.clock.seconds())
        raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode("utf-8")
        return HttpReply(200, raw, self.latency)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def of_kind(self, kind: str) -> list[tuple[float, str, bytes]]:
        return [request for request in self.requests if request[1] == kind]


def plate_reply(**fields: Any) -> dict[str, Any]:
    return {"Response_AlarmInfoPlate": fields}


class ClockCameraTests(unittest.TestCase):
    def run_camera(
        self, respond: Respond, seconds: float = 3.0, step: float = 0.01, **settings: Any
    ) -> tuple[SimulatedCamera, MemoryLink]:
        clock = Clock()
        link = MemoryLink(clock, respond)
        settings.setdefault("serialno", VZENITH)
        settings.setdefault("servers", ("http://127.0.0.1:8080",))
        camera = SimulatedCamera(clock, CameraConfig(**settings), http=cast(Any, link))
        camera.start()
        self.addCleanup(camera.stop)
        for _ in range(int(seconds / step)):
            clock.advance(step)
        return camera, link

    def test_legacy_camera_ignores_newer_commands_in_a_plate_reply(self) -> None:
        def respond(kind: str, data: bytes) -> Any:
            return plate_reply(info="ok", **{k: EVERY_PLATE_FIELD[k] for k in VZENITH_NEWER_ONLY})

        camera, link = self.run_camera(respond, plates=1, newer_firmware=False, heartbeat="off")
        result = json.loads(link.of_kind("AlarmInfoPlate")[0][2])["AlarmInfoPlate"]
        assert not {"plateid", "isoffline", "gioouts"} & set(result["result"]["PlateResult"])
        self.assertEqual([(p.channel, p.source) for p in camera.relay_pulses], [(0, "plate")])
        self.assertEqual(camera.io_outputs, {0: 0, 1: 0, 2: 0, 3: 0})
        self.assertEqual((camera.voices, camera.whitelist), ([], {}))
        self.assertEqual(camera.plateid_echo_missing, 0)  # it expects no echo
        for field in VZENITH_NEWER_ONLY:
            self.assertIn(("plate", field), camera.ignored)
        self.assertIn(("plate", "info"), camera.executed)
        report = camera.report()["replies"]
        self.assertEqual(report["ignored"]["plate.ivs_ioctrl"], 1)
        self.assertEqual(report["executed"], {"plate.info": 1})

    def test_common_heartbeat_camera_loses_what_its_registration_reply_carries(self) -> None:
        def respond(kind: str, data: bytes) -> Any:
            if kind == "registration":
                return plate_reply(
                    info="ok", manualTrigger="ok", white_list_operate=EVERY_PLATE_FIELD[
                        "white_list_operate"
                    ]
                )
            return plate_reply(info="no")

        camera, link = self.run_camera(respond, heartbeat="common", heartbeat_interval=0.5)
        self.assertGreaterEqual(len(link.of_kind("registration")), 3)
        self.assertEqual((camera.relay_pulses, camera.whitelist), ([], {}))
        self.assertEqual(camera.manual_triggers, 0)
        self.assertEqual(camera.executed, [])
        self.assertIn(("heartbeat", "white_list_operate"), camera.ignored)
        self.assertEqual(camera.unreadable_replies, 0)
        # The same reply to a comet poll is obeyed.
        comet, _ = self.run_camera(respond, heartbeat="comet", seconds=0.05)
        self.assertIn(("comet", "white_list_operate"), comet.executed)
        self.assertIn("京A12345", comet.whitelist)

    def test_offline_check_beats_every_five_seconds_and_still_reads_no_reply(self) -> None:
        camera, link = self.run_camera(
            lambda kind, data: plate_reply(info="ok"),
            heartbeat="common",
            offline_check=True,
            seconds=21.0,
            step=0.05,
        )
        beats = [at for at, kind, _ in link.requests if kind == "registration"]
        self.assertEqual(len(beats), 5)  # at 0, 5, 10, 15, 20 s (PROTOCOL.md section 3)
        self.assertEqual(camera.relay_pulses, [])
        self.assertEqual(camera.ignored_counts[("heartbeat", "info")], 5)

    def test_parkingcam_ignores_vzenith_commands_and_uses_output_zero(self) -> None:
        def respond(kind: str, data: bytes) -> Any:
            if kind == "AlarmInfoPlate":
                return plate_reply(**EVERY_PLATE_FIELD)
            return {"Response_Heartbeat": {"info": "no"}}

        camera, link = self.run_camera(
            respond, serialno=PARKINGCAM, dialect="parkingcam", plates=1, heartbeat="off"
        )
        self.assertEqual([(p.channel, p.source) for p in camera.relay_pulses], [(0, "plate")])
        self.assertEqual(camera.manual_triggers, 0)
        self.assertEqual(camera.snapshots_requested, 0)
        self.assertEqual(camera.io_outputs[1], 0)
        self.assertEqual(camera.barrier_closes, [])
        for field in ("manualTrigger", "TriggerImage", "ivs_ioctrl", "channelNum", "is_pay"):
            self.assertIn(("plate", field), camera.ignored)
        self.assertEqual(camera.retransfer_stopped, 1)
        (plate,) = link.of_kind("AlarmInfoPlate")
        alarm = json.loads(plate[2])["AlarmInfoPlate"]
        self.assertEqual(alarm["openflag"], 0)
        self.assertIs(alarm["result"]["PlateResult"]["realplate"], True)
        self.assertFalse(VZENITH_ONLY_RESULT_FIELDS & set(alarm["result"]["PlateResult"]))

    def test_parkingcam_heartbeat_times_are_strings(self) -> None:
        state = {"up": False}

        def respond(kind: str, data: bytes) -> Any:
            if not state["up"]:
                return TransportFailure("refused")
            return {"Response_Heartbeat": {"info": "no"}}

        clock = Clock()
        clock.advance(1738749833)
        link = MemoryLink(clock, respond)
        config = CameraConfig(
            serialno=PARKINGCAM,
            servers=("http://127.0.0.1:8080",),
            dialect="parkingcam",
            heartbeat="common",
            heartbeat_interval=1.0,
            charset="gb2312",
        )
        camera = SimulatedCamera(clock, config, http=cast(Any, link))
        camera.start()
        self.addCleanup(camera.stop)
        for _ in range(300):
            clock.advance(0.01)
        state["up"] = True
        for _ in range(200):
            clock.advance(0.01)
        beats = [data for _, kind, data in link.requests if kind == "heartbeat"]
        self.assertGreaterEqual(len(beats), 4)
        for data in beats:
            self.assertNotIn(b"\n", data)
        last = json.loads(beats[-1].decode("gb18030"))["heartbeat"]
        self.assertEqual(last["startTs"], camera_time_text(1738749833))
        outage = [json.loads(data)["heartbeat"].get("outageTs") for data in beats]
        self.assertTrue(any(isinstance(value, str) for value in outage))

    def test_link_delay_spaces_comet_polls_and_pushes(self) -> None:
        camera, link = self.run_camera(
            lambda kind, data: plate_reply(info="no"),
            heartbeat="comet",
            link_delay=1.5,
            plates=3,
            rate=100,
            seconds=6.0,
        )
        polls = [at for at, kind, _ in link.requests if kind == "registration"]
        self.assertGreaterEqual(len(polls), 3)
        for earlier, later in zip(polls, polls[1:], strict=False):
            # Each poll leaves link_delay after the answer to the one before.
            self.assertGreaterEqual(later - earlier, 1.5)
        plates = [at for at, kind, _ in link.requests if kind == "AlarmInfoPlate"]
        self.assertEqual(len(plates), 3)
        for earlier, later in zip(plates, plates[1:], strict=False):
            self.assertGreaterEqual(later - earlier, 1.5)
        self.assertTrue(camera.drained)

    def test_no_link_delay_means_the_next_poll_at_once(self) -> None:
        _, link = self.run_camera(
            lambda kind, data: plate_reply(info="no"), heartbeat="comet", seconds=0.2
        )
        polls = [at for at, kind, _ in link.requests if kind == "registration"]
        self.assertGreaterEqual(len(polls), 10)

    def test_serial_no_and_extra_fields_settings(self) -> None:
        _, link = self.run_camera(
            lambda kind, data: {"ok": 1},
            plates=1,
            io_events=1,
            serial_in=(b"hi",),
            serial_key="serialNo",
            extra_fields=False,
            heartbeat="off",
            rate=10,
        )
        (io,) = link.of_kind("AlarmGioIn")
        self.assertIn("serialNo", json.loads(io[2])["AlarmGioIn"])
        (serial,) = link.of_kind("SerialData")
        self.assertIn("serialNo", json.loads(serial[2])["SerialData"])
        (plate,) = link.of_kind("AlarmInfoPlate")
        alarm = json.loads(plate[2])["AlarmInfoPlate"]
        self.assertIn("serialno", alarm)
        self.assertNotIn("rule_id", alarm)

    def test_newer_vzenith_sends_fields_beside_the_plate_result(self) -> None:
        camera, link = self.run_camera(lambda kind, data: {"ok": 1}, plates=1, heartbeat="off")
        (plate,) = link.of_kind("AlarmInfoPlate")
        alarm = json.loads(plate[2])["AlarmInfoPlate"]
        self.assertEqual((alarm["rule_id"], alarm["user_data"]), (0, ""))
        # {"ok": 1} to a plate push: read, nothing in it for the camera.
        self.assertIn(("plate", "ok"), camera.ignored)


# ------------------------------------------------------------ loopback (e2e)


class _Answer(resource.Resource):
    """Answers every POST with ``reply``, chunked unless ``length`` is set."""

    isLeaf = True

    def __init__(self, reply: dict[str, Any], length: bool) -> None:
        super().__init__()
        self.reply = json.dumps(reply).encode("utf-8")
        self.length = length
        self.arrivals: list[float] = []

    def render_POST(self, request: Any) -> Any:
        self.arrivals.append(global_reactor.seconds())
        request.setHeader(b"Content-Type", b"application/json")
        if self.length:
            request.setHeader(b"Content-Length", str(len(self.reply)).encode("ascii"))
            return self.reply
        # No length: twisted.web answers an HTTP/1.1 request chunked.
        request.write(self.reply)
        request.finish()
        return server.NOT_DONE_YET


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):  # bounded
        if condition():
            return
        await deferLater(global_reactor, 0.01)
    raise AssertionError("condition not reached in time")


@pytest.mark.e2e
class LoopbackTests(unittest.TestCase):
    timeout = 30

    def serve(self, reply: dict[str, Any], length: bool) -> tuple[_Answer, str]:
        answer = _Answer(reply, length)
        port = global_reactor.listenTCP(0, server.Site(answer), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return answer, f"http://127.0.0.1:{port.getHost().port}"

    def camera(self, url: str, **settings: Any) -> SimulatedCamera:
        settings.setdefault("heartbeat", "off")
        config = CameraConfig(serialno=VZENITH, servers=(url,), **settings)
        camera = SimulatedCamera(global_reactor, config)
        camera.start()
        self.addCleanup(camera.stop)
        return camera

    async def test_a_chunked_reply_fails_on_a_camera_that_cannot_decode_it(self) -> None:
        _, url = self.serve({"Response_AlarmInfoPlate": {"info": "ok"}}, length=False)
        camera = self.camera(url, decodes_chunked=False)
        camera.read_plate("京A12345")
        await _until(lambda: camera.drained and camera.pushes["plate"] == 1)
        self.assertEqual(camera.relay_pulses, [])
        self.assertEqual(camera.chunked_failures, 1)
        self.assertEqual(camera.failures["plate"], 1)
        self.assertIn("chunked", camera.last_failure or "")
        self.assertEqual(camera.report()["failures"]["chunked_replies"], 1)

        # The same reply, chunked, is read by a camera whose client decodes it.
        decoding = self.camera(url)
        decoding.read_plate("京A12345")
        await _until(lambda: bool(decoding.relay_pulses))
        self.assertEqual(decoding.chunked_failures, 0)

    async def test_a_content_length_reply_is_read_without_chunked_decoding(self) -> None:
        _, url = self.serve({"Response_AlarmInfoPlate": {"info": "ok"}}, length=True)
        camera = self.camera(url, decodes_chunked=False)
        camera.read_plate("京A12345")
        await _until(lambda: bool(camera.relay_pulses))
        self.assertEqual((camera.chunked_failures, camera.failures["plate"]), (0, 0))

    async def test_comet_polls_on_a_slow_link_come_late(self) -> None:
        answer, url = self.serve({"Response_AlarmInfoPlate": {"info": "no"}}, length=True)
        camera = self.camera(url, heartbeat="comet", link_delay=0.3)
        await _until(lambda: len(answer.arrivals) >= 4)
        await camera.stop()
        arrivals = answer.arrivals
        gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
        self.assertTrue(all(gap >= 0.3 for gap in gaps), gaps)



# ------------------------------------ the real gateway and faithful cameras (e2e)
#
# What the gateway does for cameras as PROTOCOL.md describes them: a command
# reaches a camera in a reply it reads, or is refused up front. Each test
# asserts only what the camera shows (what it executed, what it ignored).

LEGACY_VZENITH = "d85b1269-8f94aaaa"


@pytest.mark.e2e
class GatewayWithFaithfulCamerasTests(unittest.TestCase):
    timeout = 60

    async def start_gateway(self, *lanes: dict[str, Any]) -> Any:
        from support import loopback_config, start_gateway

        config = loopback_config(lane=list(lanes))
        gateway = await start_gateway(config, self.mktemp())
        self.addCleanup(gateway.stop)
        self.gateway = gateway
        return gateway

    async def assert_read(self, camera: SimulatedCamera, field: str) -> None:
        """Once a reply with ``field`` reached the camera, it was not ignored."""
        await _until(lambda: any(name == field for _, name in camera.ignored + camera.executed))
        ignored = [(kind, name) for kind, name in camera.ignored if name == field]
        self.assertEqual(ignored, [], f"the camera ignored {field}")

    def camera(self, **settings: Any) -> SimulatedCamera:
        settings.setdefault("servers", (f"http://127.0.0.1:{self.gateway.camera_port}",))
        settings.setdefault("no_plate_rate", 0.0)
        camera = SimulatedCamera(global_reactor, CameraConfig(**settings))
        camera.start()
        self.addCleanup(camera.stop)
        return camera

    async def test_a_camera_without_chunked_decoding_is_answered_with_a_length(self) -> None:
        await self.start_gateway(
            {"name": "Entrance", "camera": VZENITH, "unknown_plate": "allow",
             "sync_whitelist": False}
        )
        camera = self.camera(serialno=VZENITH, decodes_chunked=False, heartbeat="comet")
        camera.read_plate("京A12345")
        await _until(lambda: camera.pushes["plate"] == 1 and camera.drained)
        self.assertEqual(camera.chunked_failures, 0, camera.last_failure)
        self.assertEqual(camera.failures["plate"], 0)
        await _until(lambda: bool(camera.relay_pulses))

    async def test_a_comet_camera_on_a_slow_link_still_gets_commands(self) -> None:
        await self.start_gateway({"name": "Entrance", "camera": VZENITH, "sync_whitelist": False})
        registry = self.gateway.service.registry
        for held, (serialno, delay) in enumerate(((VZENITH, 1.2), ("d85b1269-8f94bbbb", 3.0)), 1):
            camera = self.camera(serialno=serialno, heartbeat="comet", link_delay=delay)

            def polls_held(held: int = held) -> bool:
                return registry.held_polls() >= held

            def pulsed(camera: SimulatedCamera = camera) -> bool:
                return bool(camera.relay_pulses)

            # Its second poll comes `delay` s after the first answer: taken for
            # a comet poll and held, not answered at once in a tight loop.
            await _until(polls_held, 10)
            self.gateway.service.control.open(serialno)
            await _until(pulsed, 10)
            self.assertEqual(camera.relay_pulses[0].source, "comet")

    async def test_a_parkingcam_trigger_is_refused_or_obeyed(self) -> None:
        from gateway.camera.control import NotSupported

        await self.start_gateway(
            {"name": "Exit", "camera": PARKINGCAM, "unknown_plate": "allow",
             "sync_whitelist": False}
        )
        camera = self.camera(
            serialno=PARKINGCAM, dialect="parkingcam", heartbeat="common",
            heartbeat_interval=0.3,
        )
        await _until(lambda: camera.replies["heartbeat"] >= 1)
        try:
            self.gateway.service.control.trigger(PARKINGCAM)
        except NotSupported:
            return
        camera.read_plate("京A12345")  # a plate reply for the command to ride in
        await self.assert_read(camera, "manualTrigger")
        await _until(lambda: camera.manual_triggers >= 1, 5)

    async def test_a_parkingcam_snapshot_is_refused_or_returns_a_jpeg(self) -> None:
        from gateway.camera.control import NotSupported

        await self.start_gateway({"name": "Exit", "camera": PARKINGCAM, "sync_whitelist": False})
        camera = self.camera(
            serialno=PARKINGCAM, dialect="parkingcam", heartbeat="common",
            heartbeat_interval=0.3,
        )
        await _until(lambda: camera.replies["heartbeat"] >= 1)
        try:
            image = await self.gateway.service.control.snapshot(PARKINGCAM, timeout=3)
        except NotSupported:
            return
        except Exception:
            # snapnow was obeyed (a capture), but no image came back.
            self.assertEqual(camera.snapshots_requested, 0)
            raise
        self.assertTrue(image.startswith(b"\xff\xd8"))

    async def test_an_older_vzenith_hold_open_is_refused_or_obeyed(self) -> None:
        from gateway.camera.control import NotSupported

        await self.start_gateway(
            {"name": "Entrance", "camera": LEGACY_VZENITH, "unknown_plate": "allow",
             "sync_whitelist": False}
        )
        camera = self.camera(serialno=LEGACY_VZENITH, newer_firmware=False, heartbeat="comet")
        camera.read_plate("京A12345")  # the gateway sees a push without plateid
        await _until(lambda: bool(camera.answered_plates))
        try:
            self.gateway.service.control.hold_open(LEGACY_VZENITH)
        except NotSupported:
            return
        await self.assert_read(camera, "ivs_ioctrl")
        await _until(lambda: camera.io_outputs[0] == 1, 5)

    async def test_an_older_vzenith_is_never_counted_in_sync_with_rows_it_lacks(self) -> None:
        from gateway.policy.whitelist import WhitelistEntry

        gateway = await self.start_gateway({"name": "Entrance", "camera": LEGACY_VZENITH})
        camera = self.camera(serialno=LEGACY_VZENITH, newer_firmware=False, heartbeat="comet")
        camera.read_plate("京A12345")
        await _until(lambda: bool(camera.answered_plates))
        await gateway.service.plate_list.upsert(
            [WhitelistEntry(plate=f"京A{n:05d}", source="admin") for n in range(3)]
        )
        sync = gateway.service.camera_sync

        def in_sync() -> bool:
            state = sync.state(LEGACY_VZENITH)
            return state is not None and state.in_sync

        try:
            await _until(in_sync, 8)
        except AssertionError:
            return  # never claimed: fine
        await self.assert_read(camera, "white_list_operate")
        self.assertEqual(len(camera.whitelist), 3)

    async def test_a_common_heartbeat_camera_gets_its_rows_in_plate_replies(self) -> None:
        from gateway.policy.whitelist import WhitelistEntry

        gateway = await self.start_gateway({"name": "Entrance", "camera": VZENITH})
        # Every 5 s: a common heartbeat with "offline check", the quickest one.
        camera = self.camera(serialno=VZENITH, heartbeat="common", heartbeat_interval=5.0)
        await _until(lambda: camera.replies["heartbeat"] >= 2, 12)
        await gateway.service.plate_list.upsert(
            [WhitelistEntry(plate=f"京A{n:05d}", source="admin") for n in range(3)]
        )
        await _until(lambda: camera.replies["heartbeat"] >= 3, 7)  # one more heartbeat
        # PROTOCOL.md section 9: the only command channel is the next plate reply.
        # The first plate reply clears the camera's list, the next brings the rows.
        for number, plate in enumerate(("京Z99998", "京Z99999"), start=1):
            camera.read_plate(plate)

            def answered(n: int = number) -> bool:
                return len(camera.answered_plates) >= n

            await _until(answered)
        self.assertNotIn(("heartbeat", "white_list_operate"), camera.ignored)
        await _until(lambda: len(camera.whitelist) == 3, 5)
