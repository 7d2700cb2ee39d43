"""Cost-true stand-ins: the real architectures of the pipeline's models, with random weights.

    python bench/cost_models.py [--only NAME ...] [--force] [--out .cache/cost-models]

The test models (tests/face_models.py, enhance_models.py, mask_models.py, lipsync_fixtures.py)
have the real signatures and cost next to nothing, so a speed figure measured with them says
nothing about the real step. The weights of inswapper_128, GFPGAN 1.4, GPEN-BFR-512,
CodeFormer, Wav2Lip 96, XSeg and BiSeNet-34 are nowhere here; what costs time is their
architecture, which is published. This script builds each as an ONNX file with that
architecture and random weights (bench/cost_archs.py, torch modules written from the papers),
with the input and output names, shapes and dtypes of the file the pipeline loads, and checks
each file through the pipeline's own loader (processors/…), unchanged, on one input.

Torch lives in its own venv (`.cache/venv-costmodels`, made here with pinned versions on first
use), so the project's environment stays torch-free; export runs there, everything else here.
A file already present is kept (`--force` rebuilds). The summary — inputs, outputs, parameters,
multiply-adds counted from the graph (`count_macs`), file size, build and run time — goes to
`<out>/summary.json` and is printed as a Markdown table (bench/RESULTS.md has it with sources).
Benchmarks only: correctness tests keep the small signature models.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VENV = ROOT / ".cache" / "venv-costmodels"
OUT = ROOT / ".cache" / "cost-models"
ARCHS = Path(__file__).resolve().parent / "cost_archs.py"
# torch 2.13.0 is the CPU wheel this machine carries; onnx as in the main environment.
PINS = ("torch==2.13.0", "numpy==2.4.6", "onnx==1.23.2")
PROVIDERS = ["CPUExecutionProvider"]
MODELS = (
    "xseg_1",
    "bisenet_resnet_34",
    "wav2lip_gan_96",
    "inswapper_128",
    "gpen_bfr_512",
    "gfpgan_1.4",
    "codeformer",
)
# Ops whose multiply-adds are counted: the convolutions and matrix products, where nearly all of
# these models' arithmetic is. Element-wise ops, norms, resizes and pooling are not counted.
COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


class UnknownShape(Exception):
    """A counted node's shapes could not be inferred, so its multiply-adds are unknown."""


# -- counting -----------------------------------------------------------------------------------


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which every node computed from constants alone is replaced by its value (an
    initializer). torch's exporter builds a reflection pad's pads from a dozen constant nodes,
    which hides every later shape from shape inference."""
    from onnx.reference import ReferenceEvaluator

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    known = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    opsets = list(model.opset_import)
    kept = []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.domain or node.op_type.startswith("Random") or not all(i in known for i in inputs):
            kept.append(node)
            continue
        single = helper.make_model(
            helper.make_graph(
                [node],
                "fold",
                [],
                [helper.make_value_info(o, onnx.TypeProto()) for o in node.output],
            ),
            opset_imports=opsets,
        )
        values = ReferenceEvaluator(single).run(None, {i: known[i] for i in inputs})
        for name, value in zip(node.output, values, strict=True):
            known[name] = np.asarray(value)
            graph.initializer.append(numpy_helper.from_array(known[name], name))
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    unused = [i for i in graph.initializer if i.name not in used and i.name in known]
    for init in unused:  # constants only the folded nodes read
        graph.initializer.remove(init)
    return model


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every value's shape after ONNX shape inference. A symbolic dimension of a graph input
    (its batch) counts as 1, so figures are per sample; any other unknown dimension is None."""
    graph = model.graph
    batch = {d.dim_param for i in graph.input for d in i.type.tensor_type.shape.dim if d.dim_param}
    inferred = shape_inference.infer_shapes(fold_constants(model), data_prop=True).graph
    shapes: dict[str, list[int | None]] = {}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        if info.type.tensor_type.HasField("shape"):
            shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else (1 if d.dim_param in batch else None)
                for d in info.type.tensor_type.shape.dim
            ]
    for init in inferred.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _need(shapes: dict[str, list[int | None]], name: str, node: onnx.NodeProto) -> list[int]:
    shape = shapes.get(name)
    if shape is None or None in shape:
        where = f"{node.op_type} node {node.name or node.output[0]}"
        raise UnknownShape(f"{where}: the shape of {name} is not known ({shape})")
    return shape  # type: ignore[return-value]


