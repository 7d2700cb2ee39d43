"""The speech a lipsync step follows: where it comes from, how long the output becomes, and its
16 kHz mono samples lined up so that sample 0 sits at output frame 0.

The length policy (manifest `lipsync.length_policy`) decides the output's frame count when
the audio and the video differ; the planner needs that count before any task runs, so it is
computed here from headers only.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction

import numpy as np

from processors.lipsync.features import SAMPLE_RATE
from processors.media import ffmpeg
from processors.media.ffmpeg import MediaError


def output_frames(policy: str, video_frames: int, audio_seconds: float, rate: Fraction) -> int:
    """Frames of the output: `trim` ends with the shorter, `pad` keeps the video's length
    (silence after a short audio), `extend` holds the last frame while longer audio plays."""
    audio_frames = max(1, round(Fraction(audio_seconds).limit_denominator(10**6) * rate))
    if policy == "trim":
        return min(video_frames, audio_frames)
    if policy == "pad":
        return video_frames
    if policy == "extend":
        return max(video_frames, audio_frames)
    raise ValueError(f"unknown length policy {policy!r}")


def decode_speech(source: str, *, skip: float, samples: int) -> np.ndarray:
    """16 kHz mono float32 samples of `source`'s first audio stream, starting `skip` seconds
    in (negative: silence first), cut or zero-padded to exactly `samples`.

    The whole stretch is decoded from the stream's start by one fixed command, so every task
    of a job gets the same samples whatever chunk it works on.
    """
    seconds = max(0.0, skip) + samples / SAMPLE_RATE + 1.0
    args = [
        *ffmpeg.base(), "-i", source, "-map", "0:a:0", "-t", f"{seconds:.6f}",
        "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, timeout=600)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MediaError(f"audio decode failed: {detail[-1] if detail else proc.returncode}")
    decoded = np.frombuffer(proc.stdout, "<f4")
    shift = round(skip * SAMPLE_RATE)
    out = np.zeros(samples, np.float32)
    if shift >= 0:
        piece = decoded[shift : shift + samples]
        out[: len(piece)] = piece
    else:
        piece = decoded[: max(0, samples + shift)]
        out[-shift : -shift + len(piece)] = piece
    return out
