"""Exports that declare an open batch but work only with one face per call: enhance's restorer
and lipsync's Wav2Lip try a call of two at set-up and run one face per call when it fails,
logged once; the result is the same as the same model's one-face-per-call run.

Real footage and real detections: frames of the Pexels clip, the real SCRFD-500m pack; the
models are the test signatures (tests/enhance_models.py, tests/lipsync_fixtures.py) built with
`one_only`: a Reshape to a fixed [1, …] shape inside, the batch declared open.
(The swapper takes one face per call already: pixel_boost's sub-grids too.)
"""

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
from processors.enhance.processor import EnhanceProcessor
from processors.lipsync.options import LipsyncOptions
from processors.lipsync.processor import LipsyncProcessor
from processors.media.frames import FrameBatch
from tests.enhance_models import build_restorer
from tests.lipsync_fixtures import build_test_model, speech_wav
from tests.real_chain import build_real_store

WIDTH, HEIGHT, FRAMES = 640, 360, 6
FPS = Fraction(24000, 1001)
PACK = "scrfd_500m_mbf"


@pytest.fixture(scope="module")
def clip(real_asset) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", "4", "-i", str(real_asset("pexels.mp4")),
         "-frames:v", str(FRAMES), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3).copy()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, real_asset) -> tuple[Path, Path]:
    """(the real store with the usual test models, the same with one-face-only exports)."""
    usual = build_real_store(tmp_path_factory.mktemp("usual"), real_asset)
    single = build_real_store(tmp_path_factory.mktemp("single"), real_asset)
    build_restorer(single / "gfpgan_1.4.onnx", one_only=True)
    build_test_model(single / "wav2lip_gan_96.onnx", names=("source", "target"), one_only=True)
    return usual, single


@pytest.fixture(autouse=True)
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "model-cache"))


def context(store: Path, speech: Path | None = None) -> ProcessorContext:
    info = VideoInfo(
        duration=float(FRAMES / FPS), fps_num=24000, fps_den=1001, frame_count=FRAMES,
        width=WIDTH, height=HEIGHT,
    )  # fmt: skip
    return ProcessorContext(
        info=info, rate=FPS, width=WIDTH, height=HEIGHT, model_store=str(store),
        audio_path=speech, frames=FRAMES,
    )  # fmt: skip


def test_a_restorer_that_fails_a_call_of_two_restores_one_face_per_call(
    clip: np.ndarray, stores: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    usual, single = stores
    options = {"analyser": PACK, "det_size": 320, "batch_size": 8}
    batch = FrameBatch(clip, np.arange(FRAMES, dtype=np.int64))
    with caplog.at_level(logging.INFO, logger="dropbatch.enhance"):
        proc = EnhanceProcessor(options, context(single))
        out = proc.push(batch)  # six faces: one call of eight before the probe
    assert proc.restorer.batch_size == 1
    warned = [r for r in caplog.records if "fails a call of two" in r.getMessage()]
    assert len(warned) == 1 and "gfpgan_1.4.onnx" in warned[0].getMessage()
    expected = EnhanceProcessor({**options, "batch_size": 1}, context(usual)).push(batch)
    assert np.array_equal(out.frames, expected.frames)
    assert (out.frames != clip).any(-1).sum() > 10_000, "the faces should be restored"
    # A file that takes batches keeps the manifest's batch size.
    assert EnhanceProcessor(options, context(usual)).restorer.batch_size == 8


def test_a_wav2lip_that_fails_a_call_of_two_syncs_one_face_per_call(
    clip: np.ndarray, stores: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    usual, single = stores
    speech = speech_wav(tmp_path / "speech.wav", silence=0.0)

    def run(store: Path, batch_size: int) -> tuple[LipsyncProcessor, np.ndarray]:
        proc = LipsyncProcessor(
            LipsyncOptions(batch_size=batch_size, det_size=320), context(store, speech)
        )
        out = [proc.push(FrameBatch(clip, np.arange(FRAMES, dtype=np.int64))), proc.flush()]
        return proc, concat_batches([b for b in out if len(b)]).frames

    with caplog.at_level(logging.INFO, logger="dropbatch.lipsync"):
        proc, out = run(single, 16)
    assert proc.model.batch_size == 1
    warned = [r for r in caplog.records if "fails a call of two" in r.getMessage()]
    assert len(warned) == 1 and "wav2lip_gan_96.onnx" in warned[0].getMessage()
    _, expected = run(usual, 1)
    assert np.array_equal(out, expected)
    assert (out != clip).any(-1).sum() > 1000, "the mouths should be synced"
    assert run(usual, 16)[0].model.batch_size == 16
