"""The ``[store]`` settings: how long and how much of the events and images the SD
card keeps. Pure: no Twisted."""

from __future__ import annotations

import attrs

from gateway.schema import Section, integer, setting

__all__ = ["MIN_DB_BYTES", "MIN_IMAGE_BYTES", "STORE", "StoreSettings"]

#: The smallest image cap: below it a slip of the keyboard keeps no images at all.
MIN_IMAGE_BYTES = 16 * 1024 * 1024
#: The smallest database cap: the plate list, the cameras' lists and a day of a
#: busy site's events fit in it.
MIN_DB_BYTES = 64 * 1024 * 1024


@attrs.frozen
class StoreSettings:
    """Images older than ``image_retention_days`` are removed, and the oldest go
    first to keep all images under ``image_max_bytes``; the event rows stay.

    Event rows older than ``event_retention_days`` are deleted, except those
    still to be delivered upstream; past ``max_db_bytes`` of rows the oldest
    events go first, delivered or not (those not delivered are counted)."""

    image_retention_days: int = setting(integer(1, 3650), default=30)
    image_max_bytes: int = setting(integer(MIN_IMAGE_BYTES, 1 << 40), default=2 * 1024**3)
    event_retention_days: int = setting(integer(1, 3650), default=400)
    max_db_bytes: int = setting(integer(MIN_DB_BYTES, 1 << 40), default=4 * 1024**3)


STORE = Section(StoreSettings)
