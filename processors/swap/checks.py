"""The trigger's check of a swap step's face images: each must show exactly one face.

Only the analyser pack's detector is needed (an SCRFD file, 2.5–17 MB, on the CPU through
onnxruntime alone), so the trigger can refuse a manifest whose source or reference image is
wrong — INVALID naming the field and the file — before any task starts. A detector file that
is not one is refused the same way (MODEL_INCOMPATIBLE), never a crash. The task checks again
when it builds the identities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from core.domain import JobError
from processors.media.image_header import too_many_pixels
from processors.models.errors import ModelStoreError
from processors.scrfd import DetectorUnusable
from processors.swap.options import SwapOptions

if TYPE_CHECKING:
    from processors.models.store import ModelStore


@dataclass(frozen=True)
class FaceImageProblem:
    field: str  # e.g. chain[1].swap.source[0]
    name: str  # the image, relative to the manifest's folder
    message: str


def oversized_images(
    images: list[tuple[str, str]], read: Callable[[str], bytes], max_pixels: int
) -> list[FaceImageProblem]:
    """(field path, relative path) images whose header says more than `max_pixels` pixels
    (or whose header is not an image's): refused before any decoder allocates the frame."""
    problems = []
    for field, name in images:
        why = too_many_pixels(read(name), max_pixels)
        if why is not None:
            problems.append(FaceImageProblem(field, name, f"{name}: {why}"))
    return problems


def face_images(options: SwapOptions, base: str) -> list[tuple[str, str]]:
    """(field path, relative path) of every image the swap step learns an identity from."""
    found = [(f"{base}.source[{j}]", s) for j, s in enumerate(options.source)]
    if options.face_map:
        for j, entry in enumerate(options.face_map):
            found += [
                (f"{base}.face_map[{j}].reference", entry.reference),
                (f"{base}.face_map[{j}].source", entry.source),
            ]
    elif options.target == "reference" and options.reference:
        found.append((f"{base}.reference", options.reference))
    return found


class DetectorIncompatible(ModelStoreError):
    """The pack's detection file is not a face detector this code can run."""

    code = "MODEL_INCOMPATIBLE"


@lru_cache(maxsize=4)
def _detector(path: str, det_size: int, det_thresh: float):
    from processors.faces import FaceAnalyser

    return FaceAnalyser(
        Path(path), None, det_size=det_size, det_thresh=det_thresh,
        providers=["CPUExecutionProvider"],
    )  # fmt: skip


def check_face_images(
    options: SwapOptions, base: str, store: ModelStore, read: Callable[[str], bytes]
) -> list[FaceImageProblem | JobError]:
    """Problems with the step's face images (empty when every image shows one face)."""
    return check_images(
        face_images(options, base),
        options.analyser,
        base,
        store,
        read,
        det_size=options.det_size,
        det_thresh=options.det_thresh,
    )


def check_images(
    images: list[tuple[str, str]],
    analyser_name: str,
    base: str,
    store: ModelStore,
    read: Callable[[str], bytes],
    *,
    det_size: int = 640,
    det_thresh: float = 0.5,
) -> list[FaceImageProblem | JobError]:
    """Problems with (field path, relative path) images, found by analyser pack
    `analyser_name`'s detector: each must show exactly one face. Shared by every step that
    learns identities from images (`base`: the step's field path).

    A pack that is in the store but will not load or run is INVALID naming it
    (MODEL_UNLOADABLE); a storage fault while reading an image raises.
    """
    if not images:
        return []
    pack = store.fetch(analyser_name)
    try:
        analyser = _detector(str(pack.module("detection")), det_size, det_thresh)
    except DetectorUnusable as exc:
        raise DetectorIncompatible(f"model {analyser_name}: {exc}") from None
    except (ImportError, ModelStoreError):
        raise
    except Exception as exc:
        return [unloadable_analyser(store, analyser_name, f"{base}.analyser", exc)]
    problems: list[FaceImageProblem | JobError] = []
    for field, name in images:
        data = np.frombuffer(read(name), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            problems.append(FaceImageProblem(field, name, f"{name} is not a readable image"))
            continue
        try:
            count = len(analyser.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
        except Exception as exc:
            return [unloadable_analyser(store, analyser_name, f"{base}.analyser", exc)]
        if count == 0:
            problems.append(FaceImageProblem(field, name, f"no face found in {name}"))
        elif count > 1:
            problems.append(
                FaceImageProblem(
                    field, name,
                    f"{count} faces in {name}; use an image of one person (crop it to the face "
                    "you mean)",
                )
            )  # fmt: skip
    return problems


def unloadable_analyser(
    models: ModelStore | None, pack: str, where: str, exc: Exception
) -> JobError:
    """The face analyser pack is in the store but will not load or run (not ONNX, a layout
    insightface does not know): INVALID naming the pack and its detector file."""
    uri = None
    if models is not None:
        try:
            uri = f"{models.uri.rstrip('/')}/{models.entry(pack).file_for('detection')}"
        except ModelStoreError:
            uri = models.uri
    lines = str(exc).strip().splitlines()
    first = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return JobError(
        code="MODEL_UNLOADABLE",
        message=f"the face analyser {pack} in the model store could not be loaded or run "
        f"({first}); replace its files (`dropbatch models check` lists them)",
        field=where,
        uri=uri,
    )
