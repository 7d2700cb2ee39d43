"""YOLO11n (the real COCO weights) as crop's detector keeps the person's face inside the 9:16
window on the whole real Pexels clip, the face located independently by the real SCRFD-500m on
the input frames."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from processors.base import ProcessorContext
from processors.crop.processor import CropProcessor
from processors.faces import FaceAnalyser
from processors.media.frames import FrameReader
from processors.media.probe import probe
from tests.real_chain import YOLO, build_real_store

INSIDE_RATE = 0.99


@pytest.mark.slow
def test_yolo11n_keeps_the_face_in_the_9_16_window_on_the_pexels_clip(
    real_asset, tmp_path: Path
) -> None:
    clip = real_asset("pexels.mp4")
    store = build_real_store(tmp_path / "models", real_asset)
    info = probe(str(clip))
    ctx = ProcessorContext(
        info=info,
        rate=Fraction(info.fps_num, info.fps_den),
        width=info.width,
        height=info.height,
        model_store=str(store),
    )
    crop = CropProcessor({"aspect": "9:16", "detector": "yolo-onnx", "model": YOLO}, ctx)
    faces = FaceAnalyser(real_asset("scrfd_500m_bnkps.onnx"), None, det_size=320)
    found: dict[int, np.ndarray] = {}  # frame -> the largest face's box on the input frame
    windows: dict[int, tuple[int, int, int, int]] = {}
    decoded: list[int] = []
    reader = FrameReader.for_video(str(clip), info, 0, None, batch_size=8)
    try:
        for batch in reader:
            decoded += batch.indices.tolist()
            for index, frame in zip(batch.indices.tolist(), batch.frames, strict=True):
                seen = faces.detect(frame)
                if seen:
                    found[index] = seen[0].box
            crop.push(batch)
            windows.update(crop.windows)
    finally:
        reader.close()
    crop.flush()
    windows.update(crop.windows)
    # The header counts 472 frames; the last one does not decode (tasks allow for that too).
    assert decoded == list(range(len(decoded))) and len(decoded) >= info.frame_count - 1 >= 470
    assert sorted(windows) == decoded  # the crop placed a window on every frame
    assert len(found) >= 0.95 * len(decoded)  # she is on screen throughout
    inside = []
    for index, box in found.items():
        x, y, w, h = windows[index]
        x0, y0, x1, y1 = box
        inside.append(x0 >= x and x1 <= x + w and y0 >= y - 2 and y1 <= y + h + 2)
    rate = float(np.mean(inside))
    print(f"\nface inside the 9:16 window on {rate:.2%} of {len(found)} frames with a face")
    assert (w, h) == (202, 360)
    assert rate >= INSIDE_RATE
