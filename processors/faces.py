"""Face analysis shared by the face steps (SCRFD detection and ArcFace embedding on
onnxruntime), and the contract between them: what one step hands the next about the faces in
each frame.

The contract (owned here, nowhere else): `FrameBatch.annotations[ANNOTATION]`, written with
`annotate` (by `swap`) and read with `faces_of` (by e.g. `lipsync`): one entry per frame, in
frame order; each entry is a list of `Face`, largest first. Coordinates are pixels of the frame
as it leaves the step that wrote them (swap keeps the geometry):

- `box`: float32 [4] x0, y0, x1, y1
- `kps`: float32 [5, 2] eyes (image left, right), nose tip, mouth corners (left, right)
- `score`: detector confidence; 0.0 for a `carried` face
- `embedding`: float32 [512] L2-normalised ArcFace embedding of the face as the writing step
  found it (before it changed it), or None where the step did not need one (targets
  `largest`/`all`)
- `embedded_by`: the analyser pack whose recogniser made `embedding` ("" when none): two
  embeddings are comparable only when the same model made them
- `track`: id of the face's track, stable within one chunk (not across chunks)
- `carried`: True when the detector missed this face here and it keeps the landmarks of its
  last detection (a gap of at most a couple of frames, bridged on both sides)
- `identity`: index of the source identity swapped onto this face, None if left alone
- `occlusion`: what covers the face as the writing step's occluder saw it (`Occlusion`: a
  weight in that step's aligned crop, 1 face, 0 covered, and the crop's affine), or None when
  it ran none. A later step that repaints the face (enhance, lipsync) keeps the covered pixels
  as they are, so a hand kept by the swap is not painted over afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from processors.face_align import ARCFACE_112 as ARCFACE_112
from processors.face_align import align_matrix as align_matrix
from processors.face_align import similarity as similarity
from processors.face_align import template as template

if TYPE_CHECKING:
    from processors.media.frames import FrameBatch

log = logging.getLogger("dropbatch.faces")

ANNOTATION = "faces"  # the one annotation name the face contract travels under


@dataclass(frozen=True)
class Occlusion:
    """An occluder's weight in one aligned crop: `mask` float32 [n, n] (1 face shows, 0
    something covers it), `matrix` the 2×3 affine frame -> that crop."""

    mask: np.ndarray
    matrix: np.ndarray

    def in_crop(self, matrix: np.ndarray, size: int) -> np.ndarray:
        """The weight in another aligned crop (`matrix`: frame -> that size×size crop).
        Outside the occluder's own crop nothing is known to cover the face: 1 there."""
        to_frame = np.vstack([cv2.invertAffineTransform(self.matrix), [0.0, 0.0, 1.0]])
        onto = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]]) @ to_frame
        return cv2.warpAffine(
            self.mask, onto[:2], (size, size), flags=cv2.INTER_LINEAR, borderValue=1.0
        )

    def in_box(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """The weight over a box of the frame (x0, y0, x1, y1): float32 [y1-y0, x1-x0]."""
        x0, y0, x1, y1 = box
        inverse = cv2.invertAffineTransform(self.matrix)
        inverse[:, 2] -= (x0, y0)
        return cv2.warpAffine(
            self.mask, inverse, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=1.0
        )


@dataclass(frozen=True)
class Face:
    box: np.ndarray
    kps: np.ndarray
    score: float
    embedding: np.ndarray | None = None
    embedded_by: str = ""
    track: int = -1
    carried: bool = False
    identity: int | None = None
    occlusion: Occlusion | None = None

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    def with_(self, **changes: object) -> Face:
        return replace(self, **changes)


FrameFaces = list[Face]  # one frame's faces, largest first


class FaceContractError(TypeError):
    """An annotation under the faces name that is not what the contract says (a step bug)."""


def faces_of(batch: FrameBatch) -> list[FrameFaces] | None:
    """The faces an earlier step found in each frame of the batch; None when no step did.

    Checked, so a producer that breaks the contract fails here with a message that says so,
    not deep inside the consumer.
    """
    faces = batch.annotations.get(ANNOTATION)
    if faces is None:
        return None
    if len(faces) != len(batch):
        raise FaceContractError(
            f"annotations[{ANNOTATION!r}] has {len(faces)} entries for {len(batch)} frames"
        )
    for frame_faces in faces:
        for face in frame_faces:
            if not isinstance(face, Face):
                raise FaceContractError(
                    f"annotations[{ANNOTATION!r}] holds a {type(face).__name__}, not a Face"
                )
    return faces


def annotate(annotations: dict[str, list], faces: Sequence[FrameFaces]) -> dict[str, list]:
    """`annotations` with the faces of each frame set under the contract's name."""
    return {**annotations, ANNOTATION: [list(frame_faces) for frame_faces in faces]}


def choose_providers(tensorrt: bool = False) -> list[str]:
    """CUDA when onnxruntime has it, else CPU; TensorRT first only when asked for."""
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if tensorrt:
        wanted.insert(0, "TensorrtExecutionProvider")
    chosen = [p for p in wanted if p in available]
    return chosen or ["CPUExecutionProvider"]


class FaceAnalyser:
    """Detection always; recognition only when asked for (load only what the chain needs).

    Both run on onnxruntime directly (processors/scrfd.py, processors/arcface.py): the trigger's
    face check and the face steps need no insightface for them.
    """

    def __init__(
        self,
        detector: Path,
        recogniser: Path | None,
        *,
        det_size: int = 640,
        det_thresh: float = 0.5,
        providers: list[str] | None = None,
    ) -> None:
        from processors.arcface import ArcFaceRecogniser
        from processors.scrfd import ScrfdDetector

        self.providers = providers or choose_providers()
        self.detector = ScrfdDetector(
            detector, self.providers, det_size=det_size, det_thresh=det_thresh
        )
        self.recogniser = None
        if recogniser is not None:
            if not self.detector.has_landmarks:
                # Alignment for embedding and swapping needs the five points.
                raise ValueError(
                    f"{detector.name} gives no face landmarks; use an SCRFD export with 5 "
                    "keypoints (a *_kps / *_bnkps file)"
                )
            self.recogniser = ArcFaceRecogniser(recogniser, self.providers)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB frame, largest first."""
        faces = [Face(d.box, d.kps, d.score) for d in self.detector.detect(rgb)]
        return sorted(faces, key=lambda f: -f.area)

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The L2-normalised ArcFace embedding of one face of an RGB frame."""
        if self.recogniser is None:
            raise RuntimeError("this analyser was built without its recognition module")
        return self.recogniser.embed(rgb, face.kps)
