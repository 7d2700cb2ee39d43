"""The enhance step's spec: options, models (the restorer and the analyser pack its own
detection reads), no context frames, no side files, builder (see processors/spec.py)."""

from __future__ import annotations

from pathlib import Path

from processors.enhance.options import EnhanceOptions
from processors.spec import ModelNeed, StepMemory, StepSpec


def models(options: EnhanceOptions) -> list[ModelNeed]:
    # The pack's detector is loaded only when no earlier step (swap) hands faces on.
    needs = [
        ModelNeed(options.model, "enhancer"),
        ModelNeed(options.analyser, "analyser", option="analyser", without_faces_only=True),
    ]
    if options.occlusion:
        needs.append(ModelNeed(options.occluder, "occluder", option="occluder"))
    return needs


SPEC = StepSpec(
    name="enhance",
    options=EnhanceOptions,
    processor="processors.enhance.processor:build",
    models=models,
    catalog=Path(__file__).with_name("models.yaml"),
    # Measured after swap with the restorers' test signatures (~370 MB, no growth with the
    # frame: it works on 512 px face crops), plus GFPGAN 1.4's ~340 MB of weights.
    memory=StepMemory(base_mb=700.0, per_megapixel_mb=50.0),
)
