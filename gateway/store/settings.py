"""The ``[store]`` settings: how long and how much of the images the SD card keeps.
Pure: no Twisted."""

from __future__ import annotations

import attrs

from gateway.schema import Section, integer, setting

__all__ = ["MIN_IMAGE_BYTES", "STORE", "StoreSettings"]

#: The smallest image cap: below it a slip of the keyboard keeps no images at all.
MIN_IMAGE_BYTES = 16 * 1024 * 1024


@attrs.frozen
class StoreSettings:
    """Images older than ``image_retention_days`` are removed, and the oldest go
    first to keep all images under ``image_max_bytes``; event rows stay."""

    image_retention_days: int = setting(integer(1, 3650), default=30)
    image_max_bytes: int = setting(integer(MIN_IMAGE_BYTES, 1 << 40), default=2 * 1024**3)


STORE = Section(StoreSettings)
