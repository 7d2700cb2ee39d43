"""The enhance step on its own and after the real swap: alignment, paste-back, blend, batching.

Models: test restorers with the exact signatures of FaceFusion's GFPGAN/GPEN/CodeFormer exports
(tests/enhance_models.py), the test analyser pack of tests/face_models.py, and for the
geometry the real SCRFD-500m on a real portrait. Frames are made from real photos.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from core.domain import VideoInfo
from processors.base import ProcessorContext
from processors.chain import concat_batches
from processors.enhance.align import aligned_crop, ffhq_matrix, ffhq_template
from processors.enhance.processor import EnhanceProcessor, EnhanceSetupError
from processors.faces import FaceAnalyser, faces_of
from processors.media.frames import FrameBatch
from processors.swap.options import SwapOptions
from processors.swap.paste import box_of
from processors.swap.processor import SwapProcessor
from tests.enhance_models import build_enhance_store, build_restorer, restyle
from tests.face_models import (
    FRAME_H,
    FRAME_W,
    build_detector,
    build_face_store,
    build_recognizer,
    build_swapper,
    two_people,
)
from tests.face_models import frame_faces as known_faces
from tests.media_fixtures import encode_frames

SIZE = 512  # the models' crop
REAL_PACK = "scrfd_500m_mbf"


def context(frames: np.ndarray, store: Path, folder: Path | None = None) -> ProcessorContext:
    count, height, width = frames.shape[:3]
    info = VideoInfo(
        duration=count / 25, fps_num=25, fps_den=1, frame_count=count, width=width, height=height
    )
    return ProcessorContext(
        info=info, rate=Fraction(25), width=width, height=height, folder=folder,
        model_store=str(store), frames=count,
    )  # fmt: skip


def run(
    processor, frames: np.ndarray, step: int = 8, annotations: dict | None = None
) -> FrameBatch:
    """Push the frames `step` at a time (with their annotations, if any), then flush."""
    out = []
    for i in range(0, len(frames), step):
        part = {k: v[i : i + step] for k, v in (annotations or {}).items()}
        out.append(
            processor.push(
                FrameBatch(frames[i : i + step], np.arange(i, i + len(frames[i : i + step])), part)
            )
        )
    out.append(processor.flush())
    return concat_batches([b for b in out if len(b)])


@pytest.fixture(autouse=True)
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "model-cache"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test analyser pack (test_faces), the test swapper and the three restorers."""
    return build_enhance_store(build_face_store(tmp_path_factory.mktemp("enhance-store")))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Four frames of two people (real photos), the third with nobody in it."""
    rng = np.random.default_rng(4)
    base = two_people()
    noise = rng.integers(-2, 3, size=(4, *base.shape), dtype=np.int16)
    frames = np.clip(base[None].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    frames[2] = 0
    return frames


def face_boxes(faces) -> list[tuple[int, int, int, int]]:
    """The frame boxes the restored crops of these faces cover (where a paste may write)."""
    return [box_of(ffhq_matrix(f.kps, SIZE), SIZE, 640, 360) for f in faces]


def inside(boxes, height: int = 360, width: int = 640) -> np.ndarray:
    area = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        area[y0:y1, x0:x1] = True
    return area


OWN = {"analyser": "test_faces"}  # the test pack's detector finds both faces of `two_people`


def test_frames_without_faces_pass_through_and_only_face_boxes_change(
    store: Path, frames: np.ndarray
) -> None:
    out = run(EnhanceProcessor({**OWN, "blend": 100}, context(frames, store)), frames, step=4)
    assert out.indices.tolist() == list(range(len(frames)))
    faces = faces_of(out)  # our own detection goes on with the frames, for a later step
    assert faces is not None and [len(f) for f in faces] == [2, 2, 0, 2]
    for i, (before, after) in enumerate(zip(frames, out.frames, strict=True)):
        if not faces[i]:
            assert np.array_equal(before, after), f"frame {i} has no face and was changed"
            continue
        area = inside(face_boxes(faces[i]))
        assert np.array_equal(before[~area], after[~area]), f"frame {i}: changed outside"
        for x0, y0, x1, y1 in (np.round(f.box).astype(int) for f in faces[i]):
            change = np.abs(after[y0:y1, x0:x1].astype(int) - before[y0:y1, x0:x1]).mean()
            assert change > 4, f"frame {i}: a face was left as it was ({change:.1f})"


def test_target_largest_restores_only_the_largest_face(store: Path, frames: np.ndarray) -> None:
    first = frames[:1]
    out = run(EnhanceProcessor({**OWN, "target": "largest"}, context(first, store)), first)
    [[largest, other]] = faces_of(out)
    assert largest.area > other.area
    changed = np.abs(out.frames[0].astype(int) - first[0]).max(axis=2) > 0
    assert changed[inside(face_boxes([largest]))].any()
    assert not changed[~inside(face_boxes([largest]))].any()


def test_blend_mixes_the_restored_face_with_the_face_as_it_was(
    store: Path, frames: np.ndarray
) -> None:
    first = frames[:1]
    by_blend = {
        blend: run(EnhanceProcessor({**OWN, "blend": blend}, context(first, store)), first).frames
        for blend in (0, 50, 100)
    }
    assert np.array_equal(by_blend[0], first)  # blend 0: not even a resampled copy
    # blend 100 is the model's output: in the middle of each face (mask 1 there), the test
    # model's colour change of the pixels, up to the crop's resampling.
    faces = faces_of(
        EnhanceProcessor(OWN, context(first, store)).push(FrameBatch(first, np.arange(1)))
    )
    for frame, restored, frame_faces in zip(first, by_blend[100], faces, strict=True):
        for face in frame_faces:
            cx, cy = np.round(face.kps[2]).astype(int)  # the nose
            patch = np.s_[cy - 20 : cy + 20, cx - 20 : cx + 20]
            expected = restyle(frame[patch]).astype(int)
            assert np.abs(restored[patch].astype(int) - expected).mean() < 4
    # blend 50 is halfway, to the rounding of two blends.
    halfway = (first.astype(int) + by_blend[100].astype(int)) / 2
    assert np.abs(by_blend[50] - halfway).max() <= 1.0


def test_batch_8_equals_batch_1_and_chunks_equal_one_pass(
    store: Path, frames: np.ndarray, tmp_path: Path
) -> None:
    ctx = context(frames, store)
    eight = EnhanceProcessor({**OWN, "batch_size": 8}, ctx)
    assert eight.restorer.batch_size == 8
    whole = run(eight, frames, step=len(frames))  # every face of the clip in one model call
    one = run(EnhanceProcessor({**OWN, "batch_size": 1}, ctx), frames, step=1)
    assert np.array_equal(one.frames, whole.frames)
    # The same model exported with its batch fixed at 1: one face per call, the same result.
    fixed = build_enhance_store(build_face_store(tmp_path / "fixed"), batch=1)
    proc = EnhanceProcessor({**OWN, "batch_size": 8}, context(frames, fixed))
    assert proc.restorer.fixed_batch == proc.restorer.batch_size == 1
    assert np.array_equal(run(proc, frames, step=3).frames, whole.frames)


def test_codeformer_gets_its_fidelity_weight(store: Path, frames: np.ndarray) -> None:
    first = frames[:1]
    ctx = context(first, store)
    gfpgan = run(EnhanceProcessor({**OWN, "blend": 100}, ctx), first).frames
    results = {}
    for weight in (0.0, 1.0):
        options = {**OWN, "model": "codeformer", "blend": 100, "weight": weight}
        proc = EnhanceProcessor(options, ctx)
        assert proc.restorer.has_weight
        results[weight] = run(proc, first).frames
    # weight 0: all restoration (the test CodeFormer is then the test GFPGAN, to the byte);
    # weight 1: the face as it came, up to the crop's resampling there and back.
    assert np.array_equal(results[0.0], gfpgan)
    kept = np.abs(results[1.0].astype(int) - first).mean()
    restored = np.abs(results[0.0].astype(int) - first).mean()
    assert kept < 0.5 and restored > 4 * kept, (kept, restored)


def test_a_file_that_is_not_a_restorer_is_refused_by_name(
    frames: np.ndarray, tmp_path: Path
) -> None:
    folder = build_face_store(tmp_path / "wrong")
    build_swapper(folder / "gfpgan_1.4.onnx")  # a swapper under the restorer's name
    with pytest.raises(EnhanceSetupError) as refused:
        EnhanceProcessor(OWN, context(frames, folder))
    assert refused.value.code == "MODEL_INCOMPATIBLE"
    assert "gfpgan_1.4.onnx" in str(refused.value) and "[1,3,128,128]" in str(refused.value)
    build_recognizer(folder / "codeformer.onnx")  # one image in, but an embedding out
    with pytest.raises(EnhanceSetupError, match=r"codeformer\.onnx.*683\[1,512\]") as refused:
        EnhanceProcessor({**OWN, "model": "codeformer"}, context(frames, folder))
    assert refused.value.code == "MODEL_INCOMPATIBLE"
    with pytest.raises(EnhanceSetupError) as missing:
        EnhanceProcessor({**OWN, "model": "gpen_bfr_512"}, context(frames, folder))
    assert missing.value.code == "MODEL_MISSING" and "gpen_bfr_512.onnx" in str(missing.value)


def test_enhance_restores_the_faces_swap_hands_on_without_detecting_again(
    store: Path, frames: np.ndarray, tmp_path: Path
) -> None:
    side = tmp_path / "side"
    side.mkdir()
    source = two_people(cameraman=False)
    cv2.imwrite(str(side / "source.png"), cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
    ctx = context(frames, store, side)
    swap = SwapProcessor(
        SwapOptions(analyser="test_faces", model="test_swapper", source=["source.png"],
                    target="all"),
        ctx,
    )  # fmt: skip
    swapped = run(swap, frames, step=3)
    faces = faces_of(swapped)
    assert faces is not None and sum(map(len, faces)) >= 4
    # An analyser pack the store does not hold: enhance can only work from swap's faces.
    options = {"analyser": "no_such_pack", "blend": 100, "batch_size": 4}
    enhanced = EnhanceProcessor(options, ctx).push(swapped)
    assert enhanced.annotations["faces"] is swapped.annotations["faces"]
    for i, frame_faces in enumerate(faces):
        before, after = swapped.frames[i], enhanced.frames[i]
        if not frame_faces:
            assert np.array_equal(before, after)
            continue
        area = inside(face_boxes(frame_faces))
        assert np.array_equal(before[~area], after[~area])
        assert np.abs(after[area].astype(int) - before[area]).mean() > 5
    # The same frames without swap's annotation need the detector, and there is none.
    with pytest.raises(EnhanceSetupError, match="no_such_pack") as no_pack:
        EnhanceProcessor(options, ctx).push(FrameBatch(swapped.frames, swapped.indices))
    assert no_pack.value.code == "MODEL_MISSING"


# -- geometry on a real face with the real detector ------------------------------------------
@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory, real_asset) -> Path:
    """The real light analyser pack and an identity restorer under gpen_bfr_512's name."""
    folder = tmp_path_factory.mktemp("enhance-real")
    for name in ("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx"):
        shutil.copy(real_asset(name), folder / name)
    build_restorer(folder / "gpen_bfr_512.onnx", identity=True)
    return folder


