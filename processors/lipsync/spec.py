"""The lipsync step's spec: options, its Wav2Lip model, context frames, its audio, how it
shapes the plan (it follows speech) and builder (see processors/spec.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from core.domain import JobError
from processors.lipsync.options import LipsyncOptions
from processors.spec import (
    CheckInputs,
    FrameSize,
    ModelNeed,
    SideFile,
    Speech,
    StepMemory,
    StepSpec,
)


def models(options: LipsyncOptions) -> list[ModelNeed]:
    needs = [ModelNeed(options.model, "lipsync")]
    if options.speakers or options.target == "reference":  # told apart by ArcFace
        needs.append(ModelNeed(options.analyser, "analyser", option="analyser"))
    if options.occlusion:
        needs.append(ModelNeed(options.occluder, "occluder", option="occluder"))
    return needs


def context(options: LipsyncOptions, rate: Fraction, frame: FrameSize | None) -> tuple[int, int]:
    from processors.lipsync.reach import context_reach

    reach = context_reach(options)
    return reach, reach


def side_files(options: LipsyncOptions, base: str) -> list[SideFile]:
    found = [SideFile(f"{base}.audio", options.audio)] if options.audio else []
    if options.target == "reference" and options.reference:
        found.append(SideFile(f"{base}.reference", options.reference))
    for j, speaker in enumerate(options.speakers):
        found.append(SideFile(f"{base}.speakers[{j}].reference", speaker.reference))
        found.append(SideFile(f"{base}.speakers[{j}].audio", speaker.audio))
    return found


def speaker_tracks(options: LipsyncOptions, base: str) -> list[SideFile]:
    return [
        SideFile(f"{base}.speakers[{j}].audio", speaker.audio)
        for j, speaker in enumerate(options.speakers)
    ]


def checks(options: LipsyncOptions, base: str, inputs: CheckInputs) -> list[JobError]:
    """Each speaker's reference image must be no larger than max_image_pixels (by its
    header) and show exactly one face."""
    from processors.lipsync.checks import check_speaker_images, speaker_images
    from processors.swap.checks import FaceImageProblem, oversized_images

    found: list[FaceImageProblem | JobError] = list(
        oversized_images(speaker_images(options, base), inputs.read, inputs.max_image_pixels)
    )
    if not found and speaker_images(options, base) and inputs.models is not None:
        # (no store: the model check has already said so)
        found = check_speaker_images(options, base, inputs.models, inputs.read)
    return [
        JobError(code="FACE_IMAGE", message=p.message, field=p.field, uri=inputs.uri(p.name))
        if isinstance(p, FaceImageProblem)
        else p
        for p in found
    ]


def speech_file(options: LipsyncOptions, base: str) -> SideFile | None:
    return SideFile(f"{base}.audio", options.audio) if options.audio else None


def output_frames(
    options: LipsyncOptions, video_frames: int, speech_seconds: float, rate: Fraction
) -> int:
    from processors.lipsync.audio import output_frames as by_policy

    return by_policy(options.length_policy, video_frames, speech_seconds, rate)


SPEC = StepSpec(
    name="lipsync",
    options=LipsyncOptions,
    processor="processors.lipsync.processor:build",
    models=models,
    context=context,
    side_files=side_files,
    checks=checks,
    speech=Speech(file=speech_file, frames=output_frames, tracks=speaker_tracks),
    catalog=Path(__file__).with_name("models.yaml"),
    # Measured with the Wav2Lip stand-in (87 MB + 136 MB/MP), plus Wav2Lip GAN's ~150 MB.
    memory=StepMemory(base_mb=250.0, per_megapixel_mb=140.0),
)
