"""The camera registry: heartbeat mode learnt from timing, held comet polls,
command queues and liveness, all driven by a Clock."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.camera.commands import (
    CommandState,
    ManualTrigger,
    OpenBarrier,
    ParkingCamWhitelistCommand,
    SendSerial,
)
from gateway.camera.registry import CameraRegistry, PollOutcome
from gateway.protocol.capabilities import HeartbeatMode, ReplyKind
from gateway.protocol.messages import Dialect
from gateway.protocol.replies import HeartbeatReply, PlateReply
from support import CapturedLog


def poll(registry: CameraRegistry, serialno: str) -> Deferred[PollOutcome]:
    camera = registry.seen(serialno, address="127.0.0.1")
    registry.heartbeat(camera)
    return ensureDeferred(registry.hold_poll(camera))


def answer(registry: CameraRegistry, serialno: str) -> None:
    camera = registry.get(serialno)
    assert camera is not None
    registry.answered(camera)


class CometTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = CameraRegistry(self.clock, comet_hold=20.0)

    def become_comet(self, serialno: str = "d85b1269-8f942256") -> None:
        first = poll(self.registry, serialno)
        self.assertEqual(self.successResultOf(first), PollOutcome.IMMEDIATE)
        answer(self.registry, serialno)
        self.clock.advance(0.05)

    def test_first_registration_answered_at_once(self) -> None:
        d = poll(self.registry, "d85b1269-8f942256")
        self.assertEqual(self.successResultOf(d), PollOutcome.IMMEDIATE)
        camera = self.registry.get("d85b1269-8f942256")
        assert camera is not None
        self.assertEqual(camera.heartbeat, HeartbeatMode.UNKNOWN)

    def test_quick_second_poll_is_held_until_deadline(self) -> None:
        self.become_comet()
        held = poll(self.registry, "d85b1269-8f942256")
        self.assertNoResult(held)
        self.assertEqual(self.registry.held_polls(), 1)
        self.clock.advance(19.9)
        self.assertNoResult(held)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(held), PollOutcome.DEADLINE)
        self.assertEqual(self.registry.held_polls(), 0)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime() > 20, True)

    def test_queued_command_releases_held_poll_immediately(self) -> None:
        self.become_comet()
        held = poll(self.registry, "d85b1269-8f942256")
        self.assertNoResult(held)
        self.registry.queue("D85B1269-8F942256", OpenBarrier(channel=1, expires_at=30.0))
        # Released in the same reactor turn: no time passes.
        self.assertEqual(self.successResultOf(held), PollOutcome.COMMAND)
        camera = self.registry.get("d85b1269-8f942256")
        assert camera is not None
        reply = PlateReply()
        delivered = self.registry.fill_reply(camera, reply, ReplyKind.POLL)
        self.assertEqual(len(delivered), 1)
        self.assertEqual(delivered[0].state, CommandState.DELIVERED)
        self.assertEqual(reply.open_channel, 1)
        # The hold timer was cancelled with the release.
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.getTime() <= 20.05], [])

    def test_slow_second_registration_is_common_heartbeat_never_held(self) -> None:
        first = poll(self.registry, "cam")
        self.successResultOf(first)
        answer(self.registry, "cam")
        self.clock.advance(30)
        second = poll(self.registry, "cam")
        self.assertEqual(self.successResultOf(second), PollOutcome.IMMEDIATE)
        camera = self.registry.get("cam")
        assert camera is not None
        self.assertEqual(camera.heartbeat, HeartbeatMode.COMMON)
        self.assertEqual(camera.heartbeat_interval, 30)

    def test_newer_poll_supersedes_held_one(self) -> None:
        self.become_comet()
        first = poll(self.registry, "d85b1269-8f942256")
        self.assertNoResult(first)
        second = poll(self.registry, "d85b1269-8f942256")
        self.assertEqual(self.successResultOf(first), PollOutcome.SUPERSEDED)
        self.assertNoResult(second)
        self.assertEqual(self.registry.held_polls(), 1)

    def test_dropped_connection_frees_slot_and_cancels_timer(self) -> None:
        self.become_comet()
        held = poll(self.registry, "d85b1269-8f942256")
        self.clock.advance(19.8)
        held.cancel()
        self.failureResultOf(held, CancelledError)
        self.assertEqual(self.registry.held_polls(), 0)
        # Dropped at the deadline's edge: no change to how long it is held.
        camera = self.registry.get("d85b1269-8f942256")
        assert camera is not None
        self.assertIsNone(camera.hold_limit)
        self.assertFalse(any(c.getTime() == 20.05 for c in self.clock.getDelayedCalls()))

    def test_camera_that_gives_up_early_gets_shorter_holds(self) -> None:
        self.become_comet()
        held = poll(self.registry, "d85b1269-8f942256")
        self.clock.advance(8.0)
        held.cancel()
        self.failureResultOf(held, CancelledError)
        camera = self.registry.get("d85b1269-8f942256")
        assert camera is not None
        self.assertEqual(camera.hold_limit, 7.0)
        answer(self.registry, "d85b1269-8f942256")
        self.clock.advance(0.1)
        again = poll(self.registry, "d85b1269-8f942256")
        self.clock.advance(6.9)
        self.assertNoResult(again)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(again), PollOutcome.DEADLINE)

    def test_camera_that_cannot_be_held_is_answered_at_once(self) -> None:
        self.become_comet()
        held = poll(self.registry, "d85b1269-8f942256")
        self.clock.advance(1.5)
        held.cancel()
        self.failureResultOf(held, CancelledError)
        answer(self.registry, "d85b1269-8f942256")
        self.clock.advance(0.1)
        self.assertEqual(
            self.successResultOf(poll(self.registry, "d85b1269-8f942256")),
            PollOutcome.IMMEDIATE,
        )

    def test_configured_common_camera_never_held(self) -> None:
        self.registry.configure("cam", lane="Exit", heartbeat="common")
        self.successResultOf(poll(self.registry, "cam"))
        answer(self.registry, "cam")
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(poll(self.registry, "cam")), PollOutcome.IMMEDIATE)

    def test_configured_comet_camera_held_from_first_poll(self) -> None:
        self.registry.configure("cam", lane="Exit", heartbeat="comet")
        self.assertNoResult(poll(self.registry, "cam"))

    def test_pending_command_answers_poll_at_once(self) -> None:
        self.become_comet()
        self.registry.queue("d85b1269-8f942256", ManualTrigger(expires_at=30.0))
        self.assertEqual(
            self.successResultOf(poll(self.registry, "d85b1269-8f942256")),
            PollOutcome.IMMEDIATE,
        )


class QueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = CameraRegistry(self.clock)
        self.camera = self.registry.seen("cam", address="127.0.0.1")

    def test_expired_command_never_delivered(self) -> None:
        command = OpenBarrier(channel=0, expires_at=30.0)
        finished: list[CommandState] = []
        command.done.addCallback(lambda c: finished.append(c.state))
        self.registry.queue("cam", command)
        self.clock.advance(31)
        reply = PlateReply()
        self.assertEqual(self.registry.fill_reply(self.camera, reply, ReplyKind.PLATE), [])
        self.assertIsNone(reply.open_channel)
        self.assertEqual(command.state, CommandState.EXPIRED)
        self.assertEqual(finished, [CommandState.EXPIRED])
        self.assertEqual(len(self.camera.commands), 0)

    def test_a_whitelist_heartbeat_waits_for_barrier_commands(self) -> None:
        camera = self.registry.seen("pc", address="127.0.0.2", dialect=Dialect.PARKINGCAM)
        whitelist = ParkingCamWhitelistCommand(
            body=b'{"deleteWhiteListAll":1}', operation="delete_all", expires_at=30.0
        )
        opener = OpenBarrier(channel=0, expires_at=30.0)
        self.registry.queue("pc", whitelist)
        self.registry.queue("pc", opener)
        # The open goes in this heartbeat's reply, queued later or not; the
        # whitelist command, a reply of its own, takes the next heartbeat.
        reply = HeartbeatReply()
        self.assertEqual(self.registry.fill_reply(camera, reply, ReplyKind.HEARTBEAT), [opener])
        self.assertTrue(reply.open)
        self.assertIs(self.registry.take_whole_reply(camera), whitelist)
        self.assertEqual(whitelist.state, CommandState.DELIVERED)
        self.assertFalse(whitelist.done.called, "confirmed by the camera's answer")

    def test_a_command_that_does_not_fit_holds_back_only_its_own_kind(self) -> None:
        first = OpenBarrier(channel=0, expires_at=30.0)
        second = OpenBarrier(channel=1, expires_at=30.0)
        serial = SendSerial(channel=0, data=b"\x01\x02", expires_at=30.0)
        for command in (first, second, serial):
            self.registry.queue("cam", command)
        # One relay per reply: the second open waits, the serial bytes go by.
        reply = PlateReply()
        self.assertEqual(self.registry.fill_reply(self.camera, reply, ReplyKind.PLATE), [first, serial])
        self.assertEqual(reply.serial, [(0, b"\x01\x02")])
        reply = PlateReply()
        self.assertEqual(self.registry.fill_reply(self.camera, reply, ReplyKind.PLATE), [second])
        self.assertEqual(reply.open_channel, 1)

    def test_a_trigger_a_parkingcam_cannot_read_never_delays_an_open(self) -> None:
        camera = self.registry.seen("pc", address="127.0.0.2", dialect=Dialect.PARKINGCAM)
        trigger = ManualTrigger(expires_at=30.0)
        opener = OpenBarrier(channel=0, expires_at=30.0)
        self.registry.queue("pc", trigger)
        self.registry.queue("pc", opener)
        reply = HeartbeatReply()
        self.assertEqual(self.registry.fill_reply(camera, reply, ReplyKind.HEARTBEAT), [opener])
        self.assertTrue(reply.open)
        # Nor a plate reply: the dialect has no trigger field; it expires unsent.
        plate = PlateReply()
        self.assertEqual(self.registry.fill_reply(camera, plate, ReplyKind.PLATE), [])
        self.assertFalse(plate.manual_trigger)
        self.clock.advance(30)
        self.registry.fill_reply(camera, PlateReply(), ReplyKind.PLATE)
        self.assertEqual(trigger.state, CommandState.EXPIRED)

    def test_a_common_heartbeat_camera_gets_commands_only_in_plate_replies(self) -> None:
        self.camera.heartbeat = HeartbeatMode.COMMON
        opener = OpenBarrier(channel=2, expires_at=30.0)
        self.registry.queue("cam", opener)
        heartbeat_reply = PlateReply()
        self.assertEqual(self.registry.fill_reply(self.camera, heartbeat_reply, ReplyKind.POLL), [])
        self.assertIsNone(heartbeat_reply.open_channel)
        self.assertEqual(opener.state, CommandState.QUEUED)
        plate = PlateReply()
        self.assertEqual(self.registry.fill_reply(self.camera, plate, ReplyKind.PLATE), [opener])
        self.assertEqual(plate.open_channel, 2)


class SlowLinkTests(SynchronousTestCase):
    """Comet polls that come back late on a slow link are still held; common
    heartbeats, even every 5 s, never are (PROTOCOL.md section 9)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = CameraRegistry(self.clock, comet_hold=20.0)

    def come_back_after(self, delay: float, serialno: str = "cam") -> Deferred[PollOutcome]:
        answer(self.registry, serialno)
        self.clock.advance(delay)
        return poll(self.registry, serialno)

    def test_comet_polls_after_a_slow_link_are_held(self) -> None:
        for delay in (1.2, 3.0):
            serialno = f"comet-{delay}"
            self.successResultOf(poll(self.registry, serialno))
            held = self.come_back_after(delay, serialno)
            self.assertNoResult(held)
            self.clock.advance(20)
            self.assertEqual(self.successResultOf(held), PollOutcome.DEADLINE)
            # After a held answer it comes back just as late: held again.
            held = self.come_back_after(delay, serialno)
            self.assertNoResult(held)
            self.clock.advance(20)

    def test_a_five_second_heartbeat_is_never_held(self) -> None:
        self.successResultOf(poll(self.registry, "cam"))
        for _ in range(5):
            beat = self.come_back_after(4.95)
            self.assertEqual(self.successResultOf(beat), PollOutcome.IMMEDIATE)
        camera = self.registry.get("cam")
        assert camera is not None
        self.assertEqual(camera.heartbeat, HeartbeatMode.COMMON)

    def test_a_dropped_registration_makes_a_common_heartbeat_until_it_proves_comet(self) -> None:
        self.successResultOf(poll(self.registry, "cam"))
        held = self.come_back_after(0.5)
        self.assertNoResult(held)
        # The camera gives up at its 5 s push timeout: it was a heartbeat.
        self.clock.advance(5)
        held.cancel()
        self.failureResultOf(held, CancelledError)
        camera = self.registry.get("cam")
        assert camera is not None
        self.assertEqual(camera.heartbeat, HeartbeatMode.COMMON)
        # Its retry comes at once; answered at once, and again, until three
        # quick comebacks in a row show it polls after all.
        self.assertEqual(self.successResultOf(self.come_back_after(1.0)), PollOutcome.IMMEDIATE)
        self.assertEqual(self.successResultOf(self.come_back_after(0.2)), PollOutcome.IMMEDIATE)
        self.assertNoResult(self.come_back_after(0.2))
        self.assertEqual(camera.heartbeat, HeartbeatMode.COMET)


class LivenessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = CameraRegistry(self.clock, comet_hold=20.0, missed_intervals=3)
        self.changes: list[tuple[str, bool]] = []
        self.registry.on_state_change(lambda c, online: self.changes.append((c.serialno, online)))

    def beat(self, serialno: str) -> None:
        camera = self.registry.seen(serialno, address="127.0.0.1")
        self.registry.heartbeat(camera)

    def test_offline_after_missed_intervals_and_back(self) -> None:
        self.registry.configure("cam", lane="Entrance", heartbeat="auto")
        self.beat("cam")
        self.clock.advance(30)
        self.beat("cam")
        self.assertEqual(self.changes, [("cam", True)])
        self.clock.advance(89)
        self.assertEqual(self.changes, [("cam", True)])
        self.clock.advance(2)
        self.assertEqual(self.changes, [("cam", True), ("cam", False)])
        camera = self.registry.get("cam")
        assert camera is not None
        self.assertFalse(camera.online)
        self.beat("cam")
        self.assertEqual(self.changes[-1], ("cam", True))

    def test_measured_interval_sets_silence(self) -> None:
        self.beat("cam")
        self.clock.advance(5)
        self.beat("cam")
        self.clock.advance(14.9)
        self.assertTrue(self.registry.get("cam").online)  # type: ignore[union-attr]
        self.clock.advance(0.2)
        self.assertFalse(self.registry.get("cam").online)  # type: ignore[union-attr]

    def test_camera_without_heartbeat_is_never_timed_out(self) -> None:
        self.registry.seen("plates-only", address="127.0.0.1")
        self.clock.advance(3600)
        self.assertTrue(self.registry.get("plates-only").online)  # type: ignore[union-attr]

    def test_web_password_kept_but_not_shown(self) -> None:
        camera = self.registry.seen("cam", address="127.0.0.1")
        self.registry.heartbeat(camera, web_port=80, web_user="admin", web_password="s3cret")
        self.assertEqual(camera.web_password, "s3cret")
        self.assertNotIn("s3cret", repr(camera))
        self.assertNotIn("s3cret", repr(camera.describe()))


