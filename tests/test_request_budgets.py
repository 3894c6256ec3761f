"""Connection budgets in memory: a whole request must arrive in time and its
body at a minimum rate, the bodies in memory at once stay within the
listener's budget (new ones wait, unread, and the ones in progress finish),
and when every connection is taken a camera still gets in.

The budget's accounting alone, then the camera port's real parts
(support.parts) over ``StringTransport`` connections, time on a ``Clock``.
The same over real sockets from many addresses is in test_e2e_slow_bodies."""

from __future__ import annotations

import json
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gateway.camera.http import BODY_RATE_GRACE_SECONDS, BodyBudget
from support import CapturedLog, loopback_config
from support.camera import CameraServerTestCase, RawConnection
from support.gateway import plate_body

CAMERA = "eff50e18-e3d3862b"
LANES = [{"name": "Entrance", "camera": CAMERA, "unknown_plate": "allow", "sync_whitelist": False}]


class BodyBudgetTests(SynchronousTestCase):
    """The accounting: who is admitted, who waits, who goes first."""

    def setUp(self) -> None:
        self.admitted: list[str] = []

    def ask(self, budget: BodyBudget, name: str, address: str, need: int, held: int = 0) -> Any:
        return budget.ask(address, need, held, lambda: self.admitted.append(name))

    def test_bodies_past_the_budget_wait_and_the_ones_in_progress_finish(self) -> None:
        budget = BodyBudget(1000)  # 750 for bodies, 250 read ahead by waiting ones
        first = self.ask(budget, "first", "10.0.0.9", 400)
        second = self.ask(budget, "second", "10.0.0.9", 350)
        third = self.ask(budget, "third", "10.0.0.9", 300)
        self.assertEqual((first.state, second.state, third.state), ("admitted", "admitted", "waiting"))
        self.assertEqual((budget.claimed, budget.waiting), (750, 1))
        # The ones in progress keep what they claimed; the waiting one goes
        # in when one of them is done, not before.
        budget.received(first, 400)
        self.assertEqual(self.admitted, [])
        budget.release(second)
        self.assertEqual(self.admitted, ["third"])
        self.assertEqual((budget.claimed, budget.peak_reserved), (700, 750))
        budget.release(first)
        budget.release(third)
        self.assertEqual((budget.reserved, budget.buffered, budget.waiting), (0, 0, 0))

    def test_the_address_claiming_least_goes_first(self) -> None:
        budget = BodyBudget(1000)
        hogs = [self.ask(budget, f"hog{n}", "10.0.0.9", 250) for n in range(3)]
        waiting_hogs = [self.ask(budget, f"later{n}", "10.0.0.9", 250) for n in range(3)]
        camera = self.ask(budget, "camera", "192.168.1.100", 250)
        self.assertEqual([t.state for t in waiting_hogs + [camera]], ["waiting"] * 4)
        budget.release(hogs[0])
        self.assertEqual(self.admitted, ["camera"])
        # Then the others, oldest first.
        budget.release(hogs[1])
        self.assertEqual(self.admitted, ["camera", "later0"])

    def test_a_newcomer_does_not_pass_a_body_that_waits_before_it(self) -> None:
        budget = BodyBudget(1000)
        self.ask(budget, "big", "10.0.0.1", 700)
        waiting = self.ask(budget, "waits", "10.0.0.2", 600)
        small = self.ask(budget, "small", "10.0.0.3", 50)
        self.assertEqual((waiting.state, small.state), ("waiting", "waiting"))

    def test_bytes_read_ahead_by_waiting_bodies_count_and_are_bounded(self) -> None:
        budget = BodyBudget(1000)
        self.ask(budget, "full", "10.0.0.1", 750)
        waiting = self.ask(budget, "a", "10.0.0.2", 500, held=200)
        self.assertEqual(waiting.state, "waiting")
        self.assertEqual(budget.reserved, 950)  # what is really in memory
        # A quarter of the budget may be read ahead by waiting bodies.
        self.assertIsNone(self.ask(budget, "b", "10.0.0.3", 500, held=100))
        self.assertEqual(budget.refused, 1)
        self.assertEqual(self.ask(budget, "c", "10.0.0.3", 500, held=50).state, "waiting")
        self.assertEqual(budget.reserved, budget.limit)

    def test_random_traffic_never_takes_more_than_the_budget(self) -> None:
        rng = random.Random(18)
        budget = BodyBudget(64_000)
        open_tickets: list[Any] = []
        for _ in range(5000):
            if open_tickets and rng.random() < 0.45:
                ticket = open_tickets.pop(rng.randrange(len(open_tickets)))
                if ticket.admitted:
                    budget.received(ticket, ticket.need)
                budget.release(ticket)
            else:
                held = rng.choice([0, 0, rng.randrange(1, 4000)])
                need = rng.randrange(max(held, 1), 32_000)
                ticket = budget.ask(f"10.0.0.{rng.randrange(40)}", need, held, lambda: None)
                if ticket is not None:
                    open_tickets.append(ticket)
            claimed = sum(t.need for t in open_tickets if t.admitted)
            self.assertEqual(claimed, budget.claimed)
            self.assertLessEqual(budget.reserved, budget.limit)
            self.assertLessEqual(budget.buffered, budget.body_limit)
        self.assertGreater(budget.waited, 100)
        for ticket in open_tickets:
            budget.release(ticket)
        self.assertEqual((budget.reserved, budget.held, budget.waiting), (0, 0, 0))


