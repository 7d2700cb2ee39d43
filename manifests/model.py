"""Manifest v1: the typed model of what a user asks for.

Every model forbids unknown keys, so a typo (`chunk_second:`) is an error with its field path
instead of a silently ignored setting. Paths are strings relative to the manifest's folder;
`core.paths` checks that none escapes it.

The chain's steps come from the step registry (`processors/registry.py`): `ChainStep` has one
optional field per step, typed by that step's options model, and `StepOverrides` one mapping
per step. `manifest_model()` builds these for the registry's steps; `Manifest` is the model
for the steps registered at import.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from core.paths import check_relative_path
from core.strict import RelPath, Strict, VideoPath
from processors import registry
from processors.spec import StepSpec

MAX_INPUTS = 500


class ChainStepBase(Strict):
    """One step, written as `- crop: {aspect: "9:16"}` or just `- crop`; the fields (one per
    registered step) are added by `manifest_model()`."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {value: {}}
        if isinstance(value, dict):
            if len(value) == 1:  # `- crop:` with nothing after it: all defaults
                return {k: ({} if v is None else v) for k, v in value.items()}
            # Several keys: a dump of this model, where the unused steps are None.
            return {k: v for k, v in value.items() if v is not None}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ChainStepBase:
        names = list(type(self).model_fields)
        if sum(getattr(self, n) is not None for n in names) != 1:
            raise ValueError(f"each step names exactly one of: {', '.join(names)}")
        return self

    @property
    def name(self) -> str:
        return next(n for n in type(self).model_fields if getattr(self, n) is not None)

    @property
    def options(self) -> Strict:
        return getattr(self, self.name)

    @property
    def spec(self) -> StepSpec:
        return registry.step_spec(self.name)

    def with_overrides(self, changes: dict[str, Any]) -> Strict:
        """This step's options with an input's overrides merged over them, validated as this
        step's options (raises pydantic's ValidationError, located within the options)."""
        merged = {**self.options.model_dump(mode="json"), **changes}
        return type(self.options).model_validate(merged)


class InputItemBase(Strict):
    """An input; `overrides` (one mapping per registered step) is added by `manifest_model()`."""

    video: VideoPath = Field(
        description="Path relative to the manifest's folder, or a glob there: `*` and `?` "
        "within a folder name, `[abc]`/`[a-z]`/`[!abc]` one character, a `**` folder name any "
        "number of folders. Brackets escape: `Interview [[]final].mp4` names "
        "`Interview [final].mp4`."
    )
    audio: RelPath | None = Field(default=None, description="Audio for this item (lipsync).")
    output_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$",
        description="File name of the output (default: <video-stem>.mp4).",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"video": value} if isinstance(value, str) else value


class OutputOptions(Strict):
    prefix: str = Field(
        default="out/",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,200}/$",
        description="Folder (relative to the manifest's) for outputs; ends with '/'.",
    )
    codec: Literal["h264"] = "h264"
    crf: int = Field(default=20, ge=0, le=51)
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"
    ] = "medium"
    audio_bitrate: str = Field(default="192k", pattern=r"^\d{2,3}k$")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_relative_path(value.rstrip("/")) + "/"  # `out/./x/` is `out/x/`


