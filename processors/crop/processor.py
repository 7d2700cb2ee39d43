"""The crop step: detect the person, place a smooth virtual camera, cut the target aspect.

Frames wait in the step until the detector has seen a full batch of detection frames and
the camera path knows their window (it looks `lookahead` frames ahead). Each frame is
touched once on its way out: a slice copy, or one resize when the camera has zoomed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from processors.base import ProcessorContext
from processors.crop.context import path_settings
from processors.crop.cuts import CutDetector
from processors.crop.detector_choice import make_detector
from processors.crop.detectors import Detector, DetectorSetupError
from processors.crop.options import CropOptions
from processors.crop.path import CameraPath
from processors.crop.spec import models
from processors.media.frames import FrameBatch
from processors.models.store import ModelStore, ModelStoreError, weights_path
from processors.spec import StepSetupError

if TYPE_CHECKING:
    from core.config import Settings


def load_detector(options: CropOptions, ctx: ProcessorContext) -> Detector:
    weights = None
    try:
        if models(options):  # the yolo detectors: one weights file from the store
            weights = crop_weights(options, ctx.model_store)
        return make_detector(
            options.detector,
            weights=weights,
            device=options.device,
            batch_size=options.batch_size,
            confidence=options.confidence,
        )
    except ModelStoreError as exc:
        raise StepSetupError(f"crop: {exc}", exc.code) from None
    except DetectorSetupError as exc:
        raise StepSetupError(f"crop: {exc}") from None


class CropProcessor:
    name = "crop"

    def __init__(
        self, options: CropOptions, ctx: ProcessorContext, detector: Detector | None = None
    ) -> None:
        self.options = options
        self.frame = (ctx.width, ctx.height)
        self.settings = path_settings(self.options, self.frame, ctx.rate)
        self.size = self.settings.window
        self.lookbehind = self.settings.lookbehind
        self.lookahead = self.settings.lookahead
        self.detector = detector or load_detector(self.options, ctx)
        self.path = CameraPath(self.settings)
        self.cuts = CutDetector(self.options.cut_threshold)
        self._frames: dict[int, np.ndarray] = {}
        self._pending: list[tuple[int, bool, bool]] = []  # index, cut, detect here
        self._to_detect = 0
        self.windows: dict[int, tuple[int, int, int, int]] = {}  # last windows, for callers

    def output_size(self) -> tuple[int, int]:
        return self.size

    def push(self, batch: FrameBatch) -> FrameBatch:
        k = self.options.detect_every
        for frame, index in zip(batch.frames, batch.indices, strict=True):
            i = int(index)
            cut = self.cuts.is_cut(frame)
            # Detect on a global grid of frames (and on every cut), so every chunk detects
            # on the same frames a single run does.
            detect = i % k == 0 or cut
            self._frames[i] = frame
            self._pending.append((i, cut, detect))
            self._to_detect += detect
            if self._to_detect >= self.detector.batch_size:
                self._run_detector()
        return self._release()

    def flush(self) -> FrameBatch:
        self._run_detector()
        self.path.finish()
        return self._release()

    def _run_detector(self) -> None:
        wanted = [i for i, _, detect in self._pending if detect]
        found = dict(
            zip(wanted, self.detector.detect([self._frames[i] for i in wanted]), strict=True)
        )
        for i, cut, detect in self._pending:
            self.path.feed(i, cut, found[i] if detect else None)
        self._pending.clear()
        self._to_detect = 0

    def _release(self) -> FrameBatch:
        ready = self.path.ready()
        width, height = self.size
        if not ready:
            return FrameBatch.empty(height, width)
        out = np.empty((len(ready), height, width, 3), np.uint8)
        for n, (i, (x, y, w, h)) in enumerate(ready):
            view = self._frames.pop(i)[y : y + h, x : x + w]
            if (w, h) == (width, height):
                out[n] = view
            else:  # zoomed in: scale the smaller window up to the output size
                out[n] = cv2.resize(view, (width, height), interpolation=cv2.INTER_LINEAR)
            self.windows[i] = (x, y, w, h)
        return FrameBatch(out, np.asarray([i for i, _ in ready], np.int64))


def crop_weights(
    options: CropOptions, store: ModelStore | Path | str | None, settings: Settings | None = None
) -> Path:
    """The weights file the crop's yolo detector loads (see `weights_path`)."""
    [need] = models(options)
    return weights_path(need, store, settings)


def build(options: CropOptions, ctx: ProcessorContext) -> CropProcessor:
    """The step as the chain builds it (processors/crop/spec.py names this)."""
    return CropProcessor(options, ctx)
