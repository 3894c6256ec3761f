"""An event's raw record kept within bounds. Pure: no I/O.

A camera's push may carry fields of any size up to the body limit; a real
plate result is a few kB. Before a record costs anything more than its parse,
it is copied within :class:`RecordLimits`: text longer than a field may be is
cut, arrays and objects keep their first items, nesting stops at a depth, and
once the whole record is full the values that no longer fit are left out.
What was cut is said in the record itself, under ``recordCut``: which part
(its path), what it was, how big it was and how much of it is kept. The event,
its plate and its decision are kept in the store's own columns and are never
cut.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["CUT_KEY", "RecordLimits", "bound_record", "record_too_large"]

#: The key of the cut summary in a bounded record.
CUT_KEY = "recordCut"
#: Parts listed in the summary; the rest are counted (``moreParts``).
MAX_CUTS_LISTED = 20
#: Characters of a path as the summary gives it.
MAX_PATH_CHARS = 120
#: Characters of an object key kept (a key is a name, not data).
MAX_KEY_CHARS = 128


@attrs.frozen
class RecordLimits:
    """How much of a camera's push is kept in an event's raw record: the whole
    record's JSON in bytes (UTF-8), one text value in characters, the items
    of one array or object, and how deep objects and arrays may nest."""

    max_record_bytes: int = 65_536
    max_text_chars: int = 4_096
    max_items: int = 256
    max_nesting: int = 16


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return "value"


def _small(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= 64
    return not isinstance(value, (Mapping, list, tuple))


def _size(value: Any) -> int:
    """Characters of a text, items of an array or object, bytes of anything else."""
    if isinstance(value, (str, Mapping, list, tuple)):
        return len(value)
    try:
        return _json_bytes(value)
    except (TypeError, ValueError):
        return 0


class _Walk:
    def __init__(self, limits: RecordLimits, reserve: int) -> None:
        self.limits = limits
        self.left = limits.max_record_bytes - reserve
        self.cuts: list[dict[str, Any]] = []
        self.more = 0

    def note(self, path: Sequence[str | int], value: Any, kept: int, why: str) -> None:
        if len(self.cuts) >= MAX_CUTS_LISTED:
            self.more += 1
            return
        self.cuts.append(
            {
                "path": _path_text(path),
                "type": _kind(value),
                "size": _size(value),
                "kept": kept,
                "why": why,
            }
        )

    def take(self, cost: int) -> bool:
        if cost > self.left:
            return False
        self.left -= cost
        return True

    def copy(self, value: Any, path: tuple[str | int, ...], depth: int) -> tuple[bool, Any]:
        """``(kept, copy)``: the value within the limits, or not kept at all."""
        limits = self.limits
        if isinstance(value, str):
            text = value
            if len(text) > limits.max_text_chars:
                text = text[: limits.max_text_chars]
            if not self.take(_json_bytes(text)):
                self.note(path, value, 0, "record")
                return False, None
            if len(text) < len(value):
                self.note(path, value, len(text), "text")
            return True, text
        if isinstance(value, Mapping) or isinstance(value, (list, tuple)):
            if depth >= limits.max_nesting:
                self.note(path, value, 0, "nesting")
                return False, None
            if not self.take(2):
                self.note(path, value, 0, "record")
                return False, None
            if isinstance(value, Mapping):
                return True, self._object(value, path, depth)
            return True, self._array(value, path, depth)
        if value is None or isinstance(value, (bool, int, float)):
            try:
                cost = _json_bytes(value)
            except ValueError:  # NaN or infinity: not JSON
                cost, value = 4, None
            if not self.take(cost):
                self.note(path, value, 0, "record")
                return False, None
            return True, value
        # Not JSON-ready (never from a parsed push): kept as its text.
        return self.copy(str(value), path, depth)

    def _object(
        self, value: Mapping[Any, Any], path: tuple[str | int, ...], depth: int
    ) -> dict[str, Any]:
        limits = self.limits
        if len(value) > limits.max_items:
            self.note(path, value, limits.max_items, "items")
        entries: list[tuple[str, Any]] = []
        names: set[str] = set()
        for key, item in itertools.islice(value.items(), limits.max_items):
            name = key if isinstance(key, str) else str(key)
            if len(name) > MAX_KEY_CHARS:
                self.note((*path, name[:MAX_PATH_CHARS]), name, MAX_KEY_CHARS, "key")
                name = name[:MAX_KEY_CHARS]
            if name in names:
                continue  # two keys alike once cut: the first is kept
            names.add(name)
            entries.append((name, item))
        # Small values first (a plate's license, ids, flags), then the rest:
        # a few large fields cannot push out the many small ones.
        order = sorted(range(len(entries)), key=lambda index: not _small(entries[index][1]))
        kept: dict[int, Any] = {}
        for index in order:
            name, item = entries[index]
            key_cost = _json_bytes(name) + 2  # the colon, and the comma before the next
            if not self.take(key_cost):
                self.note((*path, name), item, 0, "record")
                continue
            taken, copied = self.copy(item, (*path, name), depth + 1)
            if taken:
                kept[index] = copied
            else:
                self.left += key_cost
        return {entries[index][0]: kept[index] for index in sorted(kept)}

    def _array(self, value: Sequence[Any], path: tuple[str | int, ...], depth: int) -> list[Any]:
        limits = self.limits
        out: list[Any] = []
        for index, item in enumerate(itertools.islice(value, limits.max_items)):
            if not self.take(1):
                break
            kept, copied = self.copy(item, (*path, index), depth + 1)
            if not kept:
                self.left += 1
                break
            out.append(copied)
        if len(out) < len(value):
            why = "items" if len(out) == limits.max_items else "record"
            self.note(path, value, len(out), why)
        return out


def _path_text(path: Sequence[str | int]) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            piece = part if len(part) <= 40 else part[:37] + "..."
            parts.append(f".{piece}" if parts else piece)
    text = "".join(parts)
    return text if len(text) <= MAX_PATH_CHARS else text[: MAX_PATH_CHARS - 3] + "..."


def _summary(limits: RecordLimits, cuts: list[dict[str, Any]], more: int) -> dict[str, Any]:
    return {"maxRecordBytes": limits.max_record_bytes, "parts": cuts, "moreParts": more}


def bound_record(raw: Mapping[str, Any], limits: RecordLimits) -> dict[str, Any]:
    """A copy of ``raw`` within ``limits``, with a ``recordCut`` summary when
    anything was cut (and only then). Its JSON is at most
    ``limits.max_record_bytes`` bytes. The work is bounded by the limits, not
    by the size of what was sent (long texts and arrays are sliced, not read)."""
    # Room for the summary: its listed parts are bounded in number and length.
    reserve = min(MAX_CUTS_LISTED * (MAX_PATH_CHARS + 100) + 200, limits.max_record_bytes // 4)
    walk = _Walk(limits, reserve)
    walk.left -= 2
    out = walk._object(raw, (), 0)
    if not walk.cuts:
        return out
    cuts, more = walk.cuts, walk.more
    summary = _summary(limits, cuts, more)
    # Listed parts beyond the reserve are counted instead.
    while cuts and _json_bytes(summary) + len(CUT_KEY) + 4 > reserve + walk.left:
        cuts = cuts[:-1]
        more += 1
        summary = _summary(limits, cuts, more)
    out[CUT_KEY] = summary
    return out


def record_too_large(size: int, limit: int) -> dict[str, Any]:
    """The raw record of a stored event too large to read back (kept by a
    release that did not bound its records): only how large it was."""
    return {
        CUT_KEY: {
            "maxRecordBytes": limit,
            "parts": [{"path": "", "type": "record", "size": size, "kept": 0, "why": "stored"}],
            "moreParts": 0,
        }
    }
