"""Plates a simulated camera reads: realistic Chinese plates or a site's own list.

Besides ordinary plates, the field sends (PROTOCOL.md section 9, "Plates"):
three-region plates joined with ``|`` (``粤ZJ068澳|MX7742|ZM127``), no-plate
reads spelled several ways (``_无_``, ``无``, ``无牌``, ``未识别``) or
mis-decoded (``_Œﬁ_``, ``_нч_``: the GBK bytes of ``_无_`` read as Mac Roman
and KOI8-R), and licenses carrying control characters such as a NUL.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import attrs

__all__ = [
    "GARBLED_NO_PLATES",
    "NO_PLATE",
    "NO_PLATE_TEXTS",
    "PROVINCES",
    "PlateRead",
    "PlateSource",
    "generate_plate",
    "image_path",
    "load_plate_file",
    "read_for_license",
    "three_region_plate",
    "with_control_character",
]

# What a camera sends when it saw a car but read no plate.
NO_PLATE = "_无_"
# ``_无_`` as a server shows it after decoding its GBK bytes (5F CE DE 5F) with
# another code page (PROTOCOL.md section 9).
GARBLED_NO_PLATES = (
    NO_PLATE.encode("gbk").decode("mac_roman"),  # _Œﬁ_
    NO_PLATE.encode("gbk").decode("koi8_r"),  # _нч_
)
# Every no-plate text the field shows: firmware (``_无_``, sometimes ``无``),
# peers (``无牌``, ``未识别``) and the mis-decoded forms.
NO_PLATE_TEXTS = (NO_PLATE, "无", "无牌", "未识别", *GARBLED_NO_PLATES)
# Control characters seen inside licenses: mostly the NUL of a C string.
_CONTROL_CHARACTERS = "\x00\x00\x00\x01\x1f"

# Province (and municipality) abbreviations, the first character of a plate.
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
# Plates never use I or O (they read as 1 and 0).
_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_DIGITS = "0123456789"

# colorType values (PROTOCOL.md 2.1) and the matching plate type.
_BLUE, _YELLOW, _BLACK, _GREEN = 1, 2, 4, 5
_TYPE_BLUE, _TYPE_YELLOW, _TYPE_NEW_ENERGY = 1, 3, 19
# Plate types of the black 粤Z cross-border plates.
_TYPE_HONG_KONG, _TYPE_MACAU = 11, 14


@attrs.frozen
class PlateRead:
    """One recognition: the text and the plate's colour and type codes."""

    license: str
    color_type: int = _BLUE
    plate_type: int = _TYPE_BLUE

    @property
    def has_plate(self) -> bool:
        """False for every no-plate text (``_无_`` and the forms the field shows)."""
        return self.license.strip() not in (*NO_PLATE_TEXTS, "")


def read_for_license(license: str) -> PlateRead:
    """The colour and type a camera would report for a given plate text.

    No-plate texts keep their spelling (``无牌`` stays ``无牌``); an empty text
    becomes ``_无_``; a three-region plate (``|`` inside) is black.
    """
    text = license.strip()
    if text == "":
        return PlateRead(NO_PLATE, 0, 0)
    if text in NO_PLATE_TEXTS:
        return PlateRead(text, 0, 0)
    if "|" in text:
        mainland = text.split("|", 1)[0]
        kind = _TYPE_MACAU if mainland.endswith("澳") else _TYPE_HONG_KONG
        return PlateRead(text, _BLACK, kind)
    if len(text) == 8:
        return PlateRead(text, _GREEN, _TYPE_NEW_ENERGY)
    if text.endswith(("学", "挂")):
        return PlateRead(text, _YELLOW, _TYPE_YELLOW)
    return PlateRead(text, _BLUE, _TYPE_BLUE)


