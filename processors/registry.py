"""The one list of chain steps. Nothing else in the pipeline names a step: the manifest model,
the trigger, the planner, the model store, input resolution and the task ask this module.

Adding a step is a folder `processors/<step>/` with its `spec.py` (and `models.yaml` when it
brings models) plus one line in `STEPS`, in chain order (docs/ARCHITECTURE.md, "How to add a
step").
"""

from __future__ import annotations

from processors.crop.spec import SPEC as CROP
from processors.enhance.spec import SPEC as ENHANCE
from processors.lipsync.spec import SPEC as LIPSYNC
from processors.noop.spec import SPEC as NOOP
from processors.spec import StepSpec
from processors.swap.spec import SPEC as SWAP

# The steps a manifest's chain may name, in the order they run.
STEPS: tuple[StepSpec, ...] = (CROP, SWAP, ENHANCE, LIPSYNC)
# Steps a plan may carry that no manifest can name (benchmarks, plumbing tests).
INTERNAL: tuple[StepSpec, ...] = (NOOP,)


def steps() -> tuple[StepSpec, ...]:
    """The manifest's steps in chain order (read at call time, so a registered step counts)."""
    return STEPS


def step_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in STEPS)


def step_spec(name: str) -> StepSpec:
    """The spec of step `name` (KeyError naming the known steps if there is none)."""
    for spec in (*STEPS, *INTERNAL):
        if spec.name == name:
            return spec
    raise KeyError(f"unknown step {name!r}; the steps are {', '.join(step_names())}")


def faces_handed_on(chain: list[str], index: int) -> bool:
    """Whether a step before `chain[index]` (step names in chain order) hands faces on, so
    that step needs no face detector of its own (`ModelNeed.without_faces_only`)."""
    return any(step_spec(name).hands_on_faces for name in chain[:index])
