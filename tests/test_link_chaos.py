"""Link chaos: while cameras keep pushing plates on a lane that asks the
cloud, the cloud goes away, comes back answering 503 with Retry-After, then
429, then never answers its decisions, refuses the gateway's credentials,
drops connections mid-request and rejects one poison event. Throughout, every
plate is answered within the camera's timeout and opens as the site's rules
say; afterwards everything is delivered, once, with the poison event in dead
letters."""

from __future__ import annotations

import base64

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from gateway.simulator.config import CameraConfig, fleet_configs
from gateway.simulator.fleet import CameraFleet
from gateway.store import EventType
from support import loopback_config
from support.cloud import Scripted, StubCloud
from support.simulator import SimulatorTestCase

pytestmark = pytest.mark.system

KEY = b"link chaos upstream key 32 bytes"


class LinkChaosTests(SimulatorTestCase):
    async def test_decisions_hold_and_everything_arrives_after_recovery(self) -> None:
        cloud = StubCloud(KEY, reactor.seconds)
        cloud.listen()
        self.addCleanup(lambda: cloud.port and cloud.port.stopListening())
        cloud.decide_answer = {"open": True, "reason": "paid"}
        camera_serials = [c.serialno for c in fleet_configs(2, self.template(0))]
        await self.start(
            loopback_config(
                lane=[
                    {"name": f"Lane {n}", "camera": serial, "ask_cloud": True,
                     "sync_whitelist": False}
                    for n, serial in enumerate(camera_serials, start=1)
                ],
                policy={"unknown_plate": "allow", "duplicate_window_seconds": 0},
                upstream={"url": cloud.url, "secret": "whsec_" + base64.b64encode(KEY).decode(),
                          "decision_timeout_seconds": 0.3, "sync_interval_seconds": 1,
                          "max_backoff_seconds": 1, "images": "none"},
            )
        )
        store = self.gateway.store
        fleet = CameraFleet(reactor, fleet_configs(2, self.template(self.gateway.camera_port)))
        fleet.start()
        self.addCleanup(fleet.stop)

        async def phase(seconds: float = 0.8) -> None:
            await deferLater(reactor, seconds, lambda: None)

        await phase()
        # 1. The cloud is gone: refused connections, decisions fall back at once.
        await cloud.go_down()
        await phase()
        # A plate queued while the cloud is away will be the poison one.
        newest = await store.recent_events(limit=1, type=EventType.PLATE)
        poison = newest[0].id
        cloud.reject_ids = {poison}
        # 2. Back, but overloaded: 503 with Retry-After, then 429.
        cloud.scripts["events"] = [Scripted(503, b"", {"Retry-After": "1"}) for _ in range(2)]
        cloud.come_up()
        await phase()
        cloud.scripts["events"] = [Scripted(429) for _ in range(2)]
        await phase()
        # 3. Decisions that never come: the lane decides locally in time.
        cloud.decide_answer = Deferred()
        await phase()
        cloud.decide_answer = {"open": True, "reason": "paid"}
        # 4. Credentials refused for a while: delivery pauses, decisions local.
        cloud.refuse_credentials = True
        await phase()
        cloud.refuse_credentials = False
        # 5. Connections dropped in the middle of requests.
        await cloud.cut_connections()
        await phase(0.3)
        await cloud.cut_connections()
        cloud.scripts.clear()

        await self.until(
            lambda: all(c.produced and c.drained for c in fleet.cameras), 60, "the cameras to finish"
        )
        events = await self.plate_events()
        stored = {e.id for e in events}
        await self.until(
            lambda: {i for i, e in cloud.events.items() if e["type"] == "plate"} == stored - {poison},
            60,
            "every plate but the poison one at the cloud",
        )
        # Throughout: every push answered within the camera's timeout, and
        # every plate let in, by the cloud or, when it could not answer, locally.
        for camera in fleet.cameras:
            self.assertEqual(camera.failures["plate"], 0)
            self.assertEqual(len(camera.relay_pulses), len(camera.answered_plates))
        self.assertTrue(all(e.decision_open for e in events))
        sources = {e.decision_source for e in events}
        self.assertEqual(sources, {"cloud", "local"})
        self.assertEqual(len(events), 2 * 60)
        dead = await store.dead_letters()
        self.assertEqual([(d.event_id, d.status) for d in dead if d.event_id == poison], [(poison, 400)])
        self.assertEqual(set(cloud.bad_signatures) - {"credentials refused"}, set())

    def template(self, port: int) -> CameraConfig:
        return CameraConfig(
            serialno="template",
            servers=(f"http://127.0.0.1:{port or 1}",),
            plates=60,
            rate=10,
            timeout=2.0,
            no_plate_rate=0.0,
        )
