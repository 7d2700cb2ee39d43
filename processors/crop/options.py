"""The crop step's options: what a manifest's `- crop:` accepts, with every default."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from core.strict import Strict


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
    subject: Literal["largest", "center", "all", "speaker"] = Field(
        default="largest",
        description="Whom to follow: the largest person, the one nearest the centre, the "
        "union of everyone, or the one speaking (mouth movement while the audio has voice; "
        "held through pauses for `speaker_hold_seconds`). The choice is stable: it is voted "
        "over the smoothing window.",
    )
    speaker_hold_seconds: float = Field(
        default=3.0,
        ge=0,
        le=10,
        description="subject speaker: while nobody speaks, keep framing whoever spoke last "
        "this long (then the largest person).",
    )
    speaker_switch: Literal["cut", "glide"] = Field(
        default="cut",
        description="subject speaker: when another person starts speaking, cut to them (as an "
        "editor would) or glide across at up to `max_speed`.",
    )
    camera: Literal["auto", "still", "track"] = Field(
        default="track",
        description="Camera mode per shot: track follows the subject; still holds one window "
        "over each shot piece; auto chooses per piece: still when the subject stays within "
        "`still_tolerance`, pan (a constant-speed move) when it moves steadily, else track.",
    )
    shot_seconds: float = Field(
        default=4.0,
        ge=0.5,
        le=20,
        description="Longest stretch a camera mode is decided over: a longer shot is decided "
        "in pieces of this length (camera auto and still).",
    )
    still_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=0.5,
        description="camera auto: subject motion within this fraction of the window keeps the "
        "camera still (and the largest deviation from a straight line a pan allows).",
    )
    fit: Literal["crop", "blur"] = Field(
        default="crop",
        description="When the subjects are wider than the target aspect: crop cuts them to "
        "the window; blur shows them whole, scaled, on a blurred copy of the frame.",
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
