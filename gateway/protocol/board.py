"""Frames for RS-485 LED displays and voice boards: the 0x64 protocol (PROTOCOL.md section 8).

A frame is ``DA | VR | PN (2) | CMD | DL | DATA (DL bytes) | CRC (2)``: board address, protocol
version 0x64, packet number (0xFFFF in every frame seen in the field), command, data length,
data, and a CRC-16/MODBUS over everything before it, low byte first. Text is GBK.

Commands are typed, frozen values (:class:`Speak`, :class:`ShowLine`, :class:`ShowLines`,
:class:`SetClock`). Their text is normalised when the value is built, to exactly what the
board will receive: characters GBK cannot encode become a visible ``?``, and text longer than
the command allows is cut at a character boundary (never inside a two-byte GBK character).
So ``decode_frame(encode_frame(command))`` gives the same command back, and building a
command from any text never fails.

:func:`frame_bytes` frames arbitrary command bytes, for boards or commands this module does
not describe; :func:`parse_frame` checks framing only; :func:`decode_frame` also checks the
command's own structure; :func:`split_frames` cuts a received byte stream into frames.

Pure functions on bytes and values: no Twisted, no I/O.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "BLACK",
    "DEFAULT_ADDRESS",
    "DEFAULT_PACKET_NUMBER",
    "GREEN",
    "MAX_DATA_BYTES",
    "MAX_LINES",
    "MAX_LINE_TEXT_BYTES",
    "MAX_SHOW_LINE_TEXT_BYTES",
    "MAX_SPEAK_TEXT_BYTES",
    "MAX_VOICE_BYTES",
    "PROTOCOL_VERSION",
    "RED",
    "YELLOW",
    "BoardCommand",
    "BoardFrame",
    "BoardFrameError",
    "Colour",
    "CommandCode",
    "FrameSplit",
    "Line",
    "RawFrame",
    "SetClock",
    "ShowLine",
    "ShowLines",
    "Speak",
    "crc16_modbus",
    "decode_frame",
    "encode_frame",
    "encode_text",
    "fit_text",
    "frame_bytes",
    "parse_frame",
    "split_frames",
]

PROTOCOL_VERSION = 0x64
DEFAULT_PACKET_NUMBER = 0xFFFF
DEFAULT_ADDRESS = 0x00

#: Most bytes of DATA in one frame (DL is one byte).
MAX_DATA_BYTES = 255
_HEADER_BYTES = 6  # DA VR PN PN CMD DL
_CRC_BYTES = 2
_MIN_FRAME_BYTES = _HEADER_BYTES + _CRC_BYTES

#: Speak (0x30): OTP then the text, within DL.
MAX_SPEAK_TEXT_BYTES = MAX_DATA_BYTES - 1
_SHOW_LINE_FIXED_BYTES = 19
#: Show one line (0x62): 19 bytes of settings then the text, within DL.
MAX_SHOW_LINE_TEXT_BYTES = MAX_DATA_BYTES - _SHOW_LINE_FIXED_BYTES
#: Several lines (0x6E): text per line, and the optional voice text.
MAX_LINE_TEXT_BYTES = 32
MAX_VOICE_BYTES = 64
MAX_LINES = 4

_OTP_PLAY_NOW = 0x01
_LINE_MORE = 0x0D
_LINE_LAST = 0x00
_VOICE_MARK = 0x0A
_VOICE_END = 0x00


class CommandCode(enum.IntEnum):
    """The commands this module knows (``CMD``)."""

    SET_CLOCK = 0x05
    SPEAK = 0x30
    SHOW_LINE = 0x62
    SHOW_LINES = 0x6E


class BoardFrameError(ValueError):
    """Bytes that are not a valid frame; ``str(error)`` says why in one line."""


# --------------------------------------------------------------------------- CRC and text


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: reflected polynomial 0xA001, initial value 0xFFFF, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def encode_text(text: str, limit: int) -> bytes:
    """``text`` as GBK bytes, at most ``limit`` of them.

    A character GBK cannot encode becomes ``?`` (visible on the board, unlike a dropped
    character); text that does not fit is cut before the first character that would not,
    so a two-byte character is never split.
    """
    if not isinstance(text, str):
        raise TypeError(f"board text must be a str, not {type(text).__name__}")
    if limit < 0:
        raise ValueError(f"text limit must not be negative, not {limit}")
    try:
        encoded = text.encode("gbk")
    except UnicodeEncodeError:
        encoded = b""
    else:
        if len(encoded) <= limit:
            return encoded
    out = bytearray()
    for character in text:
        piece = character.encode("gbk", errors="replace")
        if len(out) + len(piece) > limit:
            break
        out += piece
    return bytes(out)


def fit_text(text: str, limit: int) -> str:
    """The text the board will show or speak for ``text``: :func:`encode_text` read back."""
    return encode_text(text, limit).decode("gbk")


# Named converters (attrs and mypy want named functions), one per text limit.


def _speak_text(value: Any) -> str:
    return fit_text(value, MAX_SPEAK_TEXT_BYTES)


def _show_line_text(value: Any) -> str:
    return fit_text(value, MAX_SHOW_LINE_TEXT_BYTES)


def _line_text(value: Any) -> str:
    return fit_text(value, MAX_LINE_TEXT_BYTES)


def _voice_text(value: Any) -> str | None:
    return None if value is None else fit_text(value, MAX_VOICE_BYTES)


def _byte(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # bool is an int subclass, and a byte field given True is a programming error.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{attribute.name} must be in 0..255, not {value}")


def _in_range(low: int, high: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an int, not {type(value).__name__}")
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be in {low}..{high}, not {value}")

    return validate


def _gbk(data: bytes, what: str) -> str:
    try:
        return data.decode("gbk")
    except UnicodeDecodeError as error:
        raise BoardFrameError(f"{what} is not GBK text (byte {error.start})") from None


# --------------------------------------------------------------------------- colours

_HEX_COLOUR = re.compile(r"#?([0-9A-Fa-f]{6})([0-9A-Fa-f]{2})?")


@attrs.frozen
class Colour:
    """A text or background colour as the board reads it: R, G, B, A (one byte each)."""

    red: int = attrs.field(validator=_byte)
    green: int = attrs.field(validator=_byte)
    blue: int = attrs.field(validator=_byte)
    alpha: int = attrs.field(default=0, validator=_byte)

    def to_bytes(self) -> bytes:
        return bytes((self.red, self.green, self.blue, self.alpha))

    @classmethod
    def from_bytes(cls, data: bytes) -> Colour:
        if len(data) != 4:
            raise ValueError(f"a colour is 4 bytes, not {len(data)}")
        return cls(data[0], data[1], data[2], data[3])

    @classmethod
    def parse(cls, text: str) -> Colour:
        """``"RRGGBB"`` or ``"RRGGBBAA"`` in hex, with or without a leading ``#``."""
        match = _HEX_COLOUR.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f'a colour is written "RRGGBB" in hex (e.g. "FF0000"), not {text!r}')
        rgb = bytes.fromhex(match.group(1))
        alpha = int(match.group(2), 16) if match.group(2) else 0
        return cls(rgb[0], rgb[1], rgb[2], alpha)

    def __str__(self) -> str:
        return self.to_bytes().hex().upper()


