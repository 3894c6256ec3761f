"""Small, valid baseline JPEG images made at run time, without an imaging library.

A camera sends JPEG frames (a whole scene and a plate crop). The simulator does
not need photographs, only files every decoder accepts, of a chosen size. So
this is a real baseline (SOF0) JPEG encoder restricted to images whose 8x8
blocks are each one flat colour: every block's DCT then has only a DC
coefficient, which makes encoding cheap (no transform) while the result stays
a standard JFIF file with Annex K quantisation and Huffman tables.

Size padding uses COM (comment) segments between the header and the scan:
decoders skip them, so a 2 KB picture can be grown to the 200 KB a benchmark
wants without changing the image.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

__all__ = [
    "Colour",
    "add_comment",
    "MIN_PADDED_OVERHEAD",
    "crop_image",
    "encode_blocks",
    "pad_jpeg",
    "scene_image",
]

# (Y, Cb, Cr), each 0-255.
Colour = tuple[int, int, int]

# Annex K.1 quantisation tables, natural (row-major) order.
_LUMA_Q = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA_Q = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip
# Zigzag scan: position k of the stream holds natural index _ZIGZAG[k].
_ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
)  # fmt: skip

# Annex K.3 Huffman tables: code counts per length 1..16, then symbols.
_DC_LUMA_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_DC_LUMA_VALS = tuple(range(12))
_DC_CHROMA_BITS = (0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0)
_DC_CHROMA_VALS = tuple(range(12))
_AC_LUMA_BITS = (0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D)
_AC_LUMA_VALS = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f0"
    "2433627282090a161718191a25262728292a3435363738393a434445464748494a"
    "535455565758595a636465666768696a737475767778797a838485868788898a"
    "92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7"
    "c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa"
)
_AC_CHROMA_BITS = (0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77)
_AC_CHROMA_VALS = bytes.fromhex(
    "000102031104052131061241510761711322328108144291a1b1c109233352f0"
    "156272d10a162434e125f11718191a262728292a35363738393a434445464748"
    "494a535455565758595a636465666768696a737475767778797a828384858687"
    "88898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3"
    "c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa"
)

# A COM segment carries at most 65533 bytes of text (its length field counts itself).
_COM_MAX = 65533
# Bytes a padding COM segment costs beyond its text: marker (2) + length (2).
MIN_PADDED_OVERHEAD = 4


def _huffman_codes(bits: Sequence[int], vals: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Annex C: canonical codes, symbol -> (code, length)."""
    codes: dict[int, tuple[int, int]] = {}
    code = 0
    k = 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[vals[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


_DC_CODES = (
    _huffman_codes(_DC_LUMA_BITS, _DC_LUMA_VALS),
    _huffman_codes(_DC_CHROMA_BITS, _DC_CHROMA_VALS),
)
_EOB = (
    _huffman_codes(_AC_LUMA_BITS, _AC_LUMA_VALS)[0x00],
    _huffman_codes(_AC_CHROMA_BITS, _AC_CHROMA_VALS)[0x00],
)


class _BitWriter:
    """Entropy-coded segment writer with 0xFF byte stuffing."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._n = 0

    def write(self, value: int, length: int) -> None:
        self._acc = (self._acc << length) | (value & ((1 << length) - 1))
        self._n += length
        while self._n >= 8:
            self._n -= 8
            byte = (self._acc >> self._n) & 0xFF
            self._out.append(byte)
            if byte == 0xFF:
                self._out.append(0x00)
        self._acc &= (1 << self._n) - 1

    def finish(self) -> bytes:
        # Pad the last byte with 1-bits, as the standard asks.
        if self._n:
            self.write((1 << (8 - self._n)) - 1, 8 - self._n)
        return bytes(self._out)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


def _header(width: int, height: int, comment: bytes) -> bytes:
    parts = [
        b"\xff\xd8",
        _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
    ]
    if comment:
        parts.append(_segment(0xFE, comment[:_COM_MAX]))
    parts.append(
        _segment(
            0xDB,
            b"\x00"
            + bytes(_LUMA_Q[i] for i in _ZIGZAG)
            + b"\x01"
            + bytes(_CHROMA_Q[i] for i in _ZIGZAG),
        )
    )
    parts.append(
        _segment(
            0xC0,
            struct.pack(">BHHB", 8, height, width, 3) + bytes((1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1)),
        )
    )
    for table_class, table_id, bits, vals in (
        (0, 0, _DC_LUMA_BITS, bytes(_DC_LUMA_VALS)),
        (1, 0, _AC_LUMA_BITS, _AC_LUMA_VALS),
        (0, 1, _DC_CHROMA_BITS, bytes(_DC_CHROMA_VALS)),
        (1, 1, _AC_CHROMA_BITS, _AC_CHROMA_VALS),
    ):
        parts.append(_segment(0xC4, bytes(((table_class << 4) | table_id, *bits)) + vals))
    parts.append(_segment(0xDA, bytes((3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0))))
    return b"".join(parts)


def encode_blocks(
    blocks_wide: int,
    blocks_high: int,
    colour_at: Callable[[int, int], Colour],
    comment: bytes = b"",
) -> bytes:
    """Encode an image of ``blocks_wide`` x ``blocks_high`` flat 8x8 blocks.

    ``colour_at(bx, by)`` gives each block's (Y, Cb, Cr). The result is a
    baseline JFIF file, 4:4:4, of ``8*blocks_wide`` x ``8*blocks_high`` pixels.
    """
    if not (1 <= blocks_wide <= 8191 and 1 <= blocks_high <= 8191):
        raise ValueError("image size out of range")
    writer = _BitWriter()
    previous = [0, 0, 0]
    for by in range(blocks_high):
        for bx in range(blocks_wide):
            colour = colour_at(bx, by)
            for component in range(3):
                table = 0 if component == 0 else 1
                quant = _LUMA_Q[0] if table == 0 else _CHROMA_Q[0]
                sample = min(255, max(0, int(colour[component])))
                # A flat block's DC term is 8 * (sample - 128) (level shift, FDCT scaling).
                dc = round(8 * (sample - 128) / quant)
                diff = dc - previous[component]
                previous[component] = dc
                size = abs(diff).bit_length()
                code, length = _DC_CODES[table][size]
                writer.write(code, length)
                if size:
                    writer.write(diff if diff > 0 else diff + (1 << size) - 1, size)
                eob_code, eob_length = _EOB[table]
                writer.write(eob_code, eob_length)
    return _header(8 * blocks_wide, 8 * blocks_high, comment) + writer.finish() + b"\xff\xd9"


def pad_jpeg(image: bytes, size: int) -> bytes:
    """Grow ``image`` to exactly ``size`` bytes with COM segments after SOI.

    An image already at or above ``size`` is returned unchanged. Padding of
    fewer than 4 bytes cannot be expressed as a segment, so such a request is
    met by padding a few bytes more than the 4-byte minimum in the segment
    before (the result is exact whenever ``size - len(image) >= 4`` or 0).
    """
    missing = size - len(image)
    if missing <= 0:
        return image
    if missing < MIN_PADDED_OVERHEAD:
        # Not expressible as a segment: the closest valid larger size.
        missing = MIN_PADDED_OVERHEAD
    segments = []
    while missing > 0:
        text_length = min(_COM_MAX, missing - MIN_PADDED_OVERHEAD)
        remainder = missing - (text_length + MIN_PADDED_OVERHEAD)
        if 0 < remainder < MIN_PADDED_OVERHEAD:
            # Leave room so the last segment is at least a bare header.
            text_length -= MIN_PADDED_OVERHEAD - remainder
        segments.append(_segment(0xFE, b" " * text_length))
        missing -= text_length + MIN_PADDED_OVERHEAD
    return image[:2] + b"".join(segments) + image[2:]


def add_comment(image: bytes, text: bytes) -> bytes:
    """``image`` with a COM segment holding ``text`` (cut to 65533 bytes) right after SOI."""
    return image[:2] + _segment(0xFE, text[:_COM_MAX]) + image[2:]


def _rgb_to_ycbcr(r: int, g: int, b: int) -> Colour:
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return (round(y), round(cb), round(cr))


# Plate background colours by the protocol's colorType (1 blue, 2 yellow,
# 3 white, 4 black, 5 green); 0 (unknown) draws grey.
_PLATE_RGB = {
    0: (128, 128, 128),
    1: (20, 60, 200),
    2: (240, 200, 20),
    3: (235, 235, 235),
    4: (20, 20, 20),
    5: (60, 190, 90),
}


def scene_image(
    color_type: int,
    plate_box: tuple[int, int],
    comment: bytes = b"",
    blocks: tuple[int, int] = (40, 30),
) -> bytes:
    """A whole-frame picture: a sky-to-road gradient with a plate-coloured box.

    ``plate_box`` is the plate's top-left block; the box is 6x2 blocks.
    """
    wide, high = blocks
    plate = _rgb_to_ycbcr(*_PLATE_RGB.get(color_type, _PLATE_RGB[0]))
    px, py = plate_box

    def colour_at(bx: int, by: int) -> Colour:
        if px <= bx < px + 6 and py <= by < py + 2:
            return plate
        shade = 200 - (140 * by) // max(1, high - 1)
        return _rgb_to_ycbcr(shade - 20, shade - 10 + (bx % 3), shade)

    return encode_blocks(wide, high, colour_at, comment)


def crop_image(color_type: int, comment: bytes = b"") -> bytes:
    """A plate crop: 96x32 pixels of plate colour with a lighter band of characters."""
    r, g, b = _PLATE_RGB.get(color_type, _PLATE_RGB[0])
    ground = _rgb_to_ycbcr(r, g, b)
    text = _rgb_to_ycbcr(min(255, r + 150), min(255, g + 150), min(255, b + 150))

    def colour_at(bx: int, by: int) -> Colour:
        return text if by in (1, 2) and bx % 2 == 1 and 0 < bx < 11 else ground

    return encode_blocks(12, 4, colour_at, comment)
