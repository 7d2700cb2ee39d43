"""The Wav2Lip ONNX runner: signature checks, fixed-batch exports, padded short batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from processors.lipsync.model import ModelUnusable, Wav2LipModel
from tests.lipsync_fixtures import build_test_model


def inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mels = rng.uniform(-4, 4, (n, 1, 80, 16)).astype(np.float32)
    faces = rng.random((n, 6, 96, 96)).astype(np.float32)
    return mels, faces


def test_inputs_are_told_apart_by_shape_not_name(tmp_path: Path) -> None:
    path = build_test_model(
        tmp_path / "m.onnx", names=("audio_sequences", "face_sequences"), convs=2
    )
    model = Wav2LipModel(path, 4)
    assert (model.mel_input, model.face_input) == ("audio_sequences", "face_sequences")
    out = model.run(*inputs(4))
    assert out.shape == (4, 3, 96, 96) and out.dtype == np.float32


def test_a_short_batch_gives_each_frame_the_result_of_a_full_one(tmp_path: Path) -> None:
    model = Wav2LipModel(build_test_model(tmp_path / "m.onnx", convs=2), 8)
    mels, faces = inputs(8)
    full = model.run(mels, faces)
    for n in (1, 3, 7):
        assert np.array_equal(model.run(mels[:n], faces[:n]), full[:n]), n


def test_a_fixed_batch_export_sets_the_batch_size(tmp_path: Path) -> None:
    model = Wav2LipModel(build_test_model(tmp_path / "m.onnx", batch=1), 16)
    assert model.batch_size == 1
    assert model.run(*inputs(1)).shape == (1, 3, 96, 96)


def test_a_model_of_another_shape_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 112, 112])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3, 112, 112])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "other.onnx"))
    with pytest.raises(ModelUnusable, match=r"mel \[B,1,80,16\].*x\['b', 3, 112, 112\]"):
        Wav2LipModel(tmp_path / "other.onnx", 4)


def test_facefusion_names_in_either_order_are_found_by_shape(tmp_path: Path) -> None:
    # FaceFusion's wav2lip_gan_96.onnx: `source` is the mel, `target` the faces.
    plain = Wav2LipModel(build_test_model(tmp_path / "plain.onnx"), 4)
    for face_first in (False, True):
        path = build_test_model(
            tmp_path / f"ff{face_first}.onnx", names=("source", "target"), face_first=face_first
        )
        model = Wav2LipModel(path, 4)
        assert (model.mel_input, model.face_input) == ("source", "target")
        assert np.array_equal(model.run(*inputs(4)), plain.run(*inputs(4)))


def test_undeclared_shapes_fall_back_to_the_input_names(tmp_path: Path) -> None:
    path = build_test_model(
        tmp_path / "m.onnx", names=("source", "target"), face_first=True, declared=False
    )
    model = Wav2LipModel(path, 4)
    assert (model.mel_input, model.face_input) == ("source", "target")
    plain = Wav2LipModel(build_test_model(tmp_path / "plain.onnx"), 4)
    assert np.array_equal(model.run(*inputs(3)), plain.run(*inputs(3)))
    # Undeclared and unknown names: nothing to go by.
    odd = build_test_model(tmp_path / "odd.onnx", names=("a", "b"), declared=False)
    with pytest.raises(ModelUnusable, match=r"named source/target"):
        Wav2LipModel(odd, 4)


def test_a_half_precision_export_gets_half_precision_inputs(tmp_path: Path) -> None:
    model = Wav2LipModel(build_test_model(tmp_path / "fp16.onnx", fp16=True), 4)
    plain = Wav2LipModel(build_test_model(tmp_path / "plain.onnx"), 4)
    out = model.run(*inputs(4))
    assert out.dtype == np.float32  # what the rest of lipsync reads
    assert np.abs(out - plain.run(*inputs(4))).max() < 5e-3