RED = Colour(0xFF, 0x00, 0x00)
GREEN = Colour(0x00, 0xFF, 0x00)
YELLOW = Colour(0xFF, 0xFF, 0x00)
BLACK = Colour(0x00, 0x00, 0x00)


def _colour(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Colour):
        raise TypeError(f"{attribute.name} must be a Colour, not {type(value).__name__}")


# --------------------------------------------------------------------------- commands


@attrs.frozen
class Speak:
    """0x30: speak ``text`` (at most 254 GBK bytes).

    Boards speak from a built-in phrase library; a Chinese comma separates phrases, digits
    and letters are read one by one. ``mode`` is OTP, 0x01 = queue and play now.
    """

    text: str = attrs.field(converter=_speak_text)
    mode: int = attrs.field(default=_OTP_PLAY_NOW, validator=_byte)

    code = CommandCode.SPEAK

    def data(self) -> bytes:
        return bytes((self.mode,)) + encode_text(self.text, MAX_SPEAK_TEXT_BYTES)


@attrs.frozen
class ShowLine:
    """0x62: show ``text`` on one line, temporarily (at most 236 GBK bytes).

    Every field of the command is settable; the defaults are what boards in the field are
    sent: enter and exit mode 0x15 at speed 1, display mode 0, 2 s dwell, font 3, repeat 0
    (loop), red on black.
    """

    text: str = attrs.field(converter=_show_line_text)
    line: int = attrs.field(default=0, validator=_byte)  # TWID, 0-based
    enter_mode: int = attrs.field(default=0x15, validator=_byte)  # ETM
    enter_speed: int = attrs.field(default=1, validator=_byte)  # ETS
    display_mode: int = attrs.field(default=0, validator=_byte)  # DM
    dwell: int = attrs.field(default=2, validator=_byte)  # DT, seconds
    exit_mode: int = attrs.field(default=0x15, validator=_byte)  # EXM
    exit_speed: int = attrs.field(default=1, validator=_byte)  # EXS
    font: int = attrs.field(default=3, validator=_byte)  # FINDEX
    repeat: int = attrs.field(default=0, validator=_byte)  # DRS, 0 = loop
    colour: Colour = attrs.field(default=RED, validator=_colour)  # TC
    background: Colour = attrs.field(default=BLACK, validator=_colour)  # BC

    code = CommandCode.SHOW_LINE

    def data(self) -> bytes:
        text = encode_text(self.text, MAX_SHOW_LINE_TEXT_BYTES)
        return (
            bytes(
                (
                    self.line,
                    self.enter_mode,
                    self.enter_speed,
                    self.display_mode,
                    self.dwell,
                    self.exit_mode,
                    self.exit_speed,
                    self.font,
                    self.repeat,
                )
            )
            + self.colour.to_bytes()
            + self.background.to_bytes()
            + struct.pack("<H", len(text))
            + text
        )


