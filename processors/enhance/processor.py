"""The enhance step: face restoration (GFPGAN 1.4, CodeFormer, GPEN-BFR 512) after the swap.

Per batch: the faces of each frame — the ones an earlier step hands on under the face contract
(processors/faces.py: swap's analysis, no second detection), else our own SCRFD detection with
the `analyser` pack's detector, loaded only when a batch arrives without faces. Each chosen
face is aligned by its five landmarks onto the FFHQ template (align.py), every crop of the
batch goes through the model `batch_size` at a time, and each restored crop is warped back
into its face's box only and blended there with a feathered mask times `blend`. Faces are
aligned on the frame as it arrived, so a restored neighbour never leaks into another face's
crop. A frame with no chosen face passes through untouched; frames are independent, so the
step needs no context frames and chunks equal one task. The face annotation goes on with the
frames (ours when we detected), so a later step (lipsync) gets the faces too.
"""

from __future__ import annotations

import logging

import numpy as np

from processors.base import ProcessorContext
from processors.enhance.align import aligned_crop, ffhq_matrix, restore_mask
from processors.enhance.options import EnhanceOptions
from processors.enhance.restorer import FaceRestorer, RestorerUnusable
from processors.faces import Face, FaceAnalyser, FrameFaces, annotate, choose_providers, faces_of
from processors.media.frames import FrameBatch
from processors.models.store import ModelStoreError, open_model_store
from processors.spec import StepSetupError
from processors.swap.masks import MaskModelUnusable, Occluder
from processors.swap.paste import paste_back

log = logging.getLogger("dropbatch.enhance")


class EnhanceSetupError(StepSetupError):
    """The step cannot start, or (its own detector, loaded on first need) go on: a model is
    missing or wrong; the message names it and `code` is the status record's code."""


def _alignable(face: Face) -> bool:
    """Landmarks a similarity can be fitted to: finite, the eyes apart (a detector without
    landmarks hands on zeros)."""
    kps = np.asarray(face.kps, np.float64)
    return bool(np.isfinite(kps).all() and np.linalg.norm(kps[1] - kps[0]) >= 1.0)


