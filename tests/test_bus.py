"""The live-event bus, and what the gateway publishes on it."""

from __future__ import annotations

from typing import Any

from gateway.bus import EventBus
from support import loopback_config
from support.camera import CameraServerTestCase
from support.gateway import plate_body


def test_listeners_get_everything_until_unsubscribed_and_failures_stay_theirs() -> None:
    bus = EventBus()
    seen: list[tuple[str, Any]] = []

    def broken(topic: str, payload: Any) -> None:
        raise RuntimeError("listener bug")

    bus.subscribe(broken)
    unsubscribe = bus.subscribe(lambda topic, payload: seen.append((topic, payload)))
    bus.publish("camera", {"serialno": "x"})
    unsubscribe()
    bus.publish("camera", {"serialno": "y"})
    assert seen == [("camera", {"serialno": "x"})]


class PublishedTests(CameraServerTestCase):
    config = loopback_config(
        lane=[{"name": "Entrance", "camera": "d85b1269-8f942256", "unknown_plate": "allow",
               "sync_whitelist": False}]
    )

    async def test_kept_plates_camera_changes_and_commands_are_published(self) -> None:
        await self.start()
        seen: list[tuple[str, Any]] = []
        self.parts.bus.subscribe(lambda topic, payload: seen.append((topic, payload)))
        client = self.camera()
        body = plate_body("d85b1269-8f942256", "京A12345", plateid=7)
        await client.post(body)
        await client.post(body)  # sent again: kept once, published once
        self.parts.control.open("d85b1269-8f942256")
        await client.post(plate_body("d85b1269-8f942256", "京B1", plateid=8))
        topics = [topic for topic, _ in seen]
        self.assertEqual(topics.count("camera"), 1)
        plates = [p for t, p in seen if t == "event" and p["type"] == "plate"]
        self.assertEqual([p["plate"] for p in plates], ["京A12345", "京B1"])
        self.assertEqual(plates[0]["decision"], {"open": True, "reason": "unknown", "source": "local"})
        commands = [p for t, p in seen if t == "command"]
        self.assertEqual([(c["type"], c["state"]) for c in commands], [("open", "delivered")])