def test_a_real_face_is_aligned_to_the_ffhq_template_and_pasted_back_in_place(
    real_store: Path, real_asset
) -> None:
    portrait = cv2.cvtColor(cv2.imread(str(real_asset("obama.jpg"))), cv2.COLOR_BGR2RGB)
    frames = portrait[None]
    options = {"analyser": REAL_PACK, "model": "gpen_bfr_512", "blend": 100}
    out = EnhanceProcessor(options, context(frames, real_store)).push(
        FrameBatch(frames, np.arange(1))
    )
    [[face]] = faces_of(out)
    # The crop the model sees: the real detector finds the face in it again with its eyes and
    # nose where the FFHQ template has them (the template's, not the swapper's ArcFace points).
    matrix = ffhq_matrix(face.kps, SIZE)
    # The least-squares similarity: no other (OpenCV's robust fit included) lands the five
    # points closer to the template; a real face is not the template, so not exactly on it.
    template = ffhq_template(SIZE)

    def misfit(m: np.ndarray) -> float:
        return float(((np.c_[face.kps, np.ones(5)] @ m.T - template) ** 2).sum())

    opencv, _ = cv2.estimateAffinePartial2D(face.kps, template, method=cv2.LMEDS)
    assert misfit(matrix) <= misfit(opencv) + 1e-6
    crop = aligned_crop(portrait, matrix, SIZE)
    detector = FaceAnalyser(real_store / "scrfd_500m_bnkps.onnx", None)
    [again] = detector.detect(crop)
    off = np.linalg.norm(again.kps[:3] - template[:3], axis=1)
    assert off.max() < 8, off
    # Restored by an identity model and pasted back, the face lands where it was: no shift
    # (phase correlation over the face box, in frame pixels) and only resampling's blur.
    x0, y0, x1, y1 = np.round(face.box).astype(int)
    before = portrait[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
    after = out.frames[0][y0:y1, x0:x1].astype(np.float32).mean(axis=2)
    (dx, dy), _ = cv2.phaseCorrelate(before, after)
    assert abs(dx) < 0.25 and abs(dy) < 0.25, (dx, dy)
    assert np.abs(after - before).mean() < 4
    area = inside([box_of(matrix, SIZE, portrait.shape[1], portrait.shape[0])], *portrait.shape[:2])
    assert np.array_equal(out.frames[0][~area], portrait[~area])


def test_a_detector_without_landmarks_is_refused_when_enhance_must_detect(
    store: Path, frames: np.ndarray, tmp_path: Path
) -> None:
    folder = build_enhance_store(tmp_path / "no-landmarks")
    build_detector(folder / "boxes_only.onnx", list(known_faces()), landmarks=False)
    build_recognizer(folder / "rec.onnx")
    pack = {"files": ["boxes_only.onnx", "rec.onnx"], "role": "analyser",
            "modules": {"boxes_only.onnx": "detection", "rec.onnx": "recognition"}}  # fmt: skip
    (folder / "catalog.yaml").write_text(yaml.safe_dump({"models": {"boxes_only": pack}}))
    proc = EnhanceProcessor({"analyser": "boxes_only"}, context(frames, folder))
    with pytest.raises(EnhanceSetupError, match="no face landmarks") as refused:
        proc.push(FrameBatch(frames[:1], np.arange(1)))
    assert refused.value.code == "MODEL_INCOMPATIBLE"


# -- the trigger's model check, chain-aware ---------------------------------------------------
def test_after_swap_the_trigger_asks_no_detector_of_enhance(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Enhance's analyser pack (default buffalo_l, absent from this store) is loaded only when
    no earlier step hands faces on: after swap the job runs; alone, the trigger refuses it
    naming the option."""
    from core.status.model import JobState
    from core.storage.local import LocalStore
    from tests.test_trigger import deliver, put, records, wait_done
    from triggers import main as trigger_main

    folder = build_enhance_store(build_face_store(tmp_path / "models"))
    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(folder))
    trigger_main.intake.cache_clear()
    inbox = LocalStore(deployment["root"])
    (deployment["inbox"] / "e").mkdir()
    people = [two_people()] * 6  # the test detector's two faces, where it finds them
    encode_frames(deployment["inbox"] / "e/clip.mp4", people, fps=25, size=(FRAME_W, FRAME_H))
    face = cv2.cvtColor(two_people(cameraman=False), cv2.COLOR_RGB2BGR)
    put(deployment, "e/face.png", cv2.imencode(".png", face)[1].tobytes())
    swap = "{swap: {source: face.png, analyser: test_faces, model: test_swapper}}"
    put(
        deployment,
        "e/job.yaml",
        f"version: 1\ninputs: [clip.mp4]\nchain: [{swap}, enhance]\n"
        "compute: {gpu: none}\n".encode(),
    )
    assert deliver(inbox, "inbox", "e/job.yaml") == 200
    [record] = records(deployment)
    assert record.state != JobState.INVALID, record.errors
    # It ran: enhance restored the faces swap handed on (its own detector is not there).
    done = wait_done(record.job_id)
    assert done.state == JobState.SUCCEEDED, done.error

    put(deployment, "f/clip.mp4", video=6)
    put(deployment, "f/job.yaml", b"version: 1\ninputs: [clip.mp4]\nchain: [enhance]\n")
    assert deliver(inbox, "inbox", "f/job.yaml") == 200
    alone = next(r for r in records(deployment) if r.manifest == "f/job.yaml")
    assert alone.state == JobState.INVALID
    assert (alone.error.code, alone.error.field) == ("MODEL_MISSING", "chain[0].enhance.analyser")
    assert "buffalo_l" in alone.error.message