class EnhanceProcessor:
    name = "enhance"
    lookbehind = 0  # every frame is restored on its own
    lookahead = 0

    def __init__(
        self, options: EnhanceOptions | dict, ctx: ProcessorContext, where: str = "enhance"
    ) -> None:
        self.options = opts = (
            options
            if isinstance(options, EnhanceOptions)
            else EnhanceOptions.model_validate(options)
        )
        self.where = where
        self.size = (ctx.width, ctx.height)
        self._store = ctx.model_store
        self._providers = choose_providers(tensorrt=opts.tensorrt)
        try:
            store = open_model_store(self._store)
            if store is None:
                raise EnhanceSetupError(f"{where}: needs a model store (DROPBATCH_MODEL_STORE)")
            fetched = store.fetch(opts.model)  # verified against the catalog before loading
            self.restorer = FaceRestorer(fetched.path, self._providers, batch_size=opts.batch_size)
        except ModelStoreError as exc:
            raise EnhanceSetupError(f"{where}: {exc}", exc.code) from None
        except RestorerUnusable as exc:
            raise EnhanceSetupError(f"{where}: {exc}", exc.code) from None
        if self.restorer.fixed_batch == 1 and opts.batch_size > 1:
            log.info("%s takes one face per call (batch fixed at 1 in the file)", fetched.path.name)
        # Our own occluder, for faces no earlier step saw covered (FaceFusion's enhancer masks
        # with it too); a swap's occlusion travels on its faces and is used as it is.
        self.occluder: Occluder | None = None
        if opts.occlusion:
            try:
                self.occluder = Occluder(store.fetch(opts.occluder).path, self._providers)
            except ModelStoreError as exc:
                raise EnhanceSetupError(f"{where}.occluder: {exc}", exc.code) from None
            except MaskModelUnusable as exc:
                raise EnhanceSetupError(f"{where}.occluder: {exc}", exc.code) from None
        self._analyser: FaceAnalyser | None = None

    def output_size(self) -> tuple[int, int]:
        return self.size

    # -- faces ------------------------------------------------------------------------------
    def _detector(self) -> FaceAnalyser:
        """The analyser pack's detector, loaded the first time a batch comes without faces."""
        if self._analyser is None:
            opts = self.options
            try:
                pack = open_model_store(self._store).fetch(opts.analyser)  # type: ignore[union-attr]
                self._analyser = FaceAnalyser(
                    pack.module("detection"),
                    None,
                    det_size=opts.det_size,
                    det_thresh=opts.det_thresh,
                    providers=self._providers,
                )
            except ModelStoreError as exc:
                raise EnhanceSetupError(f"{self.where}.analyser: {exc}", exc.code) from None
            except ValueError as exc:  # a file that is not the detector it claims to be
                raise EnhanceSetupError(
                    f"{self.where}.analyser: {exc}", "MODEL_INCOMPATIBLE"
                ) from None
            if not self._analyser.detector.has_landmarks:
                raise EnhanceSetupError(
                    f"{self.where}.analyser: {opts.analyser}'s detector gives no face landmarks; "
                    "alignment needs an SCRFD export with 5 keypoints (a *_kps / *_bnkps file)",
                    "MODEL_INCOMPATIBLE",
                )
        return self._analyser

    def _chosen(self, faces: FrameFaces) -> list[Face]:
        # The contract orders each frame's faces largest first.
        chosen = faces[:1] if self.options.target == "largest" else faces
        return [face for face in chosen if _alignable(face)]

    def _occlusion(self, face: Face, matrix: np.ndarray, crop: np.ndarray) -> np.ndarray | None:
        """Where the face shows in its crop (1) or is covered (0): the earlier step's
        occlusion when it ran one, else our own occluder's when asked, else None."""
        if face.occlusion is not None:
            return face.occlusion.in_crop(matrix, crop.shape[0])
        if self.occluder is not None:
            return self.occluder.mask(crop)
        return None

    # -- frames -----------------------------------------------------------------------------
    def push(self, batch: FrameBatch) -> FrameBatch:
        if len(batch) == 0:
            return batch
        faces = faces_of(batch)
        annotations = batch.annotations
        if faces is None:
            detector = self._detector()
            faces = [detector.detect(frame) for frame in batch.frames]
            annotations = annotate(annotations, faces)
        blend = self.options.blend / 100.0
        jobs = [
            (k, face) for k, frame_faces in enumerate(faces) for face in self._chosen(frame_faces)
        ]
        if not jobs or blend == 0:  # blend 0: the face as it is, not a resampled copy of it
            return FrameBatch(batch.frames, batch.indices, annotations)
        size = self.restorer.size
        matrices = [ffhq_matrix(face.kps, size) for _, face in jobs]
        crops = np.stack(
            [
                aligned_crop(batch.frames[k], m, size)
                for (k, _), m in zip(jobs, matrices, strict=True)
            ]
        )
        try:
            restored = self.restorer.restore(crops, self.options.weight)
        except RestorerUnusable as exc:  # its output is not the crop its shapes promised
            raise EnhanceSetupError(f"{self.where}: {exc}", exc.code) from None
        out = list(batch.frames)
        copied: set[int] = set()
        for (k, face), matrix, original, crop in zip(jobs, matrices, crops, restored, strict=True):
            if k not in copied:
                out[k] = batch.frames[k].copy()
                copied.add(k)
            mask = restore_mask(size)
            covered = self._occlusion(face, matrix, original)
            if covered is not None:
                mask = np.minimum(mask, covered)
            paste_back(out[k], crop, matrix, opacity=blend, mask=mask)
        return FrameBatch(np.stack(out), batch.indices, annotations)

    def flush(self) -> FrameBatch:
        return FrameBatch.empty(self.size[1], self.size[0])


def build(options: EnhanceOptions, ctx: ProcessorContext) -> EnhanceProcessor:
    """The step as the chain builds it (processors/enhance/spec.py names this)."""
    return EnhanceProcessor(options, ctx)