class UnlistedCameraTests(SynchronousTestCase):
    """Any push may claim a new serial number: cameras in no lane are capped,
    the longest silent forgotten; the configured ones always stay."""

    def test_twenty_thousand_claimed_serials_leave_the_registry_bounded(self) -> None:
        clock = Clock()
        registry = CameraRegistry(clock, max_unlisted=100)
        registry.configure("lane-camera", lane="Entrance", heartbeat="auto")
        registry.seen("regular-unlisted", address="10.0.0.2")
        with CapturedLog() as captured:
            for number in range(20_000):
                clock.advance(0.01)
                registry.seen(f"claimed-{number:05d}", address="10.9.9.9")
                if number % 50 == 0:
                    # A real camera in no lane keeps talking: it stays.
                    registry.seen("regular-unlisted", address="10.0.0.2")
        self.assertEqual(len(registry), 1 + 100)
        self.assertIsNotNone(registry.get("lane-camera"))
        self.assertIsNotNone(registry.get("regular-unlisted"))
        self.assertIsNotNone(registry.get("claimed-19999"))
        self.assertIsNone(registry.get("claimed-00000"))
        self.assertEqual(registry.forgotten, 20_000 + 1 - 100)
        self.assertEqual(sum("are forgotten" in text for text in captured.texts()), 1)
        # A forgotten camera's timers went with it.
        self.assertLessEqual(len(clock.getDelayedCalls()), 101)

    def test_a_camera_in_no_lane_silent_for_a_day_is_forgotten(self) -> None:
        clock = Clock()
        registry = CameraRegistry(clock)
        registry.configure("lane-camera", lane="Entrance", heartbeat="auto")
        registry.seen("passing", address="10.0.0.3")
        clock.advance(24 * 3600)
        registry.seen("newcomer", address="10.0.0.4")
        self.assertIsNone(registry.get("passing"))
        self.assertIsNotNone(registry.get("lane-camera"))

    def test_a_forgotten_camera_s_commands_end(self) -> None:
        clock = Clock()
        registry = CameraRegistry(clock, max_unlisted=1)
        registry.seen("first", address="10.0.0.1")
        command = OpenBarrier(channel=0, expires_at=30.0)
        registry.queue("first", command)
        registry.seen("second", address="10.0.0.2")
        self.assertIsNone(registry.get("first"))
        self.assertEqual(command.state, CommandState.EXPIRED)
