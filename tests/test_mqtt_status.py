"""The MQTT link on the status page and in /metrics, in memory: connected
or not, events queued behind the broker's cursor, published, failed
attempts and the last error; commands taken and rejected."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.mqtt.service import MqttService
from gateway.tap import Seams, build_mqtt
from support import loopback_config
from support.camera import START, MemoryCamera
from support.gateway import plate_body
from support.mqtt import MemoryBroker
from support.parts import GatewayParts, build_parts, parts_config

CAMERA = "d85b1269-8f942256"
PREFIX = "anpr/site-7"


def site(**mqtt: Any) -> dict[str, Any]:
    return loopback_config(
        gateway={"id": "site-7"},
        lane=[{"name": "Entrance", "camera": CAMERA, "sync_whitelist": False}],
        policy={"unknown_plate": "allow"},
        mqtt={"url": "mqtt://broker.test", "discovery": False, **mqtt},
    )


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` in a Prometheus text page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


class MqttStatusTests(TestCase):
    timeout = 10

    async def start(self, config: dict[str, Any]) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        gateway_config = parts_config(config, self.mktemp())
        assert gateway_config.mqtt is not None
        self.parts: GatewayParts = build_parts(gateway_config, self.clock)
        self.broker = MemoryBroker(will_topic=f"{PREFIX}/status")
        self.mqtt: MqttService = build_mqtt(
            self.parts.root, self.parts.core, self.parts.cameras, gateway_config.mqtt,
            gateway_config.lanes, seams=Seams(mqtt_client=lambda settings, will: self.broker),
        )
        await self.parts.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.parts.stop()))

    async def plates(self, count: int) -> None:
        camera = MemoryCamera(self.parts)
        for number in range(1, count + 1):
            reply = await camera.post(plate_body(CAMERA, f"京A{number:05d}", plateid=number))
            assert reply.status == 200, reply

    async def metrics(self) -> str:
        return (await self.parts.core.metrics.render()).decode()

    async def test_queued_while_the_broker_is_away_then_published(self) -> None:
        await self.start(site())
        self.broker.fail("connection refused")
        await self.plates(3)  # three plates and the camera coming online
        status = (await self.mqtt.status()).to_json()
        self.assertEqual(
            {k: status[k] for k in ("state", "connected", "queued", "published", "failed", "last_error")},
            {"state": "backing_off", "connected": False, "queued": 4, "published": 0, "failed": 1,
             "last_error": "connection refused"},
        )
        text = await self.metrics()
        self.assertEqual(metric(text, "anpr_gateway_mqtt_connected"), 0)
        self.assertEqual(metric(text, "anpr_gateway_mqtt_queued"), 4)
        self.assertEqual(metric(text, "anpr_gateway_mqtt_failed_total"), 1)
        self.clock.advance(1.01)
        self.broker.accept()
        status = (await self.mqtt.status()).to_json()
        self.assertEqual((status["state"], status["queued"], status["published"], status["last_error"]),
                         ("up", 0, 4, None))
        text = await self.metrics()
        self.assertEqual(metric(text, "anpr_gateway_mqtt_connected"), 1)
        self.assertEqual(metric(text, "anpr_gateway_mqtt_queued"), 0)
        self.assertEqual(metric(text, "anpr_gateway_mqtt_published_total"), 4)

    async def test_queued_counts_what_the_broker_has_not_acknowledged(self) -> None:
        await self.start(site())
        self.broker.auto_ack = False
        self.broker.accept()
        await self.plates(2)
        status = await self.mqtt.status()
        self.assertEqual((status.connected, status.queued, status.in_flight), (True, 3, 3))
        self.broker.ack_all()
        status = await self.mqtt.status()
        self.assertEqual((status.queued, status.in_flight, status.published), (0, 0, 3))

    async def test_commands_taken_and_rejected(self) -> None:
        await self.start(site(commands=True))
        self.broker.accept()
        self.broker.deliver(f"{PREFIX}/lane/entrance/command", b"{")
        self.broker.deliver(f"{PREFIX}/whitelist/command", b'{"action": "add", "plate": "A1"}')
        status = (await self.mqtt.status()).to_json()
        self.assertEqual((status["commands"], status["commands_taken"], status["commands_rejected"]),
                         (True, 2, 1))
        text = await self.metrics()
        self.assertIn('anpr_gateway_mqtt_commands_total{rejected="true"} 1.0', text)
        self.assertIn('anpr_gateway_mqtt_commands_total{rejected="false"} 1.0', text)

    async def test_no_mqtt_metrics_without_the_section(self) -> None:
        config = site()
        del config["mqtt"]
        parts = build_parts(parts_config(config, self.mktemp()), Clock())
        await parts.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(parts.stop()))
        self.assertNotIn("anpr_gateway_mqtt", (await parts.core.metrics.render()).decode())
