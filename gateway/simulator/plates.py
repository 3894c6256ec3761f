"""Plates a simulated camera reads: realistic Chinese plates or a site's own list."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import quote

import attrs

__all__ = [
    "NO_PLATE",
    "PROVINCES",
    "PlateRead",
    "PlateSource",
    "generate_plate",
    "image_path",
    "load_plate_file",
    "read_for_license",
]

# What a camera sends when it saw a car but read no plate.
NO_PLATE = "_无_"

# Province (and municipality) abbreviations, the first character of a plate.
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
# Plates never use I or O (they read as 1 and 0).
_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_DIGITS = "0123456789"

# colorType values (PROTOCOL.md 2.1) and the matching plate type.
_BLUE, _YELLOW, _GREEN = 1, 2, 5
_TYPE_BLUE, _TYPE_YELLOW, _TYPE_NEW_ENERGY = 1, 3, 19


@attrs.frozen
class PlateRead:
    """One recognition: the text and the plate's colour and type codes."""

    license: str
    color_type: int = _BLUE
    plate_type: int = _TYPE_BLUE

    @property
    def has_plate(self) -> bool:
        return self.license not in (NO_PLATE, "无", "")


def read_for_license(license: str) -> PlateRead:
    """The colour and type a camera would report for a given plate text."""
    text = license.strip()
    if text in (NO_PLATE, "无", ""):
        return PlateRead(NO_PLATE, 0, 0)
    if len(text) == 8:
        return PlateRead(text, _GREEN, _TYPE_NEW_ENERGY)
    if text.endswith(("学", "挂")):
        return PlateRead(text, _YELLOW, _TYPE_YELLOW)
    return PlateRead(text, _BLUE, _TYPE_BLUE)


def generate_plate(rng: random.Random, no_plate_rate: float = 0.02) -> PlateRead:
    """A plausible plate read.

    Mostly blue 7-character plates (province + letter + 5 letters/digits,
    digits more likely), about one in eight new-energy 8-character plates
    (``粤BD12345``), a few yellow ones, and now and then a no-plate read.
    """
    roll = rng.random()
    if roll < no_plate_rate:
        return PlateRead(NO_PLATE, 0, 0)
    head = rng.choice(PROVINCES) + rng.choice(_LETTERS)
    if roll < no_plate_rate + 0.12:
        tail = rng.choice("DF") + "".join(rng.choice(_DIGITS) for _ in range(5))
        return PlateRead(head + tail, _GREEN, _TYPE_NEW_ENERGY)
    tail = "".join(
        rng.choice(_LETTERS) if rng.random() < 0.2 else rng.choice(_DIGITS) for _ in range(5)
    )
    if roll > 0.95:
        return PlateRead(head + tail, _YELLOW, _TYPE_YELLOW)
    return PlateRead(head + tail, _BLUE, _TYPE_BLUE)


def load_plate_file(path: str | Path) -> list[str]:
    """Plates from a UTF-8 text file, one per line; blank lines and ``#`` comments skipped."""
    plates = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            plates.append(text)
    if not plates:
        raise ValueError(f"{path}: no plates in file")
    return plates


class PlateSource:
    """An endless stream of plate reads for one camera.

    With a list, cameras walk it from different starting points (``offset``)
    so a fleet does not read the same car at the same moment; without one,
    plates are generated from ``rng``.
    """

    def __init__(
        self,
        rng: random.Random,
        plates: Sequence[str] = (),
        offset: int = 0,
        no_plate_rate: float = 0.02,
    ) -> None:
        self._rng = rng
        self._plates = list(plates)
        self._next = offset
        self._no_plate_rate = no_plate_rate

    def __iter__(self) -> Iterator[PlateRead]:
        return self

    def __next__(self) -> PlateRead:
        if self._plates:
            text = self._plates[self._next % len(self._plates)]
            self._next += 1
            return read_for_license(text)
        return generate_plate(self._rng, self._no_plate_rate)

    def take(self, count: int) -> list[PlateRead]:
        return [next(self) for _ in range(count)]


def image_path(license: str, when: datetime, sequence: int) -> str:
    """The ``imagePath`` a camera sends when it keeps the picture on its SD card.

    The file name embeds the plate in GBK, percent-encoded including the
    slashes, as in ``%2Fmmc%2FVzIPCCap%2F2015_09_09%2F1714224504__%CE%DE_.jpg``.
    """
    raw = f"/mmc/VzIPCCap/{when:%Y_%m_%d}/{when:%H%M%S}{sequence % 10000:04d}_{license}.jpg"
    return quote(raw.encode("gbk", errors="replace"), safe="")
