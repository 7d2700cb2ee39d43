"""Wav2Lip's audio features, computed exactly as the model was trained, in numpy only.

The training code (Wav2Lip's `audio.py`, librosa 0.7) does: pre-emphasis 0.97, a centred STFT
(n_fft 800, hop 200, periodic Hann 800, reflect padding), magnitude, 80 Slaney mel bands
55–7600 Hz, 20·log10 with a −100 dB floor minus a 20 dB reference, then a symmetric clip to
±4. One mel frame is 12.5 ms (80 per second); video frame i reads 16 of them starting at
int(i·80/fps).

Features are computed over the *fitted* track (the audio the output will carry, cut or padded
to the output's length), in fixed blocks aligned to multiples of `BLOCK` mel frames. Every task
of a job therefore computes any given block from the same samples with the same array shapes,
so chunk seams are invisible: chunked output equals single-task output bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from functools import cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS = 4.0
MEL_STEP = 16  # mel frames per video frame's window
MEL_PER_SECOND = SAMPLE_RATE // HOP  # 80
BLOCK = 1024  # mel frames computed together (12.8 s)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
    hz = np.asarray(hz, np.float64)
    mel = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    hz = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, hz)


@cache
def mel_basis() -> np.ndarray:
    """[80, 401] triangular filters with Slaney area normalisation."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


@cache
def _window() -> np.ndarray:
    n = np.arange(WIN)
    return 0.5 - 0.5 * np.cos(2 * np.pi * n / WIN)  # periodic Hann, as scipy's get_window


def mel_count(samples: int) -> int:
    """Frames of a centred STFT over `samples` samples."""
    return 1 + samples // HOP


def normalise(magnitude_mel: np.ndarray) -> np.ndarray:
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, magnitude_mel)) - REF_LEVEL_DB
    scaled = (2 * MAX_ABS) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS
    return np.clip(scaled, -MAX_ABS, MAX_ABS)


def _reflect(index: np.ndarray, length: int) -> np.ndarray:
    """numpy's 'reflect' padding as an index map (edge sample not repeated)."""
    period = 2 * (length - 1)
    folded = np.mod(index, period) if length > 1 else np.zeros_like(index)
    return np.where(folded >= length, period - folded, folded)


def mel_frames(signal: np.ndarray, first: int, last: int) -> np.ndarray:
    """Normalised mel frames [first, last) of the whole `signal` → [80, last-first] float32.

    Frame m is centred on sample m·HOP; beyond the signal's ends the pre-emphasised signal is
    reflected, as librosa's centred STFT does.
    """
    length = len(signal)
    positions = np.arange(first, last)[:, None] * HOP - N_FFT // 2 + np.arange(N_FFT)[None, :]
    index = _reflect(positions, length)
    lo, hi = int(index.min()), int(index.max()) + 1
    # Pre-emphasis y[n] = x[n] − 0.97·x[n−1] (y[0] = x[0]) over just the samples touched.
    x = np.asarray(signal[max(0, lo - 1) : hi], np.float64)
    emphasised = (
        x[1:] - PREEMPHASIS * x[:-1]
        if lo > 0
        else np.concatenate((x[:1], x[1:] - PREEMPHASIS * x[:-1]))
    )
    index -= lo
    frames = emphasised[index] * _window()[None, :]
    magnitude = np.abs(np.fft.rfft(frames, n=N_FFT, axis=1))
    return normalise(mel_basis() @ magnitude.T).astype(np.float32)


def window_start(frame: int, rate: Fraction, total_mels: int) -> int:
    """First mel frame of video frame `frame`'s window: int(frame·80/fps), clamped at the end."""
    start = (frame * MEL_PER_SECOND * rate.denominator) // rate.numerator
    return max(0, min(start, total_mels - MEL_STEP))


def fitted_samples(frames: int, rate: Fraction) -> int:
    """Samples at 16 kHz covering `frames` video frames (the output's whole duration)."""
    exact = Fraction(frames * SAMPLE_RATE) / rate
    return max(round(exact), (MEL_STEP - 1) * HOP)  # at least one full window


class MelFeatures:
    """Windows [1, 80, 16] for any output frame, computed block by block on demand."""

    def __init__(self, signal: np.ndarray, rate: Fraction) -> None:
        self.signal = signal
        self.rate = rate
        self.total = mel_count(len(signal))
        self._blocks: dict[int, np.ndarray] = {}

    def _block(self, b: int) -> np.ndarray:
        if b not in self._blocks:
            if len(self._blocks) > 4:  # frames arrive in order: old blocks are done
                self._blocks.pop(min(self._blocks))
            first = b * BLOCK
            self._blocks[b] = mel_frames(self.signal, first, min(first + BLOCK, self.total))
        return self._blocks[b]

    def frames(self, first: int, last: int) -> np.ndarray:
        parts = []
        m = first
        while m < last:
            b = m // BLOCK
            block = self._block(b)
            upto = min(last, (b + 1) * BLOCK)
            parts.append(block[:, m - b * BLOCK : upto - b * BLOCK])
            m = upto
        return np.concatenate(parts, axis=1)

    def window(self, frame: int) -> np.ndarray:
        start = window_start(frame, self.rate, self.total)
        return self.frames(start, start + MEL_STEP)[None]


def speaker_features(signals: Sequence[np.ndarray], rate: Fraction) -> list[MelFeatures]:
    """One feature track per speaker, each over that speaker's own fitted track.

    Every track is fitted to the same output length and read with the same window timing, so
    at any frame each speaker's face hears what that speaker says at that instant, and a
    chunk computes each speaker's blocks exactly as a one-task run does.
    """
    return [MelFeatures(signal, rate) for signal in signals]
