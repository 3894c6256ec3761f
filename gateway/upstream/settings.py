"""The ``[upstream]`` settings: where the cloud is and how the gateway talks to it.

A site without ``[upstream]`` is standalone: no part of :mod:`gateway.upstream`
runs there.
"""

from __future__ import annotations

import enum
import math
from typing import Any
from urllib.parse import urlsplit

import attrs

from gateway.upstream.signing import secret_key

__all__ = ["ImagePolicy", "UpstreamConfig", "UpstreamSettingsError"]


class UpstreamSettingsError(ValueError):
    """A setting is unusable; ``key`` names it (e.g. ``"ca_file"``)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


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


def _image_policy(value: Any) -> ImagePolicy:
    try:
        return ImagePolicy(value)
    except ValueError:
        raise UpstreamSettingsError(
            "images", f'must be "none", "crop" or "all", not {value!r}'
        ) from None


def _check_url(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamSettingsError("url", f"must be an http:// or https:// URL, not {value!r}")
    if parts.query or parts.fragment:
        raise UpstreamSettingsError("url", "must have no query or fragment (paths are appended)")
    if parts.username or parts.password:
        raise UpstreamSettingsError("url", "must not carry credentials (requests are signed)")


def _strip_slash(value: str) -> str:
    return value.rstrip("/")


def _check_secret(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        secret_key(value)
    except ValueError as error:
        # The reason never repeats the secret itself.
        raise UpstreamSettingsError("secret", str(error)) from None


def _check_gateway_id(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or value != value.strip() or len(value) > 128:
        raise UpstreamSettingsError(
            "gateway_id", f"must be 1 to 128 characters without surrounding spaces, not {value!r}"
        )


def _range(low: float, high: float, *, integer: bool = False) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not (low <= value <= high) or math.isnan(value):
            kind = "an integer" if integer else "a number"
            raise UpstreamSettingsError(
                attribute.name, f"must be {kind} from {low:g} to {high:g}, not {value!r}"
            )

    return check


def _optional_path(
    instance: Any, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise UpstreamSettingsError(attribute.name, "must be a file path")


def _check_client_pair(instance: UpstreamConfig, attribute: Any, value: str | None) -> None:
    if value is not None and instance.client_cert is None:
        raise UpstreamSettingsError("client_key", "is only used together with client_cert")


@attrs.frozen
class UpstreamConfig:
    """How the gateway reaches its cloud. See docs/upstream-api.md.

    ``secret`` is the Standard Webhooks secret ``whsec_<base64>`` shared with
    the cloud (never logged, left out of ``repr``). ``ca_file`` replaces the
    system's trusted certificates for an ``https`` URL; ``client_cert`` (with
    ``client_key`` when the key is in its own file) is presented for mutual
    TLS. Times are seconds.
    """

    url: str = attrs.field(converter=_strip_slash, validator=_check_url)
    secret: str = attrs.field(validator=_check_secret, repr=False)
    gateway_id: str = attrs.field(validator=_check_gateway_id)
    decision_timeout_seconds: float = attrs.field(default=1.5, validator=_range(0.1, 10.0))
    sync_interval_seconds: float = attrs.field(default=10.0, validator=_range(1.0, 3600.0))
    ca_file: str | None = attrs.field(default=None, validator=_optional_path)
    client_cert: str | None = attrs.field(default=None, validator=_optional_path)
    client_key: str | None = attrs.field(
        default=None, validator=[_optional_path, _check_client_pair]
    )
    images: ImagePolicy = attrs.field(default=ImagePolicy.CROP, converter=_image_policy)
    batch_size: int = attrs.field(default=200, validator=_range(1, 1000, integer=True))
    outbox_max_events: int = attrs.field(
        default=1_000_000, validator=_range(10, 100_000_000, integer=True)
    )
    max_backoff_seconds: float = attrs.field(default=300.0, validator=_range(1.0, 86400.0))
    request_timeout_seconds: float = attrs.field(default=30.0, validator=_range(1.0, 600.0))

    @property
    def signing_key(self) -> bytes:
        """The HMAC key: the base64-decoded part of the secret after ``whsec_``."""
        return secret_key(self.secret)

    @property
    def https(self) -> bool:
        return self.url.startswith("https://")
