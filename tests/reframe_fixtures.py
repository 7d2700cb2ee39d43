"""Test material for crop's reframing: two real people side by side taking turns.

The left half is the Pexels host (pexels.mp4 from 9 s), the right half the single_face.mp4
guest, each scaled to 426×240 at 24 fps. Each takes two turns of TURN seconds; on their
turns their half is the real clip (a real person talking: their mouth moves), on the other's
turns it is held on one frame (a paused video: nothing moves). Each turn has its own espeak-ng
sentence, in its own voice, placed from SPEECH_START into the turn: the audio says when
someone speaks, the moving mouth says who.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from tests.media_fixtures import encode_frames, write_wav

FPS = 24
HALF = (426, 240)
TURN = 2.4  # seconds: single_face.mp4's whole length
TURN_FRAMES = round(TURN * FPS)
SPEECH_START = 0.15  # seconds into a turn where its sentence starts
SAMPLE_RATE = 16000
TURNS = [  # who speaks (0 left, 1 right), their sentence, their voice
    (0, "Welcome back to the show.", "en-us"),
    (1, "Thanks, it is good to be here.", "en-gb+m3"),
    (0, "So tell me about your work.", "en-us"),
    (1, "We build tools for video.", "en-gb+m3"),
]


def _frames(clip: Path, start: float, count: int) -> np.ndarray:
    width, height = HALF
    proc = subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", f"{start}", "-i", str(clip), "-vf",
         f"fps={FPS},scale={width}:{height}", "-frames:v", str(count),
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    frames = np.frombuffer(proc.stdout, np.uint8).reshape(-1, height, width, 3)
    # A clip a frame short at its end: hold its last frame.
    pad = [frames[-1]] * (count - len(frames))
    return np.concatenate([frames, np.asarray(pad, np.uint8).reshape(-1, height, width, 3)])


def _speech(text: str, voice: str, folder: Path) -> np.ndarray:
    raw = folder / f"{abs(hash((text, voice)))}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    proc = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(raw), "-ac", "1", "-ar", str(SAMPLE_RATE),
         "-f", "f32le", "pipe:1"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    raw.unlink()
    return np.frombuffer(proc.stdout, "<f4")


def turns_clip(target: Path, real_asset: Callable[[str], Path]) -> tuple[Path, list[int | None]]:
    """The clip with its audio, and per frame who speaks (0 left, 1 right, None: nobody),
    from where each sentence's samples are above a tenth of its peak."""
    host = _frames(real_asset("pexels.mp4"), 9.0, 2 * TURN_FRAMES)
    guest = _frames(real_asset("single_face.mp4"), 0.0, TURN_FRAMES)
    total = len(TURNS) * TURN_FRAMES
    left_turn = right_turn = 0
    frames = []
    for speaker, _, _ in TURNS:
        for k in range(TURN_FRAMES):
            if speaker == 0:
                left = host[left_turn * TURN_FRAMES + k]
                right = guest[-1] if right_turn else guest[0]
            else:
                left = host[left_turn * TURN_FRAMES - 1]
                right = guest[k]
            frames.append(np.concatenate([left, right], axis=1))
        left_turn += speaker == 0
        right_turn += speaker == 1
    audio = np.zeros(round(total / FPS * SAMPLE_RATE) + SAMPLE_RATE, np.float32)
    speaking: list[int | None] = [None] * total
    per = SAMPLE_RATE / FPS
    for n, (speaker, text, voice) in enumerate(TURNS):
        words = _speech(text, voice, target.parent)
        at = round((n * TURN + SPEECH_START) * SAMPLE_RATE)
        words = words[: round((n + 1) * TURN * SAMPLE_RATE) - at]  # within its turn
        audio[at : at + len(words)] += 0.8 * words / max(1e-6, float(np.abs(words).max()))
        loud = np.flatnonzero(np.abs(words) > 0.1 * np.abs(words).max())
        for f in range(int((at + loud[0]) / per), min(total, int((at + loud[-1]) / per) + 1)):
            speaking[f] = speaker
    wav = target.with_suffix(".wav")
    write_wav(wav, audio, SAMPLE_RATE)
    encode_frames(
        target,
        frames,
        fps=Fraction(FPS),
        size=(2 * HALF[0], HALF[1]),
        audio=["-i", str(wav)],
        crf=16,
    )
    return target, speaking
