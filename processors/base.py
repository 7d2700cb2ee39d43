"""The processor contract every chain step follows.

A processor is built once per chunk (its model sessions are opened once per process and
shared: processors/models/sessions.py), then receives batches of frames in order and returns
the frames it has finished. It may hold frames back while it waits for look-ahead context
(smoothing) and releases them on `flush`. It declares how much context it needs on each side,
so the task decodes that much pre- and post-roll around its chunk and the chunked result
equals the single-task result.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from core.domain import VideoInfo
from processors.media.frames import FrameBatch


@dataclass(frozen=True)
class ProcessorContext:
    """What a processor may know about the whole video it works on (not just its chunk)."""

    info: VideoInfo
    rate: Fraction
    width: int  # frame size arriving at this processor
    height: int
    folder: Path | None = None  # local copy of the manifest's folder for side inputs
    model_store: str = ""  # the configured store: a folder or gs://…/models/ ("" for none)
    # Speech for lipsync: a path or URL ffmpeg can open, the seconds into it where output
    # frame 0 sits, and the output's frame count (a length policy may differ from the video's).
    audio_path: str | Path | None = None
    audio_skip: float = 0.0
    frames: int | None = None


class Processor(Protocol):
    name: str
    lookbehind: int  # frames of context needed before the first frame it must emit
    lookahead: int  # frames of context needed after the last frame it must emit

    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames it returns."""
        ...

    def push(self, batch: FrameBatch) -> FrameBatch:
        """Take frames in index order; return the frames now finished (possibly none)."""
        ...

    def flush(self) -> FrameBatch:
        """No more input: return every frame still held."""
        ...


class PassThrough:
    """The no-op processor: the plumbing benchmark's baseline and an identity step."""

    name = "noop"
    lookbehind = 0
    lookahead = 0

    def __init__(self, ctx: ProcessorContext) -> None:
        self._size = (ctx.width, ctx.height)

    def output_size(self) -> tuple[int, int]:
        return self._size

    def push(self, batch: FrameBatch) -> FrameBatch:
        return batch

    def flush(self) -> FrameBatch:
        return FrameBatch.empty(self._size[1], self._size[0])
