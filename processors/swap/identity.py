"""Identities from images: the source face(s) to put in, the reference face(s) to look for.

An identity is the mean of the normalised ArcFace embeddings of its images, normalised again.
Every image must show exactly one face: with none there is nothing to learn, with several
there is no way to know which person is meant — both are errors naming the manifest field and
the file, so the user fixes the image instead of getting the wrong person.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from processors.faces import FaceAnalyser


class IdentityError(ValueError):
    """An image that cannot define an identity; the message names the field and the file."""


@dataclass(frozen=True)
class ImageRef:
    field: str  # manifest field path, e.g. chain[1].swap.source[0]
    path: Path
    name: str  # as written in the manifest


def read_rgb(ref: ImageRef) -> np.ndarray:
    data = np.fromfile(ref.path, np.uint8) if ref.path.is_file() else np.empty(0, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise IdentityError(f"{ref.field}: {ref.name} is not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def embedding_of(analyser: FaceAnalyser, ref: ImageRef) -> np.ndarray:
    image = read_rgb(ref)
    faces = analyser.detect(image)
    if not faces:
        raise IdentityError(f"{ref.field}: no face found in {ref.name}")
    if len(faces) > 1:
        raise IdentityError(
            f"{ref.field}: {len(faces)} faces in {ref.name}; use an image of one person "
            "(crop it to the face you mean)"
        )
    return analyser.embed(image, faces[0])


def identity(analyser: FaceAnalyser, refs: list[ImageRef]) -> np.ndarray:
    """The normalised mean embedding of one person's images."""
    mean = np.mean([embedding_of(analyser, ref) for ref in refs], axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
