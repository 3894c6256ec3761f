"""Text that came from a camera, made safe to use and to log. Pure.

Cameras put anything in their text fields: a C string's NUL in the middle of a
license, line breaks, escape sequences. Such characters must not reach a plate,
a display, a log line or a serial number the gateway keys cameras by. The raw
record of an event keeps what the camera sent, so nothing is lost by cleaning
the typed values.
"""

from __future__ import annotations

import unicodedata

__all__ = ["CONTROL_CATEGORIES", "for_log", "strip_control"]

#: Unicode categories removed from camera text: control characters (C0, DEL,
#: C1), format characters (zero-width and bidirectional marks, which can make
#: a log line read other than it is), and the line and paragraph separators.
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def strip_control(text: str) -> str:
    """``text`` without control, format and line-separator characters.

    Printable text (the usual case) is returned as it is, without a copy.
    """
    if text.isprintable():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) not in CONTROL_CATEGORIES)


def for_log(text: str, limit: int = 200) -> str:
    """``text`` fit for one log line: control and format characters escaped
    (``\\x00``, ``\\u202e``), so that what was there stays visible, and cut
    at ``limit`` characters."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if text.isprintable():
        return text
    return "".join(
        _escape(ch) if unicodedata.category(ch) in CONTROL_CATEGORIES else ch for ch in text
    )


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
