"""bench/cost_models.py: the multiply-add counter on graphs counted by hand, and the two
smallest cost-true stand-ins (XSeg, Wav2Lip 96) built for real: their signature is the one the
pipeline's loaders take (they load and run through them, unchanged), and the counter's figure
for them equals a count made independently by torch hooks on the modules.

The build needs torch, which lives in its own venv (.cache/venv-costmodels, made by the script
from the machine's CPU wheel, about a minute the first time); the five larger models take
minutes each and are built by the script, not here (bench/RESULTS.md has their figures).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import cost_models

FLOAT = TensorProto.FLOAT


def _model(nodes: list, inputs: list, outputs: list, inits: dict) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "macs",
        [helper.make_tensor_value_info(n, FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.zeros(s, np.float32), n) for n, s in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_conv_macs_are_output_pixels_times_kernel_volume_per_group():
    # 8→16 channels, 3×3, stride 2, pad 1, 2 groups, on 32×32: out 16×16×16,
    # each output value takes 8/2 × 3 × 3 = 36 multiply-adds → 16·16·16·36 = 147 456.
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1] * 4, group=2)],
        [("x", ["batch", 8, 32, 32])],
        ["y"],
        {"w": (16, 4, 3, 3)},
    )
    assert cost_models.count_macs(model) == 16 * 16 * 16 * 36


def test_transposed_conv_macs_are_input_pixels_times_kernel_volume():
    # 4→6 channels, 4×4 kernel, stride 2 on 5×7: every input value meets 6 × 16 weights.
    model = _model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])],
        [("x", [1, 4, 5, 7])],
        ["y"],
        {"w": (4, 6, 4, 4)},
    )
    assert cost_models.count_macs(model) == 4 * 5 * 7 * 6 * 16


def test_matmul_and_gemm_macs():
    # batched MatMul [2,3,5]·[2,5,7] = 2·3·7·5; Gemm with transA: A [4,3]ᵀ·B [4,9] = 3·9·4;
    # the Relu between them counts nothing.
    model = _model(
        [
            helper.make_node("MatMul", ["a", "b"], ["ab"]),
            helper.make_node("Relu", ["ab"], ["r"]),
            helper.make_node("Gemm", ["c", "d"], ["cd"], transA=1),
        ],
        [("a", [2, 3, 5]), ("c", [4, 3])],
        ["r", "cd"],
        {"b": (2, 5, 7), "d": (4, 9)},
    )
    assert cost_models.count_macs(model) == 2 * 3 * 7 * 5 + 3 * 9 * 4


def test_a_counted_node_without_a_shape_is_an_error_not_a_zero():
    # A Conv whose weight comes from an op shape inference cannot see through.
    model = _model(
        [
            helper.make_node("Custom", ["k"], ["w"], domain="nowhere"),
            helper.make_node("Conv", ["x", "w"], ["y"]),
        ],
        [("x", [1, 3, 8, 8]), ("k", [1])],
        ["y"],
        {},
    )
    model.opset_import.append(helper.make_opsetid("nowhere", 1))
    with pytest.raises(cost_models.UnknownShape, match="Conv"):
        cost_models.count_macs(model)


def _module_macs(name: str) -> int:
    out = subprocess.run(
        [str(cost_models.venv_python()), "-W", "ignore", str(cost_models.ARCHS), "--module-macs",
         name], check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("name", "inputs", "outputs"),
    [
        ("xseg_1", ["input [n,256,256,3] float"], ["output [n,256,256,1] float"]),
        (
            "wav2lip_gan_96",
            ["source [batch,1,80,16] float", "target [batch,6,96,96] float"],
            ["output [batch,3,96,96] float"],
        ),
    ],
)
def test_small_stand_ins_load_through_the_pipeline_and_count_true(
    tmp_path: Path, name: str, inputs: list[str], outputs: list[str]
):
    path, built = cost_models.build(name, tmp_path)
    assert built is not None and path == tmp_path / f"{name}.onnx"
    model = onnx.load(str(path))
    assert cost_models.signature(model) == {"inputs": inputs, "outputs": outputs}
    # The loader the step uses takes it and runs it (raises otherwise).
    assert cost_models.run_through_loader(name, path) > 0
    # The graph's count equals the modules' count, made by torch on the module tree.
    assert cost_models.count_macs(model) == _module_macs(name)
    # A real architecture has real weights: millions of them, not a handful.
    assert cost_models.count_params(model) > 10_000_000
    # Built once: a second call keeps the file.
    assert cost_models.build(name, tmp_path) == (path, None)