@attrs.frozen
class Line:
    """One line of a :class:`ShowLines` command (at most 32 GBK bytes of text).

    ``line`` is LID (0-based); ``display_mode`` DM, ``speed`` DS, ``dwell`` DT (seconds),
    ``repeat`` DR (0 = loop), ``colour`` TC.
    """

    text: str = attrs.field(converter=_line_text)
    line: int = attrs.field(default=0, validator=_byte)
    display_mode: int = attrs.field(default=0, validator=_byte)
    speed: int = attrs.field(default=1, validator=_byte)
    dwell: int = attrs.field(default=2, validator=_byte)
    repeat: int = attrs.field(default=0, validator=_byte)
    colour: Colour = attrs.field(default=RED, validator=_colour)

    def data(self) -> bytes:
        text = encode_text(self.text, MAX_LINE_TEXT_BYTES)
        return (
            bytes((self.line, self.display_mode, self.speed, self.dwell, self.repeat))
            + self.colour.to_bytes()
            + bytes((len(text),))
            + text
        )


def _lines_tuple(value: Any) -> tuple[Line, ...]:
    return tuple(value)


def _validate_lines(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not all(isinstance(line, Line) for line in value):
        raise TypeError("lines must be Line values")
    if not 1 <= len(value) <= MAX_LINES:
        raise ValueError(f"a multi-line command carries 1..{MAX_LINES} lines, not {len(value)}")


@attrs.frozen
class ShowLines:
    """0x6E: up to four lines and an optional voice text, in one packet.

    One packet matters when a camera relays the bytes: it writes reply items back to back,
    and a board busy with one frame may miss the next. ``save`` keeps the text on the
    board (SAVE_FLAG 1) instead of showing it temporarily; ``voice`` is at most 64 GBK
    bytes (None: no voice block).
    """

    lines: tuple[Line, ...] = attrs.field(converter=_lines_tuple, validator=_validate_lines)
    save: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    voice: str | None = attrs.field(default=None, converter=_voice_text)

    code = CommandCode.SHOW_LINES

    def data(self) -> bytes:
        out = bytearray((int(self.save), len(self.lines)))
        for index, line in enumerate(self.lines):
            out += line.data()
            out.append(_LINE_MORE if index < len(self.lines) - 1 else _LINE_LAST)
        if self.voice is not None:
            voice = encode_text(self.voice, MAX_VOICE_BYTES)
            out += bytes((_VOICE_MARK, len(voice))) + voice + bytes((_VOICE_END,))
        return bytes(out)


def _clock_time(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"a clock time must be a datetime, not {type(value).__name__}")
    # The board has no time zone and no sub-second field: it gets the local wall time.
    return value.replace(microsecond=0, tzinfo=None)


@attrs.frozen
class SetClock:
    """0x05: set the board's clock to the wall-clock time ``when`` (seconds resolution).

    A time-zone-aware ``when`` is sent as its own wall-clock time: convert it to the
    site's zone first.
    """

    when: datetime = attrs.field(converter=_clock_time)

    code = CommandCode.SET_CLOCK

    @property
    def weekday(self) -> int:
        """The board's weekday: 1 = Sunday ... 7 = Saturday."""
        return (self.when.weekday() + 1) % 7 + 1

    def data(self) -> bytes:
        when = self.when
        return struct.pack(
            "<HBBBBBB",
            when.year,
            when.month,
            when.day,
            self.weekday,
            when.hour,
            when.minute,
            when.second,
        )


BoardCommand = Speak | ShowLine | ShowLines | SetClock


@attrs.frozen
class BoardFrame:
    """A decoded frame: a typed command for the board at ``address``."""

    command: BoardCommand
    address: int = attrs.field(default=DEFAULT_ADDRESS, validator=_byte)
    packet_number: int = attrs.field(default=DEFAULT_PACKET_NUMBER, validator=_in_range(0, 0xFFFF))


@attrs.frozen
class RawFrame:
    """A frame with valid framing and CRC, its command not interpreted."""

    address: int
    packet_number: int
    command: int
    data: bytes


# --------------------------------------------------------------------------- encoding


def frame_bytes(
    address: int, command: int, data: bytes, packet_number: int = DEFAULT_PACKET_NUMBER
) -> bytes:
    """Frame any command bytes: header, ``data`` and the CRC (low byte first)."""
    for name, value, high in (("address", address, 0xFF), ("command", command, 0xFF)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise ValueError(f"{name} must be an int in 0..{high}, not {value!r}")
    if isinstance(packet_number, bool) or not isinstance(packet_number, int):
        raise TypeError("packet_number must be an int")
    if not 0 <= packet_number <= 0xFFFF:
        raise ValueError(f"packet_number must be in 0..65535, not {packet_number}")
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"frame data must be bytes, not {type(data).__name__}")
    if len(data) > MAX_DATA_BYTES:
        raise ValueError(f"frame data is at most {MAX_DATA_BYTES} bytes, not {len(data)}")
    body = (
        bytes((address, PROTOCOL_VERSION))
        + struct.pack(">H", packet_number)
        + bytes((command, len(data)))
        + bytes(data)
    )
    return body + struct.pack("<H", crc16_modbus(body))


def encode_frame(
    command: BoardCommand,
    address: int = DEFAULT_ADDRESS,
    packet_number: int = DEFAULT_PACKET_NUMBER,
) -> bytes:
    """The bytes of ``command`` for the board at ``address``."""
    if not isinstance(command, (Speak, ShowLine, ShowLines, SetClock)):
        raise TypeError(f"not a board command: {type(command).__name__}")
    return frame_bytes(address, command.code, command.data(), packet_number)


# --------------------------------------------------------------------------- decoding


def parse_frame(data: bytes) -> RawFrame:
    """Check one frame's framing (version, length, CRC) and split it into its fields."""
    if len(data) < _MIN_FRAME_BYTES:
        raise BoardFrameError(f"a frame is at least {_MIN_FRAME_BYTES} bytes, got {len(data)}")
    if data[1] != PROTOCOL_VERSION:
        raise BoardFrameError(f"protocol version is 0x{data[1]:02X}, not 0x{PROTOCOL_VERSION:02X}")
    length = data[5]
    if len(data) != _MIN_FRAME_BYTES + length:
        raise BoardFrameError(
            f"data length says {length} bytes, the frame holds {len(data) - _MIN_FRAME_BYTES}"
        )
    (sent,) = struct.unpack("<H", data[-2:])
    computed = crc16_modbus(data[:-2])
    if sent != computed:
        raise BoardFrameError(f"CRC is 0x{sent:04X}, expected 0x{computed:04X}")
    (packet_number,) = struct.unpack(">H", data[2:4])
    return RawFrame(
        address=data[0], packet_number=packet_number, command=data[4], data=bytes(data[6:-2])
    )


def _decode_speak(data: bytes) -> Speak:
    if not data:
        raise BoardFrameError("speak: no OTP byte")
    text = data[1:]
    if len(text) > MAX_SPEAK_TEXT_BYTES:
        raise BoardFrameError(f"speak: text is {len(text)} bytes, at most {MAX_SPEAK_TEXT_BYTES}")
    return Speak(_gbk(text, "speak text"), mode=data[0])


def _decode_show_line(data: bytes) -> ShowLine:
    if len(data) < _SHOW_LINE_FIXED_BYTES:
        raise BoardFrameError(
            f"show line: {len(data)} bytes, at least {_SHOW_LINE_FIXED_BYTES} before the text"
        )
    (text_length,) = struct.unpack("<H", data[17:19])
    text = data[19:]
    if text_length != len(text):
        raise BoardFrameError(f"show line: TL says {text_length} bytes, {len(text)} follow")
    return ShowLine(
        _gbk(text, "show line text"),
        line=data[0],
        enter_mode=data[1],
        enter_speed=data[2],
        display_mode=data[3],
        dwell=data[4],
        exit_mode=data[5],
        exit_speed=data[6],
        font=data[7],
        repeat=data[8],
        colour=Colour.from_bytes(data[9:13]),
        background=Colour.from_bytes(data[13:17]),
    )


def _decode_show_lines(data: bytes) -> ShowLines:
    if len(data) < 2:
        raise BoardFrameError("show lines: no SAVE_FLAG and line count")
    save_flag, count = data[0], data[1]
    if save_flag not in (0, 1):
        raise BoardFrameError(f"show lines: SAVE_FLAG is {save_flag}, not 0 or 1")
    if not 1 <= count <= MAX_LINES:
        raise BoardFrameError(f"show lines: line count is {count}, not 1..{MAX_LINES}")
    position = 2
    lines = []
    for index in range(count):
        head = data[position : position + 10]
        if len(head) < 10:
            raise BoardFrameError(f"show lines: line {index + 1} is cut short")
        text_length = head[9]
        if text_length > MAX_LINE_TEXT_BYTES:
            raise BoardFrameError(
                f"show lines: line {index + 1} text is {text_length} bytes, "
                f"at most {MAX_LINE_TEXT_BYTES}"
            )
        start = position + 10
        end = start + text_length
        if end >= len(data):
            raise BoardFrameError(f"show lines: line {index + 1} is cut short")
        expected = _LINE_MORE if index < count - 1 else _LINE_LAST
        if data[end] != expected:
            raise BoardFrameError(
                f"show lines: line {index + 1} ends with 0x{data[end]:02X}, not 0x{expected:02X}"
            )
        lines.append(
            Line(
                _gbk(data[start:end], f"line {index + 1} text"),
                line=head[0],
                display_mode=head[1],
                speed=head[2],
                dwell=head[3],
                repeat=head[4],
                colour=Colour.from_bytes(head[5:9]),
            )
        )
        position = end + 1
    voice: str | None = None
    if position < len(data):
        if data[position] != _VOICE_MARK or position + 1 >= len(data):
            raise BoardFrameError(
                f"show lines: {len(data) - position} bytes after the last line "
                "are not a voice block"
            )
        voice_length = data[position + 1]
        if voice_length > MAX_VOICE_BYTES:
            raise BoardFrameError(
                f"show lines: voice is {voice_length} bytes, at most {MAX_VOICE_BYTES}"
            )
        start = position + 2
        end = start + voice_length
        if end != len(data) - 1 or data[end] != _VOICE_END:
            raise BoardFrameError("show lines: the voice block does not end the frame with 0x00")
        voice = _gbk(data[start:end], "voice text")
    return ShowLines(lines, save=bool(save_flag), voice=voice)


def _decode_set_clock(data: bytes) -> SetClock:
    if len(data) != 8:
        raise BoardFrameError(f"set clock: {len(data)} bytes, not 8")
    year, month, day, weekday, hour, minute, second = struct.unpack("<HBBBBBB", data)
    try:
        command = SetClock(datetime(year, month, day, hour, minute, second))
    except ValueError as error:
        raise BoardFrameError(f"set clock: not a valid time ({error})") from None
    if weekday != command.weekday:
        raise BoardFrameError(
            f"set clock: weekday {weekday} does not match {command.when.date()} "
            f"(expected {command.weekday}, 1 = Sunday)"
        )
    return command


_DECODERS: dict[int, Callable[[bytes], BoardCommand]] = {
    CommandCode.SPEAK: _decode_speak,
    CommandCode.SHOW_LINE: _decode_show_line,
    CommandCode.SHOW_LINES: _decode_show_lines,
    CommandCode.SET_CLOCK: _decode_set_clock,
}


def decode_frame(data: bytes) -> BoardFrame:
    """Decode one complete frame into a typed command.

    Raises :class:`BoardFrameError` for bad framing or CRC, an unknown command, or data
    that does not have the command's structure.
    """
    raw = parse_frame(data)
    decoder = _DECODERS.get(raw.command)
    if decoder is None:
        raise BoardFrameError(f"unknown command 0x{raw.command:02X}")
    return BoardFrame(decoder(raw.data), address=raw.address, packet_number=raw.packet_number)


@attrs.frozen
class FrameSplit:
    """What :func:`split_frames` found in a byte stream.

    ``frames``: complete frames with valid framing and CRC, in order; ``skipped``: bytes
    that belonged to no valid frame and were passed over; ``rest``: a trailing part that
    may be the start of a frame still arriving.
    """

    frames: tuple[bytes, ...]
    skipped: int
    rest: bytes


def split_frames(stream: bytes) -> FrameSplit:
    """Cut a byte stream (as read from a bus) into frames.

    The stream is scanned for a header whose length and CRC hold; bytes before it are
    skipped one at a time, so the scan finds its way back after noise or a cut frame.
    Commands are not interpreted (use :func:`decode_frame` on each frame for that).
    """
    data = bytes(stream)
    frames: list[bytes] = []
    skipped = 0
    position = 0
    total = len(data)
    while position < total:
        if total - position >= 2 and data[position + 1] != PROTOCOL_VERSION:
            position += 1
            skipped += 1
            continue
        if total - position < _HEADER_BYTES:
            break
        end = position + _MIN_FRAME_BYTES + data[position + 5]
        if end > total:
            break
        candidate = data[position:end]
        if crc16_modbus(candidate[:-2]) == struct.unpack("<H", candidate[-2:])[0]:
            frames.append(candidate)
            position = end
        else:
            position += 1
            skipped += 1
    return FrameSplit(frames=tuple(frames), skipped=skipped, rest=data[position:])
