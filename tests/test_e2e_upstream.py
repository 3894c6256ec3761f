"""The cloud link through the whole gateway: simulated cameras push, a stub
cloud (written from docs/upstream-api.md, checking signatures with its own
HMAC code) receives every event once with images, decides live plates or is
too slow and the gateway decides locally in time, and its sync feed's open
command reaches a comet-polling camera."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from support import loopback_config
from support.cloud import StubCloud
from support.simulator import SimulatorTestCase

pytestmark = pytest.mark.e2e

CAMERA = "d85b1269-8f942256"
SECRET_KEY = b"an upstream key of 32 bytes.....!"
SECRET = "whsec_" + base64.b64encode(SECRET_KEY).decode()


class CloudTests(SimulatorTestCase):
    def cloud(self) -> StubCloud:
        cloud = StubCloud(SECRET_KEY, reactor.seconds)
        cloud.listen()
        self.addCleanup(cloud.port.stopListening)
        return cloud

    def site(self, cloud: StubCloud, **upstream: Any) -> dict[str, Any]:
        return loopback_config(
            lane=[{"name": "Entrance", "camera": CAMERA, "barrier_channel": 1,
                   "ask_cloud": True, "sync_whitelist": False}],
            upstream={"url": cloud.url, "secret": SECRET, "sync_interval_seconds": 1,
                      "images": "all", **upstream},
        )

    async def test_events_with_images_arrive_once_and_the_cloud_decides(self) -> None:
        cloud = self.cloud()
        cloud.decide_answer = {"open": True, "reason": "paid", "display": ["已缴费"], "voice": "一路顺风"}
        await self.start(self.site(cloud))
        camera = self.camera(plates=5, rate=20, images="both", no_plate_rate=0.0)
        await self.until(lambda: len(camera.answered_plates) == 5, what="five answered plates")
        plates = [e for e in cloud.events.values() if e["type"] == "plate"]
        await self.until(
            lambda: len([e for e in cloud.events.values() if e["type"] == "plate"]) == 5
            and len(cloud.images) == 10,
            15,
            "the plates and their images at the cloud",
        )
        plates = [e for e in cloud.events.values() if e["type"] == "plate"]
        self.assertEqual(cloud.bad_signatures, [])
        self.assertEqual(cloud.duplicates, 0)
        self.assertEqual({e["decision"]["source"] for e in plates}, {"cloud"})
        self.assertEqual({e["decision"]["reason"] for e in plates}, {"paid"})
        self.assertEqual([p.channel for p in camera.relay_pulses], [1] * 5)
        self.assertEqual(cloud.image_before_event, [])
        self.assertTrue(all(image.startswith(b"\xff\xd8") for image in cloud.images.values()))

    async def test_a_slow_cloud_is_overruled_locally_within_the_deadline(self) -> None:
        cloud = self.cloud()
        cloud.decide_answer = Deferred()  # never answers
        await self.start(
            self.site(cloud, decision_timeout_seconds=0.3)
            | {"policy": {"unknown_plate": "allow"}}
        )
        camera = self.camera(plates=1, rate=20, no_plate_rate=0.0, timeout=2.0)
        await self.until(lambda: camera.answered_plates, what="the plate answered")
        # Answered within the camera's own 2 s timeout, though the cloud never answered.
        self.assertEqual(camera.failures["plate"], 0)
        await self.until(
            lambda: any(e["type"] == "plate" for e in cloud.events.values()), 15, "the event"
        )
        (plate,) = [e for e in cloud.events.values() if e["type"] == "plate"]
        self.assertEqual(plate["decision"], {"open": True, "reason": "unknown", "source": "local"})
        self.assertEqual(cloud.decide_cancelled, 1)

    async def test_a_sync_feed_open_reaches_a_comet_polling_camera(self) -> None:
        cloud = self.cloud()
        pages: list[dict[str, Any]] = []

        def sync(cursor: str | None) -> dict[str, Any]:
            if pages:
                return pages.pop(0)
            return {"cursor": cursor or "c0", "more": False}

        cloud.sync_pages = sync
        await self.start(self.site(cloud))
        camera = self.camera(heartbeat="comet")
        registry = self.gateway.service.registry
        await self.until(lambda: registry.held_polls() == 1, what="a held comet poll")
        expires = datetime.fromtimestamp(reactor.seconds() + 30, tz=timezone.utc).isoformat()
        pages.append(
            {
                "cursor": "c1",
                "more": False,
                "whitelist": {"replace": False, "upsert": [{"plate": "京A88888"}], "delete": []},
                "commands": [
                    {"id": "cloud-open-1", "camera": CAMERA, "type": "open", "expires_at": expires}
                ],
            }
        )
        await self.until(lambda: camera.relay_pulses, 15, "the cloud's open at the camera")
        self.assertEqual([(p.channel, p.source) for p in camera.relay_pulses], [(1, "comet")])
        self.assertIn("京A88888", self.gateway.service.plate_list.index)
        await self.until(
            lambda: any(
                e["type"] == "command_result" and e["raw"]["command"]["id"] == "cloud-open-1"
                for e in cloud.events.values()
            ),
            15,
            "the command result at the cloud",
        )
        (result,) = [e for e in cloud.events.values() if e["type"] == "command_result"]
        self.assertEqual(result["raw"]["command"]["outcome"], "delivered")
