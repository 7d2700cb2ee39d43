"""Runs inside the ultralytics venv (see tests/gpu_venv.py): `python ultralytics_worker.py
STORE FRAMES.npz OUT.json`.

Builds an untrained YOLOv8n from its yaml, rigs its classification biases so it finds
people and cars at known levels of the head (untrained, it finds nothing), saves it to the
model store as .pt and exports the same weights to .onnx, then runs our backends on the
frames: ultralytics on the .pt, ultralytics on the .onnx, and onnxruntime directly on the
.onnx. Writes every backend's boxes as JSON for the test to compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def build_model(store: Path) -> None:
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    head = model.model.model[-1]
    with torch.no_grad():
        for level, branch in enumerate(head.cv3):
            last = branch[-1]
            last.weight.mul_(0.2)  # keep scores input-dependent but near the bias
            if level == 2:
                last.bias[0] = 1.0  # stride-32 anchors: people, scores around 0.7
            if level == 1:
                last.bias[2] = 0.5  # stride-16 anchors: cars, which must never come back
    model.save(str(store / "yolov8n.pt"))
    exported = YOLO(str(store / "yolov8n.pt")).export(format="onnx", imgsz=640, verbose=False)
    Path(exported).replace(store / "yolov8n.onnx")


def export_variants(store: Path) -> dict[str, Path]:
    """The same weights as other exports meet them in the wild: fixed batch 3; the batch-1
    export with its Ultralytics metadata stripped (a third-party converter's file); and that
    file relabelled as a one-class face model."""
    import onnx
    from ultralytics import YOLO

    work = store / "variants"
    work.mkdir()
    bare = onnx.load(str(store / "yolov8n.onnx"))
    del bare.metadata_props[:]
    onnx.save(bare, str(work / "bare.onnx"))
    face = onnx.load(str(store / "yolov8n.onnx"))
    for prop in face.metadata_props:
        if prop.key == "names":
            prop.value = "{0: 'face'}"
    onnx.save(face, str(work / "face.onnx"))
    # Exported beside the .pt, over yolov8n.onnx: moved out of the way, the original put back.
    keep = (store / "yolov8n.onnx").read_bytes()
    exported = YOLO(str(store / "yolov8n.pt")).export(
        format="onnx", imgsz=640, batch=3, verbose=False
    )
    Path(exported).replace(work / "batch3.onnx")
    (store / "yolov8n.onnx").write_bytes(keep)
    return {p.stem: p for p in sorted(work.glob("*.onnx"))}


def unfiltered_classes(store: Path, frames: list[np.ndarray]) -> list[list[int]]:
    """The classes plain ultralytics finds per frame with no class filter (of ours or its)."""
    from ultralytics import YOLO

    from processors.crop.yolo import letterbox

    model = YOLO(str(store / "yolov8n.pt"))
    out = []
    for frame in frames:
        image, _ = letterbox(frame)
        # ultralytics reads numpy images as BGR: give it BGR so it sees our RGB frame.
        result = model.predict(image[..., ::-1], conf=0.5, imgsz=640, verbose=False)[0]
        out.append(sorted(int(c) for c in result.boxes.cls.tolist()))
    return out


def crop_through_the_chain(store: Path, frame: np.ndarray) -> dict:
    """The crop step built the way a task builds it, on detector `yolo` from the store."""
    from fractions import Fraction

    from core.domain import VideoInfo
    from processors.base import ProcessorContext
    from processors.chain import Chain
    from processors.media.frames import FrameBatch

    height, width = frame.shape[:2]
    info = VideoInfo(
        duration=1.0, fps_num=10, fps_den=1, frame_count=10, width=width, height=height
    )
    ctx = ProcessorContext(
        info=info, rate=Fraction(10), width=width, height=height, model_store=str(store)
    )
    chain = Chain([{"name": "crop", "options": {"detector": "yolo", "batch_size": 3}}], ctx)
    frames = np.stack([frame] * 10)
    out: list[FrameBatch] = []
    chain.run([FrameBatch(frames[:6], np.arange(6)), FrameBatch(frames[6:], np.arange(6, 10))],
              out.append, keep=(0, 10))  # fmt: skip
    return {
        "indices": [int(i) for b in out for i in b.indices],
        "shape": list(out[0].frames.shape[1:]),
        "size": list(chain.processors[0].output_size()),
    }


def main() -> int:
    store, frames_path, out_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    build_model(store)
    from processors.crop.detector_choice import make_detector

    with np.load(frames_path) as archive:
        frames = [archive[k] for k in sorted(archive.files, key=lambda k: int(k[4:]))]
    results: dict[str, object] = {}
    for name, detector, weights in (
        ("ultralytics-pt", "yolo", "yolov8n.pt"),
        ("ultralytics-onnx", "yolo", "yolov8n.onnx"),
        ("onnxruntime", "yolo-onnx", "yolov8n.onnx"),
    ):
        backend = make_detector(detector, weights=store / weights, device="cpu", confidence=0.5)
        results[name] = backend.detect(frames)
        results[name + ":batch_size"] = backend.batch_size
    # Fixed-batch and metadata-less exports, fed the whole 4-frame batch at once.
    from processors.crop.yolo_ultralytics import export_facts
    from processors.models.store import ModelIncompatible

    variants = {"yolov8n": store / "yolov8n.onnx", **export_variants(store)}
    for name, path in variants.items():
        facts = export_facts(path)
        results[f"facts:{name}"] = [facts.max_batch, facts.fixed]
        try:
            backend = make_detector("yolo", weights=path, device="cpu", confidence=0.5)
        except ModelIncompatible as exc:
            results[f"refused:{name}"] = [exc.code, str(exc)]
            continue
        results[f"ultralytics-{name}"] = backend.detect(frames)
    # A job that asks for a GPU, on this machine without CUDA: refused, never the CPU.
    from processors.gpu import GpuUnavailable, gpu_required_here

    with gpu_required_here(True):
        try:
            make_detector("yolo", weights=store / "yolov8n.pt", device="auto")
        except GpuUnavailable as exc:
            results["gpu-required"] = [exc.code, str(exc)]
    results["unfiltered"] = unfiltered_classes(store, frames)
    results["crop"] = crop_through_the_chain(store, frames[0])
    out_path.write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
