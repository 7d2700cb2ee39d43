"""The no-op step's builder: the PassThrough processor."""

from __future__ import annotations

from processors.base import PassThrough, ProcessorContext
from processors.noop.spec import NoopOptions


def build(options: NoopOptions, ctx: ProcessorContext) -> PassThrough:
    return PassThrough(ctx)
