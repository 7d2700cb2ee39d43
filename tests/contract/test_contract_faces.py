"""The seam between two steps of the chain: the faces `swap` hands on, read by `lipsync`.

The producer is the real swap processor (analyser pack, test-signature swapper) run on real
frames; its real output batch — frames and face annotations as it emits them — is what the
real lipsync processor (test-signature Wav2Lip) receives. Nothing on either side is built by
hand. The test swapper inverts the face it pastes, so a second detection on swap's output would
find other boxes (or none): lipsync's changes sitting on swap's boxes show it used swap's faces.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.domain import VideoInfo
from processors.base import ProcessorContext
from processors.chain import concat_batches
from processors.faces import Face, faces_of
from processors.lipsync.faces import CHIN_MARGIN
from processors.lipsync.options import LipsyncOptions
from processors.lipsync.processor import LipsyncProcessor
from processors.media.frames import FrameBatch
from processors.swap.options import SwapOptions
from processors.swap.processor import SwapProcessor
from tests.face_models import build_face_store, two_people
from tests.lipsync_fixtures import add_light_pack, make_model_store, speech_wav

FPS = 25
FRAMES = 30
REAL_PACK = "scrfd_500m_mbf"  # the catalog's light pack, both files pinned
PADS_BOTTOM = 10  # lipsync's default pads: (top, bottom, left, right) = (0, 10, 0, 0)


@dataclass(frozen=True)
class Seam:
    name: str
    frames: np.ndarray  # [N, H, W, 3] RGB, the chain's input
    ctx: ProcessorContext
    swap_options: dict


def _drifting(frame: np.ndarray, count: int) -> np.ndarray:
    """`count` frames of the same scene with a little sensor noise (real frames never repeat)."""
    rng = np.random.default_rng(3)
    noise = rng.integers(-2, 3, size=(count, *frame.shape), dtype=np.int16)
    return np.clip(frame[None].astype(np.int16) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_wav(tmp_path_factory.mktemp("speech") / "speech.wav", silence=0.0)


@pytest.fixture(scope="module")
def test_signature_seam(tmp_path_factory: pytest.TempPathFactory, speech: Path) -> Seam:
    """The analyser pack of tests/face_models.py on frames made from real photos."""
    tmp = tmp_path_factory.mktemp("seam")
    store = build_face_store(tmp / "models")
    make_model_store(store)
    folder = tmp / "side"
    folder.mkdir()
    source = two_people(cameraman=False)
    cv2.imwrite(str(folder / "source.png"), cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
    frames = _drifting(two_people(), FRAMES)
    frames[12:17] = 0  # nobody for a stretch longer than swap's max_gap: no faces there
    return Seam(
        "test-signature",
        frames,
        _context(frames, store, folder, speech),
        {"analyser": "test_faces", "model": "test_swapper", "source": ["source.png"]},
    )


def pexels_frames(path: Path, count: int) -> np.ndarray:
    """The first `count` frames of the real Pexels clip, RGB [N, 360, 640, 3]."""
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(path), "-frames:v", str(count),
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(count, 360, 640, 3).copy()


def real_pack_store(folder: Path, real_asset) -> Path:
    """The test swapper and Wav2Lip, plus the real light analyser pack (SCRFD-500m with its
    batch-dim outputs, ArcFace MBF): the files the catalog's light pack names."""
    store = build_face_store(folder)
    make_model_store(store)
    return add_light_pack(store, real_asset)


@pytest.fixture(scope="module")
def real_seam(tmp_path_factory: pytest.TempPathFactory, speech: Path, real_asset) -> Seam:
    """The real SCRFD + ArcFace pack on a couple of seconds of the real Pexels clip."""
    tmp = tmp_path_factory.mktemp("seam-real")
    store = real_pack_store(tmp / "models", real_asset)
    folder = tmp / "side"
    folder.mkdir()
    shutil.copy(real_asset("obama.jpg"), folder / "source.jpg")
    frames = pexels_frames(real_asset("pexels.mp4"), FRAMES)
    return Seam(
        "real",
        frames,
        _context(frames, store, folder, speech),
        {"analyser": REAL_PACK, "model": "test_swapper", "source": ["source.jpg"]},
    )


def _context(frames: np.ndarray, store: Path, folder: Path, speech: Path) -> ProcessorContext:
    count, height, width = frames.shape[:3]
    info = VideoInfo(
        duration=count / FPS, fps_num=FPS, fps_den=1, frame_count=count, width=width,
        height=height,
    )  # fmt: skip
    return ProcessorContext(
        info=info, rate=Fraction(FPS), width=width, height=height, folder=folder,
        model_store=str(store), audio_path=str(speech), frames=count,
    )  # fmt: skip


def _run(processor, batches: list[FrameBatch]) -> FrameBatch:
    out = [processor.push(b) for b in batches] + [processor.flush()]
    return concat_batches([b for b in out if len(b)])


@pytest.fixture(autouse=True)
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "model-cache"))


@pytest.fixture(params=["test-signature", "real"])
def seam(request: pytest.FixtureRequest) -> Seam:
    return request.getfixturevalue(request.param.replace("-", "_") + "_seam")


def test_lipsync_uses_the_faces_swap_hands_on(seam: Seam) -> None:
    swap = SwapProcessor(SwapOptions(**seam.swap_options), seam.ctx)
    batches = [
        FrameBatch(seam.frames[i : i + 8], np.arange(i, min(i + 8, len(seam.frames))))
        for i in range(0, len(seam.frames), 8)
    ]
    swapped = _run(swap, batches)
    # The producer's side of the contract: one list of Face per frame, every frame.
    faces = faces_of(swapped)
    assert faces is not None and len(faces) == len(seam.frames)
    assert all(isinstance(f, Face) for frame_faces in faces for f in frame_faces)
    with_face = [i for i, frame_faces in enumerate(faces) if frame_faces]
    assert len(with_face) >= len(seam.frames) * 0.6, "swap found too few faces to test the seam"

    lipsync = LipsyncProcessor(LipsyncOptions(batch_size=4), seam.ctx)
    synced = _run(lipsync, [swapped])
    assert synced.indices.tolist() == list(range(len(seam.frames)))

    mouth_change = []
    for i, frame_faces in enumerate(faces):
        before, after = swapped.frames[i].astype(int), synced.frames[i].astype(int)
        changed = np.abs(after - before).max(axis=2) > 0
        if not frame_faces:
            assert not changed.any(), f"frame {i}: swap found no face, lipsync changed it"
            continue
        x0, y0, x1, y1 = max(frame_faces, key=lambda f: f.area).box
        height = y1 - y0
        ys, xs = np.nonzero(changed)
        assert len(ys) > 100, f"frame {i}: lipsync left swap's face alone"
        # Every change lies on swap's face (smoothing moves the box by a few pixels at most)
        # and below its eyes: the mouth, where swap said the face is.
        assert xs.min() >= x0 - 4 and xs.max() <= x1 + 4, i
        below = max(PADS_BOTTOM, CHIN_MARGIN * height)  # the crop's reach past the chin
        assert ys.min() >= y0 + height / 3 and ys.max() <= y1 + below + 4, i
        mouth = np.abs(after - before)[round(y0 + height * 0.6) : round(y1), round(x0) : round(x1)]
        mouth_change.append(mouth.mean())
    # Speech has pauses (the test model changes the mouth with the speech's level), so the
    # mouth changes clearly on average, not on every frame.
    assert np.mean(mouth_change) > 2.0, "the mouth region swap found barely changed"
