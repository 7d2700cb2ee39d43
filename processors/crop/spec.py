"""The crop step's spec: options, models, context frames and builder (see processors/spec.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from core.domain import JobError
from processors.crop.options import CropOptions
from processors.spec import CheckInputs, FrameSize, ModelNeed, StepMemory, StepSpec


def models(options: CropOptions) -> list[ModelNeed]:
    """The yolo detectors load `model` from the store; the OpenCV ones need no weights.
    ultralytics (`yolo`) takes an engine, a .pt or an .onnx: any one of them will do."""
    if not options.detector.startswith("yolo"):
        return []
    return [ModelNeed(options.model, "detector", any_weights=options.detector == "yolo")]


def context(options: CropOptions, rate: Fraction, frame: FrameSize | None) -> tuple[int, int]:
    from processors.crop.context import context_frames

    return context_frames(options, rate, frame)


def checks(options: CropOptions, base: str, inputs: CheckInputs) -> list[JobError]:
    """`detector: yolo` needs ultralytics, which the slim task image does not have."""
    from processors.crop.image import image_problems

    return image_problems(options.detector, base, inputs.image_variant)


SPEC = StepSpec(
    name="crop",
    options=CropOptions,
    processor="processors.crop.processor:build",
    models=models,
    context=context,
    checks=checks,
    # Speaker framing hears voice activity in the item's audio (processors/crop/speaking.py).
    listens=lambda options: options.subject == "speaker",
    catalog=Path(__file__).with_name("models.yaml"),
    # Measured with YOLO11n (bench/worker_memory.py); the OpenCV detectors take ~300 MB less.
    memory=StepMemory(base_mb=330.0, per_megapixel_mb=225.0),
)
