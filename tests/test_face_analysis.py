"""Face detection and embedding on onnxruntime (processors/scrfd.py, processors/arcface.py):
every SCRFD layout found in the wild, the real batch-dim scrfd_500m_bnkps on real portraits,
real ArcFace (w600k_mbf) embeddings that tell two people apart. insightface's own SCRFD and
ArcFace classes serve as the reference implementation where they can load the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from processors.arcface import ArcFaceRecogniser, RecogniserUnusable
from processors.faces import FaceAnalyser
from processors.scrfd import DetectorUnusable, ScrfdDetector
from tests.face_models import build_detector, build_recognizer, frame_faces, two_people

CPU = ["CPUExecutionProvider"]


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"batch_dim": True},
        {"strides": (8, 16, 32, 64, 128), "anchors": 1},
        {"strides": (8, 16, 32, 64, 128), "anchors": 1, "batch_dim": True},
        {"fixed_input": True, "batch_dim": True},
    ],
    ids=["det10g", "batch-dim", "5-strides-1-anchor", "5-strides-batch-dim", "fixed-input"],
)
def test_every_scrfd_layout_gives_the_faces_it_was_built_with(tmp_path: Path, layout: dict):
    known = frame_faces()
    path = build_detector(tmp_path / "det.onnx", list(known), **layout)
    found = ScrfdDetector(path, CPU).detect(two_people())
    assert len(found) == 2
    for face in known:
        match = min(found, key=lambda d: np.abs(d.box - face.box).max())
        np.testing.assert_allclose(match.box, face.box, atol=1e-3)
        np.testing.assert_allclose(match.kps, np.array(face.kps), atol=1e-3)
    # Black where the astronaut was: only the cameraman fires.
    assert len(ScrfdDetector(path, CPU).detect(two_people(astronaut=False))) == 1


def test_same_detections_as_insightface_on_the_det10g_layout(tmp_path: Path) -> None:
    from insightface.model_zoo.retinaface import RetinaFace

    path = build_detector(tmp_path / "det.onnx", list(frame_faces()))
    frame = two_people()
    theirs = RetinaFace(str(path))
    theirs.prepare(-1, input_size=(640, 640))
    boxes, kpss = theirs.detect(np.ascontiguousarray(frame[..., ::-1]))
    ours = ScrfdDetector(path, CPU).detect(frame)
    assert len(ours) == len(boxes) == 2
    order = np.argsort(boxes[:, 0])  # both score 1.0: compare left to right
    mine = sorted(ours, key=lambda d: d.box[0])
    np.testing.assert_array_equal(np.stack([d.box for d in mine]), boxes[order, :4])
    np.testing.assert_array_equal(np.stack([d.kps for d in mine]), kpss[order])


@pytest.mark.parametrize(
    "image,count", [("obama.jpg", 1), ("obama2.jpg", 1), ("biden.jpg", 1), ("multi_face.jpg", 5)]
)
def test_real_batch_dim_scrfd_on_real_portraits(real_asset, image: str, count: int) -> None:
    from insightface.model_zoo.scrfd import SCRFD

    model = real_asset("scrfd_500m_bnkps.onnx")
    picture = rgb(real_asset(image))
    ours = ScrfdDetector(model, CPU).detect(picture)
    assert len(ours) == count
    height, width = picture.shape[:2]
    for d in ours:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and d.score >= 0.5
        # The landmarks sit inside their box: eyes above the mouth corners.
        assert ((d.kps >= d.box[:2] - 2) & (d.kps <= d.box[2:] + 2)).all()
        assert d.kps[:2, 1].max() < d.kps[3:, 1].min()
    # insightface's own SCRFD class (not the RetinaFace class its router picks, which crashes
    # on this file) is the reference: the same boxes and landmarks, to the pixel.
    theirs = SCRFD(str(model))
    theirs.prepare(-1, input_size=(640, 640))
    boxes, kpss = theirs.detect(np.ascontiguousarray(picture[..., ::-1]), (640, 640))
    order = np.argsort(boxes[:, 0])
    mine = sorted(ours, key=lambda d: d.box[0])
    np.testing.assert_allclose(np.stack([d.box for d in mine]), boxes[order, :4], atol=1e-3)
    np.testing.assert_allclose(np.stack([d.kps for d in mine]), kpss[order], atol=1e-3)


def test_real_arcface_tells_two_people_apart(real_asset) -> None:
    analyser = FaceAnalyser(
        real_asset("scrfd_500m_bnkps.onnx"), real_asset("w600k_mbf.onnx"), providers=CPU
    )

    def embedding(name: str) -> np.ndarray:
        picture = rgb(real_asset(name))
        [face] = analyser.detect(picture)
        return analyser.embed(picture, face)

    obama, obama2, biden = (embedding(n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    # Measured: obama/obama2 0.72, obama/biden -0.02, obama2/biden 0.07.
    assert float(obama @ obama2) > 0.4
    assert float(obama @ biden) < 0.3 and float(obama2 @ biden) < 0.3


def test_arcface_matches_insightface_on_the_same_crop(real_asset) -> None:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    from processors.faces import align_matrix

    model = real_asset("w600k_mbf.onnx")
    picture = rgb(real_asset("obama.jpg"))
    [face] = FaceAnalyser(real_asset("scrfd_500m_bnkps.onnx"), None, providers=CPU).detect(picture)
    ours = ArcFaceRecogniser(model, CPU)
    assert (ours.mean, ours.std, ours.size) == (127.5, 127.5, 112)
    crop = cv2.warpAffine(picture, align_matrix(face.kps, 112), (112, 112), borderValue=0.0)
    theirs = ArcFaceONNX(str(model))
    reference = theirs.get_feat(np.ascontiguousarray(crop[..., ::-1])).reshape(-1)
    reference /= np.linalg.norm(reference)
    assert float(ours.embed(picture, face.kps) @ reference) > 0.9999


def test_a_file_that_is_not_the_model_it_claims_is_refused_by_name(tmp_path: Path) -> None:
    recogniser = build_recognizer(tmp_path / "rec.onnx")
    detector = build_detector(tmp_path / "det.onnx", list(frame_faces()))
    with pytest.raises(DetectorUnusable, match=r"rec\.onnx: not an SCRFD face detector.*512"):
        ScrfdDetector(recogniser, CPU)
    with pytest.raises(RecogniserUnusable, match=r"det\.onnx: not an ArcFace face recogniser"):
        ArcFaceRecogniser(detector, CPU)
    # A detector without landmark outputs can find faces but cannot align them for ArcFace.
    no_kps = build_detector(tmp_path / "nokps.onnx", list(frame_faces()), landmarks=False)
    assert len(ScrfdDetector(no_kps, CPU).detect(two_people())) == 2
    with pytest.raises(ValueError, match=r"nokps\.onnx gives no face landmarks"):
        FaceAnalyser(no_kps, recogniser, providers=CPU)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DetectorUnusable, match=r"junk\.onnx: not an ONNX model"):
        ScrfdDetector(tmp_path / "junk.onnx", CPU)
