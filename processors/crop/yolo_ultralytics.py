"""YOLO through ultralytics (the GPU image): `.engine`, `.pt` or `.onnx` weights, fp16 on GPU.

ultralytics' `AutoBackend` hides which of the three it was given. We letterbox the frames
ourselves (the same maths as the onnxruntime backend) and hand ultralytics a ready
`[B, 3, 640, 640]` tensor: it then skips its own preprocessing, which would otherwise read
our RGB frames as BGR and copy every frame twice more.

An export has a batch it accepts: `yolo export ... batch=1` (the default) fixes it at 1, a
`dynamic=True` engine takes up to its `batch`. We read it from the file (the engine's
Ultralytics header, the ONNX input shape) and feed runs of at most that many frames, padding
a short run of a fixed-batch export — whatever the installed ultralytics does on its own.
A model that is not a COCO detector (80 classes, class 0 person) is refused at setup.
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processors.crop.detectors import Box, DetectorSetupError
from processors.crop.yolo import (
    INPUT_SIZE,
    IOU_THRESHOLD,
    MAX_DETECTIONS,
    PAD_VALUE,
    PERSON,
    letterbox,
)
from processors.gpu import GpuUnavailable, gpu_required, torch_cuda_missing
from processors.models.store import ModelIncompatible

COCO_CLASSES = 80


@dataclass(frozen=True)
class ExportFacts:
    """What a weights file says about itself before ultralytics runs it."""

    max_batch: int | None  # frames per run at most; None: any
    fixed: bool  # exactly max_batch per run (a short run is padded)
    names: dict[int, str] | None  # class names, when the file carries them


def _literal(raw: object) -> object:
    """Ultralytics metadata values arrive as Python literals in strings (ONNX) or as JSON."""
    if isinstance(raw, str):
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None
    return raw


def _names(raw: object) -> dict[int, str] | None:
    raw = _literal(raw)
    if isinstance(raw, dict):
        return {int(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return dict(enumerate(map(str, raw)))
    return None


def engine_header(path: Path) -> dict:
    """The metadata an Ultralytics `.engine` export writes ahead of the serialized engine (a
    little-endian int32 length, then JSON); {} for an engine built some other way."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(4), "little")
        if not 0 < size <= path.stat().st_size - 4:
            return {}
        try:
            meta = json.loads(handle.read(size))
        except (ValueError, UnicodeDecodeError):
            return {}
    return meta if isinstance(meta, dict) else {}


def export_facts(weights: Path) -> ExportFacts:
    suffix = weights.suffix.lower()
    if suffix == ".engine":
        meta = engine_header(weights)
        args = _literal(meta.get("args"))
        dynamic = isinstance(args, dict) and bool(args.get("dynamic", False))
        # No header: nothing says what the engine accepts; one frame per run always fits.
        batch = int(meta.get("batch", 1) or 1)
        return ExportFacts(batch, not dynamic, _names(meta.get("names")))
    if suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return ExportFacts(None, False, None)
        from processors.crop.yolo_onnx import check_yolo_signature

        session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
        names = _names(session.get_modelmeta().custom_metadata_map.get("names"))
        if names is None:  # a third-party export: our decoder's standard is the one we know
            check_yolo_signature(session, weights.name)
        batch = session.get_inputs()[0].shape[0]
        fixed = isinstance(batch, int) and batch > 0
        return ExportFacts(batch if fixed else None, fixed, names)
    return ExportFacts(None, False, None)  # .pt: ultralytics takes any batch


def check_classes(names: dict[int, str] | None, file: str) -> None:
    """The crop follows class 0 as a person: a face-only or custom-class model would be
    followed as if it were one, so a file whose class names say otherwise is refused."""
    if names is None:
        return
    # Unnamed classes ("0", "class0": a model built from its yaml) are taken as COCO's order.
    if len(names) != COCO_CLASSES or names.get(PERSON) not in ("person", "0", "class0"):
        first = ", ".join(f"{k}: {v}" for k, v in sorted(names.items())[:3])
        raise ModelIncompatible(
            file,
            f"a COCO detection model ({COCO_CLASSES} classes, class {PERSON} person)",
            f"{len(names)} classes ({first}{', …' if len(names) > 3 else ''})",
            "export a COCO model, e.g. `yolo export model=yolo11n.pt format=engine half=True`",
        )


