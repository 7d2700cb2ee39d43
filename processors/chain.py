"""Build the chain of processors for a planned item and drive frames through it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np

from core.strict import Strict
from processors.base import Processor, ProcessorContext
from processors.media.frames import FrameBatch
from processors.registry import step_spec
from processors.spec import StepSetupError

# A step that cannot be built raises this (the name the task and tests know it by).
ChainSetupError = StepSetupError


def build_processor(name: str, options: Strict | dict, ctx: ProcessorContext) -> Processor:
    """Step `name` built from its options (typed, or a plan's JSON parsed once here)."""
    try:
        spec = step_spec(name)
    except KeyError as exc:
        raise ChainSetupError(str(exc.args[0])) from None
    return spec.build(spec.parse(options), ctx)


def located(exc: StepSetupError, index: str, name: str) -> StepSetupError:
    """The error with the manifest field it is about in front, as the trigger's errors have
    it: `swap.source[0]: …` becomes `chain[1].swap.source[0]: …`, and a message that names no
    field of the step (a model store's, say) is put under `chain[1].swap: …`. (A planned
    item's chain is the manifest's, in order, with the item's overrides applied.)"""
    message = str(exc)
    if message.startswith(f"{name}.") or message.startswith(f"{name}:"):
        message = f"{index}.{message}"
    elif not message.startswith(f"{index}."):
        message = f"{index}.{name}: {message}"
    return StepSetupError(message, exc.code)


class Chain:
    def __init__(self, steps: list[dict], ctx: ProcessorContext) -> None:
        """`steps`: a planned item's chain, [{"name": …, "options": {…}}]; each step's options
        are parsed once, by its spec's model, and its processor gets them typed."""
        self.processors: list[Processor] = []
        for i, step in enumerate(steps):
            try:
                proc = build_processor(step["name"], step.get("options", {}), ctx)
            except StepSetupError as exc:
                raise located(exc, f"chain[{i}]", step["name"]) from None
            self.processors.append(proc)
            width, height = proc.output_size()
            ctx = replace(ctx, width=width, height=height)
        self.width, self.height = ctx.width, ctx.height

    @property
    def lookbehind(self) -> int:
        return sum(p.lookbehind for p in self.processors)

    @property
    def lookahead(self) -> int:
        return sum(p.lookahead for p in self.processors)

    def run(
        self,
        batches: Iterable[FrameBatch],
        emit: Callable[[FrameBatch], None],
        keep: tuple[int, int],
    ) -> int:
        """Push every batch through; `emit` gets the frames whose index is in [keep)."""
        lo, hi = keep
        emitted = 0

        def deliver(batch: FrameBatch) -> None:
            nonlocal emitted
            if len(batch) == 0:
                return
            mask = (batch.indices >= lo) & (batch.indices < hi)
            if mask.all():
                out = batch
            elif mask.any():
                out = batch.take(mask)
            else:
                return
            emitted += len(out)
            emit(out)

        def through(batch: FrameBatch, start: int) -> None:
            for proc in self.processors[start:]:
                if len(batch) == 0:
                    return
                batch = proc.push(batch)
            deliver(batch)

        for batch in batches:
            through(batch, 0)
        for i, proc in enumerate(self.processors):
            through(proc.flush(), i + 1)
        return emitted


def concat_batches(batches: list[FrameBatch]) -> FrameBatch:
    # An annotation survives only if every batch carries it (otherwise frames would misalign).
    names = set.intersection(*(set(b.annotations) for b in batches)) if batches else set()
    return FrameBatch(
        np.concatenate([b.frames for b in batches]),
        np.concatenate([b.indices for b in batches]),
        {n: [x for b in batches for x in b.annotations[n]] for n in sorted(names)},
    )
