"""Event identifiers.

A plate event's id is derived from the camera's own event, never from when or
where the gateway received it: a push the camera re-sends (transport failure,
offline upload interrupted by a live read) and the same push received by two
gateways of one site (a camera with alternate servers) get the same id, so the
store and the cloud can deduplicate on it (PROTOCOL.md section 5).

Events without a camera identity (IO changes, serial data, online/offline
transitions, command results) get a random id.

Ids are short, lower-case and URL-safe (``[a-z0-9_-]``): they appear in admin
URLs and name image files on disk.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

__all__ = ["EVENT_ID_PATTERN", "is_valid_event_id", "new_event_id", "plate_event_id"]

# Bump only together with a plan for the cloud: changing the derivation
# changes the id of a re-sent event and defeats deduplication across versions.
_DERIVATION_VERSION = "v1"

_ID_CHARS = 26  # 130 bits of base32

EVENT_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,15}-[a-z0-9]{16,64}$")
"""What every event id the store accepts looks like (safe as a file name and in a URL)."""

_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,15}$")


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").lower().rstrip("=")[:_ID_CHARS]


def plate_event_id(
    serialno: str,
    plateid: int | None,
    license: str,
    sec: int | None,
    usec: int | None,
) -> str:
    """The stable id of one plate result, e.g. ``"p-3k5x..."`` (28 characters).

    ``serialno`` is the camera's serial number (compared case-insensitively);
    the caller passes the best camera identity it has when a camera sends none.
    The id is built from the serial number and the camera's ``plateid`` when
    present, else from the serial number, the plate as read and the camera's
    ``timeStamp`` (``sec``, ``usec``). When the camera sends ``plateid`` and a
    time stamp, the time stamp is included too: re-sends of one record carry
    both unchanged, and a plate counter that restarts after a camera reset
    then cannot make a new read look like an old one.

    A result with neither ``plateid`` nor a time stamp (the camera's lowest
    detail level) carries nothing that identifies it: it gets a random id,
    since two such pushes cannot be told apart from two cars.
    """
    serial = serialno.strip().casefold()
    if not serial:
        raise ValueError("a plate event id needs the camera's serial number")
    time_part = "" if sec is None else f"{sec}.{usec or 0:06d}"
    if plateid is not None:
        material = f"{_DERIVATION_VERSION}\x00{serial}\x00plateid\x00{plateid}\x00{time_part}"
    elif sec is not None:
        material = (
            f"{_DERIVATION_VERSION}\x00{serial}\x00license\x00{license.strip()}\x00{time_part}"
        )
    else:
        return new_event_id("p")
    digest = hashlib.sha256(material.encode("utf-8", "surrogatepass")).digest()
    return f"p-{_b32(digest)}"


def new_event_id(kind: str) -> str:
    """A random id for an event with no camera identity, e.g. ``new_event_id("io")``.

    ``kind`` is a short lower-case prefix (``io``, ``serial``, ``online``...)
    that makes the id readable in logs.
    """
    if not _KIND_PATTERN.match(kind):
        raise ValueError(f"event id kind must match {_KIND_PATTERN.pattern}: {kind!r}")
    return f"{kind}-{_b32(uuid.uuid4().bytes)}"


def is_valid_event_id(event_id: str) -> bool:
    """Whether ``event_id`` has the shape of an id made here (safe as a file name)."""
    return EVENT_ID_PATTERN.match(event_id) is not None
