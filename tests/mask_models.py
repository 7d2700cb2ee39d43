"""Mask models and pixel-boost swappers with the real signatures, built with onnx.helper.

- occluder: XSeg's layout (FaceFusion's xseg_*.onnx) — input `input` [n,256,256,3] NHWC, BGR
  in 0..1; output [n,256,256,1], 1 where the face shows. Its rule: a pixel is covered (0) when
  it is clearly bluer than it is red (B − R > COVER_MARGIN in 0..1), so a test can predict
  which pixels of a real photo it will call covered — and a crop fed as RGB instead of BGR
  gets the opposite answer.
- parser: BiSeNet's layout (FaceFusion's bisenet_resnet_*.onnx) — input `input`
  [1,3,512,512] NCHW; output [1,19,512,512] class scores. Its rule is by position in the
  aligned crop (PARSER_LAYOUT): the mouth block where the alignment template puts the mouth,
  skin around it, background at the border — so where each region lands in the frame is
  predictable from the face's alignment alone.
- spatial swappers: inswapper_128's signature (target [1,3,128,128] + source [1,512] →
  [1,3,128,128], the 512×512 `emap` last) whose output is the target moved `shift` pixels to
  the right (0: the identity), to see what pixel boost does with the pixels of its sub-grids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper

from tests.face_models import _init, _save

COVER_MARGIN = 0.1  # B − R above this (0..1) is "something in front of the face"
GAIN = 60.0  # sharpness of the occluder's decision
PARSER_SIDE, PARSER_GRID = 512, 16  # the parser's input, and its layout's cells per side
SKIN, MOUTH, BACKGROUND = 1, 11, 0
# (class, rows, cols) in layout cells of 32 px (of the 512 crop), later entries on top.
PARSER_LAYOUT = (
    (SKIN, range(2, 15), range(2, 14)),
    (MOUTH, range(10, 13), range(6, 11)),  # crop rows 320–415, cols 192–351 (of 512)
)


def parser_cells() -> np.ndarray:
    """The class of each layout cell: [PARSER_GRID, PARSER_GRID]."""
    cells = np.full((PARSER_GRID, PARSER_GRID), BACKGROUND, np.int64)
    for label, rows, cols in PARSER_LAYOUT:
        cells[rows.start : rows.stop, cols.start : cols.stop] = label
    return cells


def build_occluder(path: Path, side: int = 256) -> Path:
    weights = np.array([[-1.0], [0.0], [1.0]], np.float32)  # BGR → R − B
    nodes = [
        helper.make_node("MatMul", ["input", "r_minus_b"], ["diff"]),
        helper.make_node("Add", ["diff", "margin"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "xseg_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", side, side, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", side, side, 1])],
        [
            _init("r_minus_b", weights),
            _init("margin", np.array([COVER_MARGIN], np.float32)),
            _init("gain", np.array([GAIN], np.float32)),
        ],
    )
    return _save(graph, path)


def build_parser(path: Path) -> Path:
    cells = parser_cells()
    scores = np.zeros((1, 19, PARSER_GRID, PARSER_GRID), np.float32)
    for label in np.unique(cells):
        scores[0, label][cells == label] = 10.0
    scale = PARSER_SIDE / PARSER_GRID
    nodes = [
        # The image is read (a parser that ignored its input could not be loaded by shape),
        # and contributes nothing: the classes are the layout's.
        helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Resize", ["layout", "", "scales"], ["grid"], mode="nearest"),
        helper.make_node("Add", ["grid", "nothing"], ["output"]),
    ]
    side = PARSER_SIDE
    graph = helper.make_graph(
        nodes,
        "bisenet_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 19, side, side])],
        [
            _init("layout", scores),
            _init("zero", np.array(0.0, np.float32)),
            _init("scales", np.array([1, 1, scale, scale], np.float32)),
        ],
    )
    return _save(graph, path)


def build_spatial_swapper(path: Path, shift: int = 0, seed: int = 7) -> Path:
    """target moved `shift` px right (zeros enter on the left); the source is read and
    ignored, so every identity gives the same picture."""
    rng = np.random.default_rng(seed)
    emap = (rng.standard_normal((512, 512)) / np.sqrt(512)).astype(np.float32)
    nodes = [
        helper.make_node("Pad", ["target", "pads", "pad_value"], ["padded"], mode="constant"),
        helper.make_node("Slice", ["padded", "starts", "ends", "axes"], ["moved"]),
        helper.make_node("ReduceMean", ["source"], ["s_mean"], keepdims=0),
        helper.make_node("Mul", ["s_mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["moved", "nothing"], ["output"]),
    ]
    inits = [
        _init("pads", np.array([0, 0, 0, shift, 0, 0, 0, 0], np.int64)),
        _init("pad_value", np.array(0.0, np.float32)),
        _init("starts", np.array([0], np.int64)),
        _init("ends", np.array([128], np.int64)),
        _init("axes", np.array([3], np.int64)),
        _init("zero", np.array(0.0, np.float32)),
        _init("emap", emap),  # last: where an inswapper carries it
    ]
    return _save(inswapper_graph(nodes, "inswapper_spatial_test", inits), path)


def inswapper_graph(
    nodes: list[onnx.NodeProto], name: str, inits: list[onnx.TensorProto]
) -> onnx.GraphProto:
    """inswapper_128's signature around `nodes`: target [1,3,128,128] and source [1,512] in,
    output [1,3,128,128] out."""
    return helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        inits,
    )


def add_test_swapper(folder: Path, name: str, file: str, source: str) -> None:
    """Lists the swapper `file` (already built in `folder`) in the store's catalog as `name`,
    so a manifest can pick it like a packaged one."""
    catalog = yaml.safe_load((folder / "catalog.yaml").read_text())
    catalog["models"][name] = {
        "step": "swap", "role": "swapper", "files": [file], "licence": "test", "source": source,
    }  # fmt: skip
    (folder / "catalog.yaml").write_text(yaml.safe_dump(catalog))
