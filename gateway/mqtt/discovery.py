"""Home Assistant MQTT discovery: the retained configs that make each lane
a device (last plate, camera online, last crop, open button) and the gateway
another (store health, outbox depth, cloud link). Pure: no I/O.

Topics follow Home Assistant's scheme
``<discovery_prefix>/<component>/<node_id>/<object_id>/config``; every entity
is available while ``<prefix>/status`` is ``online``.
"""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.mqtt.lanes import lane_topic
from gateway.mqtt.settings import MqttSettings, lane_slug
from gateway.site import Lanes

__all__ = ["discovery_configs", "gateway_state_topic"]


def gateway_state_topic(prefix: str) -> str:
    return f"{prefix}/gateway/state"


def discovery_configs(settings: MqttSettings, lanes: Lanes) -> dict[str, dict[str, Any]]:
    """Every config topic with its payload, for the site as configured."""
    prefix, node, root = settings.prefix, settings.node_id, settings.discovery_prefix
    available = {
        "availability_topic": f"{prefix}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    gateway_device_id = f"anpr_{node}"
    gateway_device = {
        "identifiers": [gateway_device_id],
        "name": f"ANPR gateway {settings.gateway_id}",
        "manufacturer": "anpr-gateway",
        "model": "ANPR edge gateway",
        "sw_version": __version__,
    }
    configs: dict[str, dict[str, Any]] = {}

    def add(component: str, object_id: str, payload: dict[str, Any]) -> None:
        unique = f"anpr_{node}_{object_id}"
        configs[f"{root}/{component}/{node}/{object_id}/config"] = {
            "unique_id": unique,
            "object_id": unique,
            **payload,
            **available,
        }

    for lane in lanes:
        slug = lane_slug(lane.name)
        state = lane_topic(prefix, lane.name, "state")
        device = {
            "identifiers": [f"{gateway_device_id}_{slug}"],
            "name": f"{lane.name} lane",
            "manufacturer": "anpr-gateway",
            "model": f"ANPR lane (camera {lane.camera})",
            "via_device": gateway_device_id,
        }
        add("sensor", f"{slug}_plate", {
            "name": "Last plate",
            "icon": "mdi:car",
            "state_topic": state,
            "value_template": "{{ value_json.plate or '' }}",
            "json_attributes_topic": state,
            "json_attributes_template": (
                "{{ {'decision': value_json.decision, 'reason': value_json.reason,"
                " 'time': value_json.time, 'event_id': value_json.event_id,"
                " 'barrier_opened_at': value_json.barrier_opened_at} | tojson }}"
            ),
            "device": device,
        })
        add("binary_sensor", f"{slug}_camera", {
            "name": "Camera online",
            "device_class": "connectivity",
            "state_topic": state,
            "value_template": "{{ 'ON' if value_json.camera_online else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device": device,
        })
        if settings.images == "crop":
            add("image", f"{slug}_crop", {
                "name": "Last plate crop",
                "image_topic": lane_topic(prefix, lane.name, "image"),
                "content_type": "image/jpeg",
                "device": device,
            })
        if settings.commands:
            add("button", f"{slug}_open", {
                "name": "Open barrier",
                "icon": "mdi:boom-gate-up",
                "command_topic": lane_topic(prefix, lane.name, "command"),
                "payload_press": '{"action":"open"}',
                "retain": False,
                "device": device,
            })
    gateway_state = gateway_state_topic(prefix)
    for object_id, name, template, extra in (
        ("store", "Store", "{{ value_json.store }}", {"icon": "mdi:database"}),
        ("outbox_depth", "Cloud outbox depth", "{{ value_json.outbox_depth }}",
         {"state_class": "measurement", "unit_of_measurement": "events"}),
        ("mqtt_queued", "MQTT queue", "{{ value_json.mqtt_queued }}",
         {"state_class": "measurement", "unit_of_measurement": "events"}),
        ("cloud_link", "Cloud link", "{{ value_json.cloud_link }}", {"icon": "mdi:cloud"}),
    ):
        add("sensor", object_id, {
            "name": name,
            "state_topic": gateway_state,
            "value_template": template,
            "device": gateway_device,
            **extra,
        })
    return configs
