"""A test model with YOLOv8's exact signature and outputs we know, built with onnx.helper.

`images [B, 3, 640, 640]` float RGB 0..1 → `output0 [B, 84, 8400]`, like an exported
yolov8n. Column 0 is computed from the input: the box around the pixels whose every channel
is above 0.9 (a white marker), as person with score 0.9 (0 when there is no marker). The
other columns are constants in network-input pixels, chosen to exercise the decoder:
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 640
ANCHORS = 8400
CLASSES = 80
MARKER_SCORE = 0.9

# (cx, cy, w, h, {class: score}) in network-input pixels; all inside the content area of a
# 16:9 or 9:16 frame letterboxed to 640 (which spans 140..500 across its short side).
DECOYS = {
    "kept": (200.0, 300.0, 60.0, 80.0, {0: 0.8}),
    "overlaps_kept": (202.0, 301.0, 60.0, 80.0, {0: 0.75}),  # IoU ≈ 0.9 with `kept`: NMS
    "half_overlap": (200.0, 340.0, 60.0, 80.0, {0: 0.5}),  # IoU 1/3 with `kept`: stays
    "a_car": (400.0, 200.0, 50.0, 50.0, {0: 0.6, 2: 0.95}),  # best class is car: dropped
    "too_faint": (400.0, 400.0, 40.0, 40.0, {0: 0.2}),  # under the 0.25 threshold
}


def decoy_columns(decoys: bool = True) -> np.ndarray:
    cols = np.zeros((4 + CLASSES, ANCHORS - 1), np.float32)
    for n, (cx, cy, w, h, scores) in enumerate(DECOYS.values() if decoys else []):
        cols[:4, 100 + 37 * n] = (cx, cy, w, h)
        for cls, score in scores.items():
            cols[4 + cls, 100 + 37 * n] = score
    return cols


def build(path: Path, dynamic_batch: bool = False, decoys: bool = True) -> Path:
    """Write the model to `path`; without `decoys` only the computed column can fire."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    batch: int | str = "batch" if dynamic_batch else 1
    const = lambda name, value: numpy_helper.from_array(np.asarray(value), name)  # noqa: E731
    idx = np.arange(SIZE, dtype=np.float32)
    inits = [
        const("thr", np.float32(0.9)),
        const("idx_plus1", idx + 1),
        const("size_minus_idx", SIZE - idx),
        const("size", np.float32(SIZE)),
        const("half", np.float32(0.5)),
        const("score", np.float32(MARKER_SCORE)),
        const("zeros79", np.zeros((1, CLASSES - 1), np.float32)),
        const("decoys", decoy_columns(decoys)[None]),
        const("tail", np.asarray([4 + CLASSES, ANCHORS - 1], np.int64)),
        const("starts", np.asarray([0], np.int64)),
        const("ends", np.asarray([1], np.int64)),
    ]
    n = helper.make_node
    nodes = [
        # A pixel is marker when its darkest channel is above 0.9.
        n("ReduceMin", ["images"], ["darkest"], axes=[1], keepdims=0),  # [B, H, W]
        n("Greater", ["darkest", "thr"], ["is_marker"]),
        n("Cast", ["is_marker"], ["mask"], to=TensorProto.FLOAT),
        n("ReduceMax", ["mask"], ["cols"], axes=[1], keepdims=0),  # [B, W]: any row
        n("ReduceMax", ["mask"], ["rows"], axes=[2], keepdims=0),  # [B, H]: any column
        # last marker index + 1, and 640 - first marker index, as maxima of weighted masks
        n("Mul", ["cols", "idx_plus1"], ["cw1"]),
        n("ReduceMax", ["cw1"], ["x1"], axes=[1], keepdims=1),  # [B, 1]
        n("Mul", ["cols", "size_minus_idx"], ["cw0"]),
        n("ReduceMax", ["cw0"], ["x0r"], axes=[1], keepdims=1),
        n("Sub", ["size", "x0r"], ["x0"]),
        n("Mul", ["rows", "idx_plus1"], ["rw1"]),
        n("ReduceMax", ["rw1"], ["y1"], axes=[1], keepdims=1),
        n("Mul", ["rows", "size_minus_idx"], ["rw0"]),
        n("ReduceMax", ["rw0"], ["y0r"], axes=[1], keepdims=1),
        n("Sub", ["size", "y0r"], ["y0"]),
        n("Add", ["x0", "x1"], ["xs"]),
        n("Mul", ["xs", "half"], ["cx"]),
        n("Add", ["y0", "y1"], ["ys"]),
        n("Mul", ["ys", "half"], ["cy"]),
        n("Sub", ["x1", "x0"], ["w"]),
        n("Sub", ["y1", "y0"], ["h"]),
        n("ReduceMax", ["cols"], ["found"], axes=[1], keepdims=1),
        n("Mul", ["found", "score"], ["person"]),
        # zeros for the 79 other classes, one row per image
        n("Mul", ["found", "zeros79"], ["others"]),  # [B, 79]
        n("Concat", ["cx", "cy", "w", "h", "person", "others"], ["col0"], axis=1),  # [B, 84]
        n("Unsqueeze", ["col0", "two"], ["col0u"]),  # [B, 84, 1]
        # the constant columns, repeated for every image of the batch
        n("Shape", ["images"], ["shape"]),
        n("Slice", ["shape", "starts", "ends"], ["b"]),
        n("Concat", ["b", "tail"], ["decoy_shape"], axis=0),
        n("Expand", ["decoys", "decoy_shape"], ["decoys_b"]),
        n("Concat", ["col0u", "decoys_b"], ["output0"], axis=2),
    ]
    inits.append(const("two", np.asarray([2], np.int64)))
    graph = helper.make_graph(
        nodes,
        "yolo_signature_test",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 84, ANCHORS])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
