"""The steps each input of a manifest runs: the chain with the input's overrides merged in,
each step knowing whether an earlier one hands faces on (then it needs no detector of its own).

One expansion for everyone who asks "what will the tasks run": the trigger's model and step
checks, the planner and its speech probe, and the command line's (and the doctor's) model list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from processors.registry import faces_handed_on

if TYPE_CHECKING:
    from core.strict import Strict
    from manifests.model import ManifestBase
    from processors.spec import StepSpec


@dataclass(frozen=True)
class StepRun:
    """One step as an input's tasks run it."""

    spec: StepSpec
    options: Strict  # typed, the input's overrides merged in
    faces_given: bool  # an earlier step of the chain hands faces on
    field: str  # where these options are set: chain[i].step, or inputs[j].overrides.step
    changed: tuple[str, ...] | None = None  # the options an input's override sets (None: none)

    @property
    def name(self) -> str:
        return self.spec.name

    def planned(self) -> dict[str, Any]:
        """The step as a plan's JSON carries it (the task parses the options again)."""
        return {"name": self.name, "options": self.options.model_dump(mode="json")}


def input_steps(
    manifest: ManifestBase, overrides: Mapping[str, dict], index: int | None = None
) -> list[StepRun]:
    """The chain an input runs: its `overrides` (step name → changed options) merged over the
    chain's options and validated (raises pydantic's ValidationError). `index`: the input's
    place in `inputs`, so an overridden step's field names the override."""
    names = [step.name for step in manifest.chain]
    runs = []
    for i, step in enumerate(manifest.chain):
        changes = overrides.get(step.name)
        changed: tuple[str, ...] | None = None
        if changes is None:
            options, field = step.options, f"chain[{i}].{step.name}"
        else:
            changed = tuple(changes)
            options = step.with_overrides(changes)
            field = (
                f"inputs[{index}].overrides.{step.name}"
                if index is not None
                else f"chain[{i}].{step.name}"
            )
        runs.append(StepRun(step.spec, options, faces_handed_on(names, i), field, changed))
    return runs


def checked_steps(manifest: ManifestBase) -> list[StepRun]:
    """Every distinct way the tasks may run a step, as the trigger checks them: the chain's own
    steps, then each input's steps whose options its overrides change (they may name another
    model or side file). Repeats are left in; a checker skips what it has seen."""
    runs = input_steps(manifest, {})
    for j, item in enumerate(manifest.inputs):
        changed = item.overrides.model_dump(exclude_none=True)
        runs += [run for run in input_steps(manifest, changed, j) if run.name in changed]
    return runs
