"""The internal no-op step (frames pass through): the plumbing benchmark's baseline. It is
not a manifest step: the registry keeps it out of the chain a user can write."""

from __future__ import annotations

from core.strict import Strict
from processors.spec import StepSpec


class NoopOptions(Strict):
    """No options."""


SPEC = StepSpec(name="noop", options=NoopOptions, processor="processors.noop.processor:build")
