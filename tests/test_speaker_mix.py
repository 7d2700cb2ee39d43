"""The speakers' mix (processors/media/assemble.py: mix_tracks, what the stitch gives the output
when lipsync follows several speakers) never clips: two loud real speech tracks that overlap in
the middle are held under full scale there, and where one speaks alone the mix is that speaker.

Tracks: real speech (espeak-ng, tests/lipsync_fixtures.py), compressed loud, peaks at 0.9;
the host speaks in the first part, the guest in the last, both in the middle third.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from processors.media.assemble import MIX_LIMIT, MIX_RATE, mix_tracks
from tests.lipsync_fixtures import read_wav, speech_wav
from tests.media_fixtures import write_wav

PEAK = 0.9


def decode(path: Path) -> np.ndarray:
    """The mix as float samples, first channel (both are the same: mono sources)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "2", "-ar",
         str(MIX_RATE), "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.float32).reshape(-1, 2)[:, 0]


def track(path: Path, speech: np.ndarray, rate: int, start: int, total: int) -> Path:
    out = np.zeros(total)
    out[start : start + len(speech)] = speech
    write_wav(path, out, rate)
    return path


def test_two_loud_overlapping_speakers_are_limited_not_clipped(tmp_path: Path) -> None:
    speech, rate = read_wav(speech_wav(tmp_path / "said.wav", silence=0.0))
    # Loud as mastered speech is: compressed towards its peak of 0.9.
    speech = np.tanh(4 * speech / np.abs(speech).max()) / np.tanh(4) * PEAK
    third = len(speech) // 2  # the guest starts halfway through the host's speech
    total = third + len(speech)
    host = track(tmp_path / "host.wav", speech, rate, 0, total)
    guest = track(tmp_path / "guest.wav", speech[::-1].copy(), rate, third, total)
    mixed = decode(mix_tracks([str(host), str(guest)], tmp_path / "mix.wav"))
    # Overlapping, the plain sum reaches well past full scale ...
    h, g = read_wav(host)[0], read_wav(guest)[0]
    assert np.abs(h + g).max() > 1.2
    # ... the mix stays under the limit (a hair of overshoot at the limiter's attack).
    assert np.abs(mixed).max() <= MIX_LIMIT + 0.01, np.abs(mixed).max()
    scale = MIX_RATE / rate
    # What's said where: alone, each speaker is in the mix as the mix of their track alone
    # gives them (not turned down by the limiter), on the same samples (its delay compensated).
    for alone, (lo, hi) in ((host, (0, third)), (guest, (len(speech), total))):
        solo = decode(mix_tracks([str(alone)], tmp_path / f"solo-{alone.name}"))
        a, b = round(lo * scale) + 2400, round(hi * scale) - 2400  # clear of the release
        got, expected = mixed[a:b], solo[a:b]
        assert np.corrcoef(got, expected)[0, 1] > 0.99
        loud = np.abs(expected) > 0.1
        ratio = np.median(np.abs(got[loud]) / np.abs(expected[loud]))
        assert 0.95 < ratio < 1.05, ratio
