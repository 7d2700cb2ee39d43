"""What a chain step knows about itself, in one object the rest of the system asks.

Each step folder `processors/<step>/` exposes one `SPEC` (its `spec.py`); `processors/registry.py`
lists them. The manifest model, the trigger's checks, the planner, the model store, input
resolution, side-input fetching and the task learn about steps only through these specs.

A spec must stay cheap to import: the Cloud Function imports every spec (to validate and plan)
but none of the code that decodes or runs a model. So `processor` names the builder as a
"module:function" string, imported only when a task builds the step.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from core.strict import Strict

if TYPE_CHECKING:
    from core.domain import JobError
    from processors.base import Processor, ProcessorContext
    from processors.models.store import ModelStore

FrameSize = tuple[int, int]  # (width, height)


class StepSetupError(Exception):
    """A step cannot be built (missing model, bad side input); the message names it.

    `code` is the status record's error code when the cause has one (MODEL_MISSING,
    MODEL_INCOMPATIBLE, …), so the job ends with it instead of a generic task failure.
    """

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ModelNeed:
    """One model-store entry a step needs with its options.

    `role` says what the step uses it for (analyser, swapper, detector, lipsync…).
    `any_weights`: presence of any one of the catalog entry's `weights` files is enough (a
    loader such as ultralytics that takes an engine, a .pt or an .onnx); otherwise every file
    of the entry must be there.
    `option`: the step's option that names it, so an error about it names that field.
    `without_faces_only`: needed only when no earlier step of the chain hands faces on (a
    step with `StepSpec.hands_on_faces`): the detector a step loads to find faces itself.
    """

    name: str
    role: str
    any_weights: bool = False
    option: str = "model"
    without_faces_only: bool = False


class SideFile(NamedTuple):
    """A file a step reads besides the video, with the manifest field that names it."""

    field: str  # e.g. chain[1].swap.source[0]
    path: str  # relative to the manifest's folder


@dataclass(frozen=True)
class CheckInputs:
    """What a step's trigger-time checks may use."""

    models: ModelStore | None  # the configured model store (None: none configured)
    read: Callable[[str], bytes]  # a side file's bytes, by its manifest-relative path
    uri: Callable[[str], str]  # a side file's object URI, for the error that names it
    # The task image the deployment runs (Settings.image_variant): "" (none, a local run),
    # "slim" or "ultralytics"; a step whose runtime is only in one of them checks it.
    image_variant: str = ""
    # Settings.check_faces: a step's checks that run a model on side files skip when false.
    check_faces: bool = True
    # Settings.max_image_pixels: a side image with more pixels (by its header) is refused.
    max_image_pixels: int = 40_000_000


@dataclass(frozen=True)
class Speech:
    """A step that follows speech (lipsync): the planner probes the speech, sets the output's
    frame count by the step's length policy and where output frame 0 sits in the audio.

    `file(options, base)`: the speech file the step's own options name (None: the video's own
    track); an input's own `audio` wins over it.
    `frames(options, video_frames, speech_seconds, rate)`: the output's frame count.
    `tracks(options, base)`: several speakers' own tracks, each starting at output frame 0
    (none: the step follows one speech). With tracks, the longest sets the output's length,
    and the soundtrack is `file` (or the input's audio) when given, else the tracks mixed.
    """

    file: Callable[[Any, str], SideFile | None]
    frames: Callable[[Any, int, float, Fraction], int]
    tracks: Callable[[Any, str], list[SideFile]] = lambda options, base: []


@dataclass(frozen=True)
class StepMemory:
    """What a step adds to one worker's resident memory, measured (bench/worker_memory.py,
    bench/RESULTS.md "Worker memory"): a fixed part (its models, its runtime) and a part that
    grows with the frame (the frames it holds, per million pixels of the video's frame).
    The default is the largest step measured, so an unmeasured step is never sized small."""

    base_mb: float = 600.0
    per_megapixel_mb: float = 400.0


def _no_models(options: Any) -> list[ModelNeed]:
    return []


def _no_context(options: Any, rate: Fraction, frame: FrameSize | None) -> tuple[int, int]:
    return 0, 0


def _no_side_files(options: Any, base: str) -> list[SideFile]:
    return []


def no_checks(options: Any, base: str, inputs: CheckInputs) -> list[JobError]:
    return []


def _deaf(options: Any) -> bool:
    return False


@dataclass(frozen=True)
class StepSpec:
    """One chain step. Every callable takes the step's typed options (an instance of
    `options`); `base` is the step's manifest field path, e.g. `chain[1].swap`.

    - `models(options)`: the model-store entries it needs.
    - `context(options, rate, frame)`: frames (before, after) it reads around the frames it
      emits, for that frame rate and the frame size arriving at the step (None: a bound that
      holds for any size).
    - `side_files(options, base)`: the files it reads besides the video.
    - `checks(options, base, inputs)`: what the trigger can refuse before any task starts
      (INVALID errors naming the field); a storage fault raises.
    - `processor`: "module:function" taking (options, ProcessorContext) and returning the
      Processor, raising StepSetupError when it cannot.
    - `speech`: set by a step that follows speech (see `Speech`).
    - `listens(options)`: it reads the item's audio without following it (the output's length
      stays the video's): crop's `subject: speaker` hears who talks. The task hands it the
      speech a later step follows, else the video's own track.
    - `hands_on_faces`: its output batches carry the faces it found (processors/faces.py),
      so later steps need not detect them again.
    - `catalog`: the YAML file of the models this step brings to the catalog, if any.
    - `memory`: what it adds to a worker's memory (sizes local workers).
    """

    name: str
    options: type[Strict]
    processor: str
    models: Callable[[Any], list[ModelNeed]] = _no_models
    context: Callable[[Any, Fraction, FrameSize | None], tuple[int, int]] = _no_context
    side_files: Callable[[Any, str], list[SideFile]] = _no_side_files
    checks: Callable[[Any, str, CheckInputs], list[JobError]] = no_checks
    speech: Speech | None = None
    listens: Callable[[Any], bool] = _deaf
    hands_on_faces: bool = False
    catalog: Path | None = None
    memory: StepMemory = StepMemory()

    def parse(self, options: Strict | Mapping[str, Any] | None) -> Strict:
        """The typed options from a manifest's mapping or a plan's JSON (raises pydantic's
        ValidationError, located within the options)."""
        if isinstance(options, self.options):
            return options
        return self.options.model_validate(dict(options or {}))

    def build(self, options: Strict, ctx: ProcessorContext) -> Processor:
        module, _, function = self.processor.partition(":")
        return getattr(importlib.import_module(module), function)(options, ctx)
