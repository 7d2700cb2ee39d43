"""Manifest v1: the typed model of what a user asks for.

Every model forbids unknown keys, so a typo (`chunk_second:`) is an error with its field path
instead of a silently ignored setting. Paths are strings relative to the manifest's folder;
`manifests.paths` checks that none escapes it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from manifests.paths import check_relative_path, check_video_pattern

MAX_INPUTS = 500

# A path is checked (and normalised) where it is declared, so an error names the exact item
# (`chain[0].swap.source[1]`), not the list that holds it.
RelPath = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(check_relative_path)]
VideoPath = Annotated[
    str, Field(min_length=1, max_length=1024), AfterValidator(check_video_pattern)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # pydantic reads `true` as 1 for a number; `crf: true` is a mistake, not a setting.
    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation in (int, float) or get_origin(annotation) is Literal:
                raise ValueError("must be a number, not true/false")
        return value


class CropOptions(Strict):
    """Reframe the video around the person to a target aspect ratio."""

    aspect: str = Field(default="9:16", description="Target aspect W:H, e.g. 9:16, 1:1, 4:5.")
    detector: Literal["opencv-face", "opencv-hog", "yolo", "yolo-onnx"] = Field(
        default="opencv-face",
        description="Person detector. opencv-* need no downloaded weights; yolo (ultralytics, "
        "the GPU image) and yolo-onnx (onnxruntime) load `model` from the model store.",
    )
    model: str = Field(default="yolov8n", description="Model store name for the yolo detectors.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where yolo detectors run; auto: the GPU when there is one."
    )
    batch_size: int = Field(
        default=0, ge=0, le=256, description="Frames per detector call; 0: 32 on a GPU, 4 on CPU."
    )
    confidence: float = Field(
        default=0.25, gt=0, lt=1, description="Minimum person score for the yolo detectors."
    )
    detect_every: int = Field(
        default=1,
        ge=1,
        le=30,
        description="Run detection every k-th frame; boxes are interpolated in between.",
    )
    subject: Literal["largest", "center", "all"] = Field(
        default="largest",
        description="Whom to follow: the largest person, the one nearest the centre, or the "
        "union of everyone. The choice is stable: it is voted over the smoothing window.",
    )
    smoothing_seconds: float = Field(
        default=0.5, ge=0, le=5, description="Half-width of the camera path's smoothing window."
    )
    dead_zone: float = Field(
        default=0.05,
        ge=0,
        le=0.5,
        description="Subject motion smaller than this fraction of the window does not move the "
        "camera.",
    )
    max_speed: float = Field(
        default=1.0,
        ge=0.1,
        le=10,
        description="Fastest camera motion, in frame lengths (the longer side) per second.",
    )
    hold_seconds: float = Field(
        default=0.5,
        ge=0,
        le=5,
        description="With no person, hold the last subject this long, then glide to the centre.",
    )
    padding: float = Field(
        default=0.15, ge=0, le=1, description="Margin around the subject (zoom only)."
    )
    min_crop_ratio: float = Field(
        default=1.0,
        ge=0.2,
        le=1,
        description="Smallest window, as a fraction of the largest of the aspect: below 1 the "
        "camera zooms in to frame the subject with `padding`; 1 never zooms.",
    )
    cut_threshold: float = Field(
        default=0.4,
        ge=0,
        le=1,
        description="Histogram change (0..1) that counts as a scene cut, where the camera path "
        "restarts; 0 turns cut detection off.",
    )

    @field_validator("aspect")
    @classmethod
    def _aspect(cls, value: str) -> str:
        match = re.fullmatch(r"\s*(\d{1,4})\s*:\s*(\d{1,4})\s*", value)
        if not match or int(match[1]) == 0 or int(match[2]) == 0:
            raise ValueError("must look like W:H with positive integers, e.g. 9:16")
        return f"{int(match[1])}:{int(match[2])}"


class FaceMapEntry(Strict):
    reference: RelPath = Field(description="An image of the person to replace.")
    source: RelPath = Field(description="An image of the identity to put in their place.")


class SwapOptions(Strict):
    """Replace faces with a source identity (insightface + inswapper_128)."""

    model: str = "inswapper_128"
    analyser: str = "buffalo_l"
    source: list[RelPath] = Field(
        default_factory=list, description="Image(s) of the new identity; embeddings are averaged."
    )
    target: Literal["largest", "all", "reference"] = Field(
        default="largest",
        description="Which faces get the source identity: the largest, all, or those close to "
        "`reference`. Ignored with a `face_map`.",
    )
    reference: RelPath | None = Field(default=None, description="Image of the face to replace.")
    threshold: float = Field(
        default=0.6,
        gt=0,
        le=2,
        description="Max cosine distance (1 − cosine similarity) between a face and a reference.",
    )
    face_map: list[FaceMapEntry] = Field(
        default_factory=list,
        max_length=16,
        description="Several {reference, source} pairs: each face becomes the source of the "
        "reference it is closest to (within `threshold`).",
    )
    mouth_mask: bool = Field(default=False, description="Keep the original mouth.")
    opacity: float = Field(default=1.0, ge=0, le=1, description="1 = the swapped face only.")
    det_size: int = Field(default=640, ge=160, le=2048, description="Detector input size.")
    det_thresh: float = Field(default=0.5, gt=0, lt=1, description="Detector confidence.")
    track_window: int = Field(
        default=5,
        ge=0,
        le=30,
        description="Frames on each side over which a face's assignment is averaged.",
    )
    max_gap: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Frames a face may be missed by the detector and keep its landmarks.",
    )
    tensorrt: bool = Field(
        default=False, description="Try onnxruntime's TensorRT provider before CUDA."
    )

    @field_validator("det_size")
    @classmethod
    def _det_size(cls, value: int) -> int:
        if value % 32:
            raise ValueError("must be a multiple of 32 (the detector's largest stride)")
        return value

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _needs_identity(self) -> SwapOptions:
        if not self.source and not self.face_map:
            raise ValueError("needs `source` image(s) or a `face_map`")
        if self.source and self.face_map:
            raise ValueError("give either `source` or a `face_map`, not both")
        if self.target == "reference" and not self.reference:
            raise ValueError("target `reference` needs a `reference` image")
        return self


class LipsyncOptions(Strict):
    """Make the person speak the given audio (Wav2Lip, 96×96, ONNX)."""

    # FaceFusion's exports (wav2lip_gan_96.onnx, wav2lip_96.onnx) are what users download;
    # wav2lip / wav2lip_gan name an export of one's own.
    model: Literal["wav2lip_gan_96", "wav2lip_96", "wav2lip_gan", "wav2lip"] = "wav2lip_gan_96"
    audio: RelPath | None = Field(
        default=None,
        description="Speech to sync to, for every input; an input's own `audio` wins. "
        "Default: the video's own audio track. The output carries this audio.",
    )
    length_policy: Literal["trim", "pad", "extend"] = Field(
        default="trim",
        description="When audio and video lengths differ: `trim` ends the output with the "
        "shorter of the two, `pad` keeps the video's length (silence after a short audio), "
        "`extend` holds the video's last frame while a longer audio plays on.",
    )
    batch_size: int = Field(default=16, ge=1, le=256, description="Faces per model call.")
    pads: tuple[int, int, int, int] = Field(
        default=(0, 10, 0, 0),
        description="Pixels added to the face box: top, bottom, left, right (bottom reaches "
        "the chin).",
    )
    smoothing_frames: int = Field(
        default=2,
        ge=0,
        le=12,
        description="Face boxes are averaged over this many frames on each side.",
    )
    detect_every: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Detect faces on every k-th frame and interpolate between (own detection "
        "only; faces from a swap step are used on every frame).",
    )


STEP_MODELS: dict[str, type[Strict]] = {
    "crop": CropOptions,
    "swap": SwapOptions,
    "lipsync": LipsyncOptions,
}
STEP_ORDER = ("crop", "swap", "lipsync")


class ChainStep(Strict):
    """One step, written as `- crop: {aspect: "9:16"}` or just `- crop`."""

    crop: CropOptions | None = None
    swap: SwapOptions | None = None
    lipsync: LipsyncOptions | None = None

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
    def _exactly_one(self) -> ChainStep:
        if sum(x is not None for x in (self.crop, self.swap, self.lipsync)) != 1:
            raise ValueError("each step names exactly one of: crop, swap, lipsync")
        return self

    @property
    def name(self) -> str:
        return next(n for n in STEP_ORDER if getattr(self, n) is not None)

    @property
    def options(self) -> Strict:
        return getattr(self, self.name)

    def with_overrides(self, changes: dict[str, Any]) -> Strict:
        """This step's options with an input's overrides merged over them, validated as this
        step's options (raises pydantic's ValidationError, located within the options)."""
        merged = {**self.options.model_dump(mode="json"), **changes}
        return STEP_MODELS[self.name].model_validate(merged)


class StepOverrides(Strict):
    crop: dict[str, Any] | None = None
    swap: dict[str, Any] | None = None
    lipsync: dict[str, Any] | None = None


class InputItem(Strict):
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
    overrides: StepOverrides = Field(
        default_factory=StepOverrides, description="Per-item options merged over the chain's."
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


class ComputeOptions(Strict):
    gpu: Literal["l4", "none"] = "l4"
    spot: bool = True
    # auto: chosen from the video's length, the parallelism and the chain's context frames.
    chunk_seconds: ChunkSeconds = "auto"
    max_parallel_tasks: int = Field(default=10, ge=1, le=1000)
    max_retries: int = Field(default=3, ge=0, le=10)


class Manifest(Strict):
    """A dropbatch manifest, version 1."""

    version: Literal[1] = Field(description="Always the integer 1.")
    inputs: list[InputItem] = Field(min_length=1, max_length=MAX_INPUTS)
    chain: list[ChainStep] = Field(default_factory=list, max_length=3)
    output: OutputOptions = Field(default_factory=OutputOptions)
    compute: ComputeOptions = Field(default_factory=ComputeOptions)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if type(value) is not int:  # not 1.0, "1" or true, which pydantic would take
            raise ValueError("must be the integer 1")
        return value

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value

    # A field validator, not a model one: it reports under `chain` and runs even when other
    # fields have errors, so a user sees every problem at once.
    @field_validator("chain")
    @classmethod
    def _chain_order(cls, chain: list[ChainStep]) -> list[ChainStep]:
        names = [step.name for step in chain]
        if len(set(names)) != len(names):
            raise ValueError("each step may appear once")
        if names != sorted(names, key=STEP_ORDER.index):
            raise ValueError(f"steps run in the order {' → '.join(STEP_ORDER)}")
        return chain

    def step(self, name: str) -> Strict | None:
        return next((s.options for s in self.chain if s.name == name), None)
