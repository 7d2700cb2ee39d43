"""The swap against insightface's own INSwapper, on real frames with real detections.

insightface 0.7.3's `INSwapper` runs the swapper file with insightface's own SCRFD-500m and
ArcFace MBF (the real files of tests/real_assets.py, through insightface's model zoo), its own
alignment, latent and channel order, and returns the swapped crop; pasted into the frame with
the same feathered paste our step uses, it must equal our swap step's output within one level
per pixel. The swapper is a test model with inswapper_128's signature whose output channels
are different mixes of the input channels plus a tint from the source identity, so reading or
writing the channels in the wrong order, or ignoring the identity, fails.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from onnx import helper

from processors.faces import FaceAnalyser
from processors.swap.paste import paste_back
from tests.face_models import _init, _save
from tests.mask_models import add_test_swapper, inswapper_graph
from tests.real_chain import build_real_store
from tests.test_swap_masks import clip as clip
from tests.test_swap_masks import folder as folder
from tests.test_swap_masks import swap

SWAPPER = "channel_swapper"
PAD = 400  # px of repeated edge, more than the crop reaches past the frame
# Each output channel its own mix of R, G, B (rows: output R, G, B; every row sums below 1, so
# a one-level difference in the crop stays one level).
MIX = np.array([[0.15, 0.55, 0.2], [0.6, 0.1, 0.25], [0.1, 0.25, 0.5]], np.float32)


def build_channel_swapper(path: Path, seed: int = 3) -> Path:
    """target [1,3,128,128] (RGB 0..1) + source [1,512] → clip(MIX · target + 0.15 ·
    tanh(source · tint)) per channel; the 512×512 emap last."""
    rng = np.random.default_rng(seed)
    tint = rng.standard_normal((512, 3)).astype(np.float32)
    emap = (rng.standard_normal((512, 512)) / np.sqrt(512)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["target", "mix"], ["mixed"]),
        helper.make_node("MatMul", ["source", "tint"], ["who"]),
        helper.make_node("Tanh", ["who"], ["who_t"]),
        helper.make_node("Mul", ["who_t", "scale"], ["who_s"]),
        helper.make_node("Reshape", ["who_s", "shape_c"], ["who_c"]),
        helper.make_node("Add", ["mixed", "who_c"], ["raw"]),
        helper.make_node("Clip", ["raw", "zero", "one"], ["output"]),
    ]
    inits = [
        _init("mix", MIX.reshape(3, 3, 1, 1)),
        _init("tint", tint),
        _init("scale", np.array(0.15, np.float32)),
        _init("shape_c", np.array([1, 3, 1, 1], np.int64)),
        _init("zero", np.array(0.0, np.float32)),
        _init("one", np.array(1.0, np.float32)),
        _init("emap", emap),  # last: where an inswapper carries it
    ]
    return _save(inswapper_graph(nodes, "inswapper_channel_test", inits), path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, real_asset) -> Path:
    folder = build_real_store(tmp_path_factory.mktemp("models"), real_asset)
    build_channel_swapper(folder / "channel_swapper.onnx")
    add_test_swapper(folder, SWAPPER, "channel_swapper.onnx", "tests/test_swap_reference.py")
    return folder


def insightface_swap(frame: np.ndarray, portrait: np.ndarray, store: Path, real_asset):
    """insightface's own pipeline, BGR as it works: (the swapped crop as RGB, its affine).

    The faces are found by our SCRFD reader on the same real SCRFD-500m file: insightface's
    own detector cannot decode this export's batch-dimension outputs (processors/scrfd.py);
    from the five landmarks on — alignment, ArcFace embedding, latent, swap, channel order —
    every step is insightface's."""
    from insightface.app.common import Face
    from insightface.model_zoo import get_model
    from insightface.model_zoo.inswapper import INSwapper

    providers = ["CPUExecutionProvider"]
    detector = FaceAnalyser(
        real_asset("scrfd_500m_bnkps.onnx"), None, det_size=320, providers=providers
    )
    recogniser = get_model(str(real_asset("w600k_mbf.onnx")), providers=providers)
    recogniser.prepare(ctx_id=-1)

    def largest(rgb: np.ndarray) -> Face:
        found = detector.detect(rgb)[0]
        return Face(bbox=found.box, kps=found.kps, det_score=found.score)

    source = largest(portrait)
    recogniser.get(portrait[..., ::-1].copy(), source)
    swapper = INSwapper(str(store / "channel_swapper.onnx"))
    # This clip's faces fill the frame's height, so the aligned crop reaches past the frame:
    # insightface fills that black, our step repeats the edge (a face at the edge would get a
    # dark fringe). The frame goes in with its edge repeated PAD pixels out, which is what our
    # crop sees; the affine is taken back to the frame's own pixels.
    target = largest(frame)
    target.kps = target.kps.astype(np.float64) + PAD  # exact: float32 would shift the crop
    padded = cv2.copyMakeBorder(frame[..., ::-1], PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)
    bgr_crop, matrix = swapper.get(padded, target, source, paste_back=False)
    matrix = matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([PAD, PAD], np.float64)
    return np.ascontiguousarray(bgr_crop[..., ::-1]), matrix


def test_the_swap_equals_insightfaces_inswapper_within_one_level(
    clip: np.ndarray, store: Path, folder: Path, real_asset
) -> None:
    portrait = cv2.cvtColor(cv2.imread(str(folder / "faces" / "astronaut.png")), cv2.COLOR_BGR2RGB)
    ours = swap(clip, store, folder, model=SWAPPER)
    for i, frame in enumerate(clip):
        crop, matrix = insightface_swap(frame, portrait, store, real_asset)
        expected = frame.copy()
        box = paste_back(expected, crop, matrix)
        assert box is not None
        x0, y0, x1, y1 = box
        diff = np.abs(ours.frames[i].astype(int) - expected.astype(int)).max(-1)
        # Within one level: insightface truncates its output to bytes, we round. The two
        # affines agree to ~1e-6 px (skimage's fit and ours), but OpenCV's warp snaps sample
        # positions to 1/32 px, so on a sharp edge a handful of samples land in the next bin:
        # two levels there, on at most 1 pixel in 10,000.
        assert diff.max() <= 2 and (diff > 1).sum() <= diff.size // 10_000, (
            i, diff.max(), (diff > 1).sum(),
        )  # fmt: skip
        # The swap changed the face a lot: the check is not of a no-op.
        assert np.abs(expected[y0:y1, x0:x1].astype(int) - frame[y0:y1, x0:x1]).mean() > 20
