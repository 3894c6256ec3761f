"""The ``[mqtt]`` section: defaults, checks and the keys it derives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from gateway.mqtt.settings import lane_slug


def mqtt(**values: Any) -> dict[str, Any]:
    return {"gateway": {"id": "site-7"}, "mqtt": {"url": "mqtt://broker.local", **values}}


def error_of(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value


def test_without_the_section_nothing_is_published() -> None:
    assert parse_config({}).mqtt is None


def test_defaults_come_from_the_gateway_id() -> None:
    settings = parse_config(mqtt()).mqtt
    assert settings is not None
    assert (settings.host, settings.port, settings.tls) == ("broker.local", 1883, False)
    assert settings.client == "anpr-gateway-site-7"
    assert settings.prefix == "anpr/site-7"
    assert (settings.qos, settings.discovery, settings.discovery_prefix) == (1, True, "homeassistant")
    assert (settings.images, settings.commands, settings.protocol) == ("none", False, "3.1.1")


def test_mqtts_defaults_to_port_8883_and_takes_certificates(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = parse_config(
        mqtt(url="mqtts://broker.local", ca_file=str(ca), client_cert=str(ca), topic_prefix="fleet/a")
    ).mqtt
    assert settings is not None
    assert (settings.port, settings.tls, settings.prefix) == (8883, True, "fleet/a")


def test_the_password_is_never_shown() -> None:
    settings = parse_config(mqtt(username="site", password="hunter2-secret")).mqtt
    assert "hunter2-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("values", "path", "reason"),
    [
        ({"url": "http://broker"}, "mqtt.url", 'must be an mqtt://host[:port] or mqtts://host[:port] URL, got "http://broker"'),
        ({"url": "mqtt://u:p@broker"}, "mqtt.url", "must not carry credentials (use username and password)"),
        ({"url": "mqtt://broker/x"}, "mqtt.url", "must have no path, query or fragment"),
        ({"qos": 2}, "mqtt.qos", "must be between 0 and 1, got 2"),
        ({"protocol": "5.0"}, "mqtt.protocol", 'must be one of "3.1.1", "5", got "5.0"'),
        ({"images": "all"}, "mqtt.images", 'must be one of "none", "crop", got "all"'),
        ({"topic_prefix": "anpr/#"}, "mqtt.topic_prefix", 'must be topic levels separated by "/", without "+", "#", spaces or empty levels, got "anpr/#"'),
        ({"topic_prefix": "/anpr"}, "mqtt.topic_prefix", 'must be topic levels separated by "/", without "+", "#", spaces or empty levels, got "/anpr"'),
        ({"password": "x"}, "mqtt.password", "is only used together with username"),
        ({"keepalive_seconds": 1}, "mqtt.keepalive_seconds", "must be between 5 and 3600, got 1"),
        ({"qos": True}, "mqtt.qos", "must be an integer, got true"),
        ({"commands": "yes"}, "mqtt.commands", 'must be true or false, got "yes"'),
        ({"port": 1883}, "mqtt.port", None),
    ],
)
def test_bad_values_name_the_key(values: dict[str, Any], path: str, reason: str | None) -> None:
    error = error_of(mqtt(**values))
    assert error.path == path
    if reason is not None:
        assert error.reason == reason


def test_the_url_is_required() -> None:
    assert str(error_of({"mqtt": {}})) == "mqtt.url: missing required key"


def test_ca_file_needs_mqtts(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert error_of(mqtt(ca_file=str(ca))).path == "mqtt.ca_file"


def test_lane_slugs() -> None:
    assert lane_slug("Entrance 2") == "entrance_2"
    assert lane_slug("  Sortie/Nord ") == "sortie_nord"
    assert lane_slug("入口") == "u5165_u53e3"
    assert lane_slug("--") == "lane"


def test_two_lanes_with_one_topic_name_are_refused() -> None:
    lanes = [
        {"name": "Entrance 1", "camera": "A"},
        {"name": "entrance-1", "camera": "B"},
    ]
    error = error_of({**mqtt(), "lane": lanes})
    assert error.path == "lane[2].name"
    # without [mqtt] the slugs do not matter
    assert len(parse_config({"lane": lanes}).lanes) == 2
