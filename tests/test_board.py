"""LED display and voice board frames (the 0x64 protocol): encoder, decoder, stream splitter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol.board import (
    BLACK,
    GREEN,
    MAX_DATA_BYTES,
    MAX_LINE_TEXT_BYTES,
    MAX_SHOW_LINE_TEXT_BYTES,
    MAX_SPEAK_TEXT_BYTES,
    MAX_VOICE_BYTES,
    RED,
    BoardFrame,
    BoardFrameError,
    Colour,
    Line,
    SetClock,
    ShowLine,
    ShowLines,
    Speak,
    crc16_modbus,
    decode_frame,
    encode_frame,
    encode_text,
    fit_text,
    frame_bytes,
    parse_frame,
    split_frames,
)

# PROTOCOL.md section 8: "欢迎光临" spoken, CRC 0x5832 sent as 32 58.
WELCOME_SPOKEN = bytes.fromhex("00 64 FF FF 30 09 01 BB B6 D3 AD B9 E2 C1 D9 32 58")


# --------------------------------------------------------------------------- worked example


def test_crc_of_the_worked_example() -> None:
    assert crc16_modbus(WELCOME_SPOKEN[:-2]) == 0x5832


def test_crc16_modbus_check_value() -> None:
    # The catalogue check value of CRC-16/MODBUS over "123456789".
    assert crc16_modbus(b"123456789") == 0x4B37


def test_speak_encodes_to_the_worked_example() -> None:
    assert encode_frame(Speak("欢迎光临")) == WELCOME_SPOKEN


def test_worked_example_decodes_to_speak() -> None:
    assert decode_frame(WELCOME_SPOKEN) == BoardFrame(Speak("欢迎光临", mode=0x01), address=0)


# --------------------------------------------------------------------------- layouts


def test_show_line_layout_with_defaults() -> None:
    frame = encode_frame(ShowLine("京A12345"), address=3)
    text = "京A12345".encode("gbk")
    assert frame[:6] == bytes((3, 0x64, 0xFF, 0xFF, 0x62, 19 + len(text)))
    assert frame[6:25] == bytes.fromhex(
        "00"  # TWID
        "15 01"  # ETM ETS
        "00 02"  # DM DT
        "15 01"  # EXM EXS
        "03 00"  # FINDEX DRS
        "FF 00 00 00"  # TC red
        "00 00 00 00"  # BC black
    ) + len(text).to_bytes(2, "little")
    assert frame[25:-2] == text


def test_show_lines_layout_with_voice() -> None:
    command = ShowLines(
        [Line("粤B", line=0, colour=GREEN), Line("OK", line=1)], save=True, voice="欢迎"
    )
    data = parse_frame(encode_frame(command)).data
    assert data == (
        bytes((1, 2))
        + bytes((0, 0, 1, 2, 0)) + GREEN.to_bytes() + bytes((3,)) + "粤B".encode("gbk") + b"\x0d"
        + bytes((1, 0, 1, 2, 0)) + RED.to_bytes() + bytes((2,)) + b"OK" + b"\x00"
        + b"\x0a" + bytes((4,)) + "欢迎".encode("gbk") + b"\x00"
    )


def test_show_lines_without_voice_has_no_voice_block() -> None:
    data = parse_frame(encode_frame(ShowLines([Line("A")]))).data
    assert data.endswith(b"\x01A\x00")  # TL, text, last-line mark, and nothing after
    assert decode_frame(encode_frame(ShowLines([Line("A")]))).command == ShowLines([Line("A")])


def test_set_clock_layout_and_weekday() -> None:
    # 2024-05-05 was a Sunday: weekday 1.
    frame = encode_frame(SetClock(datetime(2024, 5, 5, 13, 1, 2)))
    assert parse_frame(frame).data == bytes.fromhex("E8 07 05 05 01 0D 01 02")
    saturday = parse_frame(encode_frame(SetClock(datetime(2024, 5, 4, 0, 0, 0)))).data
    assert saturday[4] == 7


def test_set_clock_drops_time_zone_and_microseconds() -> None:
    aware = datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(hours=8)))
    assert SetClock(aware).when == datetime(2024, 1, 2, 3, 4, 5)


def test_raw_frame_bytes_for_other_commands() -> None:
    frame = frame_bytes(0x01, 0x99, b"\x01\x02")
    raw = parse_frame(frame)
    assert (raw.address, raw.command, raw.data, raw.packet_number) == (1, 0x99, b"\x01\x02", 0xFFFF)
    with pytest.raises(BoardFrameError, match="unknown command 0x99"):
        decode_frame(frame)


def test_frame_data_limit() -> None:
    frame_bytes(0, 0x30, bytes(MAX_DATA_BYTES))
    with pytest.raises(ValueError):
        frame_bytes(0, 0x30, bytes(MAX_DATA_BYTES + 1))


# --------------------------------------------------------------------------- text


def test_unencodable_text_becomes_visible_question_marks() -> None:
    assert fit_text("欢迎😀光临", 100) == "欢迎?光临"
    assert Speak("🚗京A12345").text == "?京A12345"


def test_long_text_is_cut_between_characters() -> None:
    text = "欢迎光临" * 20  # 160 GBK bytes
    assert encode_text(text, 7) == "欢迎光".encode("gbk")  # 6 bytes: the 4th character would split
    assert len(Line(text).text.encode("gbk")) == MAX_LINE_TEXT_BYTES
    assert ShowLines([Line("x")], voice=text).voice == "欢迎光临" * 8
    assert len(encode_text("A" + text, MAX_LINE_TEXT_BYTES)) == MAX_LINE_TEXT_BYTES - 1


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_fitted_text_never_exceeds_and_keeps_a_prefix(text: str, limit: int) -> None:
    encoded = encode_text(text, limit)
    assert len(encoded) <= limit
    fitted = encoded.decode("gbk")  # always whole characters
    replaced = text.encode("gbk", errors="replace").decode("gbk")
    assert replaced.startswith(fitted)


def test_colour_parse() -> None:
    assert Colour.parse("FF0000") == RED
    assert Colour.parse("#00ff00") == GREEN
    assert Colour.parse("00000080") == Colour(0, 0, 0, 0x80)
    with pytest.raises(ValueError):
        Colour.parse("red")


# --------------------------------------------------------------------------- round trips

_bytes = st.integers(min_value=0, max_value=255)
_colours = st.builds(Colour, _bytes, _bytes, _bytes, _bytes)
_text = st.text(max_size=300)

_speak = st.builds(Speak, _text, mode=_bytes)
_show_line = st.builds(
    ShowLine,
    _text,
    line=_bytes,
    enter_mode=_bytes,
    enter_speed=_bytes,
    display_mode=_bytes,
    dwell=_bytes,
    exit_mode=_bytes,
    exit_speed=_bytes,
    font=_bytes,
    repeat=_bytes,
    colour=_colours,
    background=_colours,
)
_line = st.builds(
    Line,
    st.text(max_size=40),
    line=_bytes,
    display_mode=_bytes,
    speed=_bytes,
    dwell=_bytes,
    repeat=_bytes,
    colour=_colours,
)
_show_lines = st.builds(
    ShowLines,
    st.lists(_line, min_size=1, max_size=4),
    save=st.booleans(),
    voice=st.none() | st.text(max_size=80),
)
_set_clock = st.builds(
    SetClock, st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
)
_commands = _speak | _show_line | _show_lines | _set_clock


@given(_commands, _bytes, st.integers(min_value=0, max_value=0xFFFF))
def test_decode_of_encode_is_identity(command: object, address: int, packet: int) -> None:
    frame = encode_frame(command, address, packet)  # type: ignore[arg-type]
    assert len(frame) <= MAX_DATA_BYTES + 8
    assert decode_frame(frame) == BoardFrame(command, address, packet)  # type: ignore[arg-type]


@given(st.lists(_commands, max_size=6), st.binary(max_size=3))
def test_split_frames_finds_every_frame_of_a_stream(commands: list[object], tail: bytes) -> None:
    frames = [encode_frame(command) for command in commands]  # type: ignore[arg-type]
    split = split_frames(b"".join(frames))
    assert split.frames == tuple(frames) and split.skipped == 0 and split.rest == b""
    assert [decode_frame(frame).command for frame in split.frames] == commands


def test_split_frames_resynchronises_after_noise_and_keeps_a_partial_tail() -> None:
    one = encode_frame(Speak("欢迎光临"))
    two = encode_frame(ShowLine("京A12345"))
    three = encode_frame(SetClock(datetime(2024, 1, 1)))
    stream = b"\x55\xaa" + one + one[:5] + two + three[:7]
    split = split_frames(stream)
    assert split.frames == (one, two)
    assert split.skipped == 2 + 5
    assert split.rest == three[:7]
    # the rest, completed, is a frame
    assert split_frames(split.rest + three[7:]).frames == (three,)


# --------------------------------------------------------------------------- the decoder refuses


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (WELCOME_SPOKEN[:-1] + b"\x00", "CRC"),
        (WELCOME_SPOKEN[:7], "at least"),
        (WELCOME_SPOKEN[:1] + b"\x65" + WELCOME_SPOKEN[2:], "version"),
        (WELCOME_SPOKEN + b"\x00", "data length"),
        (frame_bytes(0, 0x30, b""), "no OTP"),
        (frame_bytes(0, 0x30, b"\x01\xff\xff"), "not GBK"),
        (frame_bytes(0, 0x62, bytes(18)), "show line"),
        (frame_bytes(0, 0x62, bytes(17) + b"\x05\x00" + b"abc"), "TL says 5"),
        (frame_bytes(0, 0x6E, b"\x02\x01"), "SAVE_FLAG"),
        (frame_bytes(0, 0x6E, b"\x00\x05"), "line count"),
        (frame_bytes(0, 0x6E, b"\x00\x00"), "line count"),
        (frame_bytes(0, 0x6E, b"\x00\x01" + bytes(9) + b"\x21" + bytes(34)), "at most 32"),
        (frame_bytes(0, 0x6E, b"\x00\x01" + bytes(9) + b"\x01A\x0d"), "ends with 0x0D"),
        (frame_bytes(0, 0x6E, b"\x00\x02" + bytes(9) + b"\x01A\x00"), "line 1 ends"),
        (frame_bytes(0, 0x6E, b"\x00\x01" + bytes(9) + b"\x01A"), "cut short"),
        (frame_bytes(0, 0x6E, b"\x00\x01" + bytes(9) + b"\x01A\x00\x0b\x01B\x00"), "voice block"),
        (frame_bytes(0, 0x6E, b"\x00\x01" + bytes(9) + b"\x01A\x00\x0a\x01B"), "voice block"),
        (frame_bytes(0, 0x6E, b"\x00\x01" + bytes(9) + b"\x01A\x00\x0a\x01B\x00\x00"), "voice"),
        (frame_bytes(0, 0x6E, b"\x00\x01" + bytes(9) + b"\x01A\x00\x0a\x41" + bytes(66)), "at most 64"),
        (frame_bytes(0, 0x05, bytes(7)), "not 8"),
        (frame_bytes(0, 0x05, bytes.fromhex("E8 07 02 1E 01 00 00 00")), "not a valid time"),
        (frame_bytes(0, 0x05, bytes.fromhex("E8 07 05 05 02 0D 01 02")), "weekday 2"),
        (frame_bytes(0, 0x05, bytes.fromhex("E8 07 05 05 01 18 00 00")), "not a valid time"),
    ],
)
def test_decoder_rejects(frame: bytes, reason: str) -> None:
    with pytest.raises(BoardFrameError, match=reason):
        decode_frame(frame)


def test_corrupted_byte_is_caught_by_crc() -> None:
    damaged = bytearray(WELCOME_SPOKEN)
    damaged[8] ^= 0x01
    with pytest.raises(BoardFrameError, match="CRC"):
        decode_frame(bytes(damaged))
    assert split_frames(bytes(damaged)).frames == ()


def test_commands_validate_their_fields() -> None:
    with pytest.raises(ValueError):
        Line("x", line=256)
    with pytest.raises(TypeError):
        ShowLine("x", colour="red")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ShowLines([])
    with pytest.raises(ValueError):
        ShowLines([Line("a")] * 5)
    with pytest.raises(TypeError):
        Speak(b"bytes")
    with pytest.raises(TypeError):
        SetClock("2024-01-01")
    assert ShowLine("x").background == BLACK


def test_full_size_texts_fit_their_frames() -> None:
    wide = "欢" * 300
    assert len(parse_frame(encode_frame(Speak(wide))).data) == 1 + MAX_SPEAK_TEXT_BYTES
    assert len(parse_frame(encode_frame(ShowLine(wide))).data) == 19 + MAX_SHOW_LINE_TEXT_BYTES
    four = ShowLines([Line(wide, line=i) for i in range(4)], voice=wide)
    assert len(four.voice.encode("gbk")) == MAX_VOICE_BYTES  # type: ignore[union-attr]
    assert decode_frame(encode_frame(four)).command == four
