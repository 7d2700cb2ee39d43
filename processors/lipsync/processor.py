"""The lipsync step: Wav2Lip's mouth for the speech, pasted into each frame with a face.

Per frame: a face box and its landmarks (swap's analysis, else our own detection: the store's
SCRFD, else Haar), smoothed over ±`smoothing_frames` neighbours (declared as
look-behind/look-ahead, so a chunk sees the same window a whole-video run does), padded (the
bottom at least an eighth of the face below the chin, so the blend can reach past it), cut out
at 96×96 with its lower half masked; the mel window for that frame's time; the model, in
fixed-size batches; the lower face blended back along the landmarks. A frame without a face
passes through byte for byte.

With `speakers`, each frame's faces are matched to the speakers (processors/lipsync/speakers.py)
and every speaker is a lane of its own: its face's boxes are smoothed like the one face above,
and its crop gets the mel window of its own speech. Faces matching no speaker pass untouched.

With `target: all` every face of a frame follows the one speech (one lane): each face's box is
smoothed over the same face's boxes in the neighbouring frames (faces.smooth_all), from the
earlier step's faces or our own detection of every face.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from processors.base import ProcessorContext
from processors.faces import (
    Face,
    FaceAnalyser,
    Occlusion,
    align_matrix,
    choose_providers,
    faces_of,
)
from processors.lipsync.audio import decode_speech
from processors.lipsync.blend import BOX_LANDMARKS, FaceLayout, paste
from processors.lipsync.faces import (
    Box,
    HaarFaces,
    ScrfdFaces,
    boxes_from_faces,
    checked_keyframe,
    context_reach,
    face_shape,
    interpolate,
    pack_detector,
    placed,
    shapes_from_faces,
    smooth,
    smooth_all,
)
from processors.lipsync.features import MelFeatures, fitted_samples, speaker_features
from processors.lipsync.model import FACE_SIZE, ModelUnusable, Wav2LipModel
from processors.lipsync.options import LipsyncOptions
from processors.lipsync.reach import speaker_reach
from processors.lipsync.speakers import SpeakerAssignment, speaker_identities
from processors.media.frames import FrameBatch
from processors.models.store import ModelStoreError, build_after_models, fetch_models
from processors.spec import StepSetupError
from processors.swap.identity import IdentityError, ImageRef, identity
from processors.swap.masks import MaskModelUnusable, Occluder

log = logging.getLogger("dropbatch.lipsync")
_UNDETECTED = "undetected"  # a frame between detection keyframes (detect_every > 1)
# The aligned crop our own occluder reads (the swap's at pixel_boost 256; XSeg's input size).
OCCLUDER_CROP = 256


class LipsyncSetupError(StepSetupError):
    """The step cannot run (no audio, unusable model); the message says what to fix."""


Crop = tuple[int, int, int, int]


@dataclass
class _Frame:
    index: int
    pixels: np.ndarray
    # (lane, crop, the face in its crop for the blend mask) per face to sync; a lane is a
    # speaker (one lane when the step follows one speech).
    faces: list[tuple[int, Crop, FaceLayout]] = field(default_factory=list)
    # What an earlier step's occluder saw covering this frame's faces (the faces contract).
    covered: list[Occlusion] = field(default_factory=list)


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
        self._det_size = options.det_size
        self._size = (ctx.width, ctx.height)
        models = self._load_models(options, ctx)
        self._set_up_speech(options, models, ctx)
        self._detector: HaarFaces | ScrfdFaces | None = None
        # Raw boxes of recent frames, per lane; a lane's box at a frame is known once the
        # frame is `_decided` (at once for one speaker, after the track window for several).
        self._boxes: list[dict[int, Box | str | None]] = [{} for _ in self.mels]
        # With `target: all`: every face's raw box of recent frames (the one lane's).
        self._every_face: dict[int, list[Box]] | None = {} if options.target == "all" else None
        self._deciding: list[int] = []  # frames whose speakers wait for their track window
        self._waiting: list[_Frame] = []  # frames whose smoothing window is not complete yet
        self._ready: list[_Frame] = []  # frames with their final crops, waiting for a batch
        self._last_seen = -1
        self._decided = -1
        self._bridge = True

    def _load_models(self, options: LipsyncOptions, ctx: ProcessorContext) -> dict:
        """Wav2Lip, and the occluder where this step masks faces itself."""
        store = ctx.model_store
        if not store:
            raise LipsyncSetupError("lipsync needs a model store (DROPBATCH_MODEL_STORE)")
        try:
            # Through the store, not a path beside it: a gs:// store is copied into the VM's
            # cache once, and a pinned file is hashed before the session loads it.
            models = fetch_models("lipsync", options, store)
        except ModelStoreError as exc:
            raise LipsyncSetupError(str(exc)) from None
        try:
            self.model = Wav2LipModel(models[options.model].path, options.batch_size)
        except ModelUnusable as exc:
            raise LipsyncSetupError(str(exc)) from None
        # Our own occluder for faces no earlier step saw covered (FaceFusion's lip syncer masks
        # with it too); a swap's occlusion travels on its faces and is used as it is.
        self.occluder: Occluder | None = None
        if options.occlusion:
            try:
                self.occluder = Occluder(models[options.occluder].path, choose_providers())
            except MaskModelUnusable as exc:
                raise LipsyncSetupError(f"lipsync.occluder: {exc}") from None
        return models

    def _set_up_speech(self, options: LipsyncOptions, models: dict, ctx: ProcessorContext) -> None:
        """The speech each lane follows (one, or one per speaker) and where its faces come from."""
        store = ctx.model_store
        total = self._total = ctx.frames or ctx.info.frame_count
        samples = fitted_samples(total, ctx.rate)
        self._assignment: SpeakerAssignment | None = None
        if options.speakers:
            self._pack_name = options.analyser
            self.mels = speaker_features(
                [self._speaker_speech(s.audio, ctx, samples) for s in options.speakers], ctx.rate
            )
            self._analyser, self._assignment = self._speaker_analysis(options, models, ctx)
            self._settle_reach = self.radius  # on boxes already decided over their tracks
        elif options.target == "reference":
            # One speech, one speaker: the face matching the reference, decided over its track
            # as a speaker is (the same machinery, one lane).
            self._pack_name = options.analyser
            self.mels = [MelFeatures(self._own_speech(ctx, samples), ctx.rate)]
            self._analyser, self._assignment = self._speaker_analysis(options, models, ctx)
            self._settle_reach = self.radius
        else:
            self.mels = [MelFeatures(self._own_speech(ctx, samples), ctx.rate)]
            self._settle_reach = self.reach
            try:
                # Our own faces, when no earlier step hands them on: the store's SCRFD (boxes
                # and landmarks) if it holds an analyser pack, else the weight-free Haar cascade.
                self._pack = pack_detector(store)
            except ModelStoreError as exc:
                raise LipsyncSetupError(str(exc)) from None
            own = f"SCRFD of the {self._pack[0]} pack" if self._pack else "the Haar cascade"
            log.info(
                "lipsync faces (%s): from an earlier step where it hands them on, else %s",
                "every face" if options.target == "all" else "the largest",
                own,
            )

    def output_size(self) -> tuple[int, int]:
        return self._size

    # -- speakers -------------------------------------------------------------------------
    @staticmethod
    def _own_speech(ctx: ProcessorContext, samples: int) -> np.ndarray:
        """The step's one speech: lipsync.audio, the input's audio, or the video's own."""
        if ctx.audio_path is None:
            raise LipsyncSetupError(
                "lipsync has no audio: set lipsync.audio or the input's audio, "
                "or use a video with an audio track"
            )
        return decode_speech(str(ctx.audio_path), skip=ctx.audio_skip, samples=samples)

    @staticmethod
    def _speaker_speech(name: str, ctx: ProcessorContext, samples: int) -> np.ndarray:
        """A speaker's track: a side file whose first sample sits at output frame 0."""
        if ctx.folder is None or not (ctx.folder / name).is_file():
            raise LipsyncSetupError(f"lipsync speaker audio {name} is not available to this task")
        return decode_speech(str(ctx.folder / name), skip=0.0, samples=samples)

    @staticmethod
    def _speaker_analysis(
        options: LipsyncOptions, models: dict, ctx: ProcessorContext
    ) -> tuple[FaceAnalyser, SpeakerAssignment]:
        pack = models[options.analyser]
        try:
            analyser = FaceAnalyser(
                pack.module("detection"),
                pack.module("recognition"),
                det_size=options.det_size,
                providers=choose_providers(),
            )
        except (ValueError, ModelStoreError) as exc:  # a file that is not the model it claims
            raise LipsyncSetupError(f"lipsync.analyser: {exc}") from None
        if ctx.folder is None:
            raise LipsyncSetupError("lipsync speakers' reference images are not available")
        try:
            if options.speakers:
                references = [s.reference for s in options.speakers]
                identities = speaker_identities(analyser, references, ctx.folder, "lipsync")
            else:
                assert options.reference is not None  # the options say so
                path = ctx.folder / options.reference
                ref = ImageRef("lipsync.reference", path, options.reference)
                identities = [identity(analyser, [ref])]
        except IdentityError as exc:
            raise LipsyncSetupError(str(exc)) from None
        return analyser, SpeakerAssignment(identities, options.threshold)

    def _speaker_faces(self, batch: FrameBatch) -> list[list[Face]]:
        """Each frame's faces with embeddings: an earlier step's faces (no second detection),
        keeping its embedding of the face as it found it when our pack made it (comparable
        with the references), else our own analysis; faces without a comparable embedding
        are embedded as they arrive here."""
        faces = faces_of(batch)
        self._bridge = faces is None
        if faces is None:
            faces = [self._analyser.detect(frame) for frame in batch.frames]
        return [
            [
                f
                if f.embedding is not None and f.embedded_by == self._pack_name
                else f.with_(embedding=self._analyser.embed(frame, f), embedded_by=self._pack_name)
                for f in frame_faces
            ]
            for frame, frame_faces in zip(batch.frames, faces, strict=True)
        ]

    def _decide(self, final: bool) -> None:
        """Frames whose track window has arrived get each speaker's face as that lane's box."""
        assert self._assignment is not None
        horizon = self._last_seen if final else self._last_seen - speaker_reach()
        keep = 0
        for index in self._deciding:
            if index > horizon:
                break
            for lane, face in enumerate(self._assignment.speakers_at(index)):
                self._boxes[lane][index] = (
                    None if face is None else face_shape(face.box, face.kps, BOX_LANDMARKS)
                )
            self._decided = index
            keep += 1
        del self._deciding[:keep]
        self._assignment.drop_before(self._decided + 1 - speaker_reach())

    # -- faces ----------------------------------------------------------------------------
    def _own_detector(self) -> HaarFaces | ScrfdFaces:
        if self._detector is None:
            self._detector = (
                ScrfdFaces(self._pack[1], self._det_size) if self._pack else HaarFaces()
            )
        return self._detector

    def _raw_boxes(self, batch: FrameBatch) -> list[Box | str | None]:
        faces = faces_of(batch)
        # The swap step already carried its misses; its "no face" is a decision, not a miss.
        self._bridge = faces is None
        if faces is not None:
            return list(boxes_from_faces(faces))
        detector = self._own_detector()
        return [
            detector.largest(frame) if index % self.every == 0 else _UNDETECTED
            for index, frame in zip(batch.indices.tolist(), batch.frames, strict=True)
        ]

    def _all_boxes(self, batch: FrameBatch) -> list[list[Box]]:
        """Every face of each frame (`target: all`; detect_every is 1, the options say so)."""
        faces = faces_of(batch)
        self._bridge = faces is None
        if faces is not None:
            return shapes_from_faces(faces)
        detector = self._own_detector()
        return [detector.all(frame) for frame in batch.frames]

    def _keyframe(self, k: int) -> Box | str | None:
        boxes = self._boxes[0]
        raw = boxes.get(k, _UNDETECTED)
        if self.every == 1 or raw == _UNDETECTED:
            return raw
        near = [boxes.get(j, _UNDETECTED) for j in (k - self.every, k + self.every)]
        if _UNDETECTED in near:
            return raw  # the video's ends: nothing to check against
        return checked_keyframe(raw, *near)  # type: ignore[arg-type]

    def _box_at(self, lane: int, index: int) -> Box | None:
        raw = self._boxes[lane][index]
        if self.every == 1:
            return raw  # type: ignore[return-value]
        if raw != _UNDETECTED:
            return self._keyframe(index)  # type: ignore[return-value]
        boxes = self._boxes[0]
        before = index - index % self.every
        after = before + self.every
        known = {
            k: self._keyframe(k)
            for k in (before, after)
            if k < self._total and boxes.get(k, _UNDETECTED) != _UNDETECTED
        }
        if before in known and after in known:
            t = (index - before) / self.every
            return interpolate(known[before], known[after], t)  # type: ignore[arg-type]
        # Only at the very ends of the video (or of what was decoded): the keyframe there is.
        return next(iter(known.values()), None)  # type: ignore[return-value]

    def _settle(self, frame: _Frame) -> None:
        lo, hi = frame.index - self.radius, frame.index + self.radius
        height, width = frame.pixels.shape[:2]
        if self._every_face is not None:
            seen = [i for i in range(lo, hi + 1) if i in self._every_face]
            window = [self._every_face[i] for i in seen]
            for box in smooth_all(window, seen.index(frame.index), bridge=self._bridge):
                found = placed(box, self.pads, width, height)
                if found is not None:
                    frame.faces.append((0, *found))
            self._ready.append(frame)
            return
        for lane, boxes in enumerate(self._boxes):
            indices = [i for i in range(lo, hi + 1) if i in boxes]
            box = smooth(
                [self._box_at(lane, i) for i in indices],
                indices.index(frame.index),
                bridge=self._bridge,
            )
            if box is not None:
                found = placed(box, self.pads, width, height)
                if found is not None:
                    frame.faces.append((lane, *found))
        self._ready.append(frame)

    def _advance(self, final: bool) -> None:
        keep = 0
        for frame in self._waiting:
            if frame.index > self._decided:
                break
            if final or frame.index + self._settle_reach <= self._decided:
                self._settle(frame)
                keep += 1
            else:
                break
        del self._waiting[:keep]
        oldest = self._waiting[0].index if self._waiting else self._decided + 1
        for boxes in [*self._boxes, self._every_face or {}]:
            for i in [i for i in boxes if i < oldest - self._settle_reach]:
                del boxes[i]

    # -- inference ------------------------------------------------------------------------
    def _infer(self, frames: list[_Frame]) -> None:
        jobs = [(f, lane, crop, layout) for f in frames for lane, crop, layout in f.faces]
        if not jobs:
            return
        mels = np.stack([self.mels[lane].window(f.index) for f, lane, _, _ in jobs])
        # Every face's input is cut from the frame as it came, before any mouth is pasted.
        faces = np.stack([face_input(f.pixels, crop) for f, _, crop, _ in jobs])
        size = self.model.batch_size
        out = np.concatenate(
            [
                self.model.run(mels[k : k + size], faces[k : k + size])
                for k in range(0, len(jobs), size)
            ]
        )
        # Read on the frames as they came too, before any mouth is pasted.
        shows = [self._shows(f, crop, layout) for f, _, crop, layout in jobs]
        copied: set[int] = set()
        for (frame, _, crop, layout), pred, keep in zip(jobs, out, shows, strict=True):
            rgb = np.clip(pred.transpose(1, 2, 0)[:, :, ::-1] * 255.0, 0, 255)
            if id(frame) not in copied:
                frame.pixels = frame.pixels.copy()
                copied.add(id(frame))
            face = np.ascontiguousarray(rgb, np.float32)
            paste(frame.pixels, face, crop, layout, keep)

    def _shows(self, frame: _Frame, crop: Crop, layout: FaceLayout) -> np.ndarray | None:
        """Where over the crop the face shows (1) or is covered (0): the earlier step's
        occlusion when it ran one, else our own occluder's when asked, else None."""
        covered = list(frame.covered)
        if not covered and self.occluder is not None:
            kps = layout.kps + np.array(crop[:2], np.float32)
            matrix = align_matrix(kps, OCCLUDER_CROP)
            aligned = cv2.warpAffine(
                frame.pixels, matrix, (OCCLUDER_CROP, OCCLUDER_CROP),
                borderMode=cv2.BORDER_REPLICATE,
            )  # fmt: skip
            covered = [Occlusion(self.occluder.mask(aligned), matrix)]
        if not covered:
            return None
        return np.minimum.reduce([c.in_box(crop) for c in covered])

    def _emit(self, final: bool) -> FrameBatch:
        done: list[_Frame] = []
        size = self.model.batch_size
        while True:
            # The first cut after which `size` faces are waiting: batches hold whole frames.
            counts = np.cumsum([len(f.faces) for f in self._ready])
            full = np.nonzero(counts >= size)[0]
            with_face = np.nonzero([len(f.faces) > 0 for f in self._ready])[0]
            if len(full):
                cut = int(full[0]) + 1
            elif final or not len(with_face):  # the end, or only faceless frames: all can go
                cut = len(self._ready)
            else:
                cut = int(with_face[0])  # faceless frames before the first face can go now
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
        if self._assignment is not None:
            for index, faces in zip(
                batch.indices.tolist(), self._speaker_faces(batch), strict=True
            ):
                self._assignment.add(index, faces)
                self._deciding.append(index)
        elif self._every_face is not None:
            for index, boxes in zip(batch.indices.tolist(), self._all_boxes(batch), strict=True):
                self._every_face[index] = boxes
        else:
            for index, box in zip(batch.indices.tolist(), self._raw_boxes(batch), strict=True):
                self._boxes[0][index] = box
        given = faces_of(batch) or [[] for _ in range(len(batch))]
        for index, pixels, faces in zip(batch.indices.tolist(), batch.frames, given, strict=True):
            covered = [f.occlusion for f in faces if f.occlusion is not None]
            self._waiting.append(_Frame(index, pixels, covered=covered))
            self._last_seen = index
        self._progress(final=False)
        return self._emit(final=False)

    def flush(self) -> FrameBatch:
        self._progress(final=True)
        return self._emit(final=True)

    def _progress(self, final: bool) -> None:
        if self._assignment is not None:
            self._decide(final)
        else:
            self._decided = self._last_seen
        self._advance(final)


def build(options: LipsyncOptions, ctx: ProcessorContext) -> LipsyncProcessor:
    """The step as the chain builds it (processors/lipsync/spec.py names this): its model is
    checked first, so a missing one ends the job with the store's code."""
    return build_after_models("lipsync", options, ctx, LipsyncProcessor)
