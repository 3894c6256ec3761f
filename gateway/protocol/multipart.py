"""``multipart/form-data`` as Vzenith cameras send it (registration, heartbeat, comet poll).

Only what cameras produce is handled: text fields, no nesting. Firmware builds differ in the
boundary they pick and some bodies reach us with bare LF line ends or without the closing
``--``, so the reader is lenient about framing while staying linear in the body size.
"""

from __future__ import annotations

import re

from gateway.protocol.messages import ProtocolError, Registration
from gateway.protocol.text import strip_control

__all__ = [
    "boundary_from_body",
    "boundary_from_content_type",
    "parse_multipart_form",
    "parse_registration",
]

# ``name=`` (not ``filename=``) inside a Content-Disposition value, quoted or bare.
_NAME_PARAM = re.compile(rb'(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^;\s]*))', re.IGNORECASE)
_FILENAME_PARAM = re.compile(rb"(?:^|;)\s*filename\*?\s*=", re.IGNORECASE)

# The longest header block worth looking at: a part's headers are a line or two.
_MAX_HEADER_BYTES = 8192


def _decode_text(raw: bytes) -> str | None:
    """UTF-8 first, then GB18030 (the camera's "GB2312" setting); None if neither."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("gb18030")
    except UnicodeDecodeError:
        return None


def boundary_from_content_type(content_type: str | None) -> str | None:
    """The ``boundary`` parameter of a Content-Type header value, quoted or not.

    Returns None when the header is absent or carries no usable boundary.
    """
    if not content_type:
        return None
    for param in content_type.split(";")[1:]:
        key, sep, value = param.partition("=")
        if not sep or key.strip().lower() != "boundary":
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return value or None
    return None


def boundary_from_body(body: bytes) -> str | None:
    """The boundary announced by the body's first line (``--<boundary>``).

    Used when the Content-Type header was lost or carries no boundary.
    """
    start = 0
    # Skip blank lines a proxy or a sloppy client may have put in front.
    while start < len(body) and body[start : start + 1] in (b"\r", b"\n", b" ", b"\t"):
        start += 1
    end = body.find(b"\n", start)
    line = body[start:] if end < 0 else body[start:end]
    line = line.rstrip(b"\r \t")
    if not line.startswith(b"--") or len(line) <= 2:
        return None
    text = _decode_text(line[2:])
    return text or None


def _split_headers(part: bytes) -> tuple[bytes, bytes] | None:
    """Split one part into (header block, content) at the first blank line."""
    crlf = part.find(b"\r\n\r\n", 0, _MAX_HEADER_BYTES)
    lf = part.find(b"\n\n", 0, _MAX_HEADER_BYTES)
    if crlf < 0 and lf < 0:
        return None
    if lf < 0 or (0 <= crlf < lf):
        return part[:crlf], part[crlf + 4 :]
    return part[:lf], part[lf + 2 :]


def _part_name(headers: bytes) -> str | None:
    """The form field name from a part's headers, or None for a part without one
    (or for a file part, which cameras never send as registration data)."""
    for line in headers.splitlines():
        key, sep, value = line.partition(b":")
        if not sep or key.strip().lower() != b"content-disposition":
            continue
        if _FILENAME_PARAM.search(value):
            return None
        match = _NAME_PARAM.search(value)
        if match is None:
            return None
        raw_name = match.group(1) if match.group(1) is not None else match.group(2)
        name = _decode_text(raw_name)
        return name or None
    return None


def parse_multipart_form(body: bytes, boundary: str) -> dict[str, str]:
    """The text fields of a multipart/form-data body, by field name.

    Tolerates CRLF or bare LF line ends, a missing closing ``--`` and any boundary length.
    Values are decoded as UTF-8, else GB18030; a part whose value is neither, a part without
    a name and a file part are skipped. When a name repeats, the first value wins.
    """
    if not boundary:
        raise ProtocolError("multipart body without a boundary")
    delimiter = b"--" + boundary.encode("utf-8", errors="surrogateescape")
    fields: dict[str, str] = {}
    segments = body.split(delimiter)
    # segments[0] is the preamble (normally empty); each later one starts right after a
    # delimiter: either "--" (the close delimiter) or a line end and the part itself.
    last = len(segments) - 1
    for index, segment in enumerate(segments[1:], start=1):
        if segment.startswith(b"--"):
            break
        # The rest of the delimiter line: optional transport padding, then the line end.
        line_end = segment.find(b"\n", 0, 256)
        if line_end < 0:
            continue
        if segment[:line_end].strip(b" \t\r"):
            # The boundary text continued on this line: it was a longer, different string.
            continue
        part = segment[line_end + 1 :]
        split = _split_headers(part)
        if split is None:
            continue
        headers, content = split
        name = _part_name(headers)
        if name is None or name in fields:
            continue
        if index == last:
            # No delimiter after the final part: whatever trails it is not the value.
            content = content.rstrip(b"\r\n\t \x00")
        elif content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        value = _decode_text(content)
        if value is not None:
            fields[name] = value
    return fields


def _int_field(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 20:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _text_field(fields: dict[str, str], *names: str) -> str | None:
    """The first non-blank value among ``names`` (old firmware spells some names differently),
    without control characters."""
    for name in names:
        value = fields.get(name)
        if value is not None:
            text = strip_control(value).strip()
            if text:
                return text
    return None


def parse_registration(body: bytes, boundary: str) -> Registration:
    """A Vzenith registration / heartbeat / comet poll from its multipart body.

    Raises ProtocolError when the body carries no ``serialno``.
    """
    fields = parse_multipart_form(body, boundary)
    serialno = _text_field(fields, "serialno")
    if serialno is None:
        raise ProtocolError("registration without serialno")
    # The camera's web login arrives in clear text; it is kept as sent (no stripping) so the
    # gateway can log in to the camera's web server with it.
    user_name = fields.get("user_name", fields.get("username"))
    password = fields.get("pass_wd", fields.get("password"))
    return Registration(
        serialno=serialno,
        device_name=_text_field(fields, "device_name"),
        ipaddr=_text_field(fields, "ipaddr"),
        port=_int_field(fields.get("port")),
        user_name=user_name,
        password=password,
        channel_num=_int_field(fields.get("channel_num")),
    )