def node_macs(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> int:
    """Multiply-adds of one Conv, ConvTranspose, MatMul or Gemm node (0 for any other op)."""
    if node.op_type == "Conv":
        out = _need(shapes, node.output[0], node)
        weight = _need(shapes, node.input[1], node)  # [Cout, Cin/groups, *kernel]
        return int(np.prod(out, dtype=np.int64) * np.prod(weight[1:], dtype=np.int64))
    if node.op_type == "ConvTranspose":
        x = _need(shapes, node.input[0], node)  # every input pixel meets Cout/groups kernels
        weight = _need(shapes, node.input[1], node)  # [Cin, Cout/groups, *kernel]
        return int(np.prod(x, dtype=np.int64) * np.prod(weight[1:], dtype=np.int64))
    if node.op_type == "MatMul":
        a = _need(shapes, node.input[0], node)
        out = _need(shapes, node.output[0], node)
        return int(np.prod(out, dtype=np.int64) * a[-1])
    if node.op_type == "Gemm":
        a = _need(shapes, node.input[0], node)
        out = _need(shapes, node.output[0], node)
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        return int(np.prod(out, dtype=np.int64) * (a[0] if trans_a else a[1]))
    return 0


def count_macs(model: onnx.ModelProto) -> int:
    """The graph's multiply-adds per sample, over its Conv/ConvTranspose/MatMul/Gemm nodes.
    Raises UnknownShape where a counted node's shapes cannot be inferred (never a silent 0)."""
    shapes = _shapes(model)
    return sum(node_macs(n, shapes) for n in model.graph.node if n.op_type in COUNTED)


def count_params(model: onnx.ModelProto) -> int:
    """Elements of the graph's floating-point initializers (its weights)."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    return sum(
        int(np.prod(i.dims, dtype=np.int64))
        for i in model.graph.initializer
        if i.data_type in floats
    )


def signature(model: onnx.ModelProto) -> dict[str, list[str]]:
    """`name [dims] dtype` of every graph input and output, as the file declares them."""

    def line(info: onnx.ValueInfoProto) -> str:
        t = info.type.tensor_type
        dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
        return (
            f"{info.name} [{','.join(dims)}] {onnx.TensorProto.DataType.Name(t.elem_type).lower()}"
        )

    init = {i.name for i in model.graph.initializer}
    inputs = [line(i) for i in model.graph.input if i.name not in init]
    return {"inputs": inputs, "outputs": [line(o) for o in model.graph.output]}


# -- building -----------------------------------------------------------------------------------


def venv_python(venv: Path = VENV) -> Path:
    """The costmodels venv's python, made (python -m venv + pinned pip install) when missing
    or made with other pins. Under a lock: parallel test workers may ask at once."""
    import fcntl

    python, stamp = venv / "bin" / "python", venv / "pins.txt"
    wanted = "\n".join(PINS)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp.exists() and stamp.read_text() == wanted:
            return python
        print(f"cost models: making {venv} ({', '.join(PINS)})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
        stamp.write_text(wanted)
    return python


def settle(path: Path) -> None:
    """Fold the export's constant subgraphs and declare the output's shape where inference
    knows it: the published files declare `[1,3,128,128]`, not the exporter's symbols."""
    model = fold_constants(onnx.load(str(path)))
    inferred = shape_inference.infer_shapes(model, data_prop=True).graph.output
    for declared, known in zip(model.graph.output, inferred, strict=True):
        dims = known.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") or d.dim_param in {"batch", "n"} for d in dims):
            declared.type.CopyFrom(known.type)
    onnx.save(model, str(path))


def add_emap(path: Path, seed: int = 0) -> None:
    """inswapper_128 carries its 512×512 identity projection as the graph's last initializer,
    used by no node (insightface and processors/swap/swapper.py read it from there)."""
    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    emap = (rng.standard_normal((512, 512)) / np.sqrt(512)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(emap, "emap"))
    onnx.save(model, str(path))


def build(name: str, folder: Path, *, force: bool = False) -> tuple[Path, float | None]:
    """The model's file in `folder` (kept if there, unless `force`), and its build time."""
    path = folder / f"{name}.onnx"
    if path.exists() and not force:
        return path, None
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.onnx")  # a file by the final name is always complete
    start = time.perf_counter()
    subprocess.run([str(venv_python()), "-W", "ignore", str(ARCHS), name, str(partial)], check=True)
    settle(partial)
    if name == "inswapper_128":
        add_emap(partial)
    onnx.checker.check_model(str(partial))
    partial.replace(path)
    return path, time.perf_counter() - start


# -- checking through the pipeline's loaders ----------------------------------------------------


def run_through_loader(name: str, path: Path) -> float:
    """Load the file with the loader the pipeline uses for it and run it once on a random input
    of the shape the step feeds; the seconds of that call. Raises what the loader raises."""
    rng = np.random.default_rng(0)

    def crop(side: int) -> np.ndarray:
        return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)

    start = time.perf_counter()
    if name == "inswapper_128":
        from processors.swap.swapper import Swapper

        swapper = Swapper(path, PROVIDERS)
        embedding = rng.standard_normal(512).astype(np.float32)
        start = time.perf_counter()
        out = swapper.swap(crop(128), swapper.latent(embedding / np.linalg.norm(embedding)))
        assert out.shape == (128, 128, 3), out.shape
    elif name in ("gfpgan_1.4", "gpen_bfr_512", "codeformer"):
        from processors.enhance.restorer import FaceRestorer

        restorer = FaceRestorer(path, PROVIDERS, batch_size=1)
        if restorer.has_weight != (name == "codeformer"):
            raise AssertionError(f"{name}: the loader found weight input = {restorer.has_weight}")
        start = time.perf_counter()
        out = restorer.restore(crop(512)[None])
        assert out.shape == (1, 512, 512, 3), out.shape
    elif name == "wav2lip_gan_96":
        from processors.lipsync.model import Wav2LipModel

        model = Wav2LipModel(path, batch_size=4)
        mels = rng.standard_normal((4, 1, 80, 16)).astype(np.float32)
        faces = rng.random((4, 6, 96, 96), dtype=np.float32)
        start = time.perf_counter()
        out = model.run(mels, faces)
        assert out.shape == (4, 3, 96, 96), out.shape
    elif name == "xseg_1":
        from processors.swap.masks import Occluder

        occluder = Occluder(path, PROVIDERS)
        start = time.perf_counter()
        out = occluder.mask(crop(256))
        assert out.shape == (256, 256), out.shape
    elif name == "bisenet_resnet_34":
        from processors.swap.masks import FaceParser

        parser = FaceParser(path, PROVIDERS)
        start = time.perf_counter()
        out = parser.mask(crop(512), ["skin", "mouth"])
        assert out.shape == (512, 512), out.shape
    else:
        raise ValueError(f"no loader check for {name}")
    return time.perf_counter() - start


def describe(name: str, path: Path) -> dict:
    model = onnx.load(str(path))
    return {
        "name": name,
        **signature(model),
        "params": count_params(model),
        "gmacs": round(count_macs(model) / 1e9, 3),
        "mib": round(path.stat().st_size / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=MODELS, help="this model (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild files already there")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in args.only or MODELS:
        path, built = build(name, args.out, force=args.force)
        row = describe(name, path)
        row["build_s"] = (
            round(built, 1) if built is not None else summary.get(name, {}).get("build_s")
        )
        row["cpu_call_s"] = round(run_through_loader(name, path), 2)
        summary[name] = row
        summary_path.write_text(json.dumps(summary, indent=1))
        print(
            f"{name}: {row['params'] / 1e6:.1f} M params, {row['gmacs']} GMACs, {row['mib']} MiB, "
            f"built in {row['build_s']} s, one call through the loader {row['cpu_call_s']} s "
            f"(CPU); in {'; '.join(row['inputs'])} → out {'; '.join(row['outputs'])}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
