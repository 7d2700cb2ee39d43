"""SCRFD face detection on onnxruntime, for the SCRFD exports found in the wild.

insightface 0.7.3 routes any detector to its `RetinaFace` class, which assumes outputs without
a batch dimension and crashes on the common `[1, N, k]` exports (scrfd_500m_bnkps among them).
This reads the layout from the file instead: outputs are grouped by their last dimension (1
scores, 4 box distances, 10 landmark distances), a leading batch dimension is dropped, the
strides follow from the group size (3: 8/16/32, 5: 8…128) and the anchors per location from
the row count. A fixed input size in the file wins over `det_size`.

Pre- and post-processing are insightface's SCRFD (`model_zoo/scrfd.py`), so the same file
gives the same faces: letterbox to the input size keeping the aspect (top-left, zero padding,
`cv2.resize` bilinear), RGB, (x − 127.5) / 128, NCHW; scores ≥ threshold; boxes and landmarks
as distances from the anchor centre in stride units; NMS at IoU 0.4 (areas with insightface's
+1 pixel convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from processors.geometry import greedy_nms
from processors.gpu import GpuUnavailable
from processors.models.sessions import onnx_session

INPUT_MEAN = 127.5
INPUT_STD = 128.0
NMS_THRESH = 0.4
STRIDES = {3: (8, 16, 32), 5: (8, 16, 32, 64, 128)}


class DetectorUnusable(ValueError):
    """The file is not an SCRFD-style detector; the message names it and its outputs."""


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # float32 [4] x0 y0 x1 y1, image pixels
    kps: np.ndarray  # float32 [5, 2], image pixels (zeros when the model has no landmarks)
    score: float


def _rows(array: np.ndarray) -> np.ndarray:
    """[N, k] from [N, k] or [1, N, k] (exports differ in whether they keep the batch dim)."""
    return array[0] if array.ndim == 3 else array


class ScrfdDetector:
    def __init__(
        self,
        path: Path,
        providers: list[str],
        *,
        det_size: int = 640,
        det_thresh: float = 0.5,
    ) -> None:
        try:
            self.session = onnx_session(path, providers)
        except GpuUnavailable:  # not the file's fault: the status code says what it is
            raise
        except Exception as exc:  # onnxruntime raises its own types for a file it cannot read
            raise DetectorUnusable(f"{path.name}: not an ONNX model onnxruntime can load") from exc
        self.name = path.name
        self.det_thresh = det_thresh
        image = self.session.get_inputs()
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        if len(image) != 1 or len(image[0].shape) != 4:
            raise DetectorUnusable(
                f"{path.name}: a face detector takes one [1,3,H,W] image, this takes "
                f"{[i.shape for i in image]}"
            )
        self.input_name = image[0].name
        h, w = image[0].shape[2:4]
        # A file exported at a fixed size only accepts that size.
        self.input_size = (w, h) if isinstance(h, int) and isinstance(w, int) else None
        self.det_size = (det_size, det_size)
        groups: dict[int, list[str]] = {1: [], 4: [], 10: []}
        for name, shape in shapes.items():
            last = shape[-1] if shape and isinstance(shape[-1], int) else None
            if last not in groups or len(shape) not in (2, 3):
                raise DetectorUnusable(self._layout_error(shapes))
            groups[last].append(name)
        levels = len(groups[1])
        if levels not in STRIDES or len(groups[4]) != levels or len(groups[10]) not in (0, levels):
            raise DetectorUnusable(self._layout_error(shapes))
        self.strides = STRIDES[levels]
        self.groups = groups
        self.has_landmarks = bool(groups[10])
        self._centres: dict[tuple[int, int, int, int], np.ndarray] = {}

    def _layout_error(self, shapes: dict) -> str:
        found = ", ".join(f"{n} {s}" for n, s in shapes.items())
        return (
            f"{self.name}: not an SCRFD face detector (expected 3 or 5 score [N,1], box [N,4] "
            f"and optional landmark [N,10] outputs, with or without a batch dim); found {found}"
        )

    def _letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        height, width = rgb.shape[:2]
        in_w, in_h = self.input_size or self._dynamic_size(height, width)
        if height / width > in_h / in_w:
            new_h = in_h
            new_w = int(new_h / (height / width))
        else:
            new_w = in_w
            new_h = int(new_w * (height / width))
        canvas = np.zeros((in_h, in_w, 3), np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h))
        return canvas, new_h / height

    def _dynamic_size(self, height: int, width: int) -> tuple[int, int]:
        """`det_size`, but never larger than the frame (rounded up to the model's coarsest stride):
        upscaling a small frame (a 9:16 crop of 360p is 202×360) blows a close face up past
        the largest anchors, and SCRFD then finds nobody (0 of 60 frames at 640, 60 of 60 at
        the frame's own size)."""
        coarsest = max(self.strides)
        side = -(-max(height, width) // coarsest) * coarsest
        return min(self.det_size[0], side), min(self.det_size[1], side)

    def _anchor_centres(self, height: int, width: int, stride: int, anchors: int) -> np.ndarray:
        key = (height, width, stride, anchors)
        if key not in self._centres:
            grid = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
            centres = (grid * stride).reshape(-1, 2)
            self._centres[key] = np.repeat(centres, anchors, axis=0)
        return self._centres[key]

    def _by_level(self, outputs: dict[str, np.ndarray], kind: int) -> list[np.ndarray]:
        # Finest stride first: it has the most rows (file order is not trusted).
        arrays = [_rows(outputs[n]) for n in self.groups[kind]]
        return sorted(arrays, key=lambda a: -a.shape[0])

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, best score first, after NMS."""
        image, scale = self._letterbox(rgb)
        blob = ((image.astype(np.float32) - INPUT_MEAN) / INPUT_STD).transpose(2, 0, 1)[None]
        names = [n for kind in (1, 4, 10) for n in self.groups[kind]]
        outputs = dict(zip(names, self.session.run(names, {self.input_name: blob}), strict=True))
        scores = self._by_level(outputs, 1)
        boxes = self._by_level(outputs, 4)
        points = self._by_level(outputs, 10) if self.groups[10] else [None] * len(scores)
        in_h, in_w = blob.shape[2:]
        found_s, found_b, found_k = [], [], []
        for stride, score, box, kps in zip(self.strides, scores, boxes, points, strict=True):
            cells = (in_h // stride) * (in_w // stride)
            if cells == 0 or score.shape[0] % cells:
                raise DetectorUnusable(
                    f"{self.name}: {score.shape[0]} rows at stride {stride} do not fit a "
                    f"{in_w}x{in_h} input"
                )
            centres = self._anchor_centres(in_h // stride, in_w // stride, stride,
                                           score.shape[0] // cells)  # fmt: skip
            keep = np.flatnonzero(score[:, 0] >= self.det_thresh)
            if not len(keep):
                continue
            c = centres[keep]
            d = box[keep] * stride
            found_s.append(score[keep, 0])
            found_b.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1],
                                     c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], axis=-1))  # fmt: skip
            if kps is None:
                found_k.append(np.zeros((len(keep), 5, 2), np.float32))
            else:
                found_k.append(c[:, None, :] + kps[keep].reshape(-1, 5, 2) * stride)
        if not found_s:
            return []
        all_s = np.concatenate(found_s)
        order = all_s.argsort()[::-1]
        all_s = all_s[order]
        all_b = (np.concatenate(found_b) / scale)[order]
        all_k = (np.concatenate(found_k) / scale)[order]
        return [
            Detection(all_b[i].astype(np.float32), all_k[i].astype(np.float32), float(all_s[i]))
            # Already sorted by score; insightface's +1 pixel areas.
            for i in greedy_nms(all_b, np.arange(len(all_b)), NMS_THRESH, inclusive=True)
        ]
