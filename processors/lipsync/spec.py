"""The lipsync step's spec: options, its Wav2Lip model, context frames, its audio, how it
shapes the plan (it follows speech) and builder (see processors/spec.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from processors.lipsync.options import LipsyncOptions
from processors.spec import FrameSize, ModelNeed, SideFile, Speech, StepSpec


def models(options: LipsyncOptions) -> list[ModelNeed]:
    return [ModelNeed(options.model, "lipsync")]


def context(options: LipsyncOptions, rate: Fraction, frame: FrameSize | None) -> tuple[int, int]:
    from processors.lipsync.reach import context_reach

    reach = context_reach(options)
    return reach, reach


def side_files(options: LipsyncOptions, base: str) -> list[SideFile]:
    return [SideFile(f"{base}.audio", options.audio)] if options.audio else []


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
    speech=Speech(file=speech_file, frames=output_frames),
    catalog=Path(__file__).with_name("models.yaml"),
)
