"""Plate text: normalisation, OCR-confusable folding and edit distance.

Cameras and people write the same plate in many ways: ``京A·12345``,
``京a 12345``, full-width ``京Ａ１２３４５``. Everything the gateway compares is
first brought to one form by :func:`normalise_plate`.

A car with plates of several regions (Guangdong-Hong Kong-Macau) is read as one
license with the regions joined by ``|``: ``粤ZJ068澳|MX7742|ZM127``. It stays
one plate, normalised region by region (:func:`plate_regions` gives them).

OCR misreads a handful of shapes systematically (``0`` for ``D``, ``8`` for
``B``...). :func:`fold_plate` maps every character of such a group to one
representative, so that a lookup on the folded form finds the plate however
the camera read those characters. Plates that still differ after folding are
compared by Levenshtein distance (:func:`plate_distance`,
:func:`bounded_distance`).

Pure functions on strings: no I/O.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

__all__ = [
    "CONFUSABLE_GROUPS",
    "NO_PLATE_MISREADINGS",
    "NO_PLATE_READS",
    "NO_PLATE_SPELLINGS",
    "REGION_SEPARATOR",
    "bounded_distance",
    "deletion_variants",
    "fold_plate",
    "is_no_plate",
    "normalise_plate",
    "plate_distance",
    "plate_regions",
]

#: What joins the regions of a multi-region plate.
REGION_SEPARATOR = "|"

#: How cameras and their peers spell "no plate read". The same list as
#: gateway.protocol.parse.NO_PLATE_SPELLINGS (policy and protocol import
#: nothing of each other; a test holds them equal).
NO_PLATE_SPELLINGS: tuple[str, ...] = ("_无_", "无", "无牌", "未识别")

#: Code pages a camera's or a peer's text conversion has read (or can read)
#: the GBK bytes of those spellings in: ``_Œﬁ_`` is ``_无_`` read as Mac
#: Roman, ``_нч_`` as KOI8-R. As gateway.protocol.parse.NO_PLATE_MISREADINGS.
NO_PLATE_MISREADINGS: tuple[str, ...] = (
    "utf-8",
    "cp1252",
    "latin-1",
    "mac-roman",
    "koi8-r",
    "cp1251",
    "cp866",
    "cp437",
    "cp850",
)

#: What cameras send when they saw a vehicle but read no plate (before
#: normalisation): the spellings, their misreadings and empty text
#: (docs/events.md lists them all).
NO_PLATE_READS: frozenset[str] = frozenset(
    {
        "",
        *NO_PLATE_SPELLINGS,
        *(
            spelling.encode("gbk").decode(page, errors="replace")
            for spelling in NO_PLATE_SPELLINGS
            for page in NO_PLATE_MISREADINGS
        ),
    }
)

#: Characters OCR confuses with each other. The first character of each group
#: is the group's representative in folded plates.
CONFUSABLE_GROUPS: tuple[str, ...] = ("0OD", "1I", "8B", "5S", "2Z", "6G")

_FOLD_TABLE = {ord(member): group[0] for group in CONFUSABLE_GROUPS for member in group[1:]}

# Each round applies NFKC and upper case and drops separators. Dropping can
# bring together characters that NFKC then composes (Hangul jamo, say), so a
# round is repeated until nothing changes; two rounds are the most real input
# ever needs.
_MAX_NORMALISE_ROUNDS = 8


def _normalise_once(text: str) -> str:
    # NFKC folds full-width and other compatibility forms (Ａ -> A, １ -> 1);
    # upper-casing can produce characters that NFKC composes differently, so
    # NFKC runs again afterwards. Anything that is not a letter or a digit
    # (spaces, dots, dashes, the middle dot of 京A·12345, underscores...) is a
    # separator. CJK province characters are letters and stay.
    upper = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).upper())
    return "".join(ch for ch in upper if ch.isalnum())


def _normalise_region(text: str) -> str:
    current = text
    for _ in range(_MAX_NORMALISE_ROUNDS):
        following = _normalise_once(current)
        if following == current:
            break
        current = following
    return current


def normalise_plate(text: str) -> str:
    """The canonical form of a plate as written or read.

    NFKC (full-width letters and digits become ASCII), upper case, and every
    character that is not a letter or digit removed (spaces, dots, dashes,
    middle dots, underscores, control characters and other separators). CJK
    characters (province abbreviations, 警, 学, 挂...) are kept. A
    multi-region plate keeps its regions, each normalised, joined by ``|``
    (empty regions dropped): ``粤zj068澳 | mx7742|ZM127`` is
    ``粤ZJ068澳|MX7742|ZM127``. Idempotent:
    ``normalise_plate(normalise_plate(x)) == normalise_plate(x)``.

    No-plate reads normalise to ``""`` or a no-plate spelling; see
    :func:`is_no_plate`.
    """
    if text.isalnum() and text == text.upper() and unicodedata.is_normalized("NFKC", text):
        return text  # already normalised: the common case for stored plates
    if REGION_SEPARATOR in text or "\uff5c" in text:  # "|" or its full-width form
        regions = unicodedata.normalize("NFKC", text).split(REGION_SEPARATOR)
        return REGION_SEPARATOR.join(
            region for region in map(_normalise_region, regions) if region
        )
    return _normalise_region(text)


def plate_regions(plate: str) -> tuple[str, ...]:
    """The regions of a normalised plate that are plates: one for most cars,
    each region of a multi-region plate (no-plate regions left out)."""
    if REGION_SEPARATOR not in plate:
        return () if plate in _NORMALISED_NO_PLATE_READS else (plate,)
    return tuple(
        region
        for region in plate.split(REGION_SEPARATOR)
        if region not in _NORMALISED_NO_PLATE_READS
    )


_NORMALISED_NO_PLATE_READS = frozenset(_normalise_region(read) for read in NO_PLATE_READS)


def is_no_plate(text: str) -> bool:
    """Whether a camera's ``license`` means "no plate was read".

    True for :data:`NO_PLATE_READS` (``_无_``, ``无``, ``无牌``, ``未识别``,
    their misreadings such as ``_Œﬁ_`` and ``_нч_``, empty text), in any of
    the forms normalisation accepts (surrounding spaces, control characters,
    full-width underscores, case...), and for a multi-region read none of
    whose regions is a plate. Such a read is an event but never a plate to
    look up, and never opens a barrier.
    """
    return not plate_regions(normalise_plate(text))


def fold_plate(plate: str) -> str:
    """A normalised plate with each OCR-confusable character replaced by its
    group's representative (``O`` and ``D`` by ``0``, ``I`` by ``1``, ``B`` by
    ``8``, ``S`` by ``5``, ``Z`` by ``2``, ``G`` by ``6``).

    Two plates with equal folded forms differ only in confusable characters.
    """
    return plate.translate(_FOLD_TABLE)


def plate_distance(a: str, b: str) -> int:
    """The Levenshtein distance between two strings (insertions, deletions
    and substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (char_a != char_b),
                )
            )
        previous = current
    return previous[-1]


