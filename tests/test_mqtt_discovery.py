"""The lanes' retained state and Home Assistant discovery, in memory."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.config import parse_config
from gateway.mqtt.discovery import discovery_configs
from gateway.tap import Seams, build_mqtt
from support import loopback_config
from support.camera import START, MemoryCamera
from support.gateway import plate_body
from support.mqtt import MemoryBroker
from support.parts import build_parts, parts_config

CAMERA = "d85b1269-8f942256"
PREFIX = "anpr/site-7"
STATUS = f"{PREFIX}/status"

# What Home Assistant requires of each component's config (its MQTT
# discovery documentation), and what every entity here carries.
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "image": {"image_topic"},
    "button": {"command_topic"},
}
COMMON = {"unique_id", "name", "device", "availability_topic"}


def site(lanes: list[str], **mqtt: Any) -> dict[str, Any]:
    return loopback_config(
        gateway={"id": "site-7"},
        lane=[
            {"name": name, "camera": CAMERA if number == 0 else f"cam-{number}", "sync_whitelist": False}
            for number, name in enumerate(lanes)
        ],
        policy={"unknown_plate": "allow"},
        mqtt={"url": "mqtt://broker.test", **mqtt},
    )


def test_every_component_carries_the_keys_home_assistant_requires() -> None:
    config = parse_config(site(["Entrance", "Exit"], images="crop", commands=True))
    assert config.mqtt is not None
    configs = discovery_configs(config.mqtt, config.lanes)
    components = {topic.split("/")[1] for topic in configs}
    assert components == set(REQUIRED)
    for topic, payload in configs.items():
        root, component, node, object_id, leaf = topic.split("/")
        assert (root, node, leaf) == ("homeassistant", "site-7", "config")
        assert REQUIRED[component] | COMMON <= set(payload), topic
        assert payload["availability_topic"] == STATUS
        assert payload["device"]["identifiers"]
    button = configs["homeassistant/button/site-7/entrance_open/config"]
    assert button["command_topic"] == f"{PREFIX}/lane/entrance/command"
    assert json.loads(button["payload_press"]) == {"action": "open"}
    assert button["retain"] is False  # a retained press is ignored by the gateway
    assert len({payload["unique_id"] for payload in configs.values()}) == len(configs)


def test_no_image_or_button_unless_enabled() -> None:
    config = parse_config(site(["Entrance"]))
    assert config.mqtt is not None
    components = {topic.split("/")[1] for topic in discovery_configs(config.mqtt, config.lanes)}
    assert components == {"sensor", "binary_sensor"}


class RetainedTests(TestCase):
    timeout = 10

    async def start(self, data: dict[str, Any], state_dir: str | None = None) -> MemoryBroker:
        if not hasattr(self, "clock"):
            self.clock = Clock()
            self.clock.advance(START)
        self.state_dir = state_dir or self.mktemp()
        config = parts_config(data, self.state_dir)
        assert config.mqtt is not None
        parts = build_parts(config, self.clock)
        broker = MemoryBroker(will_topic=STATUS)
        build_mqtt(parts.root, parts.core, parts.cameras, config.mqtt, config.lanes,
                   seams=Seams(mqtt_client=lambda settings, will: broker))
        await parts.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(parts.stop()))
        self.parts = parts
        broker.accept()
        return broker

    async def test_lane_state_follows_the_plates(self) -> None:
        broker = await self.start(site(["Entrance"]))
        await MemoryCamera(self.parts).post(plate_body(CAMERA, "京A12345", plateid=1))
        state = json.loads(broker.retained[f"{PREFIX}/lane/entrance/state"])
        self.assertEqual(state["plate"], "京A12345")
        self.assertEqual((state["decision"], state["reason"]), ("open", "unknown"))
        self.assertTrue(state["camera_online"])
        self.assertEqual(state["barrier_opened_at"], state["time"])
        self.assertTrue(state["event_id"].startswith("p-"))

    async def test_discovery_is_retained_and_a_removed_lane_is_cleared(self) -> None:
        broker = await self.start(site(["Entrance", "Side gate"]))
        old = "homeassistant/sensor/site-7/side_gate_plate/config"
        self.assertIn(old, broker.retained)
        self.assertIn("homeassistant/sensor/site-7/outbox_depth/config", broker.retained)
        gateway_state = json.loads(broker.retained[f"{PREFIX}/gateway/state"])
        self.assertEqual(gateway_state["store"], "ok")
        self.assertEqual(gateway_state["cloud_link"], "none")
        await self.parts.stop()
        again = await self.start(site(["Entrance"]), state_dir=self.state_dir)
        cleared = [sent for sent in again.sent if sent.topic == old]
        self.assertEqual([(sent.payload, sent.retain) for sent in cleared], [(b"", True)])
        self.assertIn("homeassistant/sensor/site-7/entrance_plate/config", again.retained)
