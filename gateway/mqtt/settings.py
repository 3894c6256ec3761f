"""The ``[mqtt]`` settings: which broker, how to log in, what to publish.

A site without ``[mqtt]`` publishes nothing: no part of :mod:`gateway.mqtt`
runs there.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import attrs

from gateway.schema import (
    ConfigError,
    Section,
    boolean,
    describe,
    existing_file,
    integer,
    one_of,
    optional,
    setting,
    text,
)

__all__ = ["MQTT", "MqttSettings", "lane_slug"]

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def _url(value: object, path: str) -> str:
    checked: str = text(max_length=2048, no_spaces=True)(value, path)
    parts = urlsplit(checked)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(
            path, f"must be an mqtt://host[:port] or mqtts://host[:port] URL, got {describe(checked)}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(path, "must have no path, query or fragment")
    if parts.username or parts.password:
        raise ConfigError(path, "must not carry credentials (use username and password)")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(path, f"has an invalid port: {describe(checked)}") from None
    if port == 0:
        raise ConfigError(path, f"has an invalid port: {describe(checked)}")
    return checked.rstrip("/")


# Topic levels the gateway builds on: no wildcards, no empty levels, no
# leading or trailing slash (a topic "/x" has an empty first level).
_TOPIC_PREFIX = r"[^#+/\s]+(/[^#+/\s]+)*"
_topic_prefix = text(
    pattern=_TOPIC_PREFIX,
    rule="topic levels separated by \"/\", without \"+\", \"#\", spaces or empty levels",
)
_client_id = text(pattern=r"[A-Za-z0-9._:-]{1,128}", rule="1-128 characters of A-Z, a-z, 0-9, . _ : -")


def _secret(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, "must be a non-empty string")
    return value


def lane_slug(name: str) -> str:
    """A lane's name as one topic level and Home Assistant object id:
    ASCII letters and digits in lower case, other letters as their code point
    (``入口`` -> ``u5165_u53e3``), runs of anything else made ``_``
    (``Entrance 2`` -> ``entrance_2``)."""
    parts: list[str] = []
    for character in name.casefold():
        if character.isascii() and character.isalnum():
            parts.append(character)
        elif character.isalnum():
            parts.append(f"_u{ord(character):x}_")
        else:
            parts.append("_")
    slug = re.sub(r"_+", "_", "".join(parts)).strip("_")
    return slug or "lane"


@attrs.frozen
class MqttSettings:
    """``[mqtt]``: the broker and what goes to it. See docs/mqtt.md.

    ``password`` is never logged (left out of ``repr``). ``ca_file`` replaces
    the system's trusted certificates for ``mqtts://``; ``client_cert`` (with
    ``client_key`` when the key is in its own file) is presented for mutual
    TLS. ``gateway_id`` is ``[gateway] id``; ``client_id`` and
    ``topic_prefix`` default from it.
    """

    url: str = setting(_url)
    gateway_id: str = setting(text(max_length=128), key=False)
    username: str | None = setting(optional(text(max_length=256)), default=None)
    password: str | None = setting(optional(_secret), default=None, repr=False)
    ca_file: str | None = setting(optional(existing_file), default=None)
    client_cert: str | None = setting(optional(existing_file), default=None)
    client_key: str | None = setting(optional(existing_file), default=None)
    client_id: str | None = setting(optional(_client_id), default=None)
    topic_prefix: str | None = setting(optional(_topic_prefix), default=None)
    qos: int = setting(integer(0, 1), default=1)
    keepalive_seconds: int = setting(integer(5, 3600), default=60)
    discovery: bool = setting(boolean, default=True)
    discovery_prefix: str = setting(_topic_prefix, default="homeassistant")
    images: str = setting(one_of("none", "crop"), default="none")
    image_max_bytes: int = setting(integer(1024, 1_048_576), default=262_144)
    commands: bool = setting(boolean, default=False)
    protocol: str = setting(one_of("3.1.1", "5"), default="3.1.1")
    max_backoff_seconds: int = setting(integer(1, 3600), default=60)
    session_expiry_seconds: int = setting(integer(60, 4_294_967_295), default=604_800)

    def __attrs_post_init__(self) -> None:
        if self.client_key is not None and self.client_cert is None:
            raise ConfigError("client_key", "is only used together with client_cert")
        if self.password is not None and self.username is None:
            raise ConfigError("password", "is only used together with username")
        if not self.tls and (self.ca_file or self.client_cert):
            raise ConfigError("ca_file" if self.ca_file else "client_cert", "needs an mqtts:// url")

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")

    @property
    def host(self) -> str:
        hostname = urlsplit(self.url).hostname
        assert hostname is not None
        return hostname

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or _DEFAULT_PORTS[parts.scheme]

    @property
    def client(self) -> str:
        """The MQTT client id: ``client_id``, else ``anpr-gateway-<gateway id>``."""
        if self.client_id is not None:
            return self.client_id
        return "anpr-gateway-" + re.sub(r"[^A-Za-z0-9._:-]", "-", self.gateway_id)

    @property
    def prefix(self) -> str:
        """The topic prefix: ``topic_prefix``, else ``anpr/<gateway id>``."""
        return self.topic_prefix if self.topic_prefix is not None else f"anpr/{self.gateway_id}"

    @property
    def node_id(self) -> str:
        """The gateway as a Home Assistant node id (``[a-zA-Z0-9_-]``)."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.gateway_id)


MQTT = Section(MqttSettings)
