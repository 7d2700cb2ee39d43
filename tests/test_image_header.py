"""An image's size from its header alone (processors/media/image_header.py), checked against
what OpenCV decodes from the same bytes, for each format the face checks take."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from processors.media.image_header import ImageHeaderError, image_size, too_many_pixels
from tests.huge_images import write_constant_png

ENCODINGS = {
    "jpeg": (".jpg", []),
    "progressive-jpeg": (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "png": (".png", []),
    "webp-lossy": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
    "webp-lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
    "bmp": (".bmp", []),
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_header_gives_the_size_opencv_decodes(real_asset, encoding: str) -> None:
    image = cv2.imread(str(real_asset("biden.jpg")))[:301, :517]  # odd sizes, not square
    suffix, params = ENCODINGS[encoding]
    ok, data = cv2.imencode(suffix, image, params)
    assert ok
    assert image_size(data.tobytes()) == (517, 301)


def test_a_real_photo_with_its_camera_headers(real_asset) -> None:
    data = real_asset("obama.jpg").read_bytes()
    height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    assert image_size(data) == (width, height)


def test_a_huge_png_is_refused_from_its_first_bytes(tmp_path: Path) -> None:
    path = write_constant_png(tmp_path / "big.png", 5000, 4000)
    head = path.read_bytes()[:64]
    assert image_size(head) == (5000, 4000)
    assert "5000×4000 pixels" in (too_many_pixels(head, 19_999_999) or "")
    assert too_many_pixels(head, 20_000_000) is None


@pytest.mark.parametrize(
    "data", [b"", b"GIF89a" + bytes(20), b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xda\x00\x02", b"x"]
)
def test_anything_else_is_refused_with_the_formats_we_read(data: bytes) -> None:
    with pytest.raises(ImageHeaderError):
        image_size(data)
    assert too_many_pixels(data, 10**9) is not None
