"""The crop step: detect the person, smooth the camera path, cut the target aspect."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from manifests.model import CropOptions
from processors.base import ProcessorContext
from processors.crop.detectors import Box, make_detector
from processors.crop.path import gaussian_weights, place_window, smoothed_centre, window_size
from processors.media.frames import FrameBatch


def choose_subject(boxes: list[Box], frame: tuple[int, int], mode: str) -> Box | None:
    if not boxes:
        return None
    if mode == "all":
        return (
            min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes),
        )  # fmt: skip
    if mode == "center":
        fx, fy = frame[0] / 2, frame[1] / 2
        return min(
            boxes, key=lambda b: ((b[0] + b[2]) / 2 - fx) ** 2 + ((b[1] + b[3]) / 2 - fy) ** 2
        )
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))


class CropProcessor:
    name = "crop"

    def __init__(self, options: dict, ctx: ProcessorContext) -> None:
        self.options = CropOptions.model_validate(options)
        aw, ah = (int(v) for v in self.options.aspect.split(":"))
        self.frame = (ctx.width, ctx.height)
        self.size = window_size(ctx.width, ctx.height, (aw, ah))
        self.radius = max(0, round(self.options.smoothing_seconds * float(ctx.rate)))
        self.lookbehind = self.radius
        self.lookahead = self.radius
        self.weights = gaussian_weights(self.radius)
        self.detector = make_detector(self.options.detector)
        self.fallback = (ctx.width / 2, ctx.height / 2)
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._centres: dict[int, tuple[float, float] | None] = {}
        self._last_index = -1

    def output_size(self) -> tuple[int, int]:
        return self.size

    def _centre(self, frame: np.ndarray) -> tuple[float, float] | None:
        box = choose_subject(self.detector.detect(frame), self.frame, self.options.subject)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        # Aim a little above the box centre: heads belong in the upper part of the frame.
        return (x0 + x1) / 2, y0 + (y1 - y0) * 0.4

    def _cut(self, index: int) -> np.ndarray:
        centre = smoothed_centre(self._centres, index, self.radius, self.weights, self.fallback)
        x0, y0 = place_window(centre, self.size, self.frame)
        w, h = self.size
        return self._frames[index][y0 : y0 + h, x0 : x0 + w]

    def _release(self, upto: int) -> FrameBatch:
        ready = [i for i in self._frames if i <= upto]
        if not ready:
            return FrameBatch.empty(self.size[1], self.size[0])
        out = np.stack([self._cut(i) for i in ready])
        for i in ready:
            del self._frames[i]
        for i in [k for k in self._centres if k < ready[-1] - self.radius]:
            del self._centres[i]
        return FrameBatch(out, np.asarray(ready, np.int64))

    def push(self, batch: FrameBatch) -> FrameBatch:
        k = self.options.detect_every
        for frame, index in zip(batch.frames, batch.indices, strict=True):
            i = int(index)
            self._frames[i] = frame
            # Detect on a global grid of frames so every chunk detects on the same ones.
            self._centres[i] = self._centre(frame) if i % k == 0 else None
            self._last_index = i
        return self._release(self._last_index - self.radius)

    def flush(self) -> FrameBatch:
        return self._release(self._last_index)
