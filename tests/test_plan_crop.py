"""Chunk planning and the crop step: window geometry, following the subject, invisible seams."""

from __future__ import annotations

import itertools
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from batch_jobs.plan import build_plan, chunk_frames
from core.domain import PlannedItem, VideoInfo
from dropbatch.samples import make_talking_video, subject_box
from manifests.model import Manifest
from manifests.resolve import ResolvedItem
from processors.base import ProcessorContext
from processors.chain import Chain, concat_batches
from processors.crop.options import CropOptions
from processors.crop.processor import CropProcessor
from processors.media.frames import FrameBatch, FrameReader
from processors.media.probe import probe
from tests.media_fixtures import decode_all, run_chain_over, run_in_chunks


def video_info(
    frames: int, fps: Fraction = Fraction(30), width: int = 1280, height: int = 720
) -> VideoInfo:
    return VideoInfo(
        duration=float(frames / fps),
        fps_num=fps.numerator,
        fps_den=fps.denominator,
        frame_count=frames,
        width=width,
        height=height,
    )


# -- chunk_frames ------------------------------------------------------------------------------


def test_a_minute_at_30fps_is_six_chunks_of_300_frames() -> None:
    chunks = chunk_frames(video_info(1800), chunk_seconds=10, before=15, after=15)
    assert [(c.index, c.start_frame, c.end_frame) for c in chunks] == [
        (i, 300 * i, 300 * (i + 1)) for i in range(6)
    ]
    assert [(c.preroll, c.postroll) for c in chunks] == [
        (0, 15), (15, 15), (15, 15), (15, 15), (15, 15), (15, 0),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("frames", "fps", "seconds"),
    [(1000, Fraction(30000, 1001), 10), (7, Fraction(25), 10), (301, Fraction(30), 10),
     (12345, Fraction(60000, 1001), 7.3), (1, Fraction(24), 1)],
)  # fmt: skip
def test_chunks_tile_the_video_exactly_once(frames: int, fps: Fraction, seconds: float) -> None:
    chunks = chunk_frames(video_info(frames, fps), chunk_seconds=seconds, before=4, after=9)
    assert chunks[0].start_frame == 0
    assert chunks[-1].end_frame == frames
    for a, b in itertools.pairwise(chunks):
        assert a.end_frame == b.start_frame
    assert all(c.end_frame > c.start_frame for c in chunks)
    # Every chunk but the last spans the chunk length, to within a frame.
    for c in chunks[:-1]:
        assert abs((c.end_frame - c.start_frame) - seconds * float(fps)) <= 1
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_context_is_clamped_to_the_video() -> None:
    # Context wider than a chunk: reads run off neither end, and reach as far as they can.
    chunks = chunk_frames(video_info(900), chunk_seconds=10, before=400, after=450)
    assert [(c.preroll, c.postroll) for c in chunks] == [(0, 450), (300, 300), (400, 0)]
    for c in chunks:
        assert c.start_frame - c.preroll >= 0
        assert c.end_frame + c.postroll <= 900


def test_plan_gives_crop_chunks_the_context_the_crop_needs() -> None:
    manifest = Manifest.model_validate(
        {
            "version": 1,
            "inputs": "talk.mp4",
            "chain": [{"crop": {"aspect": "9:16", "smoothing_seconds": 0.5}}],
            "compute": {"chunk_seconds": 10},
        }
    )
    info = video_info(1800)
    plan = build_plan(manifest, "campaign-7/", [(ResolvedItem(0, "talk.mp4", None, None), info)])
    item = plan.items[0]
    assert item.output == "campaign-7/out/talk.mp4"
    rate = Fraction(info.fps_num, info.fps_den)
    crop = CropProcessor(CropOptions(**item.chain[0]["options"]), context(info, rate))
    middle = item.chunks[2]
    assert middle.preroll >= crop.lookbehind and middle.postroll >= crop.lookahead
    assert crop.lookbehind >= 0.5 * 30 - 1  # half a second of frames either side


# -- crop geometry ----------------------------------------------------------------------------


def context(info: VideoInfo, rate: Fraction) -> ProcessorContext:
    return ProcessorContext(info=info, rate=rate, width=info.width, height=info.height)


SIZES = [
    (320, 240), (640, 360), (1280, 720), (1920, 1080), (1080, 1920), (720, 720), (642, 362),
    (333, 251),
]  # fmt: skip