class UltralyticsYoloDetector:
    def __init__(self, weights: Path, *, device: str = "auto", confidence: float = 0.25) -> None:
        # ultralytics writes a settings file under ~/.config unless told where.
        os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir(), "ultralytics")))
        try:
            import torch
            from ultralytics import YOLO
        except ImportError:
            raise DetectorSetupError(
                "detector yolo needs ultralytics and torch (the `gpu` extra); "
                "use detector yolo-onnx on machines without them"
            ) from None
        cuda = torch.cuda.is_available()
        if not cuda and device != "cpu" and gpu_required():
            # The job asks for a GPU: `auto` must not quietly become the CPU.
            raise GpuUnavailable(weights.name, torch_cuda_missing(torch))
        if device == "cuda" and not cuda:
            raise DetectorSetupError("crop.device cuda: torch sees no CUDA device here")
        self.device = "cuda:0" if cuda and device != "cpu" else "cpu"
        self.on_gpu = self.device != "cpu"
        self.half = self.on_gpu  # fp16 on the GPU; CPUs gain nothing from it
        self.confidence = confidence
        self.batch_size = 32 if self.on_gpu else 4
        self._torch = torch
        from ultralytics.cfg import DEFAULT_CFG_DICT

        # ultralytics ≥ 8.4 names precision `quantize`; earlier releases take `half`.
        if not self.half:
            self._precision: dict = {}
        elif "quantize" in DEFAULT_CFG_DICT:
            self._precision = {"quantize": "fp16"}
        else:
            self._precision = {"half": True}
        try:
            facts = export_facts(weights)
            self._model = YOLO(str(weights), task="detect")
        except ModelIncompatible:
            raise
        except Exception as exc:
            raise DetectorSetupError(f"cannot load YOLO model {weights}: {exc}") from None
        if getattr(self._model, "task", "detect") != "detect":
            raise ModelIncompatible(
                weights.name, "a detection model", f"a {self._model.task} model", ""
            )
        names = facts.names
        if names is None and weights.suffix.lower() == ".pt":
            names = _names(self._model.names)  # a .pt carries its own, read without a run
        check_classes(names, weights.name)
        self._max_batch, self._fixed = facts.max_batch, facts.fixed

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        """Runs of at most the export's batch (a short run of a fixed-batch export padded)."""
        out: list[list[Box]] = []
        step = self._max_batch or len(frames) or 1
        for start in range(0, len(frames), step):
            out.extend(self._predict(frames[start : start + step]))
        return out

    def _predict(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        if not frames:
            return []
        torch = self._torch
        n = len(frames)
        rows = self._max_batch if self._fixed and self._max_batch else n
        images = np.full((rows, INPUT_SIZE, INPUT_SIZE, 3), PAD_VALUE, np.uint8)
        fits = [letterbox(frame, INPUT_SIZE, out=images[i])[1] for i, frame in enumerate(frames)]
        tensor = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2)
        tensor = (tensor.half() if self.half else tensor.float()) / 255
        results = self._model.predict(
            source=tensor,
            conf=self.confidence,
            iou=IOU_THRESHOLD,
            classes=[PERSON],
            max_det=MAX_DETECTIONS,
            device=self.device,
            imgsz=INPUT_SIZE,
            verbose=False,
            **self._precision,
        )
        out: list[list[Box]] = []
        for fit, result in zip(fits, results[:n], strict=True):
            xyxy = result.boxes.xyxy.float().cpu().numpy()
            out.append([tuple(map(float, b)) for b in fit.to_frame(xyxy)])
        return out
