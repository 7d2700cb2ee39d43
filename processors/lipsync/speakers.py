"""Several speakers: whose face is whose in each frame, decided so it never flickers.

Each speaker is an identity learnt from their reference image (one face in it, ArcFace of the
analyser pack, as swap's references: processors/swap/identity.py). Faces of neighbouring frames
are linked into tracks and a face's speaker is the reference its track is closest to on average
within ± TRACK_WINDOW frames (swap's tracking and decision, processors/swap/tracking.py, in its
`face_map` mode), so one frame where the embedding wavers does not hand the mouth to someone
else. The decision at a frame depends only on the frames within `speaker_reach()` of it, which
the step declares as look-behind/look-ahead: chunked output equals a one-task run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from processors.faces import Face, FaceAnalyser
from processors.lipsync.reach import MAX_GAP, TRACK_WINDOW
from processors.swap.identity import ImageRef, identity
from processors.swap.tracking import FaceTracks, Targeting, decide, distance


def speaker_identities(
    analyser: FaceAnalyser, references: Sequence[str], folder: Path, where: str
) -> list[np.ndarray]:
    """One normalised embedding per speaker; an image without exactly one face raises
    IdentityError naming its field (`<where>.speakers[j].reference`) and the file."""
    return [
        identity(analyser, [ImageRef(f"{where}.speakers[{j}].reference", folder / name, name)])
        for j, name in enumerate(references)
    ]


class SpeakerAssignment:
    """Faces go in frame by frame (with embeddings); out comes, per frame, each speaker's face."""

    def __init__(self, identities: list[np.ndarray], threshold: float) -> None:
        self.identities = identities
        self.tracks = FaceTracks(max_gap=MAX_GAP, window=TRACK_WINDOW)
        self.targeting = Targeting("face_map", identities, threshold)

    def add(self, index: int, faces: list[Face]) -> None:
        """The faces of frame `index`, each with its embedding."""
        self.tracks.add(index, faces)

    def speakers_at(self, index: int) -> list[Face | None]:
        """Speaker j's face at frame `index` (None: not in the frame). Two faces decided for
        one speaker (twins, a mirror): the one nearer the reference speaks."""
        chosen: list[Face | None] = [None] * len(self.identities)
        for _, face, who in decide(self.tracks, index, self.targeting):
            if who is None:
                continue
            held = chosen[who]
            if held is None or self._nearer(face, held, who):
                chosen[who] = face
        return chosen

    def _nearer(self, face: Face, other: Face, who: int) -> bool:
        reference = self.identities[who]
        assert face.embedding is not None and other.embedding is not None
        return distance(face.embedding, reference) < distance(other.embedding, reference)

    def drop_before(self, index: int) -> None:
        self.tracks.drop_before(index)