@pytest.mark.parametrize("aspect", ["9:16", "1:1", "4:5"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_crop_window_is_even_and_of_the_target_aspect(aspect: str, size: tuple[int, int]) -> None:
    width, height = size
    info = video_info(8, width=width, height=height)
    crop = CropProcessor(
        CropOptions(aspect=aspect, smoothing_seconds=0.1), context(info, Fraction(30))
    )
    w, h = crop.output_size()
    aw, ah = (int(v) for v in aspect.split(":"))
    assert w % 2 == 0 and h % 2 == 0
    assert 0 < w <= width and 0 < h <= height
    # Within a pixel or two of the exact aspect (evenness costs at most 2 px)...
    assert abs(w * ah - h * aw) <= 2 * max(aw, ah)
    # ...and as large as the frame allows: one side fills the frame, to within evenness.
    assert w >= width - 1 or h >= height - 1
    # What it returns has that size.
    ramp = np.linspace(0, 255, width * height * 3).astype(np.uint8).reshape(height, width, 3)
    out = crop.push(FrameBatch(np.stack([ramp] * 5), np.arange(5)))
    rest = crop.flush()
    frames = np.concatenate([out.frames, rest.frames])
    assert frames.shape == (5, h, w, 3)
    assert np.concatenate([out.indices, rest.indices]).tolist() == list(range(5))


# -- crop over a real talking-head clip -------------------------------------------------------

CANVAS = (640, 360)
SUBJECT = 240
FPS = 15
SECONDS = 4.0
# The face in skimage's 512×512 astronaut photo (forehead to chin, ear to ear), by eye.
FACE_IN_PORTRAIT = (175, 60, 275, 185)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crop") / "talk.mp4"
    make_talking_video(
        path, duration=SECONDS, fps=FPS, canvas=CANVAS, subject=SUBJECT, audio="none"
    )
    return path


def face_box(index: int) -> tuple[float, float, float, float]:
    x, y = subject_box(index / FPS, SECONDS, CANVAS, SUBJECT)
    s = SUBJECT / 512
    x0, y0, x1, y1 = FACE_IN_PORTRAIT
    return x + x0 * s, y + y0 * s, x + x1 * s, y + y1 * s


def planned_item(info: VideoInfo, crop: dict, chunk_seconds: float) -> PlannedItem:
    manifest = Manifest.model_validate(
        {
            "version": 1,
            "inputs": "talk.mp4",
            "chain": [{"crop": crop}],
            "compute": {"chunk_seconds": chunk_seconds},
        }
    )
    plan = build_plan(manifest, "", [(ResolvedItem(0, "talk.mp4", None, None), info)])
    return plan.items[0]


def run_chain(
    source: Path, item: PlannedItem, first: int, count: int | None, keep: tuple[int, int]
) -> FrameBatch:
    """One task's work: decode [first, first+count), run a freshly built chain, keep [keep)."""
    info = item.info
    rate = Fraction(info.fps_num, info.fps_den)
    chain = Chain(item.chain, context(info, rate))
    reader = FrameReader.for_video(str(source), info, first, count, batch_size=5)
    return run_chain_over(chain, reader, keep)


def window_position(frame: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """Where `crop` was cut from `frame` (the cut is exact: no scaling)."""
    h, w = crop.shape[:2]
    for y0 in range(frame.shape[0] - h + 1):
        rows = np.lib.stride_tricks.sliding_window_view(frame[y0], w, axis=0)  # [x0, 3, w]
        hits = np.flatnonzero((rows == crop[0].T[None]).all(axis=(1, 2)))
        for x0 in hits:
            if np.array_equal(frame[y0 : y0 + h, x0 : x0 + w], crop):
                return int(x0), y0
    raise AssertionError("the crop is not a window of its input frame")


@pytest.fixture(scope="module")
def whole_run(talk: Path) -> tuple[PlannedItem, FrameBatch]:
    info = probe(str(talk))
    item = planned_item(info, {"aspect": "9:16"}, chunk_seconds=1.4)
    return item, run_chain(talk, item, 0, None, (0, info.frame_count))


@needs_ffmpeg
def test_crop_keeps_the_face_in_frame_as_it_moves(
    talk: Path, whole_run: tuple[PlannedItem, FrameBatch]
) -> None:
    item, out = whole_run
    info = item.info
    assert info.frame_count == round(SECONDS * FPS)
    assert out.indices.tolist() == list(range(info.frame_count))
    assert out.frames.shape[1:] == (360, 202, 3)  # 9:16 at the full 360 px height
    inputs = decode_all(talk, info)
    lefts = []
    for index, (frame, crop) in enumerate(zip(inputs, out.frames, strict=True)):
        x0, y0 = window_position(frame, crop)
        fx0, fy0, fx1, fy1 = face_box(index)
        h, w = crop.shape[:2]
        assert x0 <= fx0 and fx1 <= x0 + w, (
            f"frame {index}: face x {fx0:.0f}–{fx1:.0f}, window {x0}–{x0 + w}"
        )
        assert y0 <= fy0 and fy1 <= y0 + h
        lefts.append(x0)
    # The camera really moved with the subject (a centred still window would fail above anyway).
    assert max(lefts) - min(lefts) > 300


@needs_ffmpeg
@pytest.mark.parametrize("detect_every", [1, 3])
def test_chunked_crop_equals_a_single_run(
    talk: Path, whole_run: tuple[PlannedItem, FrameBatch], detect_every: int
) -> None:
    item, single = whole_run
    if detect_every != 1:
        item = planned_item(item.info, {"aspect": "9:16", "detect_every": detect_every}, 1.4)
        single = run_chain(talk, item, 0, None, (0, item.info.frame_count))
    assert len(item.chunks) >= 3
    assert any(c.preroll > 0 for c in item.chunks) and any(c.postroll > 0 for c in item.chunks)
    pieces = run_in_chunks(item, lambda *task: run_chain(talk, item, *task))
    for chunk, piece in pieces:
        assert piece.indices.tolist() == list(range(chunk.start_frame, chunk.end_frame))
    chunked = concat_batches([piece for _, piece in pieces])
    assert chunked.indices.tolist() == single.indices.tolist()
    for index, (a, b) in enumerate(zip(chunked.frames, single.frames, strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs between chunked and single runs"
