"""Request signing in the Standard Webhooks form. Pure: no I/O.

Every request the gateway sends upstream carries::

    webhook-id: <unique id of this request; the same for retries of it>
    webhook-timestamp: <unix seconds when it was sent>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

where ``key`` is the base64-decoded part of the shared secret after
``whsec_`` and ``body`` the exact request body bytes (empty for a GET).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid

__all__ = [
    "SECRET_PREFIX",
    "MIN_KEY_BYTES",
    "new_message_id",
    "secret_key",
    "sign",
    "signature_headers",
]

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 16  # 128 bits: anything shorter is guessable


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret.

    Raises ``ValueError`` with a reason that never quotes the secret.
    """
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must be a Standard Webhooks secret starting with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {SECRET_PREFIX!r} is not valid base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the key must be at least {MIN_KEY_BYTES} bytes, not {len(key)}")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one request: ``v1,<base64 HMAC>``."""
    if "." in message_id:
        # The id is the first field of the signed text: a dot in it would let
        # two different (id, timestamp) pairs sign the same text.
        raise ValueError("a webhook id must not contain '.'")
    signed = b"%s.%d.%s" % (message_id.encode("ascii"), int(timestamp), body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three signing headers of a request."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign(key, message_id, timestamp, body),
    }


def new_message_id() -> str:
    """A fresh ``webhook-id``: ``msg_`` and 32 hex digits."""
    return f"msg_{uuid.uuid4().hex}"
