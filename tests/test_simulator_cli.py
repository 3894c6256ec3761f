"""``anpr-camera-sim`` end to end against a loopback server."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor
from twisted.trial import unittest

from gateway.simulator.cli import parse_serial_input, run
from support.recording_server import ABORT, RecordingServer, echo_reply, plate_result

pytestmark = pytest.mark.e2e

reactor: Any = global_reactor


class CommandLineTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.server = RecordingServer(lambda request: echo_reply(request, info="ok"))
        self.url = self.server.listen(reactor)
        self.addCleanup(self.server.close)
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    async def test_plates_images_and_json_report(self) -> None:
        plate_file = self.directory / "plates.txt"
        plate_file.write_text("京A12345\n粤BD12345\n", encoding="utf-8")
        report_path = self.directory / "report.json"
        out = io.StringIO()
        status = await run(
            reactor,
            [
                "--server",
                self.url,
                "--cameras",
                "2",
                "--plates",
                "3",
                "--rate",
                "40",
                "--plate-file",
                str(plate_file),
                "--images",
                "full",
                "--image-bytes",
                "20000",
                "--detail",
                "brief",
                "--heartbeat",
                "off",
                "--first-plateid",
                "100",
                "--json-report",
                str(report_path),
            ],
            stdout=out,
        )
        self.assertEqual(status, 0)
        plates = self.server.of_kind("AlarmInfoPlate")
        self.assertEqual(len(plates), 6)
        for request in plates:
            result = plate_result(request)
            self.assertIn(result["license"], ("京A12345", "粤BD12345"))
            self.assertNotIn("imagePath", result)
            self.assertNotIn("timeStamp", result)
            image = base64.b64decode(result["imageFile"])
            self.assertEqual(len(image), 20000)
            self.assertEqual((image[:2], image[-2:]), (b"\xff\xd8", b"\xff\xd9"))
        self.assertEqual(sorted({plate_result(r)["plateid"] for r in plates}), [100, 101, 102])

        report = json.loads(report_path.read_text(encoding="utf-8"))
        self.assertEqual(len(report["cameras"]), 2)
        self.assertEqual(report["totals"]["pushes"]["plate"], 6)
        self.assertEqual(report["totals"]["relay_pulses"], 6)
        first = report["cameras"][0]
        self.assertEqual(first["relay_pulses"][0]["source"], "plate")
        self.assertTrue(first["drained"])
        log = out.getvalue()
        self.assertIn("push plate 京A12345", log)
        self.assertIn("relay ch0 pulse", log)
        self.assertIn("2 cameras: 6 requests, 6 replies, 0 failures", log)

    async def test_outstanding_offline_records_exit_non_zero(self) -> None:
        self.server.responder = lambda request: ABORT
        report_path = self.directory / "report.json"
        status = await run(
            reactor,
            [
                "--server",
                self.url,
                "--plates",
                "2",
                "--rate",
                "50",
                "--heartbeat",
                "off",
                "--offline-records",
                "--offline-retry",
                "0.05",
                "--drain-timeout",
                "0.2",
                "--quiet",
                "--json-report",
                str(report_path),
            ],
            stdout=io.StringIO(),
        )
        self.assertEqual(status, 1)
        camera = json.loads(report_path.read_text(encoding="utf-8"))["cameras"][0]
        self.assertEqual(camera["offline"]["pending"], 2)
        self.assertFalse(camera["drained"])
        self.assertIsNotNone(camera["failures"]["last"])

    async def test_bad_options(self) -> None:
        for argv in (
            ["--plates", "1"],
            ["--server", "ftp://x", "--plates", "1"],
            ["--server", self.url, "--resend", "5"],
            [
                "--server",
                self.url,
                "--alternate",
                self.url,
                "--alternate",
                self.url,
                "--alternate",
                self.url,
                "--alternate",
                self.url,
            ],
        ):
            status = await run(reactor, argv, stdout=io.StringIO())
            self.assertEqual(status, 2, argv)
        self.assertEqual(self.server.requests, [])


def test_serial_input_forms() -> None:
    assert parse_serial_input("hex:00 64 ff") == b"\x00\x64\xff"
    assert parse_serial_input("0x0064") == b"\x00\x64"
    assert parse_serial_input("欢迎") == "欢迎".encode()
