"""Lane displays: messages per decision, overrides, idle restore, clocks, both ways to a board.

Frames for a display reached through its camera go through the real camera registry,
wired the way the service tree wires it (``queue_camera_serial`` below), and come out of
real camera replies; frames through a gateway port go to a pty read by the test.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.camera.commands import SendSerial
from gateway.camera.registry import CameraRegistry
from gateway.display.lanes import (
    CLOCK_FRAME_TTL_SECONDS,
    Delivery,
    DisplayOverride,
    LaneDisplays,
    NoDisplay,
    Withdraw,
)
from gateway.display.settings import DisplaySettings, LaneDisplay
from gateway.display.templates import (
    MessageTemplate,
    default_messages,
    message_key,
    render,
    render_voice,
    template_fields,
)
from gateway.policy import decision as reasons
from gateway.policy.decision import Decision
from gateway.protocol.board import (
    GREEN,
    RED,
    YELLOW,
    BoardCommand,
    Line,
    SetClock,
    ShowLines,
    Speak,
    decode_frame,
    split_frames,
)
from gateway.protocol.capabilities import ReplyKind
from gateway.protocol.replies import PlateReply
from gateway.serial.ports import SerialPorts, SerialPortSettings
from support.serial import PortTestCase, assert_valid_frames, until

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2024-05-06 08:00:30 in Shanghai (a Monday).
START = datetime(2024, 5, 6, 8, 0, 30, tzinfo=SHANGHAI).timestamp()
ENTRY_CAMERA = "d85b1269-8f942256"
EXIT_CAMERA = "QFX2182310150262"

WELCOME = Decision(open=True, reason=reasons.WHITELIST, plate="京A12345")


def queue_camera_serial(registry: CameraRegistry) -> Any:
    """The wiring of the service tree: display frames for a camera become SendSerial
    commands in its queue, withdrawable until delivered."""

    def queue(camera: str, channel: int, data: bytes, expires_at: float) -> Withdraw:
        command = SendSerial(channel=channel, data=data, expires_at=expires_at)
        queued_on = registry.queue(camera, command)

        def withdraw() -> None:
            if command in queued_on.commands:
                queued_on.commands.remove(command)

        return withdraw

    return queue


def decoded(frames: Iterable[bytes]) -> list[BoardCommand]:
    return [decode_frame(frame).command for frame in frames]


def texts(command: BoardCommand) -> list[str]:
    assert isinstance(command, ShowLines)
    return [line.text for line in command.lines]


class CameraLaneTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.registry = CameraRegistry(self.clock, comet_hold=20.0)
        self.displays = self.build()

    def build(self, **settings: Any) -> LaneDisplays:
        return LaneDisplays(
            clock=self.clock,
            tz=SHANGHAI,
            lanes=[
                LaneDisplay("Entry", ENTRY_CAMERA, "in", DisplaySettings(**settings)),
                LaneDisplay("Exit", EXIT_CAMERA, "out", DisplaySettings(camera_channel=1)),
            ],
            queue_camera_serial=queue_camera_serial(self.registry),
        )

    def reply_frames(
        self, camera: str, serial: list[tuple[int, bytes]] | None = None
    ) -> list[tuple[int, bytes]]:
        """What the camera gets in a plate reply: our frames first, then its queue."""
        reply = PlateReply(plateid=1, retransfer_stop=True)
        reply.serial.extend(serial or [])
        cam = self.registry.get(camera)
        if cam is not None:
            self.registry.fill_reply(cam, reply, ReplyKind.PLATE)
        items = reply.to_dict()["Response_AlarmInfoPlate"].get("serialData", [])
        out = []
        for item in items:
            data = base64.b64decode(item["data"])
            assert len(data) == item["dataLen"]
            out.append((item["serialChannel"], data))
        for _, data in out:
            assert_frames_valid(data)
        return out

    def queued_frames(self, camera: str) -> list[bytes]:
        """The display frames waiting in the camera's queue (SendSerial commands)."""
        cam = self.registry.get(camera)
        if cam is None:
            return []
        return [command.data for command in cam.commands if isinstance(command, SendSerial)]

    def forget_queue(self, camera: str) -> None:
        cam = self.registry.get(camera)
        assert cam is not None
        cam.commands.clear()

    # -- decisions ------------------------------------------------------------

    def test_open_goes_into_the_plate_reply_in_one_packet(self) -> None:
        output = self.displays.frames_for_decision("Entry", WELCOME, "京A12345")
        self.assertEqual(output.delivery, Delivery.REPLY)
        self.assertEqual(len(output.frames), 1)
        items = self.reply_frames(ENTRY_CAMERA, output.camera_serial)
        self.assertEqual([channel for channel, _ in items], [0])
        (command,) = decoded(data for _, data in items)
        assert isinstance(command, ShowLines)
        self.assertEqual(texts(command), ["京A12345", "欢迎光临", "", ""])
        self.assertEqual(command.voice, "京A12345，欢迎光临")
        self.assertEqual({line.colour for line in command.lines}, {GREEN})
        self.assertEqual([line.line for line in command.lines], [0, 1, 2, 3])
        self.assertFalse(command.save)
        self.assertEqual(output.lines, ("京A12345", "欢迎光临"))

    def test_exit_lane_wishes_a_good_journey_on_its_channel(self) -> None:
        output = self.displays.frames_for_decision("exit", WELCOME, "京A12345")
        self.assertEqual(output.camera_serial[0][0], 1)
        (command,) = decoded(output.frames)
        self.assertEqual(texts(command)[:2], ["京A12345", "一路顺风"])

    def test_refusals_say_why(self) -> None:
        expected = {
            reasons.UNKNOWN: "未授权车辆",
            reasons.BLACKLIST: "黑名单车辆",
            reasons.EXPIRED: "月卡已过期",
            reasons.NOT_YET_VALID: "月卡未生效",
            reasons.WRONG_LANE: "请走其他车道",
            "cloud_says_no": "禁止通行",
        }
        for reason, text in expected.items():
            output = self.displays.frames_for_decision(
                "Entry", Decision(open=False, reason=reason, plate="粤B88888"), "粤B88888"
            )
            (command,) = decoded(output.frames)
            assert isinstance(command, ShowLines)
            self.assertEqual(texts(command)[:2], ["粤B88888", text], reason)
            self.assertEqual(command.voice, text)
            self.assertEqual(command.lines[0].colour, RED)

    def test_no_plate_asks_to_wait(self) -> None:
        output = self.displays.frames_for_decision(
            "Entry", Decision(open=False, reason=reasons.NO_PLATE), ""
        )
        (command,) = decoded(output.frames)
        assert isinstance(command, ShowLines)
        self.assertEqual(texts(command)[:2], ["请稍候", "未识别车牌"])
        self.assertEqual(command.lines[0].colour, YELLOW)

    def test_offline_records_and_repeats_show_nothing_even_with_overrides(self) -> None:
        override = DisplayOverride(lines=("云端",), voice="云端")
        for reason in (reasons.OFFLINE_RECORD, reasons.DUPLICATE):
            output = self.displays.frames_for_decision(
                "Entry", Decision(open=False, reason=reason), "京A12345", override
            )
            self.assertEqual((output.delivery, output.frames), (Delivery.NONE, ()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lane_without_display_gets_nothing(self) -> None:
        output = self.displays.frames_for_decision("Lane 9", WELCOME, "京A12345")
        self.assertEqual((output.delivery, output.camera_serial), (Delivery.NONE, []))

    def test_cloud_overrides_replace_the_templates(self) -> None:
        override = DisplayOverride(lines=("京A12345", "月租剩余3天"), voice="月租剩余3天")
        (command,) = decoded(
            self.displays.frames_for_decision("Entry", WELCOME, "京A12345", override).frames
        )
        assert isinstance(command, ShowLines)
        self.assertEqual(texts(command)[:2], ["京A12345", "月租剩余3天"])
        self.assertEqual(command.voice, "月租剩余3天")
        # an empty voice is silence; literal braces are not fields
        silent = DisplayOverride(lines=("{plate}",), voice="")
        (command,) = decoded(
            self.displays.frames_for_decision("Entry", WELCOME, "京A12345", silent).frames
        )
        assert isinstance(command, ShowLines)
        self.assertEqual((texts(command)[0], command.voice), ("{plate}", None))
        # voice only
        voice_only = DisplayOverride(lines=(), voice="请缴费")
        output = self.displays.frames_for_decision("Entry", WELCOME, "京A12345", voice_only)
        self.assertEqual(decoded(output.frames), [Speak("请缴费")])

    def test_lines_naming_a_missing_field_are_left_out(self) -> None:
        displays = self.build(
            messages={"open": MessageTemplate(("{plate}", "有效期至{valid_until}", "{lane}"))}
        )
        until = datetime(2024, 6, 30, 20, 0, tzinfo=timezone.utc)  # July 1st in Shanghai
        with_end = Decision(open=True, reason=reasons.WHITELIST, valid_until=until)
        (command,) = decoded(displays.frames_for_decision("Entry", with_end, "京A12345").frames)
        self.assertEqual(texts(command), ["京A12345", "有效期至2024-07-01", "Entry", ""])
        (command,) = decoded(displays.frames_for_decision("Entry", WELCOME, "京A12345").frames)
        self.assertEqual(texts(command), ["京A12345", "Entry", "", ""])

    def test_voice_too_long_for_the_packet_gets_a_speak_frame(self) -> None:
        long_voice = "欢迎光临" * 10  # 80 GBK bytes > 64
        displays = self.build(messages={"open": MessageTemplate(("{plate}",), voice=long_voice)})
        output = displays.frames_for_decision("Entry", WELCOME, "京A12345")
        show, speak = decoded(output.frames)
        assert isinstance(show, ShowLines)
        self.assertIsNone(show.voice)
        self.assertEqual(speak, Speak(long_voice))

    def test_board_address_is_used(self) -> None:
        displays = self.build(address=7)
        output = displays.frames_for_decision("Entry", WELCOME, "京A12345")
        self.assertEqual(decode_frame(output.frames[0]).address, 7)

    def test_display_lines_bounds_the_message(self) -> None:
        displays = self.build(display_lines=2, messages={"open": MessageTemplate(("a", "b", "c"))})
        (command,) = decoded(displays.frames_for_decision("Entry", WELCOME, "x").frames)
        self.assertEqual(texts(command), ["a", "b"])

    # -- idle -----------------------------------------------------------------

    def test_idle_comes_back_after_the_dwell_through_the_camera_queue(self) -> None:
        displays = self.build(dwell_seconds=8, free_spaces=15)
        output = displays.frames_for_decision("Entry", WELCOME, "京A12345")
        self.reply_frames(ENTRY_CAMERA, output.camera_serial)
        self.clock.advance(7.9)
        self.assertEqual(self.queued_frames(ENTRY_CAMERA), [])
        self.clock.advance(0.1)
        (frame,) = self.queued_frames(ENTRY_CAMERA)
        command = decode_frame(frame).command
        self.assertEqual(texts(command)[:3], ["欢迎光临", "08:00", "剩余车位 15"])
        # delivered in the camera's next reply of any kind
        items = self.reply_frames(ENTRY_CAMERA)
        self.assertEqual(items, [(0, frame)])

    def test_a_new_message_withdraws_an_undelivered_idle_text(self) -> None:
        self.displays.restore_idle("Entry")
        self.assertEqual(len(self.queued_frames(ENTRY_CAMERA)), 1)
        output = self.displays.frames_for_decision("Entry", WELCOME, "京A12345")
        self.assertEqual(self.queued_frames(ENTRY_CAMERA), [])
        items = self.reply_frames(ENTRY_CAMERA, output.camera_serial)
        self.assertEqual(items, output.camera_serial)

    def test_a_newer_idle_replaces_the_undelivered_one(self) -> None:
        displays = self.build(free_spaces=3)
        displays.restore_idle("Entry")
        displays.set_free_spaces("Entry", 2)
        (frame,) = self.queued_frames(ENTRY_CAMERA)
        self.assertIn("剩余车位 2", texts(decode_frame(frame).command))

    def test_idle_with_the_time_is_refreshed_each_minute_only_while_idle(self) -> None:
        self.displays.startService()
        self.addCleanup(self.displays.stopService)
        self.forget_queue(ENTRY_CAMERA)
        self.clock.advance(30.05)  # 08:01:00.05
        (frame,) = self.queued_frames(ENTRY_CAMERA)
        self.assertEqual(texts(decode_frame(frame).command)[1], "08:01")
        # a message is showing: the minute passes without touching it
        self.displays.frames_for_decision("Entry", WELCOME, "京A12345")
        self.clock.advance(9.0)
        self.assertEqual(self.queued_frames(ENTRY_CAMERA), [])
        self.clock.advance(1.0)  # dwell over: idle back with the current time
        (frame,) = self.queued_frames(ENTRY_CAMERA)
        self.assertEqual(texts(decode_frame(frame).command)[1], "08:01")

    def test_idle_without_the_time_is_not_resent(self) -> None:
        displays = self.build(idle=MessageTemplate(("停车场",)))
        displays.startService()
        self.addCleanup(displays.stopService)
        self.forget_queue(ENTRY_CAMERA)
        self.clock.advance(300)
        self.assertEqual(self.queued_frames(ENTRY_CAMERA), [])

    def test_cancel_idle_keeps_the_message(self) -> None:
        self.displays.frames_for_decision("Entry", WELCOME, "京A12345")
        self.displays.cancel_idle("Entry")
        self.clock.advance(3600)
        self.assertEqual(self.queued_frames(ENTRY_CAMERA), [])

    # -- clocks, events, raw --------------------------------------------------

    def test_clocks_are_set_at_start_and_hourly_once_per_board(self) -> None:
        registry = self.registry
        displays = LaneDisplays(
            clock=self.clock,
            tz=SHANGHAI,
            lanes=[
                LaneDisplay("A", ENTRY_CAMERA, "in"),
                LaneDisplay("B", ENTRY_CAMERA, "out"),  # same camera, channel, address
            ],
            queue_camera_serial=queue_camera_serial(registry),
        )
        displays.startService()
        self.addCleanup(displays.stopService)
        queued = [decode_frame(frame).command for frame in self.queued_frames(ENTRY_CAMERA)]
        clocks = [command for command in queued if isinstance(command, SetClock)]
        self.assertEqual(clocks, [SetClock(datetime(2024, 5, 6, 8, 0, 30))])
        camera = registry.get(ENTRY_CAMERA)
        assert camera is not None
        (clock_command,) = [
            c for c in camera.commands
            if isinstance(c, SendSerial) and isinstance(decode_frame(c.data).command, SetClock)
        ]
        self.assertEqual(clock_command.expires_at, START + CLOCK_FRAME_TTL_SECONDS)
        # The camera stays away for an hour: its queue holds the newest clock frame and the
        # newest idle text, not one of each per hour and per minute.
        self.clock.advance(3600)
        queued = [decode_frame(frame).command for frame in self.queued_frames(ENTRY_CAMERA)]
        self.assertEqual(
            [c for c in queued if isinstance(c, SetClock)],
            [SetClock(datetime(2024, 5, 6, 9, 0, 30))],
        )
        idle = [texts(c)[:2] for c in queued if isinstance(c, ShowLines)]
        self.assertEqual(idle, [["欢迎光临", "09:00"], ["一路顺风", "09:00"]])

    def test_camera_back_online_gets_clock_and_idle(self) -> None:
        self.displays.camera_online(EXIT_CAMERA.lower())
        kinds = [type(decode_frame(f).command) for f in self.queued_frames(EXIT_CAMERA)]
        self.assertEqual(kinds, [SetClock, ShowLines])
        self.assertEqual(self.queued_frames(ENTRY_CAMERA), [])

    def test_event_message_is_queued_for_the_next_reply(self) -> None:
        output = self.displays.frames_for_event(
            "Entry", MessageTemplate(("{plate}", "手动开闸"), voice="手动开闸"), plate="京A12345"
        )
        self.assertEqual(output.delivery, Delivery.QUEUED)
        (frame,) = self.queued_frames(ENTRY_CAMERA)
        self.assertEqual(texts(decode_frame(frame).command)[:2], ["京A12345", "手动开闸"])
        self.clock.advance(31)
        # Undelivered when its dwell ended: the idle text took its place in the queue, so
        # the camera never shows the stale event after the fact.
        (item,) = self.reply_frames(ENTRY_CAMERA)
        self.assertEqual(texts(decode_frame(item[1]).command)[:2], ["欢迎光临", "08:01"])

    def test_raw_bytes_pass_through_unchanged(self) -> None:
        raw = b"\xaa\x55\x01\x00\xaf"  # another board family's framing
        output = self.displays.send_raw("Entry", raw)
        self.assertEqual(output.frames, (raw,))
        self.assertEqual(self.queued_frames(ENTRY_CAMERA), [raw])

    def test_test_message_needs_a_display(self) -> None:
        with self.assertRaises(NoDisplay):
            self.displays.test_message("Lane 9", "测试")
        output = self.displays.test_message("entry", "测试一\n测试二")
        (command,) = decoded(self.queued_frames(ENTRY_CAMERA))
        self.assertEqual(texts(command)[:2], ["测试一", "测试二"])
        self.assertEqual(command.voice, "测试一，测试二")  # type: ignore[union-attr]
        self.assertEqual(output.delivery, Delivery.QUEUED)


def assert_frames_valid(data: bytes) -> None:
    split = split_frames(data)
    assert (split.skipped, split.rest) == (0, b""), data
    for frame in split.frames:
        decode_frame(frame)


class SerialLaneTests(PortTestCase):
    """A lane whose board hangs on a serial port of the gateway."""

    def setUp(self) -> None:
        super().setUp()
        self.clock.advance(START)
        self.led = self.board("led1")
        self.serial_ports = self.ports(
            SerialPortSettings("led1", self.led.path, baudrate=115200, gap_ms=5)
        )
        self.displays = LaneDisplays(
            clock=self.clock,
            tz=SHANGHAI,
            lanes=[
                LaneDisplay(
                    "Entry",
                    ENTRY_CAMERA,
                    "in",
                    DisplaySettings(via="serial", port="led1", address=1, dwell_seconds=5,
                                    free_spaces=42),
                )
            ],
            ports=self.serial_ports,
        )
        self.services.insert(0, self.displays)

    def written(self) -> None:
        for _ in range(1000):
            if self.serial_ports.status("led1").queued == 0:
                return
            self.clock.advance(0.05)

    async def received(self, count: int) -> list[BoardCommand]:
        self.written()
        await until(
            lambda: self.led.got(0) and len(split_frames(bytes(self.led.received)).frames) >= count,
            f"{count} frames on the board",
        )
        assert_valid_frames(self, bytes(self.led.received))
        return [decode_frame(f).command for f in split_frames(bytes(self.led.received)).frames]

    async def test_start_decision_and_idle_reach_the_board_in_order(self) -> None:
        self.displays.startService()
        output = self.displays.frames_for_decision("Entry", WELCOME, "京A12345")
        self.assertEqual((output.delivery, output.port), (Delivery.PORT, "led1"))
        self.clock.advance(5.0)  # dwell over
        commands = await self.received(4)
        self.assertEqual(
            [type(c) for c in commands], [SetClock, ShowLines, ShowLines, ShowLines]
        )
        self.assertEqual(commands[0], SetClock(datetime(2024, 5, 6, 8, 0, 30)))
        self.assertEqual(texts(commands[1])[2], "剩余车位 42")
        self.assertEqual(texts(commands[2])[:2], ["京A12345", "欢迎光临"])
        self.assertEqual(texts(commands[3])[:2], ["欢迎光临", "08:00"])
        addresses = {decode_frame(f).address for f in split_frames(bytes(self.led.received)).frames}
        self.assertEqual(addresses, {1})

    async def test_admin_test_message_is_written_to_the_port(self) -> None:
        output = self.displays.test_message("Entry", "测试", speak=False)
        self.assertEqual(output.delivery, Delivery.PORT)
        (command,) = await self.received(1)
        expected = [Line("测试", line=0)] + [Line("", line=index) for index in (1, 2, 3)]
        self.assertEqual(command, ShowLines(expected))


# --------------------------------------------------------------------------- templates and settings


def test_default_messages_cover_every_key_for_both_directions() -> None:
    for direction in ("in", "out"):
        messages = default_messages(direction)
        assert messages["open"].lines[1] == ("欢迎光临" if direction == "in" else "一路顺风")
        assert messages[reasons.OFFLINE_RECORD].silent and messages[reasons.DUPLICATE].silent


def test_template_fields_are_checked() -> None:
    assert template_fields("{plate} 有效期至{valid_until}") == {"plate", "valid_until"}
    assert template_fields("{{literal}}") == frozenset()
    for bad in ("{owner}", "{plate.upper}", "{plate[0]}", "{plate!r}", "{plate:>8}", "{plate"):
        with pytest.raises(ValueError):
            template_fields(bad)
    with pytest.raises(ValueError):
        MessageTemplate(("{nope}",))
    with pytest.raises(ValueError):
        MessageTemplate(("a", "b", "c", "d", "e"))
    with pytest.raises(TypeError):
        MessageTemplate("{plate}")


def test_render_drops_lines_and_silences_voice_fields_without_value() -> None:
    assert render("剩余车位 {free}", {"free": None}) is None
    assert render("剩余车位 {free}", {"free": "0"}) == "剩余车位 0"
    assert render_voice("{plate}，欢迎光临", {"plate": None}) == "欢迎光临"


def test_message_keys() -> None:
    assert message_key(True, reasons.WHITELIST) == "open"
    assert message_key(True, reasons.UNKNOWN) == "open"  # unlisted plates let in
    assert message_key(False, reasons.UNKNOWN) == reasons.UNKNOWN
    assert message_key(False, "cloud_rule_17") == "denied"
    assert message_key(True, reasons.DUPLICATE) == reasons.DUPLICATE
    assert message_key(False, reasons.OFFLINE_RECORD) == reasons.OFFLINE_RECORD


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        DisplaySettings(via="serial")
    with pytest.raises(ValueError):
        DisplaySettings(via="camera", port="led1")
    with pytest.raises(ValueError):
        DisplaySettings(messages={"opened": MessageTemplate()})
    with pytest.raises(ValueError):
        DisplaySettings(camera_channel=2)
    with pytest.raises(ValueError):
        DisplaySettings(dwell_seconds=0)
    clock = Clock()
    with pytest.raises(ValueError, match="not configured"):
        LaneDisplays(
            clock=clock,
            tz=SHANGHAI,
            lanes=[LaneDisplay("A", "c", "in", DisplaySettings(via="serial", port="led9"))],
            ports=SerialPorts(clock, [], clock=clock),  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="queue_camera_serial"):
        LaneDisplays(clock=clock, tz=SHANGHAI, lanes=[LaneDisplay("A", "c", "in")])
    with pytest.raises(ValueError, match="two displays"):
        LaneDisplays(
            clock=clock,
            tz=SHANGHAI,
            lanes=[LaneDisplay("A", "c", "in"), LaneDisplay("a", "d", "in")],
            queue_camera_serial=lambda *args: None,
        )


class PlatePathSafetyTests(SynchronousTestCase):
    def test_a_display_failure_never_breaks_the_plate_path(self) -> None:
        clock = Clock()
        registry = CameraRegistry(clock, comet_hold=20.0)
        displays = LaneDisplays(
            clock=clock,
            tz=SHANGHAI,
            lanes=[LaneDisplay("Entry", ENTRY_CAMERA, "in")],
            queue_camera_serial=queue_camera_serial(registry),
        )
        broken = Decision(open=True, reason=reasons.WHITELIST, valid_until="soon")  # type: ignore[arg-type]
        output = displays.frames_for_decision("Entry", broken, "京A12345")
        self.assertEqual(output.delivery, Delivery.NONE)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
