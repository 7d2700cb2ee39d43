"""The swap step's options: what a manifest's `- swap:` accepts, with every default."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from core.strict import RelPath, Strict
from processors.detector_options import multiple_of_largest_stride


def _one_or_many_schema(schema: dict[str, Any]) -> None:
    """`source: alex.jpg` is accepted (the before-validator wraps it in a list); pydantic
    describes only the list, so the schema says so itself, or an editor would flag it."""
    source = schema["properties"]["source"]
    item = source.pop("items")
    source.pop("type")
    source["anyOf"] = [item, {"type": "array", "items": item}]


# The face regions a swap may be limited to: the face parts of the 19 CelebAMask-HQ classes a
# BiSeNet face parser labels (FaceFusion's names; processors/swap/masks.py maps them to classes).
FACE_REGIONS = (
    "skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "glasses", "nose",
    "mouth", "upper-lip", "lower-lip",
)  # fmt: skip


class FaceMapEntry(Strict):
    reference: RelPath = Field(description="An image of the person to replace.")
    source: RelPath = Field(description="An image of the identity to put in their place.")


class SwapOptions(Strict):
    """Replace faces with a source identity (insightface + inswapper_128)."""

    model_config = ConfigDict(json_schema_extra=_one_or_many_schema)

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
    # -- masks and pixel boost: what of the swapped face is pasted, and at what resolution --
    occlusion: bool = Field(
        default=False,
        description="Keep whatever covers the face (a hand, a microphone, hair) from the "
        "original frame, as an XSeg occluder (`occluder`) sees it.",
    )
    occluder: str = Field(default="xseg_1", description="Model store name of the occluder.")
    regions: list[str] = Field(
        default_factory=list,
        max_length=len(FACE_REGIONS),
        description="Paste only these face regions, as a BiSeNet face parser (`parser`) finds "
        f"them: any of {', '.join(FACE_REGIONS)}. Empty: the whole face box.",
        json_schema_extra={"items": {"type": "string", "enum": list(FACE_REGIONS)}},
    )
    parser: str = Field(
        default="bisenet_resnet_34", description="Model store name of the face parser."
    )
    pixel_boost: Literal[128, 256, 512] = Field(
        default=128,
        description="Side of the aligned face crop the swap works on; above the model's 128 "
        "the crop is swapped as 128 px sub-grids (every k-th pixel) and reassembled.",
    )

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, value: list[str]) -> list[str]:
        unknown = [
            f"{name!r} (at [{i}])" for i, name in enumerate(value) if name not in FACE_REGIONS
        ]
        if unknown:
            raise ValueError(
                f"unknown region {', '.join(unknown)}; choose from {', '.join(FACE_REGIONS)}"
            )
        return list(dict.fromkeys(value))  # a region named twice is the same region

    _det_size = field_validator("det_size")(multiple_of_largest_stride)

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
