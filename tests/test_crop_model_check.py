"""Crop models from the wild: a real YOLO11n export is accepted; a model whose head is not
`[B, 84, N]` (a face-only YOLO, an end-to-end export with NMS inside) is refused when the task
sets up — exit 2, no retry, MODEL_INCOMPATIBLE in the record naming the file and its shapes —
instead of running and finding nobody."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from core.status.model import JobState
from processors.crop.detector_choice import make_detector
from processors.crop.yolo_ultralytics import check_classes, export_facts
from processors.models.store import ModelIncompatible
from tests.face_models import _save
from tests.test_crop_job import record_of, submit, talking_clip
from tests.yolo_test_model import build as build_yolo


def build_head(path: Path, rows: int | str, anchors: int | str, produced: tuple[int, int]) -> Path:
    """`images [1,3,640,640]` → `output0 [1, rows, anchors]` as declared; `produced` is what it
    really returns (rows, anchors). The output's shape is computed at run time, so onnxruntime
    reports the declared shape (a symbolic one stays symbolic); its values follow the input's
    mean, so it depends on the image the way a real head does."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["level"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["level", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "dims"], ["dims_f"]),
        helper.make_node("Cast", ["dims_f"], ["dims_i"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["base", "dims_i"], ["head"]),
        helper.make_node("Add", ["head", "level"], ["output0"]),
    ]
    inits = {
        "base": np.zeros(produced[0] * produced[1], np.float32),
        "zero": np.array(0.0, np.float32),
        "dims": np.array([1, *produced], np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "not_a_person_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, rows, anchors])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return _save(graph, path)


BAD_HEADS = {
    # yolov8n-face style: box + one class score
    "face_only": dict(rows=5, anchors=8400, produced=(5, 8400), shown="output0[1,5,8400]"),
    # `yolo export ... nms=True`: [B, max_det, x0 y0 x1 y1 score class]
    "end_to_end": dict(rows=300, anchors=6, produced=(300, 6), shown="output0[1,300,6]"),
    # rows not declared: the detector runs one image to find out
    "undeclared": dict(
        rows="rows", anchors="anchors", produced=(5, 8400), shown="(run: [1,5,8400])"
    ),
}


def test_the_real_yolo11n_export_is_accepted(real_asset) -> None:
    detector = make_detector("yolo-onnx", weights=real_asset("yolo11n.onnx"), device="cpu")
    assert detector.size == 640
    frame = np.full((360, 640, 3), 114, np.uint8)
    assert detector.detect([frame]) == [[]]  # a grey frame: a real model sees nobody


@pytest.mark.parametrize("kind", list(BAD_HEADS))
def test_a_head_that_is_not_84_rows_is_refused_naming_file_and_shapes(
    kind: str, tmp_path: Path
) -> None:
    spec = BAD_HEADS[kind]
    path = build_head(tmp_path / f"{kind}.onnx", spec["rows"], spec["anchors"], spec["produced"])
    with pytest.raises(ModelIncompatible) as err:
        make_detector("yolo-onnx", weights=path, device="cpu")
    text = str(err.value)
    assert err.value.code == "MODEL_INCOMPATIBLE"
    assert f"{kind}.onnx" in text
    assert "images[1,3,640,640]" in text and spec["shown"] in text
    assert "[B,84,N]" in text  # what it should have been


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return talking_clip(tmp_path_factory, duration=3, fps=10)


def test_a_job_with_the_real_yolo11n_succeeds(
    deployment: dict, talk: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, real_asset
) -> None:
    from tests.local_jobs import wait_local_job

    store = tmp_path / "models"
    store.mkdir()
    (store / "yolo11n.onnx").symlink_to(real_asset("yolo11n.onnx"))
    job_id = submit(deployment, talk, monkeypatch, store, model="yolo11n")
    assert wait_local_job(job_id, timeout=300)
    record = record_of(job_id)
    assert record.state == JobState.SUCCEEDED, record.error


def test_a_job_with_a_face_only_yolo_fails_at_setup_without_retries(
    deployment: dict, talk: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from core.config import Settings
    from core.status import open_status
    from tests.local_jobs import wait_local_job

    store = tmp_path / "models"
    build_head(store / "yolov8n.onnx", 5, 8400, (5, 8400))
    job_id = submit(deployment, talk, monkeypatch, store)
    assert wait_local_job(job_id, timeout=300)
    record = record_of(job_id)
    assert record.state == JobState.FAILED
    assert record.error is not None and record.error.code == "MODEL_INCOMPATIBLE"
    assert "yolov8n.onnx" in record.error.message
    assert "output0[1,5,8400]" in record.error.message
    tasks = open_status(Settings.from_env()).progress(job_id)
    assert tasks and all(t.state == "FAILED" and t.code == "MODEL_INCOMPATIBLE" for t in tasks)
    assert {t.attempt for t in tasks} == {0}  # exit 2: never retried


# -- what the ultralytics backend reads from a file before it runs it (no ultralytics needed) --
COCO = {0: "person", **{k: f"class{k}" for k in range(1, 80)}}


def engine_file(path: Path, meta: dict | None) -> Path:
    """An `.engine` as `yolo export format=engine` lays it out: int32 length, JSON, engine."""
    body = os.urandom(2048)  # stands in for the serialized TensorRT engine
    head = b""
    if meta is not None:
        text = json.dumps(meta).encode()
        head = len(text).to_bytes(4, "little") + text
    path.write_bytes(head + body)
    return path


def test_an_engine_header_gives_its_batch_and_classes(tmp_path: Path) -> None:
    fixed = export_facts(engine_file(tmp_path / "a.engine", {"batch": 1, "names": COCO}))
    assert (fixed.max_batch, fixed.fixed, fixed.names) == (1, True, COCO)
    dynamic = engine_file(
        tmp_path / "b.engine", {"batch": 32, "args": {"dynamic": True}, "names": str(COCO)}
    )
    facts = export_facts(dynamic)
    assert (facts.max_batch, facts.fixed, facts.names) == (32, False, COCO)
    bare = export_facts(engine_file(tmp_path / "c.engine", None))
    assert (bare.max_batch, bare.fixed, bare.names) == (1, True, None)  # one frame always fits


def test_an_onnx_export_gives_its_batch_and_its_names(tmp_path: Path, real_asset) -> None:
    real = export_facts(real_asset("yolo11n.onnx"))  # dynamic batch, COCO names in metadata
    assert (real.max_batch, real.fixed, real.names[0], len(real.names)) == (
        None,
        False,
        "person",
        80,
    )
    fixed = export_facts(build_yolo(tmp_path / "y.onnx"))  # batch 1, no metadata
    assert (fixed.max_batch, fixed.fixed, fixed.names) == (1, True, None)
    with pytest.raises(ModelIncompatible, match=r"output0\[1,5,8400\]"):
        export_facts(build_head(tmp_path / "face.onnx", 5, 8400, (5, 8400)))


def test_a_model_whose_class_0_is_not_a_person_is_refused(tmp_path: Path) -> None:
    check_classes(COCO, "ok.engine")
    with pytest.raises(ModelIncompatible, match=r"face\.engine.*1 classes \(0: face\)"):
        check_classes({0: "face"}, "face.engine")
    with pytest.raises(ModelIncompatible, match=r"80 classes \(0: car"):
        check_classes({0: "car", **{k: "x" for k in range(1, 80)}}, "cars.pt")
