"""Face models with the real signatures, built with onnx.helper, and real imagery to run them on.

- detector: SCRFD det_10g layout — input `input.1` [1,3,?,?]; 9 outputs: scores for strides
  8/16/32 ([N,1], 2 anchors per cell), then boxes ([N,4], distances in stride units), then
  5-point landmarks ([N,10]); `build_detector` also writes the other layouts SCRFD exports
  come in (batch dim, 5 strides with 1 anchor, fixed input size). Its detections are the
  faces it is built with (in detector-input pixels), each firing only where the image is not
  black there — so a black frame has no face and a reference image with one person blacked
  out has one face.
- recogniser: [1,3,112,112] -> [1,512], a fixed random projection of the aligned crop: the same
  face gives the same embedding, different faces are far apart.
- swapper: target [1,3,128,128] + source [1,512] -> [1,3,128,128] (an inverted, identity-tinted
  face), with the 512×512 `emap` initializer last, as inswapper_128 carries it.

All three load through our own onnxruntime code (processors/scrfd.py, processors/arcface.py,
processors/swap/swapper.py, which finds the swapper's inputs by these shapes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

STRIDES = (8, 16, 32)
ANCHORS = 2


@dataclass(frozen=True)
class KnownFace:
    box: tuple[float, float, float, float]  # x0 y0 x1 y1 in detector-input pixels
    kps: tuple[tuple[float, float], ...]  # 5 points: eyes, nose, mouth corners


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def build_detector(
    path: Path,
    faces: list[KnownFace],
    det_size: int = 640,
    *,
    strides: tuple[int, ...] = STRIDES,
    anchors: int = ANCHORS,
    batch_dim: bool = False,
    fixed_input: bool = False,
    landmarks: bool = True,
) -> Path:
    """The det_10g layout by default; the other layouts found in the wild on request: 5
    strides (8…128) with 1 anchor, outputs with a leading batch dim ([1,N,k], as
    scrfd_500m_bnkps), an input exported at a fixed det_size, no landmark outputs."""
    nodes, inits, outputs = [], [], []
    scores, boxes, points = [], [], []
    for stride in strides:
        cells = det_size // stride
        count = cells * cells * anchors
        mask = np.zeros((count, 1), np.float32)
        box = np.zeros((count, 4), np.float32)
        kps = np.zeros((count, 10), np.float32)
        if stride == 32:
            for face in faces:
                x0, y0, x1, y1 = face.box
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                cell = int(cy // stride) * cells + int(cx // stride)
                row = cell * anchors
                ax, ay = (cx // stride) * stride, (cy // stride) * stride  # the anchor centre
                assert mask[row, 0] == 0, "two known faces share an anchor"
                mask[row, 0] = 1
                box[row] = np.array([ax - x0, ay - y0, x1 - ax, y1 - ay]) / stride
                kps[row] = (np.array(face.kps) - [ax, ay]).reshape(-1) / stride
        s = str(stride)
        inits += [_init(f"mask{s}", mask), _init(f"box{s}", box), _init(f"kps{s}", kps)]
        # score = sigmoid(20 * (cell brightness + 0.8)) * mask: black cells never fire.
        nodes += [
            helper.make_node(
                "AveragePool", ["input.1"], [f"pool{s}"], kernel_shape=[stride, stride],
                strides=[stride, stride],
            ),
            helper.make_node("ReduceMean", [f"pool{s}"], [f"mean{s}"], axes=[1], keepdims=0),
            helper.make_node("Reshape", [f"mean{s}", "shape_col"], [f"col{s}"]),
            helper.make_node("Concat", [f"col{s}"] * anchors, [f"pair{s}"], axis=1),
            helper.make_node("Reshape", [f"pair{s}", "shape_col"], [f"anch{s}"]),
            helper.make_node("Add", [f"anch{s}", "offset"], [f"shift{s}"]),
            helper.make_node("Mul", [f"shift{s}", "gain"], [f"logit{s}"]),
            helper.make_node("Sigmoid", [f"logit{s}"], [f"prob{s}"]),
            helper.make_node("Mul", [f"prob{s}", f"mask{s}"], [f"rawscore_{s}"]),
        ]  # fmt: skip
        lead = [1, None] if batch_dim else [None]
        for raw, out, k, into in (
            (f"rawscore_{s}", f"score_{s}", 1, scores),
            (f"box{s}", f"bbox_{s}", 4, boxes),
            (f"kps{s}", f"kps_{s}", 10, points),
        ):
            if batch_dim:
                nodes.append(helper.make_node("Unsqueeze", [raw, "axis0"], [out]))
            else:
                nodes.append(helper.make_node("Identity", [raw], [out]))
            into.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [*lead, k]))
    outputs = scores + boxes + (points if landmarks else [])
    inits += [
        _init("shape_col", np.array([-1, 1], np.int64)),
        _init("offset", np.array([0.8], np.float32)),
        _init("gain", np.array([20.0], np.float32)),
    ]
    if batch_dim:
        inits.append(_init("axis0", np.array([0], np.int64)))
    size = [det_size, det_size] if fixed_input else ["h", "w"]
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, *size])
    graph = helper.make_graph(nodes, "scrfd_test", [image], outputs, inits)
    return _save(graph, path)


def build_recognizer(path: Path, seed: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((3 * 28 * 28, 512)).astype(np.float32) / 50
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pool"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_test",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
        [_init("w", weights)],
    )
    return _save(graph, path)


def build_swapper(
    path: Path,
    seed: int = 7,
    *,
    names: tuple[str, str] = ("target", "source"),
    output: str = "output",
    source_first: bool = False,
    fp16: bool = False,
    declared: bool = True,
) -> Path:
    """inswapper_128's layout by default. `names` (target, source) and `output` rename the
    inputs and output, `source_first` puts the identity input first, `fp16` gives float16
    inputs, output and emap (a half-precision conversion), `declared=False` leaves the inputs'
    shapes symbolic — the variations exports in the wild show."""
    rng = np.random.default_rng(seed)
    tint = rng.standard_normal((512, 3)).astype(np.float32)
    emap = (rng.standard_normal((512, 512)) / np.sqrt(512)).astype(np.float32)
    target_in, source_in = names
    io_type = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    # The float32 body reads `t_in`/`s_in`: the inputs, as they are or cast to float32.
    head = [
        helper.make_node("Cast", [src], [dst], to=TensorProto.FLOAT)
        if fp16
        else helper.make_node("Identity", [src], [dst])
        for src, dst in ((target_in, "t_in"), (source_in, "s_in"))
    ]
    nodes = [
        *head,
        helper.make_node("Sub", ["one", "t_in"], ["inv"]),
        helper.make_node("Mul", ["inv", "half"], ["soft"]),
        helper.make_node("Add", ["soft", "quarter"], ["base"]),
        helper.make_node("MatMul", ["s_in", "tint"], ["who"]),
        helper.make_node("Tanh", ["who"], ["who_t"]),
        helper.make_node("Mul", ["who_t", "fifth"], ["who_s"]),
        helper.make_node("Reshape", ["who_s", "shape_c"], ["who_c"]),
        helper.make_node("Add", ["base", "who_c"], ["raw"]),
        helper.make_node("Clip", ["raw", "zero", "one"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], [output], to=io_type)
        if fp16
        else helper.make_node("Identity", ["clipped"], [output]),
    ]
    inits = [
        _init("one", np.array(1.0, np.float32)),
        _init("zero", np.array(0.0, np.float32)),
        _init("half", np.array(0.5, np.float32)),
        _init("quarter", np.array(0.25, np.float32)),
        _init("fifth", np.array(0.2, np.float32)),
        _init("tint", tint),
        _init("shape_c", np.array([1, 3, 1, 1], np.int64)),
        # last: insightface's INSwapper reads initializer[-1] as emap
        _init("emap", emap.astype(np.float16) if fp16 else emap),
    ]
    target = helper.make_tensor_value_info(
        target_in, io_type, [1, 3, 128, 128] if declared else ["n", "c", "h", "w"]
    )
    source = helper.make_tensor_value_info(source_in, io_type, [1, 512] if declared else ["n", "d"])
    graph = helper.make_graph(
        nodes,
        "inswapper_test",
        [source, target] if source_first else [target, source],
        [helper.make_tensor_value_info(output, io_type, [1, 3, 128, 128])],
        inits,
    )
    return _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


# -- real imagery: two people side by side --------------------------------------------------------
FRAME_W, FRAME_H = 640, 360
TILE = 192
# Where each tile is cut from its photo, and where it lands in the frame.
ASTRONAUT_CUT, ASTRONAUT_AT = (130, 40), (40, 84)
CAMERAMAN_CUT, CAMERAMAN_AT = (140, 60), (400, 84)
# Hand-placed on the photos (pixels of the 512×512 originals).
ASTRONAUT_FACE = KnownFace(
    (180, 70, 270, 165), ((202, 101), (246, 102), (225, 125), (206, 145), (242, 145))
)
CAMERAMAN_FACE = KnownFace(
    (195, 110, 275, 200), ((225, 145), (255, 147), (250, 165), (232, 180), (250, 181))
)


def _moved(face: KnownFace, cut: tuple[int, int], at: tuple[int, int]) -> KnownFace:
    dx, dy = at[0] - cut[0], at[1] - cut[1]
    x0, y0, x1, y1 = face.box
    return KnownFace(
        (x0 + dx, y0 + dy, x1 + dx, y1 + dy), tuple((x + dx, y + dy) for x, y in face.kps)
    )


def frame_faces() -> tuple[KnownFace, KnownFace]:
    """(astronaut, cameraman) in frame pixels — also detector pixels at det_size 640."""
    return (
        _moved(ASTRONAUT_FACE, ASTRONAUT_CUT, ASTRONAUT_AT),
        _moved(CAMERAMAN_FACE, CAMERAMAN_CUT, CAMERAMAN_AT),
    )


def two_people(astronaut: bool = True, cameraman: bool = True) -> np.ndarray:
    """A 640×360 RGB frame: the astronaut left, the cameraman right (either may be left out)."""
    import skimage.data

    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    if astronaut:
        (cx, cy), (ax, ay) = ASTRONAUT_CUT, ASTRONAUT_AT
        frame[ay : ay + TILE, ax : ax + TILE] = skimage.data.astronaut()[
            cy : cy + TILE, cx : cx + TILE
        ]
    if cameraman:
        (cx, cy), (ax, ay) = CAMERAMAN_CUT, CAMERAMAN_AT
        gray = skimage.data.camera()[cy : cy + TILE, cx : cx + TILE]
        frame[ay : ay + TILE, ax : ax + TILE] = gray[..., None]
    return frame


def pins(folder: Path, *names: str) -> dict:
    """A catalog entry's pins (sha256 and size) of the files `names` in `folder`."""
    return {
        "sha256": {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names},
        "size": {n: (folder / n).stat().st_size for n in names},
    }


