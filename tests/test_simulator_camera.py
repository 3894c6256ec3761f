"""The simulated camera against real loopback servers: delivery, offline records,
replies applied like a camera, both dialects, many cameras."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial import unittest

from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.config import CameraConfig, fleet_configs
from gateway.simulator.firmware import HeldPlate
from gateway.simulator.fleet import CameraFleet
from support.recording_server import (
    ABORT,
    RawRequest,
    RecordingServer,
    echo_reply,
    plate_result,
    wait_for,
)

pytestmark = pytest.mark.e2e

reactor: Any = global_reactor


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class CameraTestCase(unittest.TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.server = RecordingServer(echo_reply)
        self.url = self.server.listen(reactor)
        self.addCleanup(self.server.close)

    def camera(self, **settings: Any) -> SimulatedCamera:
        settings.setdefault("serialno", "d85b1269-8f942256")
        settings.setdefault("servers", (self.url,))
        camera = SimulatedCamera(reactor, CameraConfig(**settings))
        self.addCleanup(camera.stop)
        camera.start()
        return camera

    def plates(self, since: int = 0) -> list[RawRequest]:
        return [r for r in self.server.requests[since:] if r.kind == "AlarmInfoPlate"]


class DeliveryTests(CameraTestCase):
    async def test_push_resent_with_the_same_body_after_a_dropped_connection(self) -> None:
        def respond(request: RawRequest) -> Any:
            if request.kind == "AlarmInfoPlate" and len(self.plates()) == 1:
                return ABORT
            return echo_reply(request, info="ok")

        self.server.responder = respond
        camera = self.camera(plates=1, resend=2)
        await wait_for(reactor, lambda: camera.drained)
        first, second = self.plates()
        self.assertEqual(first.body, second.body)
        self.assertNotEqual(first.connection, second.connection)
        self.assertEqual(camera.failures["plate"], 1)
        self.assertEqual(camera.pushes["plate_resend"], 1)
        self.assertEqual([(p.channel, p.source) for p in camera.relay_pulses], [(0, "plate")])

    async def test_resends_stop_at_the_configured_count(self) -> None:
        self.server.responder = lambda request: ABORT
        camera = self.camera(plates=1, resend=3)
        await wait_for(reactor, lambda: camera.drained)
        self.assertEqual(len(self.plates()), 4)
        self.assertEqual(len({request.body for request in self.plates()}), 1)
        self.assertEqual(camera.offline_pending, 0)  # offline records are off
        self.assertFalse(camera.online)

    async def test_any_complete_response_is_delivery(self) -> None:
        self.server.responder = lambda request: b"<html>500 Internal Server Error</html>"
        camera = self.camera(plates=2, rate=50, resend=4)
        await wait_for(reactor, lambda: camera.drained)
        self.assertEqual(len(self.plates()), 2)
        self.assertEqual(camera.unreadable_replies, 2)
        self.assertEqual(camera.relay_pulses, [])

    async def test_unreadable_replies_open_nothing(self) -> None:
        bodies = [
            b'"ok"',
            b'[{"Response_AlarmInfoPlate": {"info": "ok"}}]',
            b'{"Response_AlarmInfoPlate": {"info": "ok"}}{"Response_AlarmInfoPlate": {"info": "ok"}}',
            b'{"Response_AlarmInfoPlate": {"info": "OK", "manualTigger": "ok"}}',
        ]
        self.server.responder = lambda request: bodies[len(self.plates()) - 1]
        camera = self.camera(plates=4, rate=50)
        await wait_for(reactor, lambda: camera.drained)
        self.assertEqual(camera.relay_pulses, [])
        self.assertEqual(camera.unreadable_replies, 3)
        self.assertEqual(camera.manual_triggers, 0)
        self.assertEqual(camera.plateid_echo_missing, 1)

    async def test_duplicate_reads_get_new_plateids_and_other_triggers(self) -> None:
        camera = self.camera(plates=3, rate=50, duplicate_rate=1.0)
        await wait_for(reactor, lambda: camera.drained)
        results = [plate_result(request) for request in self.plates()]
        self.assertEqual([r["plateid"] for r in results], [1, 2, 3, 4, 5, 6])
        for first, again in zip(results[::2], results[1::2], strict=True):
            self.assertEqual(first["license"], again["license"])
            self.assertNotEqual(first["triggerType"], again["triggerType"])

    async def test_main_and_alternate_all_at_once(self) -> None:
        alternate = RecordingServer(echo_reply)
        alternate_url = alternate.listen(reactor)
        self.addCleanup(alternate.close)
        camera = self.camera(plates=1, servers=(self.url, alternate_url))
        await wait_for(reactor, lambda: camera.drained)
        self.assertEqual(len(self.plates()), 1)
        self.assertEqual(len(alternate.of_kind("AlarmInfoPlate")), 1)
        self.assertEqual(self.plates()[0].body, alternate.requests[0].body)

    async def test_main_priority_uses_alternates_only_while_main_fails(self) -> None:
        alternate = RecordingServer(echo_reply)
        alternate_url = alternate.listen(reactor)
        self.addCleanup(alternate.close)
        camera = self.camera(servers=(self.url, alternate_url), main_priority=True)
        camera.read_plate("京A11111")
        await wait_for(reactor, lambda: len(self.plates()) == 1 and camera.drained)
        self.assertEqual(alternate.requests, [])
        self.server.responder = lambda request: ABORT
        camera.read_plate("京A22222")
        await wait_for(reactor, lambda: len(alternate.requests) == 1 and camera.drained)
        self.assertEqual(plate_result(alternate.requests[0])["license"], "京A22222")


class OfflineRecordTests(CameraTestCase):
    async def test_offline_upload_one_by_one_and_interrupted_by_a_live_result(self) -> None:
        state = {"up": False, "hold": True}
        held: list[Deferred[Any]] = []

        def respond(request: RawRequest) -> Any:
            if not state["up"]:
                return ABORT
            if plate_result(request).get("isoffline") == 1 and state["hold"]:
                state["hold"] = False
                held.append(Deferred())
                return held[-1]
            return echo_reply(request)

        self.server.responder = respond
        camera = self.camera(offline_records=True, offline_retry=0.05)
        for plate in ("京A00001", "京A00002", "京A00003"):
            camera.read_plate(plate)
        await wait_for(reactor, lambda: camera.offline_pending == 3)
        since = len(self.server.requests)
        state["up"] = True
        await wait_for(reactor, lambda: len(held) == 1)
        camera.read_plate("京A99999")
        await wait_for(reactor, lambda: camera.drained)

        seen = [
            (plate_result(r)["plateid"], plate_result(r)["isoffline"]) for r in self.plates(since)
        ]
        # Record 1 was interrupted by the live plate 4 and sent again: the server sees it twice.
        self.assertEqual(seen, [(1, 1), (4, 0), (1, 1), (2, 1), (3, 1)])
        self.assertEqual(camera.offline_interrupted, 1)
        self.assertEqual(camera.offline_delivered, 3)
        self.assertEqual(camera.offline_pending, 0)
        licenses = [plate_result(r)["license"] for r in self.plates(since)]
        self.assertEqual(licenses, ["京A00001", "京A99999", "京A00001", "京A00002", "京A00003"])

    async def test_upload_waits_for_continue_push_offline(self) -> None:
        state = {"up": False, "confirm": False}

        def respond(request: RawRequest) -> Any:
            if not state["up"]:
                return ABORT
            result = plate_result(request)
            if result.get("isoffline") == 1 and not state["confirm"]:
                return {"Response_AlarmInfoPlate": {"plateid": result["plateid"]}}
            return echo_reply(request)

        self.server.responder = respond
        camera = self.camera(offline_records=True, offline_retry=0.05)
        camera.read_plate("京A00001")
        camera.read_plate("京A00002")
        await wait_for(reactor, lambda: camera.offline_pending == 2)
        since = len(self.server.requests)
        state["up"] = True
        await wait_for(reactor, lambda: camera.report()["offline"]["paused"])
        self.assertEqual(camera.offline_pending, 2)
        state["confirm"] = True
        camera.read_plate("京A00003")  # a delivered live result restarts the upload
        await wait_for(reactor, lambda: camera.drained)
        seen = [
            (plate_result(r)["plateid"], plate_result(r)["isoffline"]) for r in self.plates(since)
        ]
        self.assertEqual(seen, [(1, 1), (3, 0), (1, 1), (2, 1)])

    async def test_continue_zero_pauses_after_the_confirmed_record(self) -> None:
        state = {"up": False}

        def respond(request: RawRequest) -> Any:
            if not state["up"]:
                return ABORT
            result = plate_result(request)
            if result.get("isoffline") == 1:
                cpo = {"plateid": result["plateid"], "continue": 0}
                return {
                    "Response_AlarmInfoPlate": {
                        "plateid": result["plateid"],
                        "ContinuePushOffline": cpo,
                    }
                }
            return echo_reply(request)

        self.server.responder = respond
        camera = self.camera(offline_records=True, offline_retry=0.05)
        camera.read_plate("京A00001")
        camera.read_plate("京A00002")
        await wait_for(reactor, lambda: camera.offline_pending == 2)
        state["up"] = True
        await wait_for(
            reactor, lambda: camera.offline_pending == 1 and camera.report()["offline"]["paused"]
        )
        self.assertEqual(camera.offline_delivered, 1)


class LocalWhitelistTests(CameraTestCase):
    async def test_camera_opens_from_its_own_whitelist_while_unreachable(self) -> None:
        rows = [
            {"plate": "京A00001", "enable": 1, "need_alarm": 0},
            {"plate": "京A00002", "enable": 1, "need_alarm": 1},
            {"plate": "京A00003", "enable": 0, "need_alarm": 0},
            {
                "plate": "京A00004",
                "enable": 1,
                "need_alarm": 0,
                "overdue_time": "2001-01-01 00:00:00",
            },
            {
                "plate": "京A00005",
                "enable": 1,
                "need_alarm": 0,
                "enable_time": "2001-01-01 00:00:00",
            },
            {"plate": "京A00006", "enable": 1, "need_alarm": 0},
        ]
        state = {"up": True}

        def respond(request: RawRequest) -> Any:
            if not state["up"]:
                return ABORT
            return echo_reply(
                request, white_list_operate={"operate_type": 0, "white_list_data": rows}
            )

        self.server.responder = respond
        camera = self.camera()
        camera.read_plate("京A77777")
        await wait_for(reactor, lambda: len(camera.whitelist) == 5)
        self.assertEqual(camera.whitelist_ignored_rows, 1)
        self.assertNotIn("京A00006", camera.whitelist)  # the 6th row of one reply is ignored

        state["up"] = False
        for number in range(1, 8):
            camera.read_plate(f"京A0000{number}")
        await wait_for(reactor, lambda: camera.drained)
        self.assertEqual(
            [(pulse.source, pulse.plate) for pulse in camera.relay_pulses],
            [("local", "京A00001"), ("local", "京A00005")],
        )
        self.assertEqual(camera.local_opens, 2)

    async def test_no_local_opening_while_the_server_answers(self) -> None:
        camera = self.camera(whitelist=(HeldPlate("京A00001"),))
        camera.read_plate("京A00001")
        await wait_for(reactor, lambda: camera.drained and len(self.plates()) == 1)
        self.assertEqual(camera.relay_pulses, [])


class ReplyEffectTests(CameraTestCase):
    async def test_comet_replies_are_applied(self) -> None:
        polls: list[RawRequest] = []

        def respond(request: RawRequest) -> Any:
            if request.kind == "registration":
                polls.append(request)
                if len(polls) == 1:
                    reply = {
                        "info": "ok",
                        "channelNum": 1,
                        "TriggerImage": {"snapImageAbsolutelyUrl": self.url + "/snap"},
                        "manualTrigger": "ok",
                        "playserver_json_request": {
                            "type": "ps_voice_play",
                            "voice": b64("一路顺风".encode()),
                            "voice_volume": 50,
                            "voice_male": 1,
                        },
                        "ivs_ioctrl": {"io": 2, "value": 1, "delay": 0},
                        "serialData": [
                            {"serialChannel": 1, "data": b64(b"\x00\x64"), "dataLen": 2}
                        ],
                    }
                else:
                    reply = {"info": "no"}
                # A long poll: held a moment, then answered.
                return deferLater(reactor, 0.05, lambda: {"Response_AlarmInfoPlate": reply})
            if request.kind == "TriggerImage":
                return {}
            return echo_reply(request)

        self.server.responder = respond
        camera = self.camera(heartbeat="comet", image_bytes=3000)
        await wait_for(
            reactor,
            lambda: len(polls) >= 3
            and bool(self.server.of_kind("TriggerImage"))
            and bool(self.plates()),
        )
        await camera.stop()

        (snapshot,) = self.server.of_kind("TriggerImage")
        self.assertEqual(snapshot.path, "/snap")
        image = base64.b64decode(snapshot.json()["TriggerImage"]["imageFile"])
        self.assertEqual(image[:2], b"\xff\xd8")
        self.assertEqual(image[-2:], b"\xff\xd9")
        self.assertEqual(len(image), 3000)
        self.assertEqual(snapshot.json()["TriggerImage"]["imageFileLen"], 3000)
        self.assertEqual(snapshot.json()["ipaddr"], camera.config.ipaddr)

        (plate,) = self.plates()
        self.assertEqual(plate_result(plate)["triggerType"], 4)
        self.assertEqual([(p.channel, p.source) for p in camera.relay_pulses], [(1, "comet")])
        self.assertEqual([voice.text for voice in camera.voices], ["一路顺风"])
        self.assertEqual(camera.io_outputs[2], 1)
        self.assertEqual(bytes(camera.serial_written[1]), b"\x00\x64")
        self.assertEqual(camera.manual_triggers, 1)

    async def test_snapshot_to_a_relative_url_on_the_given_port(self) -> None:
        images = RecordingServer(lambda request: {})
        images_url = images.listen(reactor)
        self.addCleanup(images.close)
        port = int(images_url.rsplit(":", 1)[1])
        self.server.responder = lambda request: echo_reply(
            request,
            TriggerImage={"port": port, "snapImageRelativeUrl": "/devicemanagement/php/snap.php"},
        )
        camera = self.camera(plates=1)
        await wait_for(reactor, lambda: camera.drained)
        (upload,) = images.requests
        self.assertEqual(upload.path, "/devicemanagement/php/snap.php")
        self.assertEqual(upload.header("Content-Type"), "application/Json")
        self.assertEqual(set(upload.json()), {"TriggerImage", "ipaddr"})
        self.assertEqual(self.server.of_kind("TriggerImage"), [])

    async def test_common_heartbeat_reply_is_not_read(self) -> None:
        self.server.responder = lambda request: {
            "Response_AlarmInfoPlate": {"info": "ok", "manualTrigger": "ok"}
        }
        camera = self.camera(heartbeat="common", heartbeat_interval=0.02)
        await wait_for(reactor, lambda: len(self.server.of_kind("registration")) >= 3)
        self.assertEqual(camera.relay_pulses, [])
        self.assertEqual(camera.manual_triggers, 0)

    async def test_serial_and_io_pushes(self) -> None:
        def respond(request: RawRequest) -> Any:
            if request.kind == "SerialData":
                item = {"serialChannel": 0, "data": b64(b"\x00\x64\xff\xff\x30"), "dataLen": 5}
                return {"Response_SerialData": {"info": "ok", "serialData": [item]}}
            return {"ok": 1}

        self.server.responder = respond
        camera = self.camera(
            io_events=2, serial_in=(b"\x01\x02\x00\x03",), serial_in_channel=1, rate=50
        )
        await wait_for(reactor, lambda: camera.drained)
        (serial,) = self.server.of_kind("SerialData")
        data = serial.json()["SerialData"]
        self.assertEqual(
            (base64.b64decode(data["data"]), data["dataLen"], data["serialChannel"]),
            (b"\x01\x02", 4, 1),
        )
        self.assertEqual(bytes(camera.serial_written[0]), b"\x00\x64\xff\xff\x30")
        ios = [
            request.json()["AlarmGioIn"]["result"]["TriggerResult"]
            for request in self.server.of_kind("AlarmGioIn")
        ]
        self.assertEqual(ios, [{"source": 0, "value": 1}, {"source": 0, "value": 0}])


class ParkingCamTests(CameraTestCase):
    def camera(self, **settings: Any) -> SimulatedCamera:
        settings.setdefault("serialno", "QFX2182310150262")
        return super().camera(dialect="parkingcam", **settings)

    async def test_plate_resent_until_retransfer_stop(self) -> None:
        def respond(request: RawRequest) -> Any:
            if len(self.plates()) < 3:
                return {"Response_AlarmInfoPlate": {"info": "no"}}
            return {"Response_AlarmInfoPlate": {"info": "no", "content": "retransfer_stop"}}

        self.server.responder = respond
        camera = self.camera(plates=1, timeout=0.05)
        await wait_for(reactor, lambda: camera.drained)
        sent = self.plates()
        self.assertEqual(len(sent), 3)
        self.assertEqual(len({request.body for request in sent}), 1)
        self.assertNotIn("plateid", plate_result(sent[0]))
        self.assertEqual(camera.retransfer_stopped, 1)
        self.assertEqual((camera.pushes["plate"], camera.pushes["plate_retransfer"]), (1, 2))

    async def test_info_ok_also_stops_retransfer(self) -> None:
        self.server.responder = lambda request: {"Response_AlarmInfoPlate": {"info": "ok"}}
        camera = self.camera(plates=1, timeout=0.05)
        await wait_for(reactor, lambda: camera.drained)
        self.assertEqual(len(self.plates()), 1)
        self.assertEqual(len(camera.relay_pulses), 1)

    async def test_queue_holds_ten_plates(self) -> None:
        self.server.responder = lambda request: ABORT
        camera = self.camera(plates=12, rate=200, timeout=5.0)
        await wait_for(reactor, lambda: camera.pushes["plate"] == 12)
        self.assertEqual(camera.retransfer_dropped, 2)
        self.assertEqual(camera.report()["retransfer"]["pending"], 10)

    async def test_heartbeat_and_whitelist_commands(self) -> None:
        beats: list[RawRequest] = []

        def respond(request: RawRequest) -> Any:
            if request.kind == "heartbeat":
                beats.append(request)
                if len(beats) == 1:
                    rows = [
                        {
                            "carnum": "京A12345",
                            "startime": "20200101000000",
                            "endtime": "20991231235959",
                        },
                        {"carnum": "京B54321", "startime": "", "endtime": ""},
                    ]
                    return {"addWhiteList": {"add_data": rows}}
                if len(beats) == 2:
                    item = {"serialChannel": 0, "data": b64(b"1123456789"), "dataLen": 10}
                    return {
                        "Response_Heartbeat": {"info": "ok", "shutoff": "ok", "serialData": [item]}
                    }
                return {"Response_Heartbeat": {"info": "no"}}
            if request.kind == "Response_AddWhiteList":
                # The next step of a sync rides in the reply to the confirmation.
                return {"deleteWhiteList": {"del_data": [{"carnum": "京B54321"}]}}
            return {"Response_Heartbeat": {"info": "no"}}

        self.server.responder = respond
        camera = self.camera(heartbeat="common", heartbeat_interval=0.02)
        await wait_for(
            reactor,
            lambda: len(beats) >= 3 and bool(self.server.of_kind("Response_DeleteWhiteList")),
        )
        await camera.stop()
        (added,) = self.server.of_kind("Response_AddWhiteList")
        self.assertEqual(
            added.json(),
            {"Response_AddWhiteList": {"reponse": "ok", "serialno": "QFX2182310150262"}},
        )
        self.assertEqual(added.path, camera.config.heartbeat_path)
        self.assertEqual(list(camera.whitelist), ["京A12345"])
        self.assertEqual([(p.channel, p.source) for p in camera.relay_pulses], [(0, "heartbeat")])
        self.assertEqual(len(camera.barrier_closes), 1)
        self.assertEqual(bytes(camera.serial_written[0]), b"1123456789")
        first = beats[0].json()["heartbeat"]
        self.assertEqual((first["countid"], first["serialno"]), (1, "QFX2182310150262"))
        self.assertEqual(set(first["timeStamp"]["Timeval"]), {"sec", "usec"})
        self.assertEqual(beats[1].json()["heartbeat"]["countid"], 2)


class FleetTests(unittest.TestCase):
    timeout = 20

    async def test_many_cameras_in_one_process(self) -> None:
        server = RecordingServer(lambda request: echo_reply(request, info="ok"))
        url = server.listen(reactor)
        self.addCleanup(server.close)
        template = CameraConfig(serialno="-", servers=(url,), plates=3, rate=40, heartbeat="common")
        fleet = CameraFleet(reactor, fleet_configs(6, template, bind_base=None))
        self.addCleanup(fleet.stop)
        drained = await fleet.run(drain_timeout=10)
        self.assertTrue(drained)
        plates = [r for r in server.requests if r.kind == "AlarmInfoPlate"]
        self.assertEqual(len(plates), 18)
        by_camera: dict[str, list[int]] = {}
        for request in plates:
            serialno = request.json()["AlarmInfoPlate"]["serialno"]
            by_camera.setdefault(serialno, []).append(plate_result(request)["plateid"])
        self.assertEqual(len(by_camera), 6)
        self.assertTrue(all(ids == [1, 2, 3] for ids in by_camera.values()))
        ipaddrs = {request.json()["AlarmInfoPlate"]["ipaddr"] for request in plates}
        self.assertEqual(len(ipaddrs), 6)
        report = fleet.report()
        self.assertEqual(report["totals"]["relay_pulses"], 18)
        self.assertEqual(report["totals"]["pushes"]["plate"], 18)
        for camera in report["cameras"]:
            self.assertEqual(camera["latency_ms"]["count"], camera["replies"]["total"])
            self.assertIsNotNone(camera["latency_ms"]["p99"])
