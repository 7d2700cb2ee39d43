"""An image's pixel size from its header alone, so a huge image is refused before it is decoded.

A 25000×25000 PNG of one colour is about 2 MB on disk and 1.9 GB once decoded (3.6 GB at the
peak of a face check). Decoders allocate the whole frame first, so the size is read from the
header (PNG IHDR, JPEG SOFn, WebP VP8/VP8L/VP8X, BMP) and checked against
`Settings.max_image_pixels` before any decoder sees the bytes.
"""

from __future__ import annotations

import struct

FORMATS = "PNG, JPEG, WebP or BMP"
# JPEG start-of-frame markers (SOF0–SOF15 but DHT C4, JPG C8 and DAC CC): they carry the size.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageHeaderError(ValueError):
    """Not an image of a format we read, or its header is cut short or damaged."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header; ImageHeaderError when there is no header we know."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return width, height
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] == b"BM":
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)  # a negative height stores the rows top-down
    except (struct.error, IndexError):
        pass
    raise ImageHeaderError(f"not a {FORMATS} image, or its header is damaged")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        if marker == 0xDA or length < 2:  # image data before any frame header: damaged
            break
        at += 2 + length
    raise ImageHeaderError("a JPEG without a frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame's start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, packed after the signature
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise ImageHeaderError("a WebP without a VP8, VP8L or VP8X header")


def too_many_pixels(data: bytes, max_pixels: int) -> str | None:
    """Why the image may not be decoded (its header unknown, or more than `max_pixels`
    pixels), or None when it may."""
    try:
        width, height = image_size(data)
    except ImageHeaderError as exc:
        return str(exc)
    if width * height > max_pixels:
        return (
            f"{width}×{height} pixels is more than the {max_pixels:,} an image may have "
            "(max_image_pixels); scale it down (a face needs a few hundred pixels)"
        )
    return None
