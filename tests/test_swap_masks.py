"""swap's masks and pixel boost on real footage: a few frames of the Pexels clip, the real
SCRFD-500m and ArcFace MBF, and test models with the real signatures (tests/mask_models.py).

- occlusion: a hand cut from a real photo (the blue sky of scikit-image's rocket picture, in a
  hand's shape) held over the mouth is kept from the original frame with `occlusion: true`,
  and painted over without it.
- regions: with `regions: [mouth]` every pixel outside the mouth block the test parser lays out
  in the aligned crop is left as it was.
- pixel_boost: the crop is swapped as interleaved sub-grids (a swapper that moves its input one
  pixel moves a 256 crop two pixels), the paste stays inside the box of the larger crop, and an
  identity swap at 256 gives back the face closer to the original than at 128.
- the models the options ask for are required at trigger time and listed by `models check`.
"""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.data import astronaut, rocket

from core.domain import VideoInfo
from manifests.loader import ManifestInvalid, load_manifest
from processors.base import ProcessorContext
from processors.faces import FaceAnalyser, align_matrix
from processors.media.frames import FrameBatch
from processors.swap.masks import FaceParser, MaskModelUnusable, Occluder
from processors.swap.options import SwapOptions
from processors.swap.paste import box_of
from processors.swap.processor import SwapProcessor
from processors.swap.swapper import Swapper
from tests.mask_models import (
    COVER_MARGIN,
    MOUTH,
    PARSER_LAYOUT,
    PARSER_SIDE,
    add_test_swapper,
    build_occluder,
    build_parser,
    build_spatial_swapper,
)
from tests.real_chain import ANALYSER, SWAPPER, build_real_store, write_face_image

WIDTH, HEIGHT = 640, 360
START, FRAMES = 9.0, 2  # she faces the camera, her own hand at her chin
IDENTITY = "identity_swapper"


@pytest.fixture(scope="module")
def clip(real_asset) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", f"{START}", "-i", str(real_asset("pexels.mp4")),
         "-frames:v", str(FRAMES), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    frames = np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3).copy()
    assert len(frames) == FRAMES
    return frames


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, real_asset) -> Path:
    """The real analyser, the test swapper, and the test occluder and parser under the packaged
    catalog's names (xseg_1, bisenet_resnet_34: unpinned there, so used as found), plus an
    identity swapper the store's own catalog adds."""
    folder = build_real_store(tmp_path_factory.mktemp("models"), real_asset)
    build_occluder(folder / "xseg_1.onnx")
    build_parser(folder / "bisenet_resnet_34.onnx")
    build_spatial_swapper(folder / "identity_swapper.onnx", shift=0)
    add_test_swapper(folder, IDENTITY, "identity_swapper.onnx", "tests/mask_models.py")
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("job")
    write_face_image(path / "faces" / "astronaut.png", astronaut())
    return path


def swap(frames: np.ndarray, store: Path, folder: Path, **options: object) -> FrameBatch:
    """The swap step over these frames, as a task runs it; the faces it swapped annotated."""
    info = VideoInfo(
        duration=1, fps_num=24, fps_den=1, frame_count=len(frames), width=WIDTH, height=HEIGHT
    )
    ctx = ProcessorContext(
        info=info, rate=Fraction(24), width=WIDTH, height=HEIGHT, folder=folder,
        model_store=str(store),
    )  # fmt: skip
    opts = {"analyser": ANALYSER, "model": SWAPPER, "source": "faces/astronaut.png",
            "det_size": 320, "track_window": 0, "max_gap": 0, **options}  # fmt: skip
    proc = SwapProcessor(SwapOptions(**opts), ctx)
    out = [proc.push(FrameBatch(frames, np.arange(len(frames), dtype=np.int64))), proc.flush()]
    frames_out = np.concatenate([b.frames for b in out if len(b)])
    faces = [f for b in out if len(b) for f in b.annotations["faces"]]
    assert len(frames_out) == len(frames)
    assert all(len(found) == 1 and found[0].identity == 0 for found in faces)
    return FrameBatch(frames_out, np.arange(len(frames), dtype=np.int64), {"faces": faces})


