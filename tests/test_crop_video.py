"""The crop step on real video: skimage's astronaut moved and zoomed over a canvas, with the
face's true box known in every frame, through ffmpeg, the real detectors and the planner's
chunks."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from media_fixtures import encode_frames

from batch_jobs.plan import build_plan
from core.domain import PlannedItem, VideoInfo
from dropbatch.samples import astronaut
from manifests.model import Manifest
from manifests.resolve import ResolvedItem
from processors.base import ProcessorContext
from processors.chain import Chain, concat_batches
from processors.crop.cuts import CutDetector
from processors.media.frames import FrameBatch, FrameReader
from processors.media.probe import probe
from tests.media_fixtures import run_chain_over, run_in_chunks
from tests.yolo_test_model import build as build_test_yolo

CANVAS = (640, 360)
FPS = 15
# The face in skimage's 512×512 astronaut photo (forehead to chin, ear to ear), by eye.
FACE = (175, 60, 275, 185)
Box = tuple[float, float, float, float]


def placement(t: float, duration: float) -> tuple[int, int, int]:
    """(x, y, size) of the portrait at time t: a sweep left → right and back while it zooms
    between 180 and 260 px."""
    size = round(220 + 40 * math.sin(2 * math.pi * t / duration * 1.5))
    phase = 0.5 - 0.5 * math.cos(2 * math.pi * t / duration)
    x = round(phase * (CANVAS[0] - size))
    y = (CANVAS[1] - size) // 2 + round(10 * math.sin(2 * math.pi * t / 2.3))
    return x, y, size


def face_box(x: int, y: int, size: int) -> Box:
    s = size / 512
    return x + FACE[0] * s, y + FACE[1] * s, x + FACE[2] * s, y + FACE[3] * s


def render(
    placements: list[tuple[int, int, int]], backgrounds: list[tuple[int, int, int]]
) -> list[np.ndarray]:
    photo = astronaut()
    frames = []
    for (x, y, size), colour in zip(placements, backgrounds, strict=True):
        frame = np.empty((CANVAS[1], CANVAS[0], 3), np.uint8)
        frame[:] = colour
        frame[y : y + size, x : x + size] = cv2.resize(
            photo, (size, size), interpolation=cv2.INTER_AREA
        )
        frames.append(frame)
    return frames


SECONDS = 6.0
COUNT = round(SECONDS * FPS)
MOVING = [placement(i / FPS, SECONDS) for i in range(COUNT)]
CUT_AT = 3 * FPS
# A hard cut: a new shot with another background, the person elsewhere and nearer.
CUT = [(40, 80, 200) if i < CUT_AT else (400, 60, 240) for i in range(COUNT)]
CUT_BACKGROUNDS = [(40, 60, 80) if i < CUT_AT else (150, 120, 70) for i in range(COUNT)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crop-video")
    moving, cut = root / "moving.mp4", root / "cut.mp4"
    encode_frames(moving, render(MOVING, [(40, 60, 80)] * COUNT), fps=FPS, size=CANVAS)
    encode_frames(cut, render(CUT, CUT_BACKGROUNDS), fps=FPS, size=CANVAS)
    return {"moving": moving, "cut": cut}


def planned(info: VideoInfo, crop: dict, chunk_seconds: float) -> PlannedItem:
    manifest = Manifest.model_validate(
        {"version": 1, "inputs": "v.mp4", "chain": [{"crop": crop}],
         "compute": {"chunk_seconds": chunk_seconds}}
    )  # fmt: skip
    return build_plan(manifest, "", [(ResolvedItem(0, "v.mp4", None, None), info)]).items[0]


def run_crop(
    source: Path,
    item: PlannedItem,
    first: int = 0,
    count: int | None = None,
    keep: tuple[int, int] | None = None,
    model_store: str = "",
) -> tuple[FrameBatch, dict[int, tuple[int, int, int, int]]]:
    """One task's work, as batch_jobs.task does it: the frames kept and their windows."""
    info = item.info
    rate = Fraction(info.fps_num, info.fps_den)
    ctx = ProcessorContext(
        info=info, rate=rate, width=info.width, height=info.height, model_store=model_store
    )
    chain = Chain(item.chain, ctx)
    reader = FrameReader(
        str(source), width=info.width, height=info.height, rate=rate,
        start_time=info.start_time, first=first, count=count, batch_size=6,
    )  # fmt: skip
    keep = keep or (0, info.frame_count)
    frames = run_chain_over(chain, reader, keep)
    windows = chain.processors[0].windows
    return frames, {i: windows[i] for i in range(*keep)}


def inside(box: Box, window: tuple[int, int, int, int]) -> bool:
    x, y, w, h = window
    return x <= box[0] and box[2] <= x + w and y <= box[1] and box[3] <= y + h


