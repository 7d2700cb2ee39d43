"""Occlusion through the face chain on real footage: what a swap with `occlusion: true` kept
(a hand over the mouth) stays as the swap left it through `enhance` and `lipsync`, and both take
`occlusion` themselves when no swap ran.

Frames: two frames of the real Pexels clip, the real SCRFD-500m + ArcFace MBF, and the hand of
tests/test_swap_masks.py (a real photo — the rocket picture's blue sky — cut in a hand's shape,
held over the mouth where the real detector puts it). The test XSeg (tests/mask_models.py)
calls a pixel covered by its colour (bluer than red), so which pixels it keeps follows from the
real pixels, not from an annotation. The restorers and Wav2Lip are the test signatures that
visibly repaint what they are given (tests/enhance_models.py, tests/lipsync_fixtures.py).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.domain import VideoInfo
from processors.base import ProcessorContext
from processors.chain import concat_batches
from processors.enhance.processor import EnhanceProcessor
from processors.faces import FaceAnalyser
from processors.lipsync.options import LipsyncOptions
from processors.lipsync.processor import LipsyncProcessor
from processors.media.frames import FrameBatch
from processors.models.store import models_for_step
from tests.lipsync_fixtures import speech_wav
from tests.mask_models import COVER_MARGIN, build_occluder
from tests.real_chain import build_real_store
from tests.test_swap_masks import HEIGHT, WIDTH, swap, with_hand
from tests.test_swap_masks import clip as clip
from tests.test_swap_masks import folder as folder

FPS = Fraction(24)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, real_asset) -> Path:
    """The real analyser, the test swapper, restorers and Wav2Lip, and the test occluder under
    the packaged catalog's name (xseg_1: unpinned there, so used as found)."""
    folder = build_real_store(tmp_path_factory.mktemp("models"), real_asset)
    build_occluder(folder / "xseg_1.onnx")
    return folder


@pytest.fixture(scope="module")
def held(clip: np.ndarray, real_asset) -> tuple[np.ndarray, np.ndarray]:
    """The frames with the hand over the mouth, and (per frame) the hand's inner pixels the
    occluder calls covered (bluer than red, away from the mask's soft edge)."""
    detector = FaceAnalyser(
        real_asset("scrfd_500m_bnkps.onnx"), None, det_size=320, providers=["CPUExecutionProvider"]
    )
    frames, inner = [], []
    for frame in clip:
        out, where = with_hand(frame, detector.detect(frame)[0].kps)
        rgb = out.astype(np.float32) / 255.0
        covered = where & (rgb[..., 2] - rgb[..., 0] > COVER_MARGIN + 0.02)
        inner.append(cv2.erode(covered.astype(np.uint8), np.ones((17, 17), np.uint8)) > 0)
        frames.append(out)
    assert all(i.sum() > 1500 for i in inner), "the hand should cover a good part of the mouth"
    return np.stack(frames), np.stack(inner)


def context(store: Path, folder: Path, speech: Path | None = None) -> ProcessorContext:
    info = VideoInfo(duration=1, fps_num=24, fps_den=1, frame_count=2, width=WIDTH, height=HEIGHT)
    return ProcessorContext(
        info=info, rate=FPS, width=WIDTH, height=HEIGHT, folder=folder, model_store=str(store),
        audio_path=speech, frames=2,
    )  # fmt: skip


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_wav(tmp_path_factory.mktemp("speech") / "speech.wav", silence=0.0)


def enhance(batch: FrameBatch, store: Path, folder: Path, **options: object) -> FrameBatch:
    opts = {"analyser": "scrfd_500m_mbf", "det_size": 320, "blend": 100, **options}
    return EnhanceProcessor(opts, context(store, folder)).push(batch)


def lipsync(
    batch: FrameBatch, store: Path, folder: Path, speech: Path, **options: object
) -> FrameBatch:
    proc = LipsyncProcessor(
        LipsyncOptions(smoothing_frames=0, det_size=320, **options),
        context(store, folder, speech),
    )
    return concat_batches([b for b in (proc.push(batch), proc.flush()) if len(b)])


