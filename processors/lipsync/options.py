"""The lipsync step's options: what a manifest's `- lipsync:` accepts, with every default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.strict import RelPath, Strict
from processors.detector_options import multiple_of_largest_stride


class Speaker(Strict):
    """One person of a several-speaker lipsync: who they are and what they say."""

    reference: RelPath = Field(
        description="An image of this person, one face in it (matched with the analyser)."
    )
    audio: RelPath = Field(
        description="This person's speech, starting at the output's first frame."
    )


class LipsyncOptions(Strict):
    """Make the person speak the given audio (Wav2Lip, 96×96, ONNX)."""

    # FaceFusion's exports (wav2lip_gan_96.onnx, wav2lip_96.onnx) are what users download;
    # wav2lip / wav2lip_gan name an export of one's own.
    model: Literal["wav2lip_gan_96", "wav2lip_96", "wav2lip_gan", "wav2lip"] = "wav2lip_gan_96"
    audio: RelPath | None = Field(
        default=None,
        description="Speech to sync to, for every input; an input's own `audio` wins. "
        "Default: the video's own audio track. The output carries this audio. With "
        "`speakers` it is only the output's soundtrack (instead of the speakers' mix).",
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
        "of the largest face only; faces from a swap step are used on every frame).",
    )
    target: Literal["largest", "all", "reference"] = Field(
        default="largest",
        description="Which face speaks the one audio: the largest of each frame, every face "
        "of each frame (`all`: a crowd, a choir, everyone dubbed with one track), or the face "
        "matching `reference` (ArcFace, `analyser`; the others are left untouched). With "
        "`speakers` each speaker's reference decides instead.",
    )
    reference: RelPath | None = Field(
        default=None, description="With `target: reference`: an image of the face that speaks."
    )
    speakers: list[Speaker] = Field(
        default_factory=list,
        max_length=8,
        description="Several people, each synced to their own speech: every face is matched "
        "to the speakers' reference images (ArcFace, `analyser`); faces matching no speaker "
        "are left untouched. The output carries the mix of their tracks, or `audio` when set.",
    )
    analyser: str = Field(
        default="buffalo_l",
        description="With `speakers` or `target: reference`: the analyser pack (SCRFD + "
        "ArcFace) that finds faces and tells the speakers apart. After a swap that embedded "
        "its faces with this same pack (targets `reference`, `face_map`) they are matched as "
        "they were before the swap; otherwise as they arrive here.",
    )
    threshold: float = Field(
        default=0.6,
        gt=0,
        le=2,
        description="With `speakers` or `target: reference`: max cosine distance between a "
        "face and its reference.",
    )
    det_size: int = Field(
        default=640,
        ge=160,
        le=2048,
        description="Input size of the SCRFD detector when lipsync finds faces itself (and "
        "of the reference check); faces from a swap step are used as they are.",
    )

    occlusion: bool = Field(
        default=False,
        description="Keep whatever covers the mouth (a hand, a microphone) as it is, as an XSeg "
        "occluder (`occluder`) sees it. After a swap with `occlusion` the swap's occlusion is "
        "kept whatever this says.",
    )
    occluder: str = Field(default="xseg_1", description="Model store name of the occluder.")

    _det_size = field_validator("det_size")(multiple_of_largest_stride)

    @model_validator(mode="after")
    def _speakers(self) -> LipsyncOptions:
        if self.target == "reference" and not self.reference:
            raise ValueError("target `reference` needs a `reference` image")
        if self.target == "reference" and self.speakers:
            raise ValueError(
                "give either `target: reference` or `speakers` (each speaker has a reference)"
            )
        if self.target == "all" and self.speakers:
            raise ValueError(
                "give either `target: all` or `speakers` (each speaker's face follows their "
                "own audio)"
            )
        if self.target == "all" and self.detect_every > 1:
            raise ValueError(
                "`detect_every` applies to the largest face; with `target: all` every face is "
                "found on every frame, so leave it at 1"
            )
        if self.target == "reference" and self.detect_every > 1:
            raise ValueError(
                "`detect_every` applies to the largest face; with `target: reference` every "
                "frame is matched to the reference, so leave it at 1"
            )
        if not self.speakers:
            return self
        if self.detect_every > 1:
            raise ValueError(
                "`detect_every` applies to one speaker; with `speakers` every frame is "
                "matched to its speaker, so leave it at 1"
            )
        references = [s.reference for s in self.speakers]
        if len(set(references)) != len(references):
            raise ValueError("each speaker needs their own `reference` image")
        return self