def three_region_plate(rng: random.Random) -> PlateRead:
    """A Guangdong-Hong Kong-Macau plate as one license joined with ``|``:
    the black mainland ``粤Z`` plate, then the Macau and Hong Kong plates,
    like ``粤ZJ068澳|MX7742|ZM127``."""
    suffix = rng.choice("港澳")
    mainland = "粤Z" + rng.choice(_LETTERS) + "".join(rng.choice(_DIGITS) for _ in range(3))
    macau = "M" + rng.choice(_LETTERS) + "".join(rng.choice(_DIGITS) for _ in range(4))
    hong_kong = "".join(rng.choice(_LETTERS) for _ in range(2)) + str(rng.randint(1, 9999))
    license = f"{mainland}{suffix}|{macau}|{hong_kong}"
    return PlateRead(license, _BLACK, _TYPE_MACAU if suffix == "澳" else _TYPE_HONG_KONG)


def with_control_character(rng: random.Random, read: PlateRead) -> PlateRead:
    """``read`` with a control character (mostly a NUL) somewhere inside the license."""
    text = read.license
    at = rng.randint(1, len(text))
    return attrs.evolve(read, license=text[:at] + rng.choice(_CONTROL_CHARACTERS) + text[at:])


def generate_plate(
    rng: random.Random,
    no_plate_rate: float = 0.02,
    three_region_rate: float = 0.0,
    no_plate_texts: Sequence[str] = (NO_PLATE,),
) -> PlateRead:
    """A plausible plate read.

    Mostly blue 7-character plates (province + letter + 5 letters/digits,
    digits more likely), about one in eight new-energy 8-character plates
    (``粤BD12345``), a few yellow ones, a share ``three_region_rate`` of
    three-region plates, and now and then (``no_plate_rate``) a no-plate
    read spelled as one of ``no_plate_texts``.
    """
    roll = rng.random()
    if roll < no_plate_rate:
        text = no_plate_texts[0] if len(no_plate_texts) == 1 else rng.choice(no_plate_texts)
        return PlateRead(text, 0, 0)
    if three_region_rate and rng.random() < three_region_rate:
        return three_region_plate(rng)
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
    plates are generated from ``rng`` (see :func:`generate_plate`). A share
    ``control_char_rate`` of plate reads, listed or generated, carries a
    control character inside the license, as real reads sometimes do.
    """

    def __init__(
        self,
        rng: random.Random,
        plates: Sequence[str] = (),
        offset: int = 0,
        no_plate_rate: float = 0.02,
        three_region_rate: float = 0.0,
        no_plate_texts: Sequence[str] = (NO_PLATE,),
        control_char_rate: float = 0.0,
    ) -> None:
        self._rng = rng
        self._plates = list(plates)
        self._next = offset
        self._no_plate_rate = no_plate_rate
        self._three_region_rate = three_region_rate
        self._no_plate_texts = tuple(no_plate_texts) or (NO_PLATE,)
        self._control_char_rate = control_char_rate

    def __iter__(self) -> Iterator[PlateRead]:
        return self

    def __next__(self) -> PlateRead:
        if self._plates:
            text = self._plates[self._next % len(self._plates)]
            self._next += 1
            read = read_for_license(text)
        else:
            read = generate_plate(
                self._rng, self._no_plate_rate, self._three_region_rate, self._no_plate_texts
            )
        if self._control_char_rate and read.has_plate:
            if self._rng.random() < self._control_char_rate:
                read = with_control_character(self._rng, read)
        return read

    def take(self, count: int) -> list[PlateRead]:
        return [next(self) for _ in range(count)]


def image_path(license: str, when: datetime, sequence: int) -> str:
    """The ``imagePath`` a camera sends when it keeps the picture on its SD card.

    The file name embeds the plate in GBK, percent-encoded including the
    slashes, as in ``%2Fmmc%2FVzIPCCap%2F2015_09_09%2F1714224504__%CE%DE_.jpg``.
    A mis-decoded no-plate text is the server's view, not the camera's: the
    file name has the camera's own ``_无_``.
    """
    if license in GARBLED_NO_PLATES:
        license = NO_PLATE
    raw = f"/mmc/VzIPCCap/{when:%Y_%m_%d}/{when:%H%M%S}{sequence % 10000:04d}_{license}.jpg"
    return quote(raw.encode("gbk", errors="replace"), safe="")
