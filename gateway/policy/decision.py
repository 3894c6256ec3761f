"""The gate decision: one interface, whatever stands behind it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import attrs

# Why a barrier did or did not open. Stored with every plate event.
WHITELIST = "whitelist"
BLACKLIST = "blacklist"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
OUTSIDE_HOURS = "outside_hours"
DISABLED = "disabled"
WRONG_LANE = "wrong_lane"
UNKNOWN = "unknown"
NO_PLATE = "no_plate"
OFFLINE_RECORD = "offline_record"
DUPLICATE = "duplicate"
CAMERA_NOT_ALLOWED = "camera_not_allowed"

LOCAL = "local"
CLOUD = "cloud"


@attrs.frozen
class PlateQuery:
    """What a decision is asked about: one plate read on one lane."""

    license: str  # as read by the camera
    has_plate: bool
    at: datetime  # timezone-aware
    lane: str | None = None  # lane name; None for a camera in no configured lane
    offline: bool = False  # an offline record: the car passed long ago


@attrs.frozen
class Decision:
    """Whether the barrier opens, and why."""

    open: bool
    reason: str
    source: str = LOCAL
    plate: str = ""  # the normalised plate the decision was made on
    valid_until: datetime | None = None  # of the matching whitelist entry, if any
    note: str = ""


class GatePolicy(Protocol):
    def decide(self, query: PlateQuery) -> Decision:
        """Decide synchronously from memory; never blocks, never raises."""


def never_open(query: PlateQuery) -> Decision | None:
    """The rules no list can override: offline records and no-plate reads.

    Returns the denial, or None when the plate is to be looked up.
    """
    if query.offline:
        return Decision(open=False, reason=OFFLINE_RECORD)
    if not query.has_plate:
        return Decision(open=False, reason=NO_PLATE)
    return None
