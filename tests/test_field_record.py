"""Field pushes through the camera server, in memory (StubTreq, Clock, a store that
keeps records in a list): the stored raw record and the upstream event keep every field
the camera sent, serialNo names the camera, receipts and whitelist results are kept with
what they answer, the camera's encoding is learnt for its whitelist commands, no-plate
reads never open, and no control character from a camera reaches a log line."""

from __future__ import annotations

import json
from datetime import timezone
from typing import Any, cast

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

from gateway.camera.recorder import StoreRecorder
from gateway.camera.registry import CameraRegistry
from gateway.camera.server import CameraServer
from gateway.config import parse_config
from gateway.gate import Gate
from gateway.policy.whitelist import WhitelistEntry, WhitelistIndex, WhitelistPolicy
from gateway.store import CommitResult, EventRecord, EventType, Store
from gateway.store.database import encode_raw
from gateway.upstream.events import event_json

UTC = timezone.utc
VZENITH = "d85b1269-8f942256"
PARKINGCAM = "5f2c8a91d03e7b64"
OTHER = "aaaaaaaa-00000001"
ADDRESS = "10.0.0.7"


class ListStore:
    """Keeps each event as the store receives it, in a list."""

    def __init__(self) -> None:
        self.kept: list[EventRecord] = []

    async def commit_event(
        self, record: EventRecord, images: Any, *, outbox: bool = False
    ) -> CommitResult:
        encode_raw(record.raw)  # what the store writes: must be JSON
        self.kept.append(record)
        return CommitResult(record=record, created=True)

    @property
    def records(self) -> list[EventRecord]:
        """The events cameras pushed (not their online/offline changes)."""
        state = (EventType.CAMERA_ONLINE, EventType.CAMERA_OFFLINE)
        return [record for record in self.kept if record.type not in state]


def body(obj: Any, encoding: str = "utf-8") -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=1).encode(encoding)


def parkingcam_plate(license: str = "粤FQK883", plateid: int = 7) -> dict[str, Any]:
    return {
        "AlarmInfoPlate": {
            "channel": 0,
            "deviceName": "default",
            "ipaddr": "192.168.1.64",
            "serialno": PARKINGCAM,
            "openflag": 0,
            "entityName": "东门停车场",
            "TaxID": "91440300MA5F000000",
            "latitude": "22.543096",
            "longitude": "114.057865",
            "result": {
                "PlateResult": {
                    "license": license,
                    "imagePath": "",
                    "realplate": True,
                    "plateid": plateid,
                    "triggerType": 1,
                }
            },
        }
    }


def vzenith_plate(license: str, plateid: int, serial_key: str = "serialno") -> dict[str, Any]:
    return {
        "AlarmInfoPlate": {
            "channel": 0,
            "deviceName": "IVS",
            "ipaddr": "192.168.1.100",
            serial_key: VZENITH,
            "rule_id": 3,
            "user_data": "lane-2",
            "result": {
                "PlateResult": {
                    "license": license,
                    "plateid": plateid,
                    "timeStamp": {"Timeval": {"sec": 1740830399 + plateid, "usec": 0}},
                }
            },
        }
    }


class FieldServerTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_740_830_400)
        config = parse_config(
            {
                "gateway": {"state_dir": self.mktemp()},
                "lane": [
                    {"name": "Exit", "camera": VZENITH, "unknown_plate": "allow"},
                    {"name": "Gate", "camera": PARKINGCAM, "unknown_plate": "allow"},
                    {"name": "Side", "camera": OTHER},
                ],
            },
            source="<test>",
        )
        self.registry = CameraRegistry(self.clock)
        local = WhitelistPolicy(
            WhitelistIndex([WhitelistEntry("MX7742")]),
            tz=UTC,
            lane_overrides={"Exit": "allow", "Gate": "allow"},
        )
        self.recorder = ListStore()
        self.server = CameraServer(
            clock=self.clock,
            settings=config.camera_server,
            lanes=config.lanes,
            registry=self.registry,
            gate=Gate(clock=self.clock, local=local, duplicate_window=0),
            recorder=StoreRecorder(lambda: cast(Store, self.recorder)),
        )
        # StubTreq builds its request methods at run time: typed loosely here.
        self.stub: Any = StubTreq(self.server.resource())

    async def post(self, data: bytes, path: str = "/devicemanagement/php/plateresult.php") -> Any:
        response = await self.stub.post(
            f"http://{ADDRESS}:8080{path}",
            data=data,
            headers={"Content-Type": ["application/Json"]},
        )
        content = await self.stub.content(response)
        self.assertEqual(response.code, 200, content)
        return json.loads(content)

    # -- the raw record and upstream ------------------------------------------------

    async def test_parkingcam_plate_keeps_every_field_stored_and_upstream(self) -> None:
        await self.post(body(parkingcam_plate()))
        (record,) = self.recorder.records
        raw = record.raw
        for name, value in parkingcam_plate()["AlarmInfoPlate"].items():
            if name != "result":
                self.assertEqual(raw[name], value, name)
        self.assertEqual(raw["PlateResult"]["realplate"], True)
        self.assertEqual(raw["PlateResult"]["imagePath"], "")
        self.assertEqual(raw["dialect"], "parkingcam")
        sent = event_json(record)
        self.assertEqual(sent["raw"]["entityName"], "东门停车场")
        self.assertEqual(sent["raw"]["TaxID"], "91440300MA5F000000")
        self.assertEqual((sent["camera"], sent["lane"]), (PARKINGCAM, "Gate"))

    async def test_vzenith_rule_id_and_user_data_are_kept(self) -> None:
        await self.post(body(vzenith_plate("京A12345", 1)))
        (record,) = self.recorder.records
        self.assertEqual((record.raw["rule_id"], record.raw["user_data"]), (3, "lane-2"))
        self.assertEqual(record.raw["serialno"], VZENITH)

    async def test_serial_no_names_the_camera_not_the_address(self) -> None:
        # Another camera was last seen at the same address (a NAT, a shared gateway).
        await self.post(body({"AlarmGioIn": {"serialno": OTHER, "result": {}}}))
        await self.post(body(vzenith_plate("京A12345", 2, serial_key="serialNo")))
        await self.post(
            body({"SerialData": {"serialNo": VZENITH, "serialChannel": 0, "data": "AQ=="}})
        )
        io, plate, serial = self.recorder.records
        self.assertEqual(io.camera, OTHER)
        self.assertEqual((plate.camera, plate.lane), (VZENITH, "Exit"))
        self.assertEqual(plate.raw["serialNo"], VZENITH)
        self.assertEqual((serial.camera, serial.raw["serialNo"]), (VZENITH, VZENITH))

    async def test_serial_push_keeps_every_field(self) -> None:
        sent = {
            "SerialData": {
                "channel": 0,
                "serialno": VZENITH,
                "ipaddr": "192.168.1.100",
                "deviceName": "IVS",
                "serialChannel": 1,
                "data": "Y2guY29tFw==",
                "dataLen": 7,
            }
        }
        await self.post(body(sent))
        (record,) = self.recorder.records
        self.assertEqual(
            dict(record.raw), {**sent["SerialData"], "truncated": False}
        )

    async def test_whitelist_result_keeps_its_operation(self) -> None:
        for key in ("Response_AddWhiteList", "Response_DeleteWhiteList"):
            await self.post(body({key: {"reponse": "ok", "serialno": PARKINGCAM}}))
        add, delete = self.recorder.records
        self.assertEqual(add.type, EventType.COMMAND_RESULT)
        self.assertEqual(
            (add.raw["operation"], add.raw["response"], add.raw["reponse"]),
            ("add", "Response_AddWhiteList", "ok"),
        )
        self.assertEqual(delete.raw["operation"], "delete")
        self.assertEqual(event_json(delete)["raw"]["operation"], "delete")
        self.assertIsNone(event_json(delete)["command"])

    async def test_camera_receipt_is_answered_and_kept(self) -> None:
        receipt = {
            "error_msg": "success",
            "msgId": "7d13a019-8fab9d9116485467538213",
            "cmd": "manualTrigger",
            "ipaddr": "192.168.22.113",
            "state_code": 200,
            "serialno": VZENITH,
        }
        answer = await self.post(body(receipt), "/devicemanagement/php/receivedeviceinfo.php")
        self.assertIsInstance(answer, dict)
        (record,) = self.recorder.records
        self.assertEqual((record.type, record.camera), (EventType.COMMAND_RESULT, VZENITH))
        self.assertEqual(dict(record.raw), {**receipt, "kind": "CameraReceipt"})

    async def test_heartbeat_with_time_strings_is_served(self) -> None:
        line = (
            b'{"heartbeat":{"countid":37,"serialno":"' + PARKINGCAM.encode() + b'",'
            b'"outageTs":"2025-02-05 18:03:53","startTs":"2025-02-05 17:40:12"}}'
        )
        answer = await self.post(line, "/devicemanagement/php/heartbeat.php")
        self.assertIn("Response_Heartbeat", answer)
        camera = self.registry.get(PARKINGCAM)
        assert camera is not None
        self.assertTrue(camera.online)

    # -- plates -----------------------------------------------------------------

    async def test_no_plate_reads_never_open_an_allow_lane(self) -> None:
        for plateid, license in enumerate(["_Œﬁ_", "_нч_", "无牌", "未识别", "_无_"], 10):
            answer = (await self.post(body(vzenith_plate(license, plateid))))[
                "Response_AlarmInfoPlate"
            ]
            self.assertEqual(answer["info"], "no", license)
            self.assertNotIn("channelNum", answer)
        reasons = {record.decision_reason for record in self.recorder.records}
        self.assertEqual(reasons, {"no_plate"})
        opened = await self.post(body(vzenith_plate("京B99999", 20)))
        self.assertEqual(opened["Response_AlarmInfoPlate"]["info"], "ok")

    async def test_a_three_region_plate_is_stored_whole_and_matched_on_a_region(self) -> None:
        answer = await self.post(
            body(parkingcam_plate("粤ZJ068澳|MX7742|ZM127")), "/x"
        )
        self.assertEqual(answer["Response_AlarmInfoPlate"]["info"], "ok")
        (record,) = self.recorder.records
        self.assertEqual(record.plate, "粤ZJ068澳|MX7742|ZM127")
        self.assertEqual(record.license, "粤ZJ068澳|MX7742|ZM127")
        self.assertEqual(record.decision_reason, "whitelist")
        self.assertEqual(event_json(record)["plate"], "粤ZJ068澳|MX7742|ZM127")

    async def test_control_characters_stay_in_the_raw_record_only(self) -> None:
        with capturedLogs() as events:
            await self.post(body(vzenith_plate("京A\x0012\n345\x1b[0m", 30)))
        (record,) = self.recorder.records
        self.assertEqual(record.license, "京A12345[0m")
        self.assertEqual(record.plate, "京A123450M")
        self.assertEqual(record.raw["PlateResult"]["license"], "京A\x0012\n345\x1b[0m")
        self.assertIn("\\u0000", encode_raw(record.raw))
        lines = [formatEvent(event) for event in events]
        self.assertTrue(any("京A12345[0m" in line for line in lines), lines)
        for line in lines:
            self.assertFalse(any(ord(ch) < 0x20 for ch in line), line)

    async def test_a_bad_push_to_a_hostile_path_logs_no_control_characters(self) -> None:
        with capturedLogs() as events:
            response = await self.stub.post(
                f"http://{ADDRESS}:8080/a%1B%5B2J%00b", data=b"{not json"
            )
            await self.stub.content(response)
        self.assertEqual(response.code, 400)
        lines = [formatEvent(event) for event in events]
        self.assertTrue(lines)
        for line in lines:
            self.assertFalse(any(ord(ch) < 0x20 for ch in line), line)

    # -- the camera's encoding ------------------------------------------------------

    async def test_the_camera_encoding_is_learnt_from_its_pushes(self) -> None:
        await self.post(body({"heartbeat": {"serialno": PARKINGCAM}}))
        camera = self.registry.get(PARKINGCAM)
        assert camera is not None
        self.assertIsNone(camera.charset)  # plain ASCII says nothing
        await self.post(body(parkingcam_plate(plateid=1), "gb2312"))
        self.assertEqual(camera.charset, "gb18030")
        await self.post(body({"heartbeat": {"serialno": PARKINGCAM}}))
        self.assertEqual(camera.charset, "gb18030")  # kept
        await self.post(body(parkingcam_plate(plateid=2)))
        self.assertEqual(camera.charset, "utf-8")
        (first, second) = self.recorder.records
        self.assertEqual(first.license, "粤FQK883")
        self.assertEqual(first.raw["entityName"], "东门停车场")
