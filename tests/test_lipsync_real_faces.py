"""Lipsync on real faces: the real Pexels clip, the real SCRFD-500m detector (batch-dim outputs)
found in the model store as an analyser pack, and a test model of Wav2Lip's signature.

The blend mask follows the real landmarks and reaches the chin; only the lower face changes;
chunked output still equals a one-task run."""

from __future__ import annotations

import logging
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from core.domain import VideoInfo
from processors.base import ProcessorContext
from processors.chain import concat_batches
from processors.faces import FaceAnalyser
from processors.lipsync.blend import BOX_LANDMARKS, lower_face_mask
from processors.lipsync.faces import face_shape, placed
from processors.lipsync.options import LipsyncOptions
from processors.lipsync.processor import LipsyncProcessor
from processors.media.frames import FrameBatch
from tests.lipsync_fixtures import add_light_pack, make_model_store, speech_wav

FPS = Fraction(24000, 1001)
FRAMES = 36  # 1.5 s
PACK = "scrfd_500m_mbf"  # the catalog's light pack, both files pinned
PADS = (0, 10, 0, 0)  # lipsync's defaults


def decode(path: Path, vf: str, count: int) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(path), "-vf", vf, "-fps_mode", "passthrough",
         "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, 360, 640, 3).copy()


@pytest.fixture(scope="module")
def detector(real_asset) -> FaceAnalyser:
    model = real_asset("scrfd_500m_bnkps.onnx")
    return FaceAnalyser(model, None, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, real_asset) -> Path:
    """Test Wav2Lip plus the real light pack's files (the catalog knows them)."""
    folder = tmp_path_factory.mktemp("models")
    make_model_store(folder)
    return add_light_pack(folder, real_asset)


@pytest.fixture(scope="module")
def clip(real_asset) -> np.ndarray:
    return decode(real_asset("pexels.mp4"), "null", FRAMES)


def test_mask_covers_the_chin_on_real_landmarks(real_asset, detector: FaceAnalyser) -> None:
    # Twelve frames spread over the whole clip: talking, smiling, turning.
    frames = decode(real_asset("pexels.mp4"), "select=not(mod(n\\,40))", 12)
    assert len(frames) == 12
    for k, frame in enumerate(frames):
        [face, *_] = detector.detect(frame)
        crop, layout = placed(face_shape(face.box, face.kps, BOX_LANDMARKS), PADS, 640, 360)
        x0, y0, x1, y1 = crop
        mask = lower_face_mask(y1 - y0, x1 - x0, layout, open_bottom=y1 >= 360)[:, :, 0]
        left, right = layout.kps[3], layout.kps[4]  # mouth corners, crop pixels
        bottom = layout.chin  # the detected box's bottom: the chin
        # Every point between the mouth corners and the chin is blended in.
        for t in np.linspace(0.0, 1.0, 9):
            for s in np.linspace(0.15, 0.85, 5):
                x, y = left + s * (right - left)
                y = y + t * (bottom - y)
                assert mask[min(round(y), mask.shape[0] - 1), round(x)] > 0.5, (k, s, t)
        # ... and nothing at or above the eyes.
        eyes_y = round(layout.kps[:2, 1].max())
        assert not mask[: eyes_y + 1].any(), k


def context(clip: np.ndarray, store: Path, speech: Path) -> ProcessorContext:
    count = len(clip)
    info = VideoInfo(
        duration=float(count / FPS), fps_num=24000, fps_den=1001, frame_count=count,
        width=640, height=360,
    )  # fmt: skip
    return ProcessorContext(
        info=info, rate=FPS, width=640, height=360, model_store=str(store),
        audio_path=str(speech), frames=count,
    )  # fmt: skip


def run(processor: LipsyncProcessor, frames: np.ndarray, first: int) -> FrameBatch:
    out = []
    for i in range(0, len(frames), 8):
        chunk = frames[i : i + 8]
        out.append(processor.push(FrameBatch(chunk, np.arange(first + i, first + i + len(chunk)))))
    out.append(processor.flush())
    return concat_batches([b for b in out if len(b)])


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_wav(tmp_path_factory.mktemp("speech") / "speech.wav", silence=0.0)


def test_lipsync_with_the_real_detector_changes_only_the_lower_face(
    clip: np.ndarray, store: Path, speech: Path, detector: FaceAnalyser, caplog, monkeypatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "cache"))
    options = LipsyncOptions(batch_size=8, smoothing_frames=2)
    with caplog.at_level(logging.INFO, logger="dropbatch.lipsync"):
        single = run(LipsyncProcessor(options, context(clip, store, speech)), clip, 0)
    assert f"SCRFD of the {PACK} pack" in caplog.text
    assert single.indices.tolist() == list(range(FRAMES))
    chin_changed = []
    for i in range(FRAMES):
        [face, *_] = detector.detect(clip[i])
        diff = np.abs(single.frames[i].astype(int) - clip[i].astype(int)).max(axis=2)
        ys, xs = np.nonzero(diff)
        assert len(ys) > 500, f"frame {i}: the face was not synced"
        x0, y0, x1, y1 = face.box
        # Only the lower face: nothing above the nose, nothing beside the face.
        assert ys.min() >= face.kps[2, 1] - 0.1 * (y1 - y0), i
        assert xs.min() >= x0 - 0.05 * (x1 - x0) and xs.max() <= x1 + 0.05 * (x1 - x0), i
        # The chin (between the mouth's bottom and the box's) is blended too.
        mouth_y = face.kps[3:, 1].mean()
        chin = diff[round(mouth_y + 0.6 * (y1 - mouth_y)) : round(y1),
                    round(face.kps[3, 0]) : round(face.kps[4, 0])]  # fmt: skip
        chin_changed.append(float((chin > 0).mean()))
    assert np.median(chin_changed) > 0.9, chin_changed

    # Chunk-exact with the real detector: two tasks, each with its context, give the same frames.
    reach = LipsyncProcessor(options, context(clip, store, speech)).reach
    cut = FRAMES // 2
    first = run(LipsyncProcessor(options, context(clip, store, speech)), clip[: cut + reach], 0)
    second = run(
        LipsyncProcessor(options, context(clip, store, speech)), clip[cut - reach :], cut - reach
    )
    joined = np.concatenate(
        [first.frames[first.indices < cut], second.frames[second.indices >= cut]]
    )
    assert np.array_equal(joined, single.frames)
