"""The trigger's check of a lipsync step's speaker references: each image must show exactly one
face, found by the step's analyser pack (swap's check, processors/swap/checks.py), so a wrong
reference is INVALID naming `chain[i].lipsync.speakers[j].reference` before any task starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from core.domain import JobError
from processors.lipsync.options import LipsyncOptions
from processors.swap.checks import FaceImageProblem, check_images

if TYPE_CHECKING:
    from processors.models.store import ModelStore


def speaker_images(options: LipsyncOptions, base: str) -> list[tuple[str, str]]:
    """(field path, relative path) of every speaker's reference image (and of the one
    `reference` of `target: reference`)."""
    found = [
        (f"{base}.speakers[{j}].reference", speaker.reference)
        for j, speaker in enumerate(options.speakers)
    ]
    if options.target == "reference" and options.reference:
        found.append((f"{base}.reference", options.reference))
    return found


def check_speaker_images(
    options: LipsyncOptions, base: str, store: ModelStore, read: Callable[[str], bytes]
) -> list[FaceImageProblem | JobError]:
    """Problems with the speakers' reference images (empty when each shows one face), found
    as the task's analyser finds them (the step's `det_size`, confidence 0.5)."""
    return check_images(
        speaker_images(options, base),
        options.analyser,
        base,
        store,
        read,
        det_size=options.det_size,
    )
