"""The camera registry: heartbeat mode learnt from timing, held comet polls,
command queues and liveness, all driven by a Clock."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.camera.commands import CommandState, ManualTrigger, OpenBarrier, SendSerial
from gateway.camera.registry import CameraRegistry, HeartbeatMode, PollOutcome
from gateway.protocol.replies import HeartbeatReply, PlateReply


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
        delivered = self.registry.fill_reply(camera, reply)
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
        self.assertEqual(self.registry.fill_reply(self.camera, reply), [])
        self.assertIsNone(reply.open_channel)
        self.assertEqual(command.state, CommandState.EXPIRED)
        self.assertEqual(finished, [CommandState.EXPIRED])
        self.assertEqual(len(self.camera.commands), 0)

    def test_whole_reply_command_is_taken_alone(self) -> None:
        from gateway.camera.commands import ParkingCamWhitelistCommand

        whitelist = ParkingCamWhitelistCommand(
            body=b'{"deleteWhiteListAll":1}', operation="delete_all", expires_at=30.0
        )
        opener = OpenBarrier(channel=0, expires_at=30.0)
        self.registry.queue("cam", whitelist)
        self.registry.queue("cam", opener)
        reply = HeartbeatReply()
        # The whitelist command is a reply of its own: nothing else rides with it.
        self.assertEqual(self.registry.fill_reply(self.camera, reply), [])
        self.assertIs(self.registry.take_whole_reply(self.camera), whitelist)
        self.assertEqual(whitelist.state, CommandState.DELIVERED)
        self.assertFalse(whitelist.done.called, "confirmed by the camera's answer")
        self.assertEqual(self.registry.fill_reply(self.camera, reply), [opener])
        self.assertTrue(opener.done.called)

    def test_commands_keep_order_and_wait_for_a_reply_they_fit(self) -> None:
        first = OpenBarrier(channel=0, expires_at=30.0)
        second = OpenBarrier(channel=1, expires_at=30.0)
        serial = SendSerial(channel=0, data=b"\x01\x02", expires_at=30.0)
        for command in (first, second, serial):
            self.registry.queue("cam", command)
        reply = PlateReply()
        self.assertEqual(self.registry.fill_reply(self.camera, reply), [first])
        reply = PlateReply()
        self.assertEqual(self.registry.fill_reply(self.camera, reply), [second, serial])
        self.assertEqual(reply.open_channel, 1)
        self.assertEqual(reply.serial, [(0, b"\x01\x02")])

    def test_parkingcam_heartbeat_carries_open_but_not_manual_trigger(self) -> None:
        self.registry.queue("cam", OpenBarrier(channel=0, expires_at=30.0))
        self.registry.queue("cam", ManualTrigger(expires_at=30.0))
        reply = HeartbeatReply()
        delivered = self.registry.fill_reply(self.camera, reply)
        self.assertEqual(len(delivered), 1)
        self.assertTrue(reply.open)
        self.assertEqual(len(self.camera.commands), 1)


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
