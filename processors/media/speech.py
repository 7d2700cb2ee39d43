"""The speech a step follows (lipsync), as the planner sees it: its length and where it starts,
from headers only, and where output frame 0 sits in a video's own audio track. Media, not a
step: the planner reads these for whichever step follows speech."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction

from processors.media import ffmpeg
from processors.media.ffmpeg import MediaError
from processors.media.frames import grid_origin


@dataclass(frozen=True)
class AudioInfo:
    duration: float  # seconds in the first audio stream
    start_time: float  # its first timestamp on the file's timeline


def probe_audio(source: str, timeout: float = 120.0, until: float | None = None) -> AudioInfo:
    args = [
        ffmpeg.binary("ffprobe"), "-v", "error", "-print_format", "json",
        "-show_format", "-show_streams", "-select_streams", "a:0", source,
    ]  # fmt: skip
    proc = ffmpeg.ffprobe(args, timeout, until)
    if proc.returncode != 0:
        last = (proc.stderr or "").strip().splitlines()
        raise MediaError(f"not a readable audio file ({last[-1] if last else 'ffprobe failed'})")
    doc = json.loads(proc.stdout or "{}")
    streams = doc.get("streams") or []
    if not streams:
        raise MediaError("no audio stream")
    fmt = doc.get("format") or {}
    start = float(streams[0].get("start_time") or fmt.get("start_time") or 0.0)
    duration = float(streams[0].get("duration") or fmt.get("duration") or 0.0)
    if duration <= 0:
        raise MediaError("the audio has no duration (truncated or still being written?)")
    return AudioInfo(duration=duration, start_time=start)


def own_audio_skip(video_start: float, audio_start: float, rate: Fraction) -> float:
    """Seconds into the video's own audio stream where output frame 0 sits."""
    return float(Fraction(grid_origin(video_start, rate)) / rate) - audio_start