@pytest.mark.parametrize("detect_every", [1, 3])
def test_the_face_stays_in_the_crop_and_the_camera_moves_smoothly(
    videos: dict[str, Path], detect_every: int
) -> None:
    info = probe(str(videos["moving"]))
    item = planned(info, {"aspect": "9:16", "detect_every": detect_every}, 10)
    out, windows = run_crop(videos["moving"], item)
    assert out.frames.shape == (COUNT, 360, 202, 3)
    for i, place in enumerate(MOVING):
        assert inside(face_box(*place), windows[i]), f"frame {i}: {windows[i]}"
    xs = np.array([windows[i][0] for i in range(COUNT)], float)
    crop = Chain(item.chain, _ctx(info)).processors[0]
    assert np.abs(np.diff(xs)).max() <= crop.settings.speed + 1
    # No shake from the detector's jitter: Haar boxes move a few px between frames (and with
    # the decoder's exact pixels), the camera's acceleration stays within a few px/frame².
    assert np.abs(np.diff(xs, 2)).max() <= 6
    assert xs.max() - xs.min() > 300  # and it really followed the sweep


def _ctx(info: VideoInfo) -> ProcessorContext:
    rate = Fraction(info.fps_num, info.fps_den)
    return ProcessorContext(info=info, rate=rate, width=info.width, height=info.height)


def test_zooming_in_keeps_the_output_size_and_follows_the_subjects_size(
    videos: dict[str, Path],
) -> None:
    info = probe(str(videos["moving"]))
    item = planned(info, {"aspect": "9:16", "min_crop_ratio": 0.4, "padding": 0.1}, 10)
    out, windows = run_crop(videos["moving"], item)
    assert out.frames.shape == (COUNT, 360, 202, 3)
    heights = np.array([windows[i][3] for i in range(COUNT)])
    assert heights.min() < 300  # it zoomed in
    sizes = np.array([size for _, _, size in MOVING])
    assert np.corrcoef(heights, sizes)[0, 1] > 0.8  # nearer subject, wider shot
    for i, place in enumerate(MOVING):
        x, y, w, h = windows[i]
        assert x >= 0 and x + w <= CANVAS[0] and y >= 0 and y + h <= CANVAS[1]
        assert inside(face_box(*place), windows[i]), f"frame {i}: {windows[i]}"


def test_a_hard_cut_is_found_and_resets_the_camera(videos: dict[str, Path]) -> None:
    info = probe(str(videos["cut"]))
    reader = FrameReader(
        str(videos["cut"]), width=info.width, height=info.height, rate=Fraction(FPS),
        start_time=info.start_time, first=0, count=None,
    )  # fmt: skip
    cuts = CutDetector(0.4)
    flags = [cuts.is_cut(f) for batch in reader for f in batch.frames]
    assert [i for i, cut in enumerate(flags) if cut] == [CUT_AT]
    item = planned(info, {"aspect": "9:16"}, 10)
    _, windows = run_crop(videos["cut"], item)
    before, after = face_box(*CUT[0]), face_box(*CUT[-1])
    assert all(inside(before, windows[i]) for i in range(CUT_AT))
    assert all(inside(after, windows[i]) for i in range(CUT_AT, COUNT))
    # It jumped at the cut, and held still on either side of it (no slide across).
    # (within 1 px: a sustained 1–2 px shift of the detector's box may move it that much)
    assert abs(windows[CUT_AT - 1][0] - windows[0][0]) <= 1
    assert abs(windows[CUT_AT][0] - windows[COUNT - 1][0]) <= 1
    assert abs(windows[CUT_AT][0] - windows[CUT_AT - 1][0]) > 100


@pytest.fixture(scope="module")
def yolo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The test model boxes the pixels brighter than 0.9 in every channel: on these videos,
    # the astronaut's white suit. A real YOLO would box the whole person.
    root = tmp_path_factory.mktemp("store")
    build_test_yolo(root / "yolov8n.onnx", dynamic_batch=True)
    return root


@pytest.mark.parametrize("detect_every", [1, 3])
def test_chunked_yolo_onnx_crop_equals_the_single_run(
    videos: dict[str, Path], yolo_store: Path, detect_every: int
) -> None:
    info = probe(str(videos["moving"]))
    options = {"aspect": "9:16", "detector": "yolo-onnx", "detect_every": detect_every,
               "batch_size": 4, "min_crop_ratio": 0.5}  # fmt: skip
    item = planned(info, options, chunk_seconds=1.5)
    assert len(item.chunks) >= 4
    single, single_windows = run_crop(videos["moving"], item, model_store=str(yolo_store))
    xs = [w[0] for w in single_windows.values()]
    assert max(xs) - min(xs) > 200  # the suit was found and followed
    runs = run_in_chunks(
        item, lambda *task: run_crop(videos["moving"], item, *task, model_store=str(yolo_store))
    )
    pieces, chunked_windows = [], {}
    for _, (piece, windows) in runs:
        pieces.append(piece)
        chunked_windows.update(windows)
    diff = max(
        max(abs(a - b) for a, b in zip(single_windows[i], chunked_windows[i], strict=True))
        for i in range(COUNT)
    )
    assert diff <= 1, f"windows differ by up to {diff} px between chunked and single runs"
    chunked = concat_batches(pieces)
    assert chunked.indices.tolist() == list(range(COUNT))
    assert chunked.frames.shape == single.frames.shape