def request_head(length: int, *headers: bytes) -> bytes:
    return (
        b"POST /devicemanagement/php/plateresult.php HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/Json\r\n" + b"".join(h + b"\r\n" for h in headers)
        + b"Content-Length: %d\r\n\r\n" % length
    )


def padded_plate(plateid: int, size: int) -> bytes:
    """A plate push of ``size`` bytes (a note field fills it up)."""
    bare = plate_body(CAMERA, "京A12345", plateid=plateid, note="")
    return plate_body(CAMERA, "京A12345", plateid=plateid, note="n" * (size - len(bare)))


class SlowRequestTests(CameraServerTestCase):
    """The camera port's deadlines and minimum rate."""

    config = loopback_config(
        camera_server={
            "header_timeout_seconds": 2,
            "request_timeout_seconds": 10,
            "min_body_bytes_per_second": 1000,
        },
        lane=LANES,
    )

    def answered(self, connection: RawConnection) -> dict[str, Any]:
        head, _, body = connection.received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head[:80])
        answer: dict[str, Any] = json.loads(body)
        return answer

    async def test_a_trickled_body_is_cut_and_a_camera_is_still_served(self) -> None:
        await self.start()
        factory = self.parts.camera_server.listening_factory()
        slow = self.connection(factory, peer="10.0.0.9")
        slow.send(request_head(50_000))
        with CapturedLog() as captured:
            # 100 bytes a second, far under the minimum: the free first
            # window, then one window short of the minimum, and cut.
            for _ in range(2 * int(BODY_RATE_GRACE_SECONDS)):
                self.assertFalse(slow.closed)
                slow.send(b"x" * 100)
                self.clock.advance(1)
            self.assertTrue(slow.closed, "a trickled body held its connection")
        self.assertEqual(slow.received, b"", "a camera must get no answer, to keep its record")
        self.assertEqual(
            [t for t in captured.texts() if "10.0.0.9" in t],
            ["Closed a connection from 10.0.0.9: its request body came slower than 1000 bytes a second"],
        )
        camera = self.connection(factory, peer="192.168.1.100")
        body = plate_body(CAMERA, "京A12345", plateid=2)
        camera.send(request_head(len(body)) + body)
        self.assertEqual(self.answered(camera)["Response_AlarmInfoPlate"]["plateid"], 2)
        budget = self.parts.camera_server.body_budget
        slow.drop()
        self.assertEqual((budget.reserved, budget.buffered), (0, 0))

    async def test_a_body_at_the_minimum_rate_is_served(self) -> None:
        await self.start()
        body = padded_plate(3, 8000)
        connection = self.connection()
        connection.send(request_head(len(body)))
        # 1500 bytes a second, with a pause inside the grace.
        self.clock.advance(1.5)
        for start in range(0, len(body), 1500):
            connection.send(body[start : start + 1500])
            self.clock.advance(1)
        self.assertEqual(self.answered(connection)["Response_AlarmInfoPlate"]["plateid"], 3)

    async def test_a_fast_start_buys_no_time_for_a_body_that_stalls(self) -> None:
        await self.start()
        connection = self.connection()
        # All but the last byte at once, then nothing: each window must
        # bring the minimum (or the rest), whatever came before.
        connection.send(request_head(50_000) + b"x" * 49_999)
        self.clock.advance(2 * BODY_RATE_GRACE_SECONDS - 0.1)
        self.assertFalse(connection.closed)
        self.clock.advance(0.1)
        self.assertTrue(connection.closed)
        self.assertEqual(self.parts.camera_server.body_budget.claimed, 0)
        # The last byte in time is enough.
        connection = self.connection(port=40001)
        connection.send(request_head(len(padded_plate(8, 9000))) + padded_plate(8, 9000)[:-1])
        self.clock.advance(2 * BODY_RATE_GRACE_SECONDS - 0.1)
        connection.send(padded_plate(8, 9000)[-1:])
        self.assertEqual(self.answered(connection)["Response_AlarmInfoPlate"]["plateid"], 8)

    async def test_a_request_that_takes_too_long_in_all_is_cut(self) -> None:
        await self.start()
        connection = self.connection()
        connection.send(request_head(100_000))
        # Fast enough for the rate, too slow for the 10 s of the request.
        for _ in range(9):
            connection.send(b"x" * 5000)
            self.clock.advance(1)
        self.assertFalse(connection.closed)
        with CapturedLog() as captured:
            connection.send(b"x" * 5000)
            self.clock.advance(1.01)
        self.assertTrue(connection.closed)
        self.assertEqual(connection.received, b"")
        self.assertTrue(any("took more than 10 s to arrive" in t for t in captured.texts()))

    async def test_a_connection_that_never_sends_a_request_is_closed(self) -> None:
        await self.start()
        silent = self.connection()
        self.clock.advance(1.9)
        self.assertFalse(silent.closed)
        # The first line at the last moment does not restart the header clock.
        silent.send(b"POST / HTTP/1.1\r\n")
        self.clock.advance(0.2)
        self.assertTrue(silent.closed)

    async def test_cuts_from_one_address_are_logged_once_a_minute(self) -> None:
        await self.start()
        factory = self.parts.camera_server.listening_factory()
        with CapturedLog() as captured:
            for _ in range(10):
                connection = self.connection(factory, peer="10.0.0.9")
                connection.send(request_head(50_000) + b"x")
                self.clock.advance(2 * BODY_RATE_GRACE_SECONDS)
                self.assertTrue(connection.closed)
                connection.drop()
            self.clock.advance(60)
            connection = self.connection(factory, peer="10.0.0.9")
            connection.send(request_head(50_000) + b"x")
            self.clock.advance(2 * BODY_RATE_GRACE_SECONDS)
        lines = [t for t in captured.texts() if "came slower" in t]
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[1].endswith("(9 more since it was last said)"), lines[1])