def changed(out: np.ndarray, before: np.ndarray, where: np.ndarray) -> float:
    """The share of these pixels that differ."""
    return float((out != before).any(-1)[where].mean())


def unoccluded(batch: FrameBatch) -> FrameBatch:
    """The same frames and faces, as if the swap had run no occluder."""
    faces = [[f.with_(occlusion=None) for f in found] for found in batch.annotations["faces"]]
    return FrameBatch(batch.frames, batch.indices, {"faces": faces})


@pytest.fixture(scope="module")
def swapped(held: tuple, store: Path, folder: Path) -> FrameBatch:
    frames, inner = held
    out = swap(frames, store, folder, occlusion=True)
    for i in range(len(frames)):
        assert np.array_equal(out.frames[i][inner[i]], frames[i][inner[i]])
    return out


def test_enhance_after_an_occluding_swap_keeps_the_hand(
    held: tuple, swapped: FrameBatch, store: Path, folder: Path
) -> None:
    frames, inner = held
    out = enhance(swapped, store, folder)
    for i in range(len(frames)):
        assert np.array_equal(out.frames[i][inner[i]], swapped.frames[i][inner[i]]), i
        # The rest of the face is restored: the restorer repaints what it is given.
        face = swapped.annotations["faces"][i][0]
        x0, y0, x1, y1 = face.box.astype(int)
        visible = np.zeros_like(inner[i])
        visible[y0 : (y0 + y1) // 2, x0:x1] = True
        assert changed(out.frames[i], swapped.frames[i], visible) > 0.8
    # Without the swap's occlusion the restorer paints over the hand.
    plain = unoccluded(swapped)
    painted = enhance(plain, store, folder)
    assert all(changed(painted.frames[i], frames[i], inner[i]) > 0.8 for i in range(len(frames)))


def test_enhance_takes_occlusion_itself_without_a_swap(
    held: tuple, store: Path, folder: Path
) -> None:
    frames, inner = held
    batch = FrameBatch(frames, np.arange(len(frames), dtype=np.int64))
    kept = enhance(batch, store, folder, occlusion=True)
    painted = enhance(batch, store, folder)
    for i in range(len(frames)):
        assert np.array_equal(kept.frames[i][inner[i]], frames[i][inner[i]]), i
        assert changed(painted.frames[i], frames[i], inner[i]) > 0.8, i


def test_lipsync_after_an_occluding_swap_keeps_the_hand(
    held: tuple, swapped: FrameBatch, store: Path, folder: Path, speech: Path
) -> None:
    frames, inner = held
    out = lipsync(swapped, store, folder, speech)
    plain = unoccluded(swapped)
    painted = lipsync(plain, store, folder, speech)
    for i in range(len(frames)):
        assert np.array_equal(out.frames[i][inner[i]], swapped.frames[i][inner[i]]), i
        assert changed(painted.frames[i], swapped.frames[i], inner[i]) > 0.8, i
        # The mouth around the hand is still synced.
        assert (out.frames[i] != swapped.frames[i]).any(-1).sum() > 500, i


def test_lipsync_takes_occlusion_itself_without_a_swap(
    held: tuple, store: Path, folder: Path, speech: Path
) -> None:
    frames, inner = held
    batch = FrameBatch(frames, np.arange(len(frames), dtype=np.int64))
    kept = lipsync(batch, store, folder, speech, occlusion=True)
    painted = lipsync(batch, store, folder, speech)
    for i in range(len(frames)):
        assert np.array_equal(kept.frames[i][inner[i]], frames[i][inner[i]]), i
        assert changed(painted.frames[i], frames[i], inner[i]) > 0.8, i


@pytest.mark.parametrize(
    ("step", "options"),
    [("enhance", {"occlusion": True, "occluder": "xseg_2"}),
     ("lipsync", {"occlusion": True, "occluder": "xseg_2"})],
)  # fmt: skip
def test_occlusion_asks_the_store_for_its_occluder(step: str, options: dict) -> None:
    """So a missing occluder is MODEL_MISSING at trigger time, not a failed task."""
    assert "xseg_2" in models_for_step(step, options, faces_given=True)
    assert "xseg_2" not in models_for_step(step, {}, faces_given=True)