def write_catalog(folder: Path, pack: str, det_rec: tuple[str, str], **about: str) -> None:
    """The store's catalog.yaml: the analyser pack `pack` (its detector and recognizer files)
    and test_swapper.onnx as test_swapper, each pinned to the files in `folder` and carrying
    the fields `about` (licence, source)."""
    det, rec = det_rec
    models = {
        pack: {
            "step": "swap",
            "role": "analyser",
            "files": [det, rec],
            "modules": {det: "detection", rec: "recognition"},
            **pins(folder, det, rec),
            **about,
        },
        "test_swapper": {
            "step": "swap",
            "role": "swapper",
            "files": ["test_swapper.onnx"],
            **pins(folder, "test_swapper.onnx"),
            **about,
        },
    }
    (folder / "catalog.yaml").write_text(yaml.safe_dump({"models": models}))


def build_face_store(folder: Path, det_size: int = 640, swapper: dict | None = None) -> Path:
    """A model store holding the three test models under test names, with a catalog.yaml;
    `swapper`: build_swapper's variations for the swapper file."""
    build_detector(folder / "test_det.onnx", list(frame_faces()), det_size)
    build_recognizer(folder / "test_rec.onnx")
    build_swapper(folder / "test_swapper.onnx", **(swapper or {}))

    write_catalog(
        folder, "test_faces", ("test_det.onnx", "test_rec.onnx"),
        licence="test", source="tests/face_models.py",
    )  # fmt: skip
    return folder