class BodyMemoryTests(CameraServerTestCase):
    """The camera port's memory budget for bodies, with the connections."""

    config = loopback_config(
        camera_server={
            "max_body_bytes": 65_536,
            "body_memory_budget_bytes": 262_144,
            "max_connections": 16,
            "max_connections_per_address": 12,
            "request_timeout_seconds": 30,
            "min_body_bytes_per_second": 0,
        },
        lane=LANES,
    )

    async def test_unfinished_large_bodies_cost_no_more_than_the_budget(self) -> None:
        await self.start()
        factory = self.parts.camera_server.listening_factory()
        budget = self.parts.camera_server.body_budget
        unfinished = []
        for port in range(12):
            connection = self.connection(factory, peer="10.0.0.9", port=41000 + port)
            # All but the last byte, in one go (as one socket read).
            connection.send(request_head(65_536) + b"x" * 65_535)
            unfinished.append(connection)
        # Three are read (three quarters of the budget); one waits with what
        # came with its headers (the last quarter), its connection paused;
        # the others are closed without an answer (a camera sends again).
        self.assertEqual(budget.buffered, 3 * 65_535)
        self.assertEqual(budget.held, 65_535)
        self.assertLessEqual(budget.peak_reserved, budget.limit)
        self.assertEqual((budget.waiting, budget.refused), (1, 8))
        self.assertEqual([c.closed for c in unfinished], [False] * 4 + [True] * 8)
        self.assertEqual(unfinished[3].transport.producerState, "paused")
        self.assertEqual([c.received for c in unfinished], [b""] * 12)
        # One finishes: the waiting one is read.
        unfinished[0].send(b"x")
        self.clock.advance(0)
        self.assertEqual(unfinished[3].transport.producerState, "producing")
        self.assertEqual(budget.buffered, 3 * 65_535)
        self.assertEqual((budget.held, budget.waiting), (0, 0))

    async def test_a_camera_waits_its_turn_before_a_host_with_many_bodies(self) -> None:
        await self.start()
        factory = self.parts.camera_server.listening_factory()
        budget = self.parts.camera_server.body_budget
        hogs = []
        for port in range(3):
            connection = self.connection(factory, peer="10.0.0.9", port=41000 + port)
            connection.send(request_head(65_536) + b"x" * 1000)
            hogs.append(connection)
        later_hog = self.connection(factory, peer="10.0.0.9", port=42000)
        later_hog.send(request_head(65_536))
        camera = self.connection(factory, peer="192.168.1.100")
        body = plate_body(CAMERA, "京A12345", plateid=5)
        camera.send(request_head(len(body), b"Expect: 100-continue"))
        self.assertEqual(budget.waiting, 2)
        self.assertEqual(camera.received, b"", "told to send a body that cannot be kept yet")
        # One of the host's bodies finishes (a 400: it is no plate): the
        # camera's goes next, though the host asked first.
        hogs[0].send(b"x" * 64_536)
        self.assertTrue(hogs[0].received.startswith(b"HTTP/1.1 400 "))
        self.clock.advance(0)
        self.assertEqual(camera.received, b"HTTP/1.1 100 Continue\r\n\r\n")
        camera.send(body)
        self.assertIn(b'"plateid":5', camera.received)
        # The camera's answer frees its part: the host's next body goes in.
        self.assertEqual(later_hog.transport.producerState, "paused")
        self.assertEqual(budget.waiting, 0)
        self.clock.advance(0)
        self.assertEqual(later_hog.transport.producerState, "producing")

    async def test_when_every_connection_is_taken_a_camera_still_gets_in(self) -> None:
        await self.start()
        factory = self.parts.camera_server.listening_factory()
        pile = []
        for host in range(2):
            for port in range(8):
                connection = self.connection(factory, peer=f"10.0.0.{host + 1}", port=41000 + port)
                pile.append(connection)
        self.assertFalse(any(c.closed for c in pile))
        with CapturedLog() as captured:
            camera = self.connection(factory, peer="192.168.1.100")
        self.assertFalse(camera.refused)
        # The oldest idle connection of the (first) busiest address made room.
        self.assertTrue(pile[0].closed)
        self.assertEqual([c.closed for c in pile].count(True), 1)
        self.assertTrue(any("to let others in" in t for t in captured.texts()))
        body = plate_body(CAMERA, "京A12345", plateid=6)
        camera.send(request_head(len(body)) + body)
        self.assertIn(b'"plateid":6', camera.received)
        # A second connection from the camera is not worth another's: both
        # piles have 7 or 8 now, the camera has 1.
        self.assertFalse(self.connection(factory, peer="192.168.1.100", port=40001).refused)
        self.assertEqual([c.closed for c in pile].count(True), 2)
        # An address as busy as the busiest cannot displace anyone.
        pile[0].drop()
        pile[8].drop()
        self.assertTrue(self.connection(factory, peer="10.0.0.1", port=43000).refused)
        self.assertFalse(self.connection(factory, peer="10.0.0.3", port=43000).refused)
