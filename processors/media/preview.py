"""The preview contact sheet: a few moments of the input (top row) above the output.

Tasks cut the tiles from frames they already hold in memory — the input frame as decoded and
the output frame as the chain emitted it — and store each as a small JPEG beside their part.
The stitcher only lays the tiles out, so the preview adds no decoding to the serial stitch
(grabbing the frames again from both videos cost ~5 % of a job's wall time).
"""

from __future__ import annotations

import cv2
import numpy as np

from processors.media.frames import FrameBatch

MOMENTS = 4
TILE_HEIGHT = 240
GAP = 8
JPEG_QUALITY = 85


def preview_indices(frame_count: int, moments: int = MOMENTS) -> list[int]:
    """The output frames the sheet shows: the middles of `moments` equal stretches."""
    if frame_count <= 0:
        return []
    return sorted({min(frame_count - 1, int(frame_count * (i + 0.5) / moments))
                   for i in range(moments)})  # fmt: skip


def tile(frame_rgb: np.ndarray, height: int = TILE_HEIGHT) -> np.ndarray:
    """The frame scaled to `height` rows, as BGR (OpenCV's order for JPEG)."""
    h, w = frame_rgb.shape[:2]
    width = max(2, round(w * height / h))
    small = cv2.resize(frame_rgb, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2BGR)


def encode_jpeg(image_bgr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


class PreviewTap:
    """Keeps tiles of the wanted frame indices as batches pass the chain's two ends."""

    def __init__(self, wanted: list[int]) -> None:
        self.wanted = set(wanted)
        self.inputs: dict[int, np.ndarray] = {}
        self.outputs: dict[int, np.ndarray] = {}

    def _see(self, batch: FrameBatch, into: dict[int, np.ndarray]) -> None:
        if not self.wanted or len(batch) == 0:
            return
        for pos, index in enumerate(batch.indices.tolist()):
            if index in self.wanted and index not in into:
                into[index] = tile(batch.frames[pos])

    def see_input(self, batch: FrameBatch) -> None:
        self._see(batch, self.inputs)

    def see_output(self, batch: FrameBatch) -> None:
        self._see(batch, self.outputs)

    def jpegs(self) -> dict[str, bytes]:
        """`<index>-in` / `<index>-out` → JPEG, for each index both ends saw."""
        out: dict[str, bytes] = {}
        for index in sorted(self.inputs.keys() & self.outputs.keys()):
            out[f"{index:08d}-in"] = encode_jpeg(self.inputs[index])
            out[f"{index:08d}-out"] = encode_jpeg(self.outputs[index])
        return out


def contact_sheet(top: list[np.ndarray], bottom: list[np.ndarray]) -> bytes | None:
    """Input tiles in a row above output tiles, as one JPEG; None without tiles."""
    if not top or not bottom:
        return None
    rows = [np.hstack(top), np.hstack(bottom)]
    width = max(r.shape[1] for r in rows)
    canvas = np.zeros((TILE_HEIGHT * 2 + GAP, width, 3), np.uint8)
    canvas[:TILE_HEIGHT, : rows[0].shape[1]] = rows[0]
    canvas[TILE_HEIGHT + GAP :, : rows[1].shape[1]] = rows[1]
    return encode_jpeg(canvas)
