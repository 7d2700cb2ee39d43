"""Build the chain of processors for a planned item and drive frames through it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np

from processors.base import PassThrough, Processor, ProcessorContext
from processors.media.frames import FrameBatch


class ChainSetupError(Exception):
    """A step cannot be built (missing model, bad side input); the message names it.

    `code` is the status record's error code when the cause has one (MODEL_MISSING,
    MODEL_INCOMPATIBLE, …), so the job ends with it instead of a generic task failure.
    """

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def build_processor(name: str, options: dict, ctx: ProcessorContext) -> Processor:
    if name == "crop":
        from processors.crop.processor import CropProcessor

        return CropProcessor(options, ctx)
    if name == "noop":
        return PassThrough(ctx)
    if name == "swap":
        _require_models(name, options, ctx)
        from processors.swap.processor import SwapProcessor, SwapSetupError

        try:
            return SwapProcessor(options, ctx)
        except SwapSetupError as exc:
            raise ChainSetupError(str(exc), getattr(exc, "code", "")) from None
    if name == "lipsync":
        _require_models(name, options, ctx)
        from processors.lipsync.processor import LipsyncProcessor, LipsyncSetupError

        try:
            return LipsyncProcessor(options, ctx)
        except LipsyncSetupError as exc:
            raise ChainSetupError(str(exc), getattr(exc, "code", "")) from None
    raise ChainSetupError(f"unknown step {name!r}")


def _require_models(name: str, options: dict, ctx: ProcessorContext) -> None:
    from processors.models.store import ModelStoreError, require_models

    try:
        require_models(name, options, ctx.model_store or ctx.model_dir)
    except ModelStoreError as exc:
        raise ChainSetupError(str(exc), exc.code) from None


class Chain:
    def __init__(self, steps: list[dict], ctx: ProcessorContext) -> None:
        self.processors: list[Processor] = []
        for step in steps:
            proc = build_processor(step["name"], step.get("options", {}), ctx)
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
