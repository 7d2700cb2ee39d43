"""The swap step: SCRFD + ArcFace analysis and an inswapper on onnxruntime (swapper.py), paste-back.

Per frame: detect faces (embed them too when targeting by reference), hold the frame until the
look-ahead its decision needs has arrived, choose faces over the tracking window, swap each
chosen face (on a crop of `pixel_boost` px) and paste it back over its box, limited by the
occlusion and region masks when asked (masks.py). Frames with no chosen face pass through untouched
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
    Occlusion,
    align_matrix,
    annotate,
    choose_providers,
)
from processors.media.frames import FrameBatch
from processors.models.store import FetchedModel, ModelStoreError, build_after_models, fetch_models
from processors.spec import StepSetupError
from processors.swap.identity import ImageRef, identity
from processors.swap.masks import FaceParser, Occluder
from processors.swap.options import SwapOptions
from processors.swap.paste import paste_back
from processors.swap.swapper import Swapper, SwapperUnusable
from processors.swap.tracking import FaceTracks, Targeting, context, decide


class SwapSetupError(StepSetupError):
    """The step cannot start: a model or a side image is wrong; the message names it and
    `code` is the status record's code when the cause has one."""


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


def crop_size(pixel_boost: int, model_side: int, where: str) -> int:
    """The side of the aligned crop: the model's own, or pixel_boost when that is larger (a
    whole multiple of the model's side, so the crop splits into model-sized sub-grids)."""
    if pixel_boost <= model_side:
        return model_side
    if pixel_boost % model_side:
        raise SwapSetupError(
            f"{where}.pixel_boost: {pixel_boost} is not a multiple of the swap model's "
            f"{model_side} px input; use a multiple of {model_side}"
        )
    return pixel_boost


class SwapProcessor:
    name = "swap"

    def __init__(self, options: SwapOptions, ctx: ProcessorContext, where: str = "swap") -> None:
        from processors.swap.identity import IdentityError

        self.options = opts = options
        self.size = (ctx.width, ctx.height)
        try:
            models = fetch_models("swap", options, ctx.model_store)
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
            # The masks' models only when the options ask for them (spec.py: models).
            self.occluder = (
                Occluder(models[opts.occluder].path, providers) if opts.occlusion else None
            )
            self.parser = FaceParser(models[opts.parser].path, providers) if opts.regions else None
        except SwapperUnusable as exc:
            raise SwapSetupError(f"{where}: {exc}", exc.code) from None
        except (ValueError, ModelStoreError) as exc:  # a file that is not the model it claims
            raise SwapSetupError(f"{where}: {exc}") from None
        self.crop_size = crop_size(opts.pixel_boost, self.swapper.size, where)
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
                face = face.with_(occlusion=self._swap_one(frame, out, face, who))
            faces.append(face.with_(track=self._track_id(node), identity=who))
        return out, faces

    def _swap_one(
        self, source: np.ndarray, out: np.ndarray, face: Face, who: int
    ) -> Occlusion | None:
        """Swap one face into `out`; what covers it (with `occlusion`), for the later steps."""
        # Align on the original pixels (another face's paste may overlap this one's crop).
        matrix = align_matrix(face.kps, self.crop_size)
        size = (self.crop_size, self.crop_size)
        # Past the frame's edge the border pixels repeat: a black fill would be swapped as part
        # of the face and pasted back as a dark fringe where a face touches the edge.
        crop = cv2.warpAffine(source, matrix, size, borderMode=cv2.BORDER_REPLICATE)
        swapped = self.swapper.swap(crop, self.latents[who])
        occlusion = (
            Occlusion(self.occluder.mask(crop), matrix) if self.occluder is not None else None
        )
        paste_back(
            out, swapped, matrix, mouth=self.options.mouth_mask, opacity=self.options.opacity,
            mask=self._mask(crop, occlusion),
        )  # fmt: skip
        return occlusion

    def _mask(self, crop: np.ndarray, occlusion: Occlusion | None) -> np.ndarray | None:
        """The occlusion and region masks of the original crop (their minimum), or None.

        Both read the target's own face: what covers it, and where its regions are (FaceFusion
        parses the swapped crop instead; the target's regions are the ones a user sees)."""
        masks = [occlusion.mask] if occlusion is not None else []
        if self.parser is not None:
            masks.append(self.parser.mask(crop, self.options.regions))
        return np.minimum.reduce(masks) if masks else None

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
    return build_after_models("swap", options, ctx, SwapProcessor)
