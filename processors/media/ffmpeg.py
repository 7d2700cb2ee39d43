"""ffmpeg command lines composed from small named pieces, and running them with clear errors."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from fractions import Fraction


class MediaError(Exception):
    """ffmpeg/ffprobe failed on an input; the message is meant for the user."""


class ProbeTimeout(MediaError):
    """ffprobe ran past its time limit on an input and was stopped: the input's own limit
    (a huge file, a slow read, an index at the end of a long file), or, with `deadline`, the
    caller's overall deadline (the input was not at fault, time ran out)."""

    def __init__(self, seconds: float, *, deadline: bool) -> None:
        self.seconds = seconds
        self.deadline = deadline
        super().__init__(
            f"ffprobe did not finish reading it within {seconds:.0f} s (a very large file, a "
            "slow read, or an MP4 whose index is at its end: re-encode with -movflags "
            "+faststart)"
        )


def ffprobe(
    args: Sequence[str], timeout: float, until: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ffprobe for at most `timeout` s, and never past `until` (a time.monotonic()
    instant: the caller's overall deadline); ProbeTimeout when either runs out."""
    left = timeout if until is None else min(timeout, until - time.monotonic())
    if left <= 0:
        raise ProbeTimeout(0.0, deadline=True)
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        raise ProbeTimeout(left, deadline=left < timeout) from None


def binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if name == "ffmpeg":
        try:  # a static ffmpeg ships in the imageio-ffmpeg wheel; use it when apt's is absent
            import imageio_ffmpeg

            return imageio_ffmpeg.get_ffmpeg_exe()
        except ImportError:
            pass
    raise MediaError(f"{name} is not installed (apt-get install ffmpeg)")


def base(*, threads: int | None = None) -> list[str]:
    args = [binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if threads:
        args += ["-threads", str(threads)]
    return args


def seek_input(path: str, seconds: float) -> list[str]:
    """Input seeking keeps absolute timestamps (-copyts) so frames map onto one global grid."""
    args = ["-copyts"]
    if seconds > 0:
        args += ["-ss", f"{seconds:.6f}"]
    return [*args, "-i", path]


def raw_video_input(width: int, height: int, rate: Fraction, pix_fmt: str = "rgb24") -> list[str]:
    return [
        "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}",
        "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
    ]  # fmt: skip


def raw_video_output(pix_fmt: str = "rgb24") -> list[str]:
    return ["-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]


def track_timescale(rate: Fraction) -> list[str]:
    # A timescale that is a multiple of the rate's numerator gives every frame an integer
    # duration, so parts concatenate without timestamp drift. The movie header gets the same
    # timescale: the concat demuxer offsets each part by the file's duration, which the
    # default 1/1000 s movie timescale rounds (up to 0.5 ms drift per seam).
    scale = rate.numerator * max(1, -(-10000 // rate.numerator))
    return ["-video_track_timescale", str(scale), "-movie_timescale", str(scale)]


def run(args: Sequence[str], what: str, timeout: float | None = None) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()
        raise MediaError(f"{what} failed: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc.stdout
