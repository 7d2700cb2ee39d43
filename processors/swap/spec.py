"""The swap step's spec: options, models (the analyser pack, the swapper, the masks' models),
context frames, side images, the trigger's face check and builder (see processors/spec.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from core.domain import JobError
from processors.spec import CheckInputs, FrameSize, ModelNeed, SideFile, StepMemory, StepSpec
from processors.swap.options import SwapOptions


def models(options: SwapOptions) -> list[ModelNeed]:
    """The analyser pack and the swapper always; the occluder with `occlusion`, the face
    parser with `regions` (so a missing one is MODEL_MISSING at trigger time)."""
    needs = [
        ModelNeed(options.analyser, "analyser", option="analyser"),
        ModelNeed(options.model, "swapper"),
    ]
    if options.occlusion:
        needs.append(ModelNeed(options.occluder, "occluder", option="occluder"))
    if options.regions:
        needs.append(ModelNeed(options.parser, "parser", option="parser"))
    return needs


def context(options: SwapOptions, rate: Fraction, frame: FrameSize | None) -> tuple[int, int]:
    """A face's assignment is averaged over the tracking window, bridged over missed frames."""
    from processors.swap.tracking import context as reach

    n = reach(options.track_window, options.max_gap)
    return n, n


def side_files(options: SwapOptions, base: str) -> list[SideFile]:
    found = [SideFile(f"{base}.source[{j}]", s) for j, s in enumerate(options.source)]
    if options.reference:
        found.append(SideFile(f"{base}.reference", options.reference))
    for j, entry in enumerate(options.face_map):
        found.append(SideFile(f"{base}.face_map[{j}].reference", entry.reference))
        found.append(SideFile(f"{base}.face_map[{j}].source", entry.source))
    return found


def checks(options: SwapOptions, base: str, inputs: CheckInputs) -> list[JobError]:
    """Each image the step learns an identity from must be no larger than max_image_pixels
    (by its header, checked whatever check_faces says) and show exactly one face."""
    from processors.swap.checks import (
        FaceImageProblem,
        check_face_images,
        face_images,
        oversized_images,
    )

    found: list[FaceImageProblem | JobError] = list(
        oversized_images(face_images(options, base), inputs.read, inputs.max_image_pixels)
    )
    if not found and inputs.models is not None and inputs.check_faces:
        # (no store: the model check has already said so; or checks switched off)
        found = check_face_images(options, base, inputs.models, inputs.read)
    return [
        JobError(code="FACE_IMAGE", message=p.message, field=p.field, uri=inputs.uri(p.name))
        if isinstance(p, FaceImageProblem)
        else p
        for p in found
    ]


SPEC = StepSpec(
    name="swap",
    options=SwapOptions,
    processor="processors.swap.processor:build",
    models=models,
    context=context,
    side_files=side_files,
    checks=checks,
    hands_on_faces=True,
    catalog=Path(__file__).with_name("models.yaml"),
    # Measured with the light analyser and the test swapper (130 MB + 111 MB/MP), plus the
    # default models' weights the test does not load (buffalo_l and inswapper_128: 745 MB).
    memory=StepMemory(base_mb=900.0, per_megapixel_mb=115.0),
)
