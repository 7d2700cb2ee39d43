"""Stitch: concatenate H.264 parts by stream copy, mux the audio once, and draw a preview."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from processors.media import ffmpeg
from processors.media.frames import grid_origin


def concat_and_mux(
    parts: list[Path],
    output: Path,
    *,
    audio_source: str | None,
    audio_offset: float,
    duration: float,
    audio_bitrate: str = "192k",
    pad_audio: bool = False,
) -> None:
    """parts (same encoder settings) → one MP4; audio from `audio_source` re-timed to frame 0.

    `audio_offset` is where frame 0 of the output sits on the audio source's timeline
    (seconds), so the audio is cut to start there and to last no longer than the video:
    the video's frame count never changes in the mux. `pad_audio` fills a shorter audio with
    silence up to the video's end (lipsync's `pad` and `extend` policies).
    """
    listing = output.with_suffix(".concat.txt")
    listing.write_text("".join(f"file '{p.resolve()}'\n" for p in parts))
    args = [*ffmpeg.base(), "-f", "concat", "-safe", "0", "-i", str(listing)]
    if audio_source is not None:
        if audio_offset > 0:
            args += ["-ss", f"{audio_offset:.6f}"]
        elif audio_offset < 0:
            args += ["-itsoffset", f"{-audio_offset:.6f}"]
        args += ["-t", f"{duration + max(0.0, -audio_offset):.6f}", "-i", audio_source]
        args += ["-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", audio_bitrate]
        if pad_audio:
            args += ["-af", f"apad=whole_dur={duration:.6f}"]
    else:
        args += ["-map", "0:v:0"]
    args += ["-c:v", "copy", "-movflags", "+faststart", "-f", "mp4", str(output)]
    try:
        ffmpeg.run(args, "stitch")
    finally:
        listing.unlink(missing_ok=True)


def audio_offset_for(start_time: float, format_start: float, rate: Fraction) -> float:
    """Where output frame 0 sits on the input file's own (zero-based) timeline."""
    return float(Fraction(grid_origin(start_time, rate)) / rate) - format_start


MIX_RATE = 48000  # every track is resampled to this and to stereo before they are summed
# Where the mix's peaks are held: −1 dBFS, headroom for the AAC encode's own overshoot.
MIX_LIMIT = 0.891


def mix_tracks(sources: list[str], output: Path) -> Path:
    """Several speakers' tracks, each starting at output frame 0, summed into one WAV.

    Summed at their own levels (`normalize=0`): amix's default divides every input by the
    number of inputs, so a speaker would sound quieter the more speakers there are. Where
    loud speakers overlap the sum would pass full scale and clip once it becomes the output's
    audio; a look-ahead limiter holds it under MIX_LIMIT there (no make-up gain, its delay
    compensated so speech stays on its frames) and leaves quieter stretches as they are. The
    mix lasts as long as the longest track, in float samples.
    """
    args = [*ffmpeg.base()]
    for source in sources:
        args += ["-i", source]
    same = "".join(
        f"[{k}:a:0]aresample={MIX_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo[a{k}];"
        for k in range(len(sources))
    )
    inputs = "".join(f"[a{k}]" for k in range(len(sources)))
    graph = (
        f"{same}{inputs}amix=inputs={len(sources)}:duration=longest:normalize=0,"
        f"alimiter=limit={MIX_LIMIT}:level=0:latency=1[mix]"
    )
    args += ["-filter_complex", graph, "-map", "[mix]", "-c:a", "pcm_f32le", str(output)]
    ffmpeg.run(args, "audio mix")
    return output
