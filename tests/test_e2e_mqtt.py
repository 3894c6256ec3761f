"""The MQTT link against a real Mosquitto started by the test on a loopback
port: events pushed while the broker is down all arrive once it is up, in
order per camera; each with its stable id."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from gateway.admin.settings import token_digest
from support import CapturedLog, loopback_config
from support.mqtt import MOSQUITTO, NO_MOSQUITTO, BrokerTls, Mosquitto, Subscriber, password_file
from support.simulator import PARKINGCAM, VZENITH, SimulatorTestCase

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(MOSQUITTO is None, reason=NO_MOSQUITTO),
]

PREFIX = "anpr/site-7"
TOKEN = "monitor-token-0123456789"


class MqttBrokerTests(SimulatorTestCase):
    timeout = 60

    def broker(self, **options: Any) -> Mosquitto:
        broker = Mosquitto(self.mktemp(), **options)
        self.addCleanup(broker.stop)
        return broker

    def subscriber(self, broker: Mosquitto, *filters: str, **options: Any) -> Subscriber:
        subscriber = Subscriber(broker.port, filters or (f"{PREFIX}/#",), **options)
        self.addCleanup(subscriber.close)
        return subscriber

    def site(self, broker: Mosquitto, **mqtt: Any) -> dict[str, Any]:
        return loopback_config(
            gateway={"id": "site-7"},
            lane=[
                {"name": "Entrance", "camera": VZENITH, "sync_whitelist": False},
                {"name": "Exit", "camera": PARKINGCAM, "sync_whitelist": False},
            ],
            policy={"unknown_plate": "allow"},
            mqtt={"url": broker.url, "max_backoff_seconds": 1, "discovery": False, **mqtt},
        )

    async def test_plates_pushed_while_the_broker_is_down_all_arrive_in_order(self) -> None:
        await self.outage_then_every_plate_in_order()

    async def test_the_same_over_mqtt_5_with_a_session_expiry(self) -> None:
        await self.outage_then_every_plate_in_order(protocol="5")

    async def outage_then_every_plate_in_order(self, **options: Any) -> None:
        # Connections logged: which protocol each client spoke.
        broker = self.broker(extra=["log_type notice"])
        broker.start()
        # A kept session, so nothing is missed while it and the gateway reconnect.
        subscriber = self.subscriber(broker, f"{PREFIX}/events/#", session="e2e-watcher")
        broker.stop()
        await self.start(self.site(broker, **options))
        cameras = [
            self.camera(serialno=VZENITH, plates=30, rate=50, no_plate_rate=0.0),
            self.camera(serialno=PARKINGCAM, plates=30, rate=50, no_plate_rate=0.0),
        ]
        await self.until(
            lambda: all(len(c.answered_plates) == 30 for c in cameras), 20, "60 answered plates"
        )
        stored = sorted(await self.plate_events(), key=lambda e: e.seq)
        self.assertEqual(len(stored), 60)
        broker.start()

        def plates() -> list[dict[str, Any]]:
            return [json.loads(p) for p in subscriber.on(f"{PREFIX}/events/plate")]

        await self.until(lambda: len({e["id"] for e in plates()}) == 60, 20, "the 60 plates")
        received = plates()
        for camera in (VZENITH, PARKINGCAM):
            expected = [e.id for e in stored if e.camera == camera]
            seen: list[str] = []
            for event in received:
                if event["camera"] == camera and event["id"] not in seen:
                    seen.append(event["id"])
            self.assertEqual(seen, expected)
        mqtt = self.gateway.service.mqtt
        assert mqtt is not None
        await self.until(lambda: mqtt.publisher.in_flight == 0, 5, "everything acknowledged")
        status = await mqtt.status()
        self.assertEqual((status.state.value, status.queued), ("up", 0))
        self.assertEqual(subscriber.on(f"{PREFIX}/status"), [])  # not subscribed to it here
        # Mosquitto's log names the protocol: p2 is 3.1.1, p5 is 5.
        log = (broker.directory / "mosquitto.log").read_text(errors="replace")
        spoken = {
            client: level
            for client, level in re.findall(r"New client connected from \S+ as (\S+) \(p(\d)", log)
        }
        spoken.pop("e2e-watcher", None)
        self.assertEqual(set(spoken.values()), {"5" if options.get("protocol") == "5" else "2"})

    async def test_a_late_subscriber_gets_the_retained_lane_state_and_status(self) -> None:
        broker = self.broker()
        broker.start()
        await self.start(self.site(broker, discovery=True))
        camera = self.camera(serialno=VZENITH, plates=3, rate=50, no_plate_rate=0.0)
        await self.until(lambda: len(camera.answered_plates) == 3, 10, "three answered plates")
        mqtt = self.gateway.service.mqtt
        assert mqtt is not None
        await self.until(lambda: mqtt.is_connected and mqtt.publisher.in_flight == 0
                         and mqtt.publisher.published >= 3, 10, "the plates published")
        last = sorted(await self.plate_events(), key=lambda e: e.seq)[-1]
        late = self.subscriber(broker, f"{PREFIX}/lane/+/state", f"{PREFIX}/status",
                               "homeassistant/#")

        def entrance() -> list[bytes]:
            return late.on(f"{PREFIX}/lane/entrance/state")

        await self.until(lambda: entrance() and late.on(f"{PREFIX}/status"), 5, "retained state")
        state = json.loads(entrance()[-1])
        self.assertEqual((state["plate"], state["event_id"]), (last.plate, last.id))
        self.assertTrue(state["camera_online"])
        self.assertEqual(late.on(f"{PREFIX}/status"), [b"online"])
        await self.until(lambda: late.matching("homeassistant/binary_sensor/site-7/"), 5,
                         "discovery configs")
        await mqtt.disownServiceParent()  # a clean stop of the link alone
        await self.until(lambda: late.on(f"{PREFIX}/status")[-1:] == [b"offline"], 5,
                         "offline on a clean stop")

    async def test_open_published_on_the_broker_pulses_a_comet_cameras_relay(self) -> None:
        broker = self.broker()
        broker.start()
        watcher = self.subscriber(broker, f"{PREFIX}/command_result", f"{PREFIX}/lane/+/snapshot")
        command_topic = f"{PREFIX}/lane/entrance/command"
        # A retained command left on the broker is never obeyed: it would
        # fire again on every reconnect.
        watcher.client.publish(command_topic, b'{"action":"open"}', qos=1, retain=True).wait_for_publish(5)
        self.addCleanup(lambda: watcher.client.publish(command_topic, b"", qos=1, retain=True))
        config = self.site(broker, commands=True)
        config["lane"][0]["barrier_channel"] = 1
        await self.start(config)
        mqtt = self.gateway.service.mqtt
        assert mqtt is not None
        camera = self.camera(serialno=VZENITH, heartbeat="comet")
        registry = self.gateway.service.registry
        await self.until(lambda: registry.held_polls() == 1, 10, "a held comet poll")
        await self.until(lambda: mqtt.is_connected, 10, "the MQTT link up")
        watcher.client.publish(command_topic, b'{"action":"open","id":"ha-42"}', qos=1)
        await self.until(lambda: camera.relay_pulses, 10, "the relay pulse")
        self.assertEqual([(p.channel, p.source) for p in camera.relay_pulses], [(1, "comet")])

        def answers() -> list[dict[str, Any]]:
            return [json.loads(p) for p in watcher.on(f"{PREFIX}/command_result")]

        await self.until(lambda: answers(), 10, "the command's answer")
        [answer] = answers()
        self.assertEqual((answer["id"], answer["outcome"], answer["lane"]),
                         ("ha-42", "delivered", "Entrance"))
        # The broker restarts: the gateway subscribes again and the broker
        # hands it the retained open again.
        broker.stop()
        await self.until(lambda: not mqtt.is_connected, 10, "the link down")
        broker.start()
        await self.until(lambda: mqtt.is_connected and watcher.client.is_connected(), 10,
                         "the link and the watcher back")
        watcher.client.publish(command_topic, b'{"action":"snapshot","id":"snap-1"}', qos=1)
        await self.until(lambda: len(answers()) == 2, 20, "the snapshot's answer")
        snapshot = answers()[1]
        self.assertEqual((snapshot["id"], snapshot["outcome"]), ("snap-1", "completed"))
        image = watcher.on(f"{PREFIX}/lane/entrance/snapshot")
        self.assertEqual(len(image[0]), snapshot["image_bytes"])
        self.assertTrue(image[0].startswith(b"\xff\xd8"))
        self.assertEqual(len(camera.relay_pulses), 1)  # the retained open never fired


class MqttTlsTests(SimulatorTestCase):
    """``mqtts://`` with a CA of the test's own and a client certificate, and
    a login from a password file; wrong credentials and a wrong CA."""

    timeout = 60

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        self.broker_tls = BrokerTls.create(directory / "tls")
        users = password_file(directory / "passwd", {"site-7": "right horse", "watcher": "w"})
        self.mosquitto = Mosquitto(
            str(directory / "broker"),
            anonymous=False,
            listener=self.broker_tls.listener(require_certificate=True),
            extra=[f"password_file {users}"],
        )
        self.mosquitto.start()
        self.addCleanup(self.mosquitto.stop)

    def site(self, **mqtt: Any) -> dict[str, Any]:
        settings = {
            "url": f"mqtts://127.0.0.1:{self.mosquitto.port}",
            "username": "site-7",
            "password": "right horse",
            "ca_file": self.broker_tls.ca,
            "client_cert": self.broker_tls.client_cert,
            "max_backoff_seconds": 1,
            "discovery": False,
            **mqtt,
        }
        return loopback_config(
            gateway={"id": "site-7"},
            lane=[{"name": "Entrance", "camera": VZENITH, "sync_whitelist": False}],
            policy={"unknown_plate": "allow"},
            mqtt=settings,
            admin={"tokens": [{"name": "monitor", "sha256": token_digest(TOKEN), "role": "viewer"}]},
        )

    async def admin_get(self, path: str) -> bytes:
        """``path`` from the gateway's admin listener, as a viewer."""
        response = await treq.get(
            f"http://127.0.0.1:{self.gateway.admin_port}{path}",
            headers=Headers({"Authorization": [f"Bearer {TOKEN}"]}),
            timeout=5,
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        self.assertEqual(response.code, 200)
        body: bytes = await response.content()
        return body

    def mqtt_lines(self, captured: CapturedLog) -> list[str]:
        return [text for text in captured.texts() if "MQTT" in text]

    async def test_plates_reach_the_broker_over_tls_with_a_login(self) -> None:
        watcher = Subscriber(self.mosquitto.port, [f"{PREFIX}/#"], tls=self.broker_tls.client_context(),
                             username="watcher", password="w")
        self.addCleanup(watcher.close)
        await self.start(self.site())
        camera = self.camera(serialno=VZENITH, plates=2, rate=50, no_plate_rate=0.0)
        await self.until(lambda: len(camera.answered_plates) == 2, 10, "two answered plates")
        await self.until(lambda: len(watcher.on(f"{PREFIX}/events/plate")) >= 2, 10,
                         "the plates on the broker")
        self.assertEqual(watcher.on(f"{PREFIX}/status")[-1:], [b"online"])
        mqtt = self.gateway.service.mqtt
        assert mqtt is not None
        status = await mqtt.status()
        self.assertEqual((status.state.value, status.last_error), ("up", None))

    async def test_a_wrong_password_is_one_error_line_and_the_gateway_goes_on(self) -> None:
        with CapturedLog() as captured:
            await self.start(self.site(password="wrong horse"))
            mqtt = self.gateway.service.mqtt
            assert mqtt is not None
            await self.until(lambda: mqtt.failed_attempts >= 3, 15, "three refused attempts")
            camera = self.camera(serialno=VZENITH, plates=2, rate=50, no_plate_rate=0.0)
            await self.until(lambda: len(camera.answered_plates) == 2, 10, "plates still answered")
        lines = self.mqtt_lines(captured)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("is down: the broker refused the connection: Not authorized", lines[0])
        self.assertIn("Check [mqtt] username, password", lines[0])
        self.assertNotIn("wrong horse", "\n".join(captured.texts()))
        self.assertEqual(len(await self.plate_events()), 2)
        # The status page and the metrics say so.
        link = json.loads(await self.admin_get("/api/status"))["mqtt"]
        self.assertEqual((link["configured"], link["state"], link["connected"]), (True, "down", False))
        self.assertIn("Not authorized", link["last_error"])
        self.assertGreaterEqual(link["queued"], 3)  # two plates and the camera online
        metrics = (await self.admin_get("/metrics")).decode()
        self.assertIn("anpr_gateway_mqtt_connected 0.0", metrics)
        self.assertIn(f"anpr_gateway_mqtt_queued {float(link['queued'])}", metrics)

    async def test_a_broker_certificate_from_another_ca_is_one_clear_line(self) -> None:
        other = BrokerTls.create(Path(self.mktemp()))
        with CapturedLog() as captured:
            await self.start(self.site(ca_file=other.ca))
            mqtt = self.gateway.service.mqtt
            assert mqtt is not None
            await self.until(lambda: mqtt.failed_attempts >= 3, 15, "three failed attempts")
        lines = self.mqtt_lines(captured)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("is down: TLS: the broker's certificate is not trusted", lines[0])
        self.assertIn("ca_file", lines[0])
        status = await mqtt.status()
        self.assertEqual(status.state.value, "down")
        self.assertIn("not trusted", status.last_error or "")


class MqttFleetAclTests(SimulatorTestCase):
    """The fleet ACL of etc/mosquitto/anpr-fleet.acl (docs/mqtt.md) on a real
    Mosquitto: a gateway publishes its own topics and takes its commands;
    Home Assistant sees it and opens its barrier; another gateway cannot."""

    timeout = 60

    async def test_the_documented_acl_lets_each_party_do_its_part_only(self) -> None:
        directory = Path(self.mktemp())
        users = password_file(directory / "passwd", {
            "site-7": "p7", "site-8": "p8", "homeassistant": "ha",
        })
        acl = Path(__file__).parent.parent / "etc" / "mosquitto" / "anpr-fleet.acl"
        broker = Mosquitto(str(directory / "broker"), anonymous=False,
                           extra=[f"password_file {users}", f"acl_file {acl}"])
        broker.start()
        self.addCleanup(broker.stop)
        home = Subscriber(broker.port, ["anpr/#", "homeassistant/#"], username="homeassistant",
                          password="ha")
        self.addCleanup(home.close)
        intruder = Subscriber(broker.port, ["anpr/site-7/#"], username="site-8", password="p8")
        self.addCleanup(intruder.close)
        config = loopback_config(
            gateway={"id": "site-7"},
            lane=[{"name": "Entrance", "camera": VZENITH, "sync_whitelist": False}],
            policy={"unknown_plate": "allow"},
            mqtt={"url": broker.url, "username": "site-7", "password": "p7",
                  "max_backoff_seconds": 1, "commands": True},
        )
        await self.start(config)
        mqtt = self.gateway.service.mqtt
        assert mqtt is not None
        camera = self.camera(serialno=VZENITH, heartbeat="comet", plates=1, rate=50,
                             no_plate_rate=0.0)
        await self.until(lambda: home.on(f"{PREFIX}/events/plate"), 10, "the plate at HA")
        await self.until(lambda: home.on(f"{PREFIX}/status") == [b"online"], 5, "online")
        await self.until(lambda: home.matching("homeassistant/button/site-7/"), 5, "discovery")
        await self.until(lambda: self.gateway.service.registry.held_polls() == 1, 10, "a held poll")
        pulses = len(camera.relay_pulses)
        command = f"{PREFIX}/lane/entrance/command"
        # Another gateway's login may neither read site-7's events nor command it.
        intruder.client.publish(command, b'{"action":"open","id":"intruder"}', qos=1).wait_for_publish(5)
        home.client.publish(command, b'{"action":"open","id":"ha"}', qos=1).wait_for_publish(5)

        def answers() -> list[str]:
            return [json.loads(p)["id"] for p in home.on(f"{PREFIX}/command_result")]

        await self.until(lambda: answers(), 10, "Home Assistant's command answered")
        await self.until(lambda: len(camera.relay_pulses) == pulses + 1, 10, "the relay pulse")
        self.assertEqual(answers(), ["ha"])
        self.assertEqual(intruder.messages, [])
        status = await mqtt.status()
        self.assertEqual((status.state.value, status.commands_taken), ("up", 1))
