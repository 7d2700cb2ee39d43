"""Images that are small on disk and huge once decoded (a constant colour compresses ~1000:1),
written row by row with zlib so the test never holds the decoded image itself."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def write_constant_png(path: Path, width: int, height: int, rgb=(200, 160, 140)) -> Path:
    """A valid 8-bit RGB PNG of one colour, width × height pixels (25000² is about 1.9 MB)."""
    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    packer = zlib.compressobj(9)
    parts = [packer.compress(row) for _ in range(height)]
    data = b"".join(parts) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with path.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(_chunk(b"IHDR", header))
        out.write(_chunk(b"IDAT", data))
        out.write(_chunk(b"IEND", b""))
    return path
