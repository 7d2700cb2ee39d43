"""Test material for lipsync with several speakers, from the real-model tier's footage.

Two real people side by side: a second of the Pexels clip (left, `host`) and of
single_face.mp4 (right, `guest`), each scaled to 320×180 and stacked (ffmpeg hstack) at the
Pexels rate. Their reference images are frames of the same clips at other moments, so the
identity match is learnt from one picture and found in others. Speech is espeak-ng's, placed
so that the host speaks first and the guest after.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.lipsync_fixtures import speech_wav

FPS = "24000/1001"
HALF = (320, 180)  # each person's half of the two-face frame
HOST_START = 9.0  # seconds into pexels.mp4: she faces the camera
HOST_REFERENCE_AT = 14.0
GUEST_REFERENCE_AT = 2.1  # single_face.mp4 is 2.4 s long
GUEST_DELAY = 0.6  # seconds of quiet before the guest speaks (and after)


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True, timeout=120
    )


def two_face_clip(target: Path, real_asset: Callable[[str], Path], frames: int) -> Path:
    """`frames` frames of the host (left) and the guest (right), H.264, no audio."""
    width, height = HALF
    scale = f"scale={width}:{height},fps={FPS},setsar=1"
    graph = (
        f"[0:v]{scale}[l];[1:v]setpts=PTS-STARTPTS,{scale}[r];"
        f"[l][r]hstack,trim=end_frame={frames}[v]"
    )
    _ffmpeg(
        "-ss", f"{HOST_START}", "-i", str(real_asset("pexels.mp4")),
        "-i", str(real_asset("single_face.mp4")),
        "-filter_complex", graph, "-map", "[v]",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "14", "-pix_fmt", "yuv420p",
        str(target),
    )  # fmt: skip
    return target


def reference_images(folder: Path, real_asset: Callable[[str], Path]) -> dict[str, Path]:
    """host.png and guest.png: one frame of each clip, at a moment the test clip leaves out."""
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, clip, at in (
        ("host.png", "pexels.mp4", HOST_REFERENCE_AT),
        ("guest.png", "single_face.mp4", GUEST_REFERENCE_AT),
    ):
        _ffmpeg("-ss", f"{at}", "-i", str(real_asset(clip)), "-frames:v", "1", str(folder / name))
        found[name] = folder / name
    return found


def speech_tracks(folder: Path) -> dict[str, Path]:
    """host.wav (speaks at once, for about 0.8 s) and guest.wav (quiet for GUEST_DELAY, then
    speaks, and lasts longer): 16-bit WAVs as espeak-ng writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    host = speech_wav(folder / "host.wav", "Hello there.", silence=0.02)
    guest = speech_wav(folder / "guest.wav", "I am the guest.", silence=GUEST_DELAY)
    return {"host.wav": host, "guest.wav": guest}
