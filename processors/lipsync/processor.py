"""The lipsync step: Wav2Lip's mouth for the speech, pasted into each frame with a face.

Per frame: a face box and its landmarks (swap's analysis, else our own detection: the store's
SCRFD, else Haar), smoothed over ±`smoothing_frames` neighbours (declared as
look-behind/look-ahead, so a chunk sees the same window a whole-video run does), padded (the
bottom at least an eighth of the face below the chin, so the blend can reach past it), cut out
at 96×96 with its lower half masked; the mel window for that frame's time; the model, in
fixed-size batches; the lower face blended back along the landmarks. A frame without a face
passes through byte for byte.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from processors.base import ProcessorContext
from processors.faces import faces_of
from processors.lipsync.audio import decode_speech
from processors.lipsync.blend import FaceLayout, paste
from processors.lipsync.faces import (
    Box,
    HaarFaces,
    ScrfdFaces,
    boxes_from_faces,
    checked_keyframe,
    context_reach,
    interpolate,
    pack_detector,
    placed,
    smooth,
)
from processors.lipsync.features import MelFeatures, fitted_samples
from processors.lipsync.model import FACE_SIZE, ModelUnusable, Wav2LipModel
from processors.lipsync.options import LipsyncOptions
from processors.media.frames import FrameBatch
from processors.models.store import ModelStoreError, fetch_models, require_models
from processors.spec import StepSetupError

log = logging.getLogger("dropbatch.lipsync")
_UNDETECTED = "undetected"  # a frame between detection keyframes (detect_every > 1)


class LipsyncSetupError(Exception):
    """The step cannot run (no audio, unusable model); the message says what to fix."""


@dataclass
class _Frame:
    index: int
    pixels: np.ndarray
    crop: tuple[int, int, int, int] | None = None
    layout: FaceLayout | None = None  # the face in its crop, for the blend mask


def face_input(frame: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """[6, 96, 96] in 0..1: the face with its lower half masked, then the face whole.

    Channels are BGR: the model was trained on images read by OpenCV.
    """
    x1, y1, x2, y2 = crop
    face = cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE))[:, :, ::-1]
    masked = face.copy()
    masked[FACE_SIZE // 2 :] = 0
    both = np.concatenate([masked, face], axis=2).astype(np.float32) / 255.0
    return both.transpose(2, 0, 1)


class LipsyncProcessor:
    name = "lipsync"

    def __init__(self, options: LipsyncOptions, ctx: ProcessorContext) -> None:
        self.radius = options.smoothing_frames
        self.every = options.detect_every
        # Detection keyframes sit at multiples of `every` in the global frame index, so every
        # chunk detects on the same frames and interpolates between the same boxes.
        self.reach = context_reach(options)
        self.lookbehind = self.lookahead = self.reach
        self.pads = options.pads
        self._size = (ctx.width, ctx.height)
        store = ctx.model_store or ctx.model_dir
        if not store:
            raise LipsyncSetupError("lipsync needs a model store (DROPBATCH_MODEL_STORE)")
        try:
            # Through the store, not a path beside it: a gs:// store is copied into the VM's
            # cache once, and a pinned file is hashed before the session loads it.
            [fetched] = fetch_models("lipsync", options, store).values()
        except ModelStoreError as exc:
            raise LipsyncSetupError(str(exc)) from None
        try:
            self.model = Wav2LipModel(fetched.path, options.batch_size)
        except ModelUnusable as exc:
            raise LipsyncSetupError(str(exc)) from None
        if ctx.audio_path is None:
            raise LipsyncSetupError(
                "lipsync has no audio: set lipsync.audio or the input's audio, "
                "or use a video with an audio track"
            )
        total = self._total = ctx.frames or ctx.info.frame_count
        signal = decode_speech(
            str(ctx.audio_path), skip=ctx.audio_skip, samples=fitted_samples(total, ctx.rate)
        )
        self.mel = MelFeatures(signal, ctx.rate)
        try:
            # Our own faces, when no earlier step hands them on: the store's SCRFD (boxes and
            # landmarks) if it holds an analyser pack, else the weight-free Haar cascade.
            self._pack = pack_detector(store)
        except ModelStoreError as exc:
            raise LipsyncSetupError(str(exc)) from None
        own = f"SCRFD of the {self._pack[0]} pack" if self._pack else "the Haar cascade"
        log.info("lipsync faces: from an earlier step where it hands them on, else %s", own)
        self._detector: HaarFaces | ScrfdFaces | None = None
        self._boxes: dict[int, Box | str | None] = {}  # raw boxes of recent frames
        self._waiting: list[_Frame] = []  # frames whose smoothing window is not complete yet
        self._ready: list[_Frame] = []  # frames with their final crop, waiting for a batch
        self._last_seen = -1
        self._bridge = True

    def output_size(self) -> tuple[int, int]:
        return self._size

    # -- faces ----------------------------------------------------------------------------
    def _raw_boxes(self, batch: FrameBatch) -> list[Box | str | None]:
        faces = faces_of(batch)
        # The swap step already carried its misses; its "no face" is a decision, not a miss.
        self._bridge = faces is None
        if faces is not None:
            return list(boxes_from_faces(faces))
        if self._detector is None:
            self._detector = ScrfdFaces(self._pack[1]) if self._pack else HaarFaces()
        return [
            self._detector.largest(frame) if index % self.every == 0 else _UNDETECTED
            for index, frame in zip(batch.indices.tolist(), batch.frames, strict=True)
        ]

    def _keyframe(self, k: int) -> Box | str | None:
        raw = self._boxes.get(k, _UNDETECTED)
        if self.every == 1 or raw == _UNDETECTED:
            return raw
        near = [self._boxes.get(j, _UNDETECTED) for j in (k - self.every, k + self.every)]
        if _UNDETECTED in near:
            return raw  # the video's ends: nothing to check against
        return checked_keyframe(raw, *near)  # type: ignore[arg-type]

    def _box_at(self, index: int) -> Box | None:
        raw = self._boxes[index]
        if raw != _UNDETECTED:
            return self._keyframe(index)  # type: ignore[return-value]
        before = index - index % self.every
        after = before + self.every
        known = {
            k: self._keyframe(k)
            for k in (before, after)
            if k < self._total and self._boxes.get(k, _UNDETECTED) != _UNDETECTED
        }
        if before in known and after in known:
            t = (index - before) / self.every
            return interpolate(known[before], known[after], t)  # type: ignore[arg-type]
        # Only at the very ends of the video (or of what was decoded): the keyframe there is.
        return next(iter(known.values()), None)  # type: ignore[return-value]

    def _settle(self, frame: _Frame) -> None:
        lo, hi = frame.index - self.radius, frame.index + self.radius
        indices = [i for i in range(lo, hi + 1) if i in self._boxes]
        box = smooth(
            [self._box_at(i) for i in indices], indices.index(frame.index), bridge=self._bridge
        )
        if box is not None:
            height, width = frame.pixels.shape[:2]
            found = placed(box, self.pads, width, height)
            if found is not None:
                frame.crop, frame.layout = found
        self._ready.append(frame)

    def _advance(self, final: bool) -> None:
        keep = 0
        for frame in self._waiting:
            if final or frame.index + self.reach <= self._last_seen:
                self._settle(frame)
                keep += 1
            else:
                break
        del self._waiting[:keep]
        oldest = self._waiting[0].index if self._waiting else self._last_seen + 1
        for i in [i for i in self._boxes if i < oldest - self.reach]:
            del self._boxes[i]

    # -- inference ------------------------------------------------------------------------
    def _infer(self, frames: list[_Frame]) -> None:
        with_face = [f for f in frames if f.crop is not None]
        if not with_face:
            return
        mels = np.stack([self.mel.window(f.index) for f in with_face])
        faces = np.stack([face_input(f.pixels, f.crop) for f in with_face])  # type: ignore[arg-type]
        out = self.model.run(mels, faces)
        for frame, pred in zip(with_face, out, strict=True):
            rgb = np.clip(pred.transpose(1, 2, 0)[:, :, ::-1] * 255.0, 0, 255)
            frame.pixels = frame.pixels.copy()
            face = np.ascontiguousarray(rgb, np.float32)
            paste(frame.pixels, face, frame.crop, frame.layout)  # type: ignore[arg-type]

    def _emit(self, final: bool) -> FrameBatch:
        done: list[_Frame] = []
        while True:
            positions = [k for k, f in enumerate(self._ready) if f.crop is not None]
            if len(positions) >= self.model.batch_size:
                cut = positions[self.model.batch_size - 1] + 1
            elif final or not positions:  # the end, or only faceless frames: all can go
                cut = len(self._ready)
            else:
                cut = positions[0]  # faceless frames before the first face can go now
            if cut == 0:
                break
            group, self._ready = self._ready[:cut], self._ready[cut:]
            self._infer(group)
            done += group
        if not done:
            return FrameBatch.empty(self._size[1], self._size[0])
        return FrameBatch(
            np.stack([f.pixels for f in done]), np.array([f.index for f in done], np.int64)
        )

    # -- the processor contract -----------------------------------------------------------
    def push(self, batch: FrameBatch) -> FrameBatch:
        for index, pixels, box in zip(
            batch.indices.tolist(), batch.frames, self._raw_boxes(batch), strict=True
        ):
            self._boxes[index] = box
            self._waiting.append(_Frame(index, pixels))
            self._last_seen = index
        self._advance(final=False)
        return self._emit(final=False)

    def flush(self) -> FrameBatch:
        self._advance(final=True)
        return self._emit(final=True)


def build(options: LipsyncOptions, ctx: ProcessorContext) -> LipsyncProcessor:
    """The step as the chain builds it (processors/lipsync/spec.py names this): its model is
    checked first, so a missing one ends the job with the store's code."""
    try:
        require_models("lipsync", options, ctx.model_store or ctx.model_dir)
    except ModelStoreError as exc:
        raise StepSetupError(str(exc), exc.code) from None
    try:
        return LipsyncProcessor(options, ctx)
    except LipsyncSetupError as exc:
        raise StepSetupError(str(exc), getattr(exc, "code", "")) from None