def _chunk_seconds(value: Any) -> float | Literal["auto"]:
    """'auto' (the planner chooses, batch_jobs/chunk_size.py) or seconds from 1 to 3600."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be auto or a number of seconds from 1 to 3600")
    if not 1 <= value <= 3600:
        raise ValueError("must be from 1 to 3600 seconds (or auto)")
    return float(value)


ChunkSeconds = Annotated[
    float | Literal["auto"],
    PlainValidator(_chunk_seconds),
    WithJsonSchema(
        {
            "anyOf": [
                {"const": "auto"},
                {"type": "number", "minimum": 1, "maximum": 3600},
            ]
        }
    ),
]


def _workers(value: Any) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be auto or a whole number of workers from 1 to 1000")
    if not 1 <= value <= 1000:
        raise ValueError("must be from 1 to 1000 workers (or auto)")
    return value


Workers = Annotated[
    int | Literal["auto"],
    PlainValidator(_workers),
    WithJsonSchema(
        {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1, "maximum": 1000}]}
    ),
]


class ComputeOptions(Strict):
    gpu: Literal["l4", "none"] = "l4"
    spot: bool = True
    # auto: chosen from the video's length, the parallelism and the chain's context frames.
    chunk_seconds: ChunkSeconds = "auto"
    max_parallel_tasks: int = Field(default=10, ge=1, le=1000)
    # auto: as many as the work pays for (each worker's work several times its VM's start-up,
    # batch_jobs/worker_count.py), at most max_parallel_tasks; a number asks for that many.
    workers: Workers = "auto"
    max_retries: int = Field(default=3, ge=0, le=10)

    @field_validator("workers")
    @classmethod
    def _within_parallel(cls, value: int | str, info: ValidationInfo) -> int | str:
        cap = info.data.get("max_parallel_tasks")
        if isinstance(value, int) and cap is not None and value > cap:
            raise ValueError(f"must be at most max_parallel_tasks ({cap}), or auto")
        return value


class ManifestBase(Strict):
    """A dropbatch manifest, version 1; the fields are added by `manifest_model()`."""

    step_order: ClassVar[tuple[str, ...]] = ()

    @field_validator("version", mode="before", check_fields=False)
    @classmethod
    def _version(cls, value: Any) -> Any:
        if type(value) is not int:  # not 1.0, "1" or true, which pydantic would take
            raise ValueError("must be the integer 1")
        return value

    @field_validator("inputs", mode="before", check_fields=False)
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value

    # A field validator, not a model one: it reports under `chain` and runs even when other
    # fields have errors, so a user sees every problem at once.
    @field_validator("chain", check_fields=False)
    @classmethod
    def _chain_order(cls, chain: list[ChainStepBase]) -> list[ChainStepBase]:
        names = [step.name for step in chain]
        if len(set(names)) != len(names):
            raise ValueError("each step may appear once")
        if names != sorted(names, key=cls.step_order.index):
            raise ValueError(f"steps run in the order {' → '.join(cls.step_order)}")
        return chain

    def step(self, name: str) -> Strict | None:
        return next((s.options for s in self.chain if s.name == name), None)


@cache
def _models_for(steps: tuple[StepSpec, ...]) -> tuple[type, type, type, type]:
    optional: Any = None  # create_model's field definitions: (annotation, default)
    step_fields = {spec.name: (spec.options | optional, None) for spec in steps}
    chain_step = create_model(
        "ChainStep",
        __base__=ChainStepBase,
        __doc__='One step, written as `- crop: {aspect: "9:16"}` or just `- crop`.',
        **step_fields,
    )
    overrides = create_model(
        "StepOverrides",
        __base__=Strict,
        **{spec.name: (dict[str, Any] | optional, None) for spec in steps},
    )
    input_item = create_model(
        "InputItem",
        __base__=InputItemBase,
        __doc__=None,
        overrides=(
            overrides,
            Field(
                default_factory=overrides, description="Per-item options merged over the chain's."
            ),
        ),
    )
    manifest = create_model(
        "Manifest",
        __base__=ManifestBase,
        __doc__="A dropbatch manifest, version 1.",
        version=(Literal[1], Field(description="Always the integer 1.")),
        inputs=(list[input_item], Field(min_length=1, max_length=MAX_INPUTS)),
        chain=(list[chain_step], Field(default_factory=list, max_length=len(steps))),
        output=(OutputOptions, Field(default_factory=OutputOptions)),
        compute=(ComputeOptions, Field(default_factory=ComputeOptions)),
    )
    manifest.step_order = tuple(spec.name for spec in steps)
    return manifest, input_item, chain_step, overrides


def manifest_model() -> type[ManifestBase]:
    """The manifest model for the steps the registry lists now."""
    return _models_for(registry.steps())[0]


Manifest, InputItem, ChainStep, StepOverrides = _models_for(registry.steps())
