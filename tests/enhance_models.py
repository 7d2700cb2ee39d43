"""Face restoration models with the real signatures of FaceFusion's exports, built with onnx.helper.

- gfpgan_1.4 / gpen_bfr_512: `input` [N,3,512,512] float32 (RGB in [-1,1]) -> `output` of the
  same layout.
- codeformer: the same plus `weight`, float64 [1] (the fidelity).

What they compute stands in for a restoration a test can predict, pixel by pixel: `restyle`
below, tanh of a fixed 3×3 colour mix plus a lift (a visible change of colour and contrast);
CodeFormer's output is `weight · input + (1 − weight) · restyle(input)`, so weight 1 returns
the face as it came. `identity=True` returns the input itself (geometry checks). `batch`: a
symbolic batch dimension, or the fixed batch of 1 many exports have. `convs` adds untrained
3×3 convolutions at full resolution whose output is scaled to nothing before it is added, so a
benchmark sees real work per face while the pixels stay predictable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.face_models import _save

SIZE = 512
MIX = np.array([[1.3, 0.1, -0.1], [0.0, 1.1, 0.2], [-0.2, 0.1, 1.2]], np.float32)
LIFT = np.array([0.15, -0.05, 0.1], np.float32)
NAMES = {"gfpgan_1.4": "gfpgan_1.4.onnx", "codeformer": "codeformer.onnx",
         "gpen_bfr_512": "gpen_bfr_512.onnx"}  # fmt: skip


def restyle(rgb: np.ndarray) -> np.ndarray:
    """What the test models do to RGB uint8 pixels (CodeFormer at weight 0), in uint8."""
    x = rgb.astype(np.float32) / 127.5 - 1.0
    y = np.tanh(x @ MIX.T + LIFT)
    return np.rint((y + 1.0) * 127.5).astype(np.uint8)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def build_restorer(
    path: Path,
    *,
    weight: bool = False,
    batch: int | str = "n",
    identity: bool = False,
    names: tuple[str, str, str] = ("input", "weight", "output"),
    convs: int = 0,
    one_only: bool = False,
) -> Path:
    """`one_only`: the batch is declared open but the graph reshapes its input to a fixed
    [1,3,S,S] first, as some exports do: any call of more than one crop fails."""
    image_in, weight_in, output = names
    nodes, inits = [], [_init("mix", MIX.reshape(3, 3, 1, 1)), _init("lift", LIFT)]
    if one_only:
        nodes.append(helper.make_node("Reshape", [image_in, "one_shape"], ["one_image"]))
        inits.append(_init("one_shape", np.array([1, 3, SIZE, SIZE], np.int64)))
        image_in = "one_image"
    nodes.append(helper.make_node("Conv", [image_in, "mix", "lift"], ["mixed0"]))
    if convs:
        rng = np.random.default_rng(11)
        width, last = 16, image_in
        for k in range(convs):
            out_ch = 3 if k == convs - 1 else width
            in_ch = 3 if k == 0 else width
            kernel = (rng.standard_normal((out_ch, in_ch, 3, 3)) * 0.1).astype(np.float32)
            inits.append(_init(f"k{k}", kernel))
            nodes.append(helper.make_node("Conv", [last, f"k{k}"], [f"c{k}"], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"]))
            last = f"r{k}"
        inits.append(_init("nothing", np.array([0.0], np.float32)))
        nodes += [
            helper.make_node("Mul", [last, "nothing"], ["work"]),
            helper.make_node("Add", ["mixed0", "work"], ["mixed"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["mixed0"], ["mixed"]))
    nodes.append(helper.make_node("Tanh", ["mixed"], ["restyled"]))
    inputs = [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [batch, 3, SIZE, SIZE])]
    if identity:
        nodes.append(helper.make_node("Identity", [image_in], [output]))
    elif weight:
        inputs.append(helper.make_tensor_value_info(weight_in, TensorProto.DOUBLE, [1]))
        nodes += [
            helper.make_node("Cast", [weight_in], ["w"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["one", "w"], ["rest"]),
            helper.make_node("Mul", [image_in, "w"], ["kept"]),
            helper.make_node("Mul", ["restyled", "rest"], ["new"]),
            helper.make_node("Add", ["kept", "new"], [output]),
        ]
        inits.append(_init("one", np.array([1.0], np.float32)))
    else:
        nodes.append(helper.make_node("Identity", ["restyled"], [output]))
    graph = helper.make_graph(
        nodes,
        "face_restorer_test",
        inputs,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        inits,
    )
    return _save(graph, path)


def build_enhance_store(
    folder: Path, *, batch: int | str = "n", identity: bool = False, convs: int = 0
) -> Path:
    """The three models under the file names the packaged catalog gives them (unpinned there,
    so a store may hold any file by that name)."""
    for model, file in NAMES.items():
        build_restorer(
            folder / file, weight=model == "codeformer", batch=batch, identity=identity,
            convs=convs,
        )  # fmt: skip
    return folder