def bounded_distance(a: str, b: str, limit: int) -> int:
    """``min(plate_distance(a, b), limit + 1)``: the edit distance when it is
    at most ``limit``, else ``limit + 1``.

    Much cheaper than :func:`plate_distance` for the index's candidates,
    most of which are far: the common prefix and suffix are skipped, limits
    up to 2 are decided by a few slice comparisons, and for larger limits
    the table stops as soon as a whole row exceeds the limit.
    """
    len_a, len_b = len(a), len(b)
    if abs(len_a - len_b) > limit:
        return limit + 1
    start = 0
    shorter = min(len_a, len_b)
    while start < shorter and a[start] == b[start]:
        start += 1
    while len_a > start and len_b > start and a[len_a - 1] == b[len_b - 1]:
        len_a -= 1
        len_b -= 1
    a, b = a[start:len_a], b[start:len_b]
    if not a or not b:
        return min(len(a) + len(b), limit + 1)
    # Both remainders now differ in their first and in their last character.
    if len(a) == len(b) == 1:
        return 1
    if limit <= 2:
        return 2 if limit == 2 and _two_edits_apart(a, b) else limit + 1
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        row_best = i
        for j, char_b in enumerate(b, 1):
            cost = previous[j - 1] + (char_a != char_b)
            if previous[j] + 1 < cost:
                cost = previous[j] + 1
            if current[j - 1] + 1 < cost:
                cost = current[j - 1] + 1
            current.append(cost)
            if cost < row_best:
                row_best = cost
        if row_best > limit:
            return limit + 1
        previous = current
    return min(previous[-1], limit + 1)


def _two_edits_apart(a: str, b: str) -> bool:
    # a and b are not one edit apart and differ at both ends, so two edits
    # must fix the first and the last character: which two depends only on
    # the lengths. Slices compare in C, far faster than a table.
    if len(a) < len(b):
        a, b = b, a
    extra = len(a) - len(b)
    if extra == 0:
        # Two substitutions at the ends, or a shift by one (delete at one
        # end, insert at the other).
        return a[1:-1] == b[1:-1] or a[1:] == b[:-1] or a[:-1] == b[1:]
    if extra == 1:
        # A deletion at one end, a substitution at the other.
        return a[1:-1] == b[:-1] or a[1:-1] == b[1:]
    # extra == 2: both ends of the longer one deleted.
    return a[1:-1] == b


def deletion_variants(key: str, deletions: int) -> frozenset[str]:
    """Every string obtained from ``key`` by deleting exactly ``deletions``
    characters (none when ``deletions`` exceeds its length).

    Two strings within edit distance *k* always share a variant made by at
    most *k* deletions from each: the basis of the symmetric-delete index in
    :class:`gateway.policy.whitelist.WhitelistIndex`.
    """
    level: Iterable[str] = (key,)
    for _ in range(deletions):
        level = {
            variant[:position] + variant[position + 1 :]
            for variant in level
            for position in range(len(variant))
        }
    return frozenset(level)