def kps_of(batch: FrameBatch, i: int) -> np.ndarray:
    return batch.annotations["faces"][i][0].kps


# -- occlusion --------------------------------------------------------------------------------
def hand(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A hand held flat across a mouth: a palm and four fingers, filled with a real photo (the
    rocket picture's blue sky). (RGB [h, w, 3], bool shape [h, w])."""
    shape = np.zeros((height, width), np.uint8)
    cv2.ellipse(shape, (width * 3 // 4, height // 2), (width // 4, height // 2), 0, 0, 360, 1, -1)
    for k in range(4):  # fingers towards the left, slightly fanned
        y = height // 8 + k * height // 4
        cv2.ellipse(shape, (width * 3 // 8, y), (width * 3 // 8, height // 9), 4 * k - 6, 0, 360,
                    1, -1)  # fmt: skip
    sky = rocket()[0:120, 300:460]
    return cv2.resize(sky, (width, height), interpolation=cv2.INTER_LINEAR), shape.astype(bool)


def with_hand(frame: np.ndarray, kps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame with the hand over the mouth, and where the hand is."""
    left, right = kps[3], kps[4]
    width = int(np.linalg.norm(right - left) * 1.6)
    height = width // 2
    cx, cy = (left + right) / 2
    x0, y0 = int(cx - width / 2), int(cy - height / 2)
    picture, shape = hand(width, height)
    out, where = frame.copy(), np.zeros(frame.shape[:2], bool)
    region = out[y0 : y0 + height, x0 : x0 + width]
    region[shape] = picture[shape]
    where[y0 : y0 + height, x0 : x0 + width] = shape
    return out, where


@pytest.fixture(scope="module")
def held(clip: np.ndarray, real_asset) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each frame with the hand over the mouth (where the real detector puts it), and where
    the hand is."""
    detector = FaceAnalyser(
        real_asset("scrfd_500m_bnkps.onnx"), None, det_size=320, providers=["CPUExecutionProvider"]
    )
    return [with_hand(frame, detector.detect(frame)[0].kps) for frame in clip]


@pytest.fixture(scope="module")
def painted(held: list, store: Path, folder: Path) -> FrameBatch:
    """A plain swap (no masks, no boost) of the frames with the hand."""
    return swap(np.stack([f for f, _ in held]), store, folder)


def test_occlusion_keeps_a_hand_over_the_mouth_from_the_original_frame(
    held: list, painted: FrameBatch, store: Path, folder: Path
) -> None:
    kept = swap(np.stack([f for f, _ in held]), store, folder, occlusion=True)
    for i, (frame, where) in enumerate(held):
        # What the occluder calls covered (bluer than red, in 0..1), away from its soft edge.
        rgb = frame.astype(np.float32) / 255.0
        covered = where & (rgb[..., 2] - rgb[..., 0] > COVER_MARGIN + 0.02)
        inner = cv2.erode(covered.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
        assert inner.sum() > 1500, "the hand should cover a good part of the mouth"
        assert np.array_equal(kept.frames[i][inner], frame[inner])
        diff = np.abs(painted.frames[i].astype(int) - frame.astype(int))
        assert diff[inner].mean() > 60, "without occlusion the swap paints over the hand"
        # The face around the hand is still swapped: the eyes changed with occlusion on.
        (ex0, ey0), (ex1, ey1) = kps_of(kept, i)[0].astype(int), kps_of(kept, i)[1].astype(int)
        eyes = np.s_[min(ey0, ey1) - 8 : max(ey0, ey1) + 8, ex0:ex1]
        changed = np.abs(kept.frames[i][eyes].astype(int) - frame[eyes].astype(int))
        assert changed.mean() > 40


# -- regions ----------------------------------------------------------------------------------
def crop_coords(kps: np.ndarray, side: int) -> np.ndarray:
    """Every frame pixel's position in the aligned crop of this face: [h, w, 2] (x, y)."""
    matrix = align_matrix(kps, side)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    points = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64)
    return points @ matrix.T


def in_block(coords: np.ndarray, side: int, label: int, grow: float) -> np.ndarray:
    """Pixels whose crop position is in the parser layout's block of `label` (grown by `grow`
    crop pixels; negative shrinks)."""
    [(rows, cols)] = [(r, c) for lab, r, c in PARSER_LAYOUT if lab == label]
    cell = side / (PARSER_SIDE / 32)  # a layout cell is 32 px of the parser's 512
    x, y = coords[..., 0], coords[..., 1]
    return (
        (x >= cols.start * cell - grow) & (x < cols.stop * cell + grow)
        & (y >= rows.start * cell - grow) & (y < rows.stop * cell + grow)
    )  # fmt: skip


def test_regions_leave_every_pixel_outside_the_chosen_regions_unchanged(
    held: list, painted: FrameBatch, store: Path, folder: Path
) -> None:
    frames = np.stack([f for f, _ in held])
    mouth_only = swap(frames, store, folder, regions=["mouth"])
    for i, frame in enumerate(frames):
        coords = crop_coords(kps_of(mouth_only, i), 128)
        # The mask's soft edge fades inwards (masks.soften); only the parser's 512 → 128
        # resize and the warp back interpolate across the edge: 2 crop px beyond the block
        # nothing is touched.
        outside = ~in_block(coords, 128, MOUTH, grow=2)
        assert np.array_equal(mouth_only.frames[i][outside], frame[outside])
        inside = in_block(coords, 128, MOUTH, grow=-2)
        assert inside.sum() > 1000
        diff = np.abs(mouth_only.frames[i].astype(int) - frame.astype(int)).max(-1)
        assert (diff[inside] > 0).mean() > 0.95
        # Without regions the swap reaches well beyond the mouth.
        whole_diff = np.abs(painted.frames[i].astype(int) - frame.astype(int)).max(-1)
        assert (whole_diff[outside] > 0).sum() > 5 * inside.sum()


def test_an_unknown_region_is_an_invalid_manifest_naming_the_field() -> None:
    text = (
        "version: 1\ninputs: [v.mp4]\n"
        "chain: [{swap: {source: s.jpg, regions: [skin, lips], pixel_boost: 300}}]\n"
    )
    with pytest.raises(ManifestInvalid) as err:
        load_manifest(text.encode())
    found = {e.field: e.message for e in err.value.errors}
    assert "chain[0].swap.regions" in found and "'lips'" in found["chain[0].swap.regions"]
    assert "upper-lip" in found["chain[0].swap.regions"]  # it says what would do
    assert "chain[0].swap.pixel_boost" in found


# -- pixel boost ------------------------------------------------------------------------------
@pytest.mark.parametrize("side", [128, 256, 512])
def test_pixel_boost_swaps_interleaved_sub_grids(tmp_path: Path, side: int) -> None:
    # A swapper that moves its 128 px input one pixel right moves each sub-grid one of its own
    # pixels, k crop pixels: split into every k-th pixel, not tiles (tiles would move one
    # pixel, with a seam of zeros every 128).
    swapper = Swapper(
        build_spatial_swapper(tmp_path / "shift.onnx", shift=1), ["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(3)
    crop = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = swapper.swap(crop, np.zeros((1, 512), np.float32))
    k = side // 128
    assert out.shape == crop.shape
    assert np.array_equal(out[:, k:], crop[:, :-k])
    assert not out[:, :k].any()


def test_pixel_boost_pastes_inside_the_larger_crops_box_and_keeps_more_detail(
    clip: np.ndarray, store: Path, folder: Path
) -> None:
    boosted = swap(clip, store, folder, pixel_boost=256, occlusion=True, regions=["skin", "mouth"])
    ident_128 = swap(clip, store, folder, model=IDENTITY)
    ident_256 = swap(clip, store, folder, model=IDENTITY, pixel_boost=256)
    for i, frame in enumerate(clip):
        x0, y0, x1, y1 = box_of(align_matrix(kps_of(boosted, i), 256), 256, WIDTH, HEIGHT)
        changed = np.argwhere((boosted.frames[i] != frame).any(-1))
        assert len(changed) > 1000
        assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1
        assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
        # An identity swap gives back the face through a crop: 256 px loses less than 128.
        fx0, fy0, fx1, fy1 = boosted.annotations["faces"][i][0].box.astype(int)
        face = np.s_[fy0:fy1, fx0:fx1]
        error = {
            side: np.abs(out.frames[i][face].astype(int) - frame[face].astype(int)).mean()
            for side, out in ((128, ident_128), (256, ident_256))
        }
        assert error[256] < 0.7 * error[128], error


# -- the models the options need --------------------------------------------------------------
def test_models_check_lists_the_occluder_and_parser_a_manifest_asks_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from dropbatch.cli import main

    models = tmp_path / "models"
    build_occluder(models / "xseg_1.onnx")  # the parser is missing
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "version: 1\ninputs: [v.mp4]\n"
        "chain: [{swap: {source: s.jpg, occlusion: true, regions: [skin]}}]\n"
    )
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "cache"))
    code = main(["models", "check", "--store", str(models), "--manifest", str(manifest), "--json"])
    states = {
        (f["model"], f["file"]): f["state"] for f in json.loads(capsys.readouterr().out)["files"]
    }
    assert states[("xseg_1", "xseg_1.onnx")] == "unpinned"
    assert states[("bisenet_resnet_34", "bisenet_resnet_34.onnx")] == "missing"
    assert code != 0


def test_trigger_refuses_occlusion_when_the_occluder_is_not_in_the_store(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from core.status.model import JobState
    from tests.test_model_store import FILES, PACK, trigger_swap_job, write_store

    folder = write_store(
        tmp_path / "models", FILES, {"test_pack": PACK, "test_sw": {"files": ["a.onnx"]}}
    )
    swap = (
        b"{source: face.jpg, analyser: test_pack, model: test_sw, occlusion: true,"
        b" occluder: xseg_2}"
    )
    record = trigger_swap_job(deployment, monkeypatch, folder, swap)
    assert record.state == JobState.INVALID
    assert record.error.code == "MODEL_MISSING"
    assert "xseg_2.onnx" in record.error.message, record.error.message
    assert record.error.field == "chain[0].swap.occluder"


def test_a_file_that_is_not_the_mask_model_it_is_named_as_is_refused_with_its_shapes(
    tmp_path: Path,
) -> None:
    occluder = build_occluder(tmp_path / "xseg_1.onnx")
    parser = build_parser(tmp_path / "bisenet_resnet_34.onnx")
    with pytest.raises(MaskModelUnusable) as err:
        FaceParser(occluder, ["CPUExecutionProvider"])
    assert err.value.code == "MODEL_INCOMPATIBLE"
    assert "xseg_1.onnx is not a BiSeNet face parser" in str(err.value)
    assert "input[n,256,256,3]" in str(err.value)
    with pytest.raises(MaskModelUnusable, match=r"bisenet_resnet_34\.onnx is not an XSeg occluder"):
        Occluder(parser, ["CPUExecutionProvider"])


# -- the frame's edge -------------------------------------------------------------------------
def test_a_face_at_the_frame_edge_gets_no_dark_fringe(
    clip: np.ndarray, store: Path, folder: Path, real_asset
) -> None:
    """The real frame moved left until the face's left side leaves the frame (the right strip
    repeats the last column): the aligned crop reaches past the edge. With the crop's outside
    filled black, the swap darkened the frame's edge column by some 40 levels on this face."""
    detector = FaceAnalyser(
        real_asset("scrfd_500m_bnkps.onnx"), None, det_size=320, providers=["CPUExecutionProvider"]
    )
    box = detector.detect(clip[0])[0].box
    dx = int((box[0] + box[2]) / 2 - 0.3 * (box[2] - box[0]))
    moved = cv2.copyMakeBorder(clip[0][:, dx:], 0, 0, 0, dx, cv2.BORDER_REPLICATE)
    out = swap(moved[None], store, folder, model=IDENTITY)
    x0, y0, _, y1 = out.annotations["faces"][0][0].box.astype(int)
    assert x0 < 4, "the face should touch the frame's left edge"
    rows = slice(max(0, y0), min(HEIGHT, y1))
    # The identity swapper gives the face back (resampled through its 128 px crop): the edge
    # columns keep their level.
    for column in (0, 1):
        before = moved[rows, column].astype(float).mean()
        after = out.frames[0][rows, column].astype(float).mean()
        assert abs(after - before) < 3, (column, before, after)
