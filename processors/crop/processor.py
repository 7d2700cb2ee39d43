"""The crop step: detect the person, place a smooth virtual camera, cut the target aspect.

Frames wait in the step until the detector has seen a full batch of detection frames and
the camera path knows their window (it looks `lookahead` frames ahead). Each frame is
touched once on its way out: a slice copy, or one resize when the camera has zoomed in; a
window wider than the aspect (`fit: blur`) is scaled to the output's width and laid on a
blurred copy of the frame around it (AutoFlip's padding).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from processors.base import ProcessorContext
from processors.crop.context import path_settings
from processors.crop.cuts import CutDetector
from processors.crop.detector_choice import make_detector
from processors.crop.detectors import Detector, DetectorSetupError, scaled_gray
from processors.crop.options import CropOptions
from processors.crop.path import CameraPath
from processors.crop.speaking import SAMPLE_RATE, MouthMotion, box_scores, voiced_frames
from processors.crop.spec import models
from processors.media.ffmpeg import MediaError
from processors.media.frames import FrameBatch
from processors.models.store import ModelStore, ModelStoreError, weights_path
from processors.spec import StepSetupError

if TYPE_CHECKING:
    from core.config import Settings

log = logging.getLogger(__name__)
BLUR_SHRINK = 8  # the padding is blurred at 1/8 of the output size: cheap, and soft enough


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
        self.modes: dict[int, str] = {}  # their camera modes (still, pan, track)
        self._mouths: MouthMotion | None = None
        self._voiced: np.ndarray | None = None
        self._heard: dict[int, tuple[list, float]] = {}  # detection frame: faces, scale
        self._before: np.ndarray | None = None  # the frame pushed last
        if options.subject == "speaker":
            self._mouths = MouthMotion()
            self._voiced = speech_activity(ctx)

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
            if self._mouths is not None and detect:
                self._heard[i] = self._mouth_movement(frame)
            self._before = frame
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
            speech = None
            if detect and self._mouths is not None:
                faces, scale = self._heard.pop(i)
                voiced = self._voiced is None or bool(self._voiced[min(i, len(self._voiced) - 1)])
                speech = box_scores(found[i], faces, scale, voiced)
            self.path.feed(i, cut, found[i] if detect else None, speech)
        self._pending.clear()
        self._to_detect = 0

    def _release(self) -> FrameBatch:
        ready = self.path.ready()
        width, height = self.size
        if not ready:
            return FrameBatch.empty(height, width)
        out = np.empty((len(ready), height, width, 3), np.uint8)
        for n, (i, (x, y, w, h)) in enumerate(ready):
            frame = self._frames.pop(i)
            view = frame[y : y + h, x : x + w]
            if (w, h) == (width, height):
                out[n] = view
            elif w * height > width * h + height:  # fit blur: wider than the aspect (+1 px)
                padded(frame, (x, y, w, h), out[n])
            else:  # zoomed in: scale the smaller window up to the output size
                out[n] = cv2.resize(view, (width, height), interpolation=cv2.INTER_LINEAR)
            self.windows[i] = (x, y, w, h)
            self.modes[i] = self.path.modes.get(i, "track")
        return FrameBatch(out, np.asarray([i for i, _ in ready], np.int64))

    def _mouth_movement(self, frame: np.ndarray) -> tuple[list, float]:
        """This frame's faces with their mouth movement since the frame before (none before
        the stream's first frame: no movement is known there)."""
        assert self._mouths is not None
        gray, scale, faces = self._mouths.faces(frame)
        if self._before is None:
            return [(face, 0.0) for face in faces], scale
        before, _ = scaled_gray(self._before)
        return [(face, self._mouths.movement(gray, before, face)) for face in faces], scale


def speech_activity(ctx: ProcessorContext) -> np.ndarray | None:
    """Voiced frames of the speech the step is given; None (mouth movement alone decides,
    said in the log) when no audio reaches the step."""
    if ctx.audio_path is None:
        log.warning(
            "crop subject speaker: no audio reaches this step (the video has no audio track "
            "and no speech file is given); the speaker is whoever's mouth moves most"
        )
        return None
    from processors.lipsync.audio import decode_speech

    total = ctx.frames or ctx.info.frame_count
    samples = round(total / ctx.rate * SAMPLE_RATE)
    try:
        signal = decode_speech(str(ctx.audio_path), skip=ctx.audio_skip, samples=samples)
    except MediaError as exc:
        raise StepSetupError(f"crop subject speaker: cannot read the audio: {exc}") from None
    return voiced_frames(signal, ctx.rate, total)


def padded(frame: np.ndarray, window: tuple[int, int, int, int], out: np.ndarray) -> None:
    """`window` (wider than `out`'s aspect) scaled to `out`'s width, centred on a blurred,
    scaled copy of the frame around it that fills `out`."""
    x, y, w, h = window
    height, width = out.shape[:2]
    fh, fw = frame.shape[:2]
    # Background: the aspect's window around the same centre, as tall as the frame allows.
    bh = min(fh, max(h, round(fw * height / width)))
    bw = min(fw, round(bh * width / height))
    bx = min(max(0, x + w // 2 - bw // 2), fw - bw)
    by = min(max(0, y + h // 2 - bh // 2), fh - bh)
    small = (max(2, width // BLUR_SHRINK), max(2, height // BLUR_SHRINK))
    back = cv2.resize(frame[by : by + bh, bx : bx + bw], small, interpolation=cv2.INTER_AREA)
    back = cv2.GaussianBlur(back, (0, 0), 2.0)
    out[:] = cv2.resize(back, (width, height), interpolation=cv2.INTER_LINEAR)
    shown = max(2, min(height, round(h * width / w)))
    top = (height - shown) // 2
    out[top : top + shown] = cv2.resize(
        frame[y : y + h, x : x + w], (width, shown), interpolation=cv2.INTER_AREA
    )


def crop_weights(
    options: CropOptions, store: ModelStore | Path | str | None, settings: Settings | None = None
) -> Path:
    """The weights file the crop's yolo detector loads (see `weights_path`)."""
    [need] = models(options)
    return weights_path(need, store, settings)


def build(options: CropOptions, ctx: ProcessorContext) -> CropProcessor:
    """The step as the chain builds it (processors/crop/spec.py names this)."""
    return CropProcessor(options, ctx)
