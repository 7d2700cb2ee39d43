"""What a manifest may say about the enhance step: its options, their defaults, their limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from core.strict import Strict
from processors.detector_options import multiple_of_largest_stride


class EnhanceOptions(Strict):
    """Restore faces after the swap (GFPGAN 1.4, CodeFormer or GPEN-BFR 512, ONNX)."""

    model: Literal["gfpgan_1.4", "codeformer", "gpen_bfr_512"] = Field(
        default="gfpgan_1.4", description="The face restoration model (a model store name)."
    )
    blend: int = Field(
        default=80,
        ge=0,
        le=100,
        description="How much of the restored face replaces the face: 0 none, 100 all of it.",
    )
    weight: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="CodeFormer's fidelity: 0 restores most, 1 stays closest to the face as it "
        "is. The other models have no such input and ignore it.",
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Faces per model call (a model file exported for one face at a time gets "
        "one face per call).",
    )
    target: Literal["all", "largest"] = Field(
        default="all", description="Which faces of a frame are restored: all, or the largest."
    )
    analyser: str = Field(
        default="buffalo_l",
        description="Analyser pack whose detector finds the faces when no earlier step hands "
        "them on; after `swap` its faces are used and this pack is not loaded.",
    )
    det_size: int = Field(default=640, ge=160, le=2048, description="Detector input size.")
    det_thresh: float = Field(default=0.5, gt=0, lt=1, description="Detector confidence.")
    tensorrt: bool = Field(
        default=False, description="Try onnxruntime's TensorRT provider before CUDA."
    )
    occlusion: bool = Field(
        default=False,
        description="Keep whatever covers the face (a hand, a microphone) as it is, as an XSeg "
        "occluder (`occluder`) sees it. After a swap with `occlusion` the swap's occlusion is "
        "kept whatever this says.",
    )
    occluder: str = Field(default="xseg_1", description="Model store name of the occluder.")

    _det_size = field_validator("det_size")(multiple_of_largest_stride)
