"""Which H.264 encoder writes a part, and the decode flags that go with it.

On an L4 VM the x264 encode (and the software decode) on 8 vCPUs can cap the chain below what
the models run at; the GPU's NVENC/NVDEC engines do both for free. They are used only where
they work: ffmpeg must list `h264_nvenc` AND a one-frame test encode must succeed (Debian's
and Ubuntu's ffmpeg list NVENC on every machine; without a GPU and its driver's video
libraries the encode fails). Everywhere else, x264.

Parts are concatenated by stream copy, so every part of one item must come from the same
encoder with the same settings: the choice is made once per item (`batch_jobs.encoder_choice`
records it beside the parts), never per part. Decoding is free to differ per part: H.264
decoding is bit-exact, so NVDEC and the software decoder give the same frames.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import subprocess
from pathlib import Path

from processors.media import ffmpeg

X264 = "libx264"
NVENC = "h264_nvenc"
ENCODERS = (X264, NVENC)

# x264 preset → NVENC preset (p1 fastest … p7 best). Anchored on FFmpeg's own aliases for the
# old NVENC preset names (fast → p1, medium → p4, slow → p7) and monotonic between them.
NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p2",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p3",
    "medium": "p4",
    "slow": "p6",
    "slower": "p7",
}
# The probe's frame: NVENC refuses frames below about 145×49, so not the smallest possible.
PROBE_SIZE = "256x144"
PROBE_TIMEOUT = 30.0


def x264_args(crf: int, preset: str, threads: int | None = None) -> list[str]:
    args = ["-c:v", X264, "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
    if threads:
        args += ["-x264-params", f"threads={threads}"]
    return args


def nvenc_args(crf: int, preset: str) -> list[str]:
    """Constant quality as close to x264's crf as NVENC has: VBR with a cq target and no
    bitrate cap (`-b:v 0`, or the default 2 Mb/s target would bind). cq 0 means "let the
    encoder choose" to NVENC, so crf 0 (lossless in x264) maps to the best fixed quality, 1."""
    return [
        "-c:v", NVENC, "-preset", NVENC_PRESETS[preset], "-tune", "hq",
        "-rc", "vbr", "-cq", str(max(1, crf)), "-b:v", "0",
        "-profile:v", "high", "-pix_fmt", "yuv420p",
    ]  # fmt: skip


def encoder_args(encoder: str, crf: int, preset: str, threads: int | None = None) -> list[str]:
    if encoder == NVENC:
        return nvenc_args(crf, preset)
    if encoder == X264:
        return x264_args(crf, preset, threads)
    raise ValueError(f"unknown encoder {encoder!r}; one of {', '.join(ENCODERS)}")


def lists_nvenc(encoders: str) -> bool:
    """Whether an `ffmpeg -encoders` listing has h264_nvenc (a build with NVENC compiled in)."""
    return any(line.split()[1:2] == [NVENC] for line in encoders.splitlines())


def lists_cuda_decode(hwaccels: str) -> bool:
    """Whether an `ffmpeg -hwaccels` listing has the cuda hwaccel (NVDEC)."""
    return "cuda" in hwaccels.split()


def _listed(binary: str, flag: str) -> str:
    proc = subprocess.run(
        [binary, "-hide_banner", flag], capture_output=True, text=True, timeout=PROBE_TIMEOUT
    )
    return proc.stdout if proc.returncode == 0 else ""


def _no_nvenc_marker(binary: str) -> Path:
    """A file that records "this ffmpeg, since this boot, cannot encode with NVENC", so the
    many short-lived task processes of a machine without a GPU probe once, not each. Only the
    negative is kept: a stale "no" costs speed (x264 works everywhere), a stale "yes" would
    fail encodes. A new ffmpeg or a reboot (as a driver install needs) probes again."""
    stat = os.stat(binary)
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    key = hashlib.sha256(f"{binary}|{stat.st_size}|{stat.st_mtime_ns}|{boot}".encode()).hexdigest()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dropbatch" / "ffmpeg" / f"no-nvenc-{key[:16]}"


@functools.cache
def _nvenc_works(binary: str) -> bool:
    marker = _no_nvenc_marker(binary)
    if marker.exists():
        return False
    works = _probe_nvenc(binary)
    if not works:
        with contextlib.suppress(OSError):  # a read-only home only costs the next probe
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    return works


def _probe_nvenc(binary: str) -> bool:
    if not lists_nvenc(_listed(binary, "-encoders")):
        return False
    test_encode = [
        binary, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", f"color=c=gray:s={PROBE_SIZE}:r=30",
        "-frames:v", "1", *nvenc_args(20, "medium"), "-f", "null", "-",
    ]  # fmt: skip
    try:
        proc = subprocess.run(test_encode, capture_output=True, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def nvenc_available() -> bool:
    """ffmpeg lists h264_nvenc and can encode a frame with it (cached per ffmpeg binary)."""
    return _nvenc_works(ffmpeg.binary("ffmpeg"))


def best_encoder() -> str:
    """NVENC where it works on this machine, x264 otherwise."""
    return NVENC if nvenc_available() else X264


def decode_args() -> list[str]:
    """`-hwaccel cuda` where NVENC works (a GPU with its video engines is present) and ffmpeg
    has the cuda hwaccel; frames come back to system memory, so the filters that follow are
    unchanged. A stream NVDEC cannot decode falls back to software inside ffmpeg."""
    binary = ffmpeg.binary("ffmpeg")
    if _nvenc_works(binary) and lists_cuda_decode(_listed(binary, "-hwaccels")):
        return ["-hwaccel", "cuda"]
    return []
