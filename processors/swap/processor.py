"""The swap step: SCRFD + ArcFace analysis and an inswapper on onnxruntime (swapper.py), paste-back.

Per frame: detect faces (embed them too when targeting by reference), hold the frame until the
look-ahead its decision needs has arrived, choose faces over the tracking window, swap each
chosen face and paste it back over its box. Frames with no chosen face pass through untouched
(the same array). The per-frame analysis goes out as `annotations["faces"]`
(the face contract: processors/faces.py).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from processors.base import ProcessorContext
from processors.faces import (
    ANNOTATION,
    Face,
    FaceAnalyser,
    align_matrix,
    annotate,
    choose_providers,
)
from processors.media.frames import FrameBatch
from processors.models.store import FetchedModel, ModelStoreError, fetch_models, require_models
from processors.spec import StepSetupError
from processors.swap.identity import ImageRef, identity
from processors.swap.options import SwapOptions
from processors.swap.paste import paste_back
from processors.swap.swapper import Swapper, SwapperUnusable
from processors.swap.tracking import FaceTracks, Targeting, context, decide


class SwapSetupError(Exception):
    """The step cannot start: a model or a side image is wrong; the message names it."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def _image_refs(options: SwapOptions, folder: Path | None, step_index: str) -> dict:
    def ref(field: str, name: str) -> ImageRef:
        if folder is None:
            raise SwapSetupError(f"{field}: {name} is not available to this task")
        return ImageRef(f"{step_index}.{field}", folder / name, name)

    if options.face_map:
        return {
            "sources": [
                [ref(f"face_map[{i}].source", e.source)] for i, e in enumerate(options.face_map)
            ],
            "references": [
                [ref(f"face_map[{i}].reference", e.reference)]
                for i, e in enumerate(options.face_map)
            ],
        }
    sources = [[ref(f"source[{i}]", s) for i, s in enumerate(options.source)]]
    references = [[ref("reference", options.reference)]] if options.target == "reference" else []
    return {"sources": sources, "references": references}


class SwapProcessor:
    name = "swap"

    def __init__(self, options: SwapOptions, ctx: ProcessorContext, where: str = "swap") -> None:
        from processors.swap.identity import IdentityError

        self.options = opts = options
        self.size = (ctx.width, ctx.height)
        try:
            models = fetch_models("swap", options, ctx.model_store or ctx.model_dir)
        except ModelStoreError as exc:
            raise SwapSetupError(str(exc)) from None
        pack: FetchedModel = models[opts.analyser]
        providers = choose_providers(tensorrt=opts.tensorrt)
        try:
            self.analyser = FaceAnalyser(
                pack.module("detection"),
                pack.module("recognition"),  # source identities always need it
                det_size=opts.det_size,
                det_thresh=opts.det_thresh,
                providers=providers,
            )
            self.swapper = Swapper(models[opts.model].path, providers)
        except SwapperUnusable as exc:
            raise SwapSetupError(f"{where}: {exc}", exc.code) from None
        except (ValueError, ModelStoreError) as exc:  # a file that is not the model it claims
            raise SwapSetupError(f"{where}: {exc}") from None
        refs = _image_refs(opts, ctx.folder, where)
        try:
            sources = [identity(self.analyser, images) for images in refs["sources"]]
            references = [identity(self.analyser, images) for images in refs["references"]]
        except IdentityError as exc:
            raise SwapSetupError(str(exc)) from None
        self.latents = [self.swapper.latent(e) for e in sources]
        mode = "face_map" if opts.face_map else opts.target
        self.targeting = Targeting(mode, references, opts.threshold)
        self.tracks = FaceTracks(max_gap=opts.max_gap, window=opts.track_window)
        self.lookbehind = self.lookahead = context(opts.track_window, opts.max_gap)
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._extra: dict[int, dict] = {}  # annotations of earlier steps, per frame
        self._last = -1
        self._next_track = 0
        self._track_ids: dict[tuple[int, int], int] = {}

    def output_size(self) -> tuple[int, int]:
        return self.size

    # -- per frame -------------------------------------------------------------------------
    def _analyse(self, frame: np.ndarray) -> list[Face]:
        faces = self.analyser.detect(frame)
        if self.targeting.needs_embeddings:
            faces = [
                f.with_(embedding=self.analyser.embed(frame, f), embedded_by=self.options.analyser)
                for f in faces
            ]
        return faces

    def _track_id(self, node: tuple[int, int]) -> int:
        if node not in self._track_ids:
            back = self.tracks.backward(*node)
            if back is not None and back in self._track_ids:
                self._track_ids[node] = self._track_ids[back]
            else:
                self._track_ids[node] = self._next_track
                self._next_track += 1
        return self._track_ids[node]

    def _finish(self, index: int) -> tuple[np.ndarray, list[Face]]:
        frame = self._frames[index]
        out, faces, copied = frame, [], False
        for node, face, who in decide(self.tracks, index, self.targeting):
            if who is not None:
                if not copied:
                    out, copied = frame.copy(), True
                self._swap_one(frame, out, face, who)
            faces.append(face.with_(track=self._track_id(node), identity=who))
        return out, faces

    def _swap_one(self, source: np.ndarray, out: np.ndarray, face: Face, who: int) -> None:
        # Align on the original pixels (another face's paste may overlap this one's crop).
        matrix = align_matrix(face.kps, self.swapper.size)
        size = (self.swapper.size, self.swapper.size)
        crop = cv2.warpAffine(source, matrix, size, borderValue=0.0)
        swapped = self.swapper.swap(crop, self.latents[who])
        paste_back(
            out, swapped, matrix, mouth=self.options.mouth_mask, opacity=self.options.opacity
        )

    def _release(self, upto: int) -> FrameBatch:
        ready = [i for i in self._frames if i <= upto]
        if not ready:
            return FrameBatch.empty(self.size[1], self.size[0])
        frames, faces = [], []
        for i in ready:
            frame, found = self._finish(i)
            frames.append(frame)
            faces.append(found)
        names = set.intersection(*(set(self._extra[i]) for i in ready))
        annotations = {n: [self._extra[i][n] for i in ready] for n in sorted(names)}
        annotations = annotate(annotations, faces)
        for i in ready:
            del self._frames[i]
            del self._extra[i]
        keep_from = ready[-1] - self.lookbehind
        self.tracks.drop_before(keep_from)
        for node in [n for n in self._track_ids if n[0] < keep_from]:
            del self._track_ids[node]
        return FrameBatch(np.stack(frames), np.asarray(ready, np.int64), annotations)

    def push(self, batch: FrameBatch) -> FrameBatch:
        for k, (frame, index) in enumerate(zip(batch.frames, batch.indices, strict=True)):
            i = int(index)
            self._frames[i] = frame
            self._extra[i] = {n: v[k] for n, v in batch.annotations.items() if n != ANNOTATION}
            self.tracks.add(i, self._analyse(frame))
            self._last = i
        return self._release(self._last - self.lookahead)

    def flush(self) -> FrameBatch:
        return self._release(self._last)


def build(options: SwapOptions, ctx: ProcessorContext) -> SwapProcessor:
    """The step as the chain builds it (processors/swap/spec.py names this): its models are
    checked first, so a missing one ends the job with the store's code."""
    try:
        require_models("swap", options, ctx.model_store or ctx.model_dir)
    except ModelStoreError as exc:
        raise StepSetupError(str(exc), exc.code) from None
    try:
        return SwapProcessor(options, ctx)
    except SwapSetupError as exc:
        raise StepSetupError(str(exc), exc.code) from None
