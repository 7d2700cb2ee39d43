"""Lipsync audio features: Wav2Lip's mel spectrogram, checked against librosa on real speech,
and the video frame → mel window mapping at the common frame rates."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal

from processors.lipsync.audio import decode_speech, output_frames
from processors.lipsync.features import (
    BLOCK,
    MEL_STEP,
    MelFeatures,
    fitted_samples,
    mel_count,
    window_start,
)
from tests.lipsync_fixtures import read_wav, speech_wav

RATES = [Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30)]


def reference_mel(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's training features written with librosa/scipy, as its audio.py does (librosa
    0.7 padded the centred STFT by reflection; newer librosa needs that said explicitly)."""
    emphasised = scipy.signal.lfilter([1, -0.97], [1], wav)
    spectrum = librosa.stft(
        y=emphasised, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect"
    )
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    mel = np.dot(basis, np.abs(spectrum))
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip((2 * 4) * ((db + 100) / 100) - 4, -4, 4)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_wav(tmp_path_factory.mktemp("speech") / "speech.wav", silence=0.5)


@pytest.fixture(scope="module")
def speech_16k(speech: Path) -> np.ndarray:
    seconds = len(read_wav(speech)[0]) / read_wav(speech)[1]
    return decode_speech(str(speech), skip=0.0, samples=round(seconds * 16000))


def test_mel_matches_librosa_on_real_speech(speech_16k: np.ndarray) -> None:
    expected = reference_mel(speech_16k.astype(np.float64))
    ours = MelFeatures(speech_16k, Fraction(25))
    assert ours.total == expected.shape[1]
    got = ours.frames(0, ours.total)
    assert got.shape == (80, expected.shape[1])
    assert np.abs(got - expected).max() < 1e-4
    # Real speech, not a degenerate signal: the features span most of the ±4 range.
    assert got.max() > 1.0 and got.min() <= -3.9


def test_decoded_speech_is_the_file_at_16k(speech: Path, speech_16k: np.ndarray) -> None:
    original, rate = read_wav(speech)
    resampled = librosa.resample(original, orig_sr=rate, target_sr=16000)
    n = min(len(resampled), len(speech_16k))
    # Different resamplers (ffmpeg's vs soxr) agree closely, not bit for bit.
    assert np.corrcoef(resampled[:n], speech_16k[:n])[0, 1] > 0.999
    assert abs(len(speech_16k) - len(resampled)) <= 1


def test_any_slice_of_the_features_equals_the_whole(speech_16k: np.ndarray) -> None:
    """What makes chunk seams invisible: a task asking for frames far into the track gets the
    very numbers a task computing everything from the start gets."""
    track = np.tile(speech_16k, 3)  # long enough to cross a block boundary
    whole = MelFeatures(track, Fraction(25)).frames(0, mel_count(len(track)))
    assert whole.shape[1] > BLOCK + 2 * MEL_STEP
    for start in (0, 1, 37, BLOCK - 3, BLOCK + 5, whole.shape[1] - MEL_STEP):
        fresh = MelFeatures(track, Fraction(25))
        stop = min(start + MEL_STEP, whole.shape[1])
        assert np.array_equal(fresh.frames(start, stop), whole[:, start:stop]), start


def test_features_of_a_long_track_cross_blocks_exactly(speech_16k: np.ndarray) -> None:
    long = np.tile(speech_16k, 4)  # > BLOCK mel frames
    assert mel_count(len(long)) > 2 * BLOCK
    expected = reference_mel(long.astype(np.float64))
    got = MelFeatures(long, Fraction(30)).frames(0, mel_count(len(long)))
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("rate", RATES, ids=str)
def test_window_starts_at_int_i_times_80_over_fps(rate: Fraction) -> None:
    total = 20_000  # far beyond the frames tested: no clamping here
    for i in range(0, 3000):
        exact = math.floor(Fraction(80 * i) / rate)
        assert window_start(i, rate, total) == exact
        # Wav2Lip's own float expression agrees wherever it is not at an integer boundary.
        ref = 80.0 * (i / float(rate))
        if abs(ref - round(ref)) > 1e-6:
            assert int(ref) == exact
        # The window begins at the mel frame holding the frame's timestamp.
        assert Fraction(exact, 80) <= i / rate < Fraction(exact + 1, 80)


@pytest.mark.parametrize(
    ("rate", "frame", "start"),
    [
        (Fraction(25), 5, 16),  # 5/25 s = 0.2 s = 16 mel frames exactly
        (Fraction(30), 3, 8),  # 0.1 s = 8 mel frames
        (Fraction(24), 3, 10),  # 0.125 s = 10 mel frames
        (Fraction(30000, 1001), 30, 80),  # 1.001 s = 80.08 mel frames
        (Fraction(30000, 1001), 1, 2),  # 33.4 ms = 2.67 mel frames
    ],
)
def test_window_start_by_hand(rate: Fraction, frame: int, start: int) -> None:
    assert window_start(frame, rate, 10_000) == start


@pytest.mark.parametrize("rate", RATES, ids=str)
def test_windows_clamp_at_the_end_of_the_track(rate: Fraction) -> None:
    frames = 250
    total = mel_count(fitted_samples(frames, rate))
    starts = [window_start(i, rate, total) for i in range(frames)]
    assert max(starts) + MEL_STEP == total
    assert starts == sorted(starts)
    assert all(s + MEL_STEP <= total for s in starts)
    # The whole output is covered: the last window ends with the audio.
    assert abs(total / 80 - frames / rate) < 2 / 80


@pytest.mark.parametrize(
    ("policy", "video", "audio_seconds", "expected"),
    [
        ("trim", 250, 8.0, 200),
        ("trim", 250, 12.0, 250),
        ("pad", 250, 8.0, 250),
        ("pad", 250, 12.0, 250),
        ("extend", 250, 12.0, 300),
        ("extend", 250, 8.0, 250),
    ],
)
def test_length_policy_decides_the_output_frames(
    policy: str, video: int, audio_seconds: float, expected: int
) -> None:
    assert output_frames(policy, video, audio_seconds, Fraction(25)) == expected


def test_speech_is_shifted_to_frame_zero(speech: Path, speech_16k: np.ndarray) -> None:
    later = decode_speech(str(speech), skip=0.25, samples=16000)
    assert np.array_equal(later, speech_16k[4000:20000])
    earlier = decode_speech(str(speech), skip=-0.25, samples=16000)
    assert not earlier[:4000].any()
    assert np.array_equal(earlier[4000:], speech_16k[:12000])
    padded = decode_speech(str(speech), skip=0.0, samples=len(speech_16k) + 800)
    assert not padded[len(speech_16k) :].any()
