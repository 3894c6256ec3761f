"""The ``[upstream]`` settings: where the cloud is and how the gateway talks to it.

A site without ``[upstream]`` is standalone: no part of :mod:`gateway.upstream`
runs there.
"""

from __future__ import annotations

import enum
from urllib.parse import urlsplit

import attrs

from gateway.schema import (
    ConfigError,
    Section,
    describe,
    existing_file,
    integer,
    number,
    one_of,
    optional,
    setting,
    text,
)
from gateway.upstream.signing import secret_key

__all__ = ["ImagePolicy", "UPSTREAM", "UpstreamSettings"]


class ImagePolicy(str, enum.Enum):
    """Which images of an event go upstream after the event was accepted."""

    NONE = "none"
    CROP = "crop"  # the plate crop only: small, and enough to check the read
    ALL = "all"  # the crop and the full frame

    @property
    def kinds(self) -> tuple[str, ...]:
        """The store's image kinds this policy sends."""
        if self is ImagePolicy.ALL:
            return ("full", "crop")
        if self is ImagePolicy.CROP:
            return ("crop",)
        return ()


def _image_policy(value: object, path: str) -> ImagePolicy:
    if isinstance(value, ImagePolicy):
        return value
    checked: str = one_of("none", "crop", "all")(value, path)
    return ImagePolicy(checked)


def _url(value: object, path: str) -> str:
    checked: str = text(max_length=2048, no_spaces=True)(value, path)
    parts = urlsplit(checked)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, f"must be an http:// or https:// URL, got {describe(checked)}")
    if parts.query or parts.fragment:
        raise ConfigError(path, "must have no query or fragment (paths are appended)")
    if parts.username or parts.password:
        raise ConfigError(path, "must not carry credentials (requests are signed)")
    return checked.rstrip("/")


def _secret(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {describe(value)}")
    try:
        secret_key(value)
    except ValueError as error:
        # The reason never repeats the secret itself.
        raise ConfigError(path, str(error)) from None
    return value


_gateway_id = text(max_length=128)


@attrs.frozen
class UpstreamSettings:
    """``[upstream]``: how the gateway reaches its cloud. See docs/upstream-api.md.

    ``secret`` is the Standard Webhooks secret ``whsec_<base64>`` shared with
    the cloud (never logged, left out of ``repr``). ``ca_file`` replaces the
    system's trusted certificates for an ``https`` URL; ``client_cert`` (with
    ``client_key`` when the key is in its own file) is presented for mutual
    TLS. ``gateway_id`` is ``[gateway] id``. Times are seconds.
    """

    url: str = setting(_url)
    secret: str = setting(_secret, repr=False)
    gateway_id: str = setting(_gateway_id, key=False)
    decision_timeout_seconds: float = setting(number(0.1, 10), default=1.5)
    sync_interval_seconds: float = setting(number(1, 3600), default=10.0)
    ca_file: str | None = setting(optional(existing_file), default=None)
    client_cert: str | None = setting(optional(existing_file), default=None)
    client_key: str | None = setting(optional(existing_file), default=None)
    images: ImagePolicy = setting(_image_policy, default=ImagePolicy.CROP)
    batch_size: int = setting(integer(1, 1000), default=200)
    batch_max_bytes: int = setting(integer(65_536, 67_108_864), default=1_048_576)
    outbox_max_events: int = setting(integer(10, 100_000_000), default=1_000_000)
    max_backoff_seconds: float = setting(number(1, 86400), default=300.0)
    request_timeout_seconds: float = setting(number(1, 600), default=30.0)

    def __attrs_post_init__(self) -> None:
        if self.client_key is not None and self.client_cert is None:
            raise ConfigError("client_key", "is only used together with client_cert")

    @property
    def signing_key(self) -> bytes:
        """The HMAC key: the base64-decoded part of the secret after ``whsec_``."""
        return secret_key(self.secret)

    @property
    def https(self) -> bool:
        return self.url.startswith("https://")


UPSTREAM = Section(UpstreamSettings)
