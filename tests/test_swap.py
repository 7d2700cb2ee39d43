"""The swap step with test models of the real signatures (tests/face_models.py), loaded by our own
onnxruntime code (the swapper's inputs found by processors/swap/swapper.py), on frames composed
from real photos (the astronaut left, the cameraman right)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.domain import VideoInfo
from processors.base import ProcessorContext
from processors.chain import ChainSetupError, build_processor
from processors.faces import ANNOTATION, Face
from processors.media.frames import FrameBatch
from processors.swap.paste import box_of, paste_back
from processors.swap.tracking import FaceTracks, Targeting, decide
from tests.face_models import FRAME_H, FRAME_W, build_face_store, frame_faces, two_people

MODELS = {"analyser": "test_faces", "model": "test_swapper"}


@pytest.fixture(autouse=True)
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "model-cache"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_face_store(tmp_path_factory.mktemp("models"))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Side images: each person alone (the other blacked out), both, and neither."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for name, frame in {
        "astronaut.png": two_people(cameraman=False),
        "cameraman.png": two_people(astronaut=False),
        "both.png": two_people(),
        "nobody.png": np.zeros((FRAME_H, FRAME_W, 3), np.uint8),
    }.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return tmp_path


def ctx_for(store: Path, folder: Path, tmp_path: Path) -> ProcessorContext:
    info = VideoInfo(
        duration=1.0, fps_num=25, fps_den=1, frame_count=25, width=FRAME_W, height=FRAME_H
    )
    return ProcessorContext(
        info=info, rate=Fraction(25), width=FRAME_W, height=FRAME_H, folder=folder,
        model_store=str(store),
    )  # fmt: skip


def run(processor, frames: list[np.ndarray]) -> FrameBatch:
    batch = FrameBatch(np.stack(frames), np.arange(len(frames), dtype=np.int64))
    outs = [processor.push(batch), processor.flush()]
    outs = [o for o in outs if len(o)]
    return FrameBatch(
        np.concatenate([o.frames for o in outs]),
        np.concatenate([o.indices for o in outs]),
        {ANNOTATION: [f for o in outs for f in o.annotations[ANNOTATION]]},
    )


def changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero((before != after).any(axis=2))
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def inside(box: tuple[int, int, int, int], face_box: tuple[float, ...]) -> bool:
    cx, cy = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def swap(store: Path, images: Path, tmp_path: Path, **options):
    return build_processor("swap", {**MODELS, **options}, ctx_for(store, images, tmp_path))


def test_largest_face_is_changed_and_nothing_outside_its_box(
    store: Path, images: Path, tmp_path: Path
) -> None:
    frame = two_people()
    proc = swap(store, images, tmp_path, source="faces/cameraman.png", target="largest")
    out = run(proc, [frame] * 3)
    astronaut, cameraman = frame_faces()
    for k in range(3):
        box = changed_box(frame, out.frames[k])
        assert box is not None and inside(box, astronaut.box)
        assert not inside(box, cameraman.box)
        # Every changed pixel lies inside the box the paste-back reports for that face.
        [chosen] = [f for f in out.annotations[ANNOTATION][k] if f.identity is not None]
        from processors.faces import align_matrix

        x0, y0, x1, y1 = box_of(align_matrix(chosen.kps, 128), 128, FRAME_W, FRAME_H)
        outside = np.ones(frame.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(out.frames[k][outside], frame[outside])
        # And the face itself really changed, not just its edge.
        ax0, ay0, ax1, ay1 = (int(v) for v in astronaut.box)
        diff = np.abs(out.frames[k][ay0:ay1, ax0:ax1].astype(int) - frame[ay0:ay1, ax0:ax1])
        assert diff.mean() > 20


def test_faces_are_published_for_later_steps(store: Path, images: Path, tmp_path: Path) -> None:
    proc = swap(store, images, tmp_path, source="faces/astronaut.png", target="all")
    out = run(proc, [two_people()] * 2)
    faces = out.annotations[ANNOTATION][0]
    assert [f.identity for f in faces] == [0, 0]
    assert all(isinstance(f, Face) and f.kps.shape == (5, 2) for f in faces)
    expected = frame_faces()
    for face, known in zip(faces, expected, strict=True):
        assert np.allclose(face.box, known.box, atol=1)
    # A track keeps its id from frame to frame.
    assert [f.track for f in out.annotations[ANNOTATION][1]] == [f.track for f in faces]


def test_reference_picks_the_person_in_the_reference_image(
    store: Path, images: Path, tmp_path: Path
) -> None:
    frame = two_people()
    astronaut, cameraman = frame_faces()
    proc = swap(
        store, images, tmp_path, source="faces/astronaut.png", target="reference",
        reference="faces/cameraman.png",
    )  # fmt: skip
    out = run(proc, [frame] * 2)
    box = changed_box(frame, out.frames[0])
    assert box is not None and inside(box, cameraman.box) and not inside(box, astronaut.box)
    who = [f.identity for f in out.annotations[ANNOTATION][0]]
    assert who == [None, 0]  # largest first: astronaut, cameraman


def test_face_map_swaps_each_person_for_their_own_source(
    store: Path, images: Path, tmp_path: Path
) -> None:
    frame = two_people()
    astronaut, cameraman = frame_faces()
    face_map = [
        {"reference": "faces/cameraman.png", "source": "faces/astronaut.png"},
        {"reference": "faces/astronaut.png", "source": "faces/cameraman.png"},
    ]
    out = run(swap(store, images, tmp_path, face_map=face_map), [frame])
    assert [f.identity for f in out.annotations[ANNOTATION][0]] == [1, 0]
    # Each face got its own identity: the two swapped faces differ from a single-source swap.
    single = run(swap(store, images, tmp_path, source="faces/cameraman.png", target="all"), [frame])
    ax0, ay0, ax1, ay1 = (int(v) for v in astronaut.box)
    cx0, cy0, cx1, cy1 = (int(v) for v in cameraman.box)
    mapped, same = out.frames[0], single.frames[0]
    assert np.array_equal(mapped[ay0:ay1, ax0:ax1], same[ay0:ay1, ax0:ax1])
    assert not np.array_equal(mapped[cy0:cy1, cx0:cx1], same[cy0:cy1, cx0:cx1])


def test_frames_without_a_face_pass_through_unchanged(
    store: Path, images: Path, tmp_path: Path
) -> None:
    black = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    proc = swap(store, images, tmp_path, source="faces/astronaut.png", max_gap=0)
    out = run(proc, [black, two_people(), black])
    assert np.array_equal(out.frames[0], black) and np.array_equal(out.frames[2], black)
    assert out.annotations[ANNOTATION][0] == [] and out.annotations[ANNOTATION][2] == []
    assert changed_box(two_people(), out.frames[1]) is not None


def test_a_face_missed_for_a_frame_keeps_its_last_landmarks(
    store: Path, images: Path, tmp_path: Path
) -> None:
    # The cameraman is missed on frame 1 (his tile is blacked out); the astronaut stays.
    frames = [two_people(), two_people(cameraman=False), two_people()]
    proc = swap(store, images, tmp_path, source="faces/astronaut.png", target="all")
    out = run(proc, frames)
    carried = [f for f in out.annotations[ANNOTATION][1] if f.carried]
    assert len(carried) == 1
    assert np.allclose(carried[0].kps, out.annotations[ANNOTATION][0][1].kps)
    assert carried[0].track == out.annotations[ANNOTATION][0][1].track


@pytest.mark.parametrize(
    ("image", "message"),
    [("faces/nobody.png", "no face found in faces/nobody.png"),
     ("faces/both.png", "2 faces in faces/both.png")],
)  # fmt: skip
def test_a_source_image_must_show_exactly_one_face(
    store: Path, images: Path, tmp_path: Path, image: str, message: str
) -> None:
    with pytest.raises(ChainSetupError, match=message):
        swap(store, images, tmp_path, source=["faces/astronaut.png", image])


def test_a_corrupt_model_stops_the_step_before_loading(
    store: Path, images: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad-store"
    bad.mkdir()
    for f in store.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = bytearray((bad / "test_swapper.onnx").read_bytes())
    data[-5] ^= 0x55  # inside emap: still loads as ONNX, but not the catalogued file
    (bad / "test_swapper.onnx").write_bytes(bytes(data))
    with pytest.raises(ChainSetupError, match=r"test_swapper: test_swapper\.onnx .*sha256"):
        swap(bad, images, tmp_path, source="faces/astronaut.png")


def test_paste_back_with_zero_opacity_changes_nothing() -> None:
    frame = two_people()
    original = frame.copy()
    astronaut, _ = frame_faces()
    from processors.faces import align_matrix

    matrix = align_matrix(np.array(astronaut.kps, np.float32), 128)
    crop = np.full((128, 128, 3), 255, np.uint8)
    assert paste_back(frame, crop, matrix, opacity=0.0) is not None
    assert np.array_equal(frame, original)
    paste_back(frame, crop, matrix, mouth=True)
    mouth = np.array(astronaut.kps[3:]).mean(axis=0).astype(int)
    eye = np.array(astronaut.kps[0]).astype(int)
    assert np.array_equal(frame[mouth[1], mouth[0]], original[mouth[1], mouth[0]])
    assert not np.array_equal(frame[eye[1], eye[0]], original[eye[1], eye[0]])


def _face(x: float, size: float = 50.0, emb: np.ndarray | None = None) -> Face:
    box = np.array([x, 100, x + size, 100 + size], np.float32)
    kps = np.tile(box[:2] + size / 2, (5, 1)).astype(np.float32)
    return Face(box, kps, 0.9, emb)


def test_reference_choice_is_averaged_over_the_window_so_it_does_not_flicker() -> None:
    ref = np.eye(512, dtype=np.float32)[0]
    near = (ref + 0.3 * np.eye(512, dtype=np.float32)[1]).astype(np.float32)
    near /= np.linalg.norm(near)  # distance ~0.04 from the reference
    far = np.eye(512, dtype=np.float32)[2]  # distance 1.0
    tracks = FaceTracks(max_gap=2, window=3)
    for t in range(9):  # the same person, one frame's embedding is off (motion blur, profile)
        tracks.add(t, [_face(10 + t, emb=far if t == 4 else near)])
    targeting = Targeting("reference", [ref], threshold=0.6)
    chosen = [decide(tracks, t, targeting)[0][2] for t in range(9)]
    assert chosen == [0] * 9
    # Frame by frame (window 0) the bad frame would have dropped out.
    alone = FaceTracks(max_gap=2, window=0)
    for t in range(9):
        alone.add(t, [_face(10 + t, emb=far if t == 4 else near)])
    assert decide(alone, 4, targeting)[0][2] is None


def test_largest_is_decided_per_track_over_the_window() -> None:
    tracks = FaceTracks(max_gap=1, window=4)
    for t in range(9):  # two faces of nearly equal size; B is larger on one frame only
        a, b = _face(0, 60), _face(300, 62 if t == 4 else 58)
        tracks.add(t, sorted([a, b], key=lambda f: -f.area))
    picks = []
    for t in range(9):
        [(_node, face, _)] = [
            d for d in decide(tracks, t, Targeting("largest", [], 0.6)) if d[2] == 0
        ]
        picks.append(float(face.box[0]))
    assert picks == [0.0] * 9


def test_chunked_output_equals_single_run_output(store: Path, images: Path, tmp_path: Path) -> None:
    # The cameraman drops out now and then (a one-frame miss, a longer absence): decisions
    # near a chunk seam must not depend on where the chunk starts.
    gone = {7, 11, 12, 13, 14, 15, 16, 22}
    frames = [two_people(cameraman=i not in gone) for i in range(30)]
    options = {"source": "faces/astronaut.png", "target": "reference"}
    options["reference"] = "faces/cameraman.png"
    whole = run(swap(store, images, tmp_path, **options), frames)
    for seam in (8, 12, 15, 23):
        parts = []
        for start, end in ((0, seam), (seam, 30)):
            proc = swap(store, images, tmp_path, **options)
            lo, hi = max(0, start - proc.lookbehind), min(30, end + proc.lookahead)
            batch = FrameBatch(np.stack(frames[lo:hi]), np.arange(lo, hi, dtype=np.int64))
            outs = [proc.push(batch), proc.flush()]
            for o in outs:
                keep = (o.indices >= start) & (o.indices < end)
                parts += list(o.frames[keep])
        assert len(parts) == 30
        for k in range(30):
            assert np.array_equal(parts[k], whole.frames[k]), (seam, k)
