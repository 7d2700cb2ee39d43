"""The lipsync step's options: what a manifest's `- lipsync:` accepts, with every default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from manifests.strict import RelPath, Strict


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
