"""YOLO exported to ONNX, run directly through onnxruntime (CPU or CUDA provider, no torch).

The model takes `[B, 3, 640, 640]` float RGB in 0..1 and returns `[B, 84, N]` (N = 8400 for
a 640 input). A model exported with a fixed batch of 1 is fed one frame at a time; one with a
dynamic (or larger fixed) batch gets whole batches. A float16 export gets float16 input.

Any other head (a face-only YOLO's `[B, 5, N]`, an end-to-end export's `[B, 300, 6]` with NMS
inside, a segmentation model's two outputs) is refused when the detector is built: run, it
would decode garbage or find nobody, and the job would "succeed" with a centre crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from processors.crop.detectors import Box, DetectorSetupError
from processors.crop.yolo import INPUT_SIZE, Letterbox, decode_head, letterbox
from processors.gpu import GpuUnavailable
from processors.models.sessions import input_dtype, onnx_session
from processors.models.store import ModelIncompatible

HEAD_ROWS = 84  # cx, cy, w, h + the 80 COCO class scores (class 0 is the person we follow)
EXPECTED = f"one input [B,3,H,W] and one output [B,{HEAD_ROWS},N] (a COCO YOLO detect head, no NMS)"
EXPORT_ADVICE = (
    "export a COCO detection model without NMS, e.g. "
    "`yolo export model=yolo11n.pt format=onnx` (not nms=True, not a face or seg model)"
)


def describe(items: Sequence) -> str:
    """`name[1,3,640,640]` for each onnxruntime input/output, symbolic dims by name."""
    return ", ".join(f"{i.name}[{','.join(str(d) for d in i.shape)}]" for i in items)


def _fixed(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def check_yolo_signature(session, file: str) -> None:
    """Refuse a model whose declared shapes are not a YOLO detect head's; when the output's
    row count is not declared (symbolic), run one grey image and check what comes out."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    found = f"inputs {describe(inputs)}; outputs {describe(outputs)}"
    shape_in = list(inputs[0].shape) if inputs else []
    ok = (
        len(inputs) == 1
        and len(outputs) == 1
        and len(shape_in) == 4
        and _fixed(shape_in[1]) in (None, 3)
        and len(outputs[0].shape) == 3
        and _fixed(outputs[0].shape[1]) in (None, HEAD_ROWS)
    )
    if not ok:
        raise ModelIncompatible(file, EXPECTED, found, EXPORT_ADVICE)
    if _fixed(outputs[0].shape[1]) is None:
        size = _fixed(shape_in[2]) or INPUT_SIZE
        dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        probe = np.full((_fixed(shape_in[0]) or 1, 3, size, size), 114 / 255, dtype)
        rows = session.run(None, {inputs[0].name: probe})[0].shape
        if len(rows) != 3 or rows[1] != HEAD_ROWS:
            raise ModelIncompatible(
                file, EXPECTED, f"{found} (run: [{','.join(map(str, rows))}])", EXPORT_ADVICE
            )


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise DetectorSetupError(
            f"crop.device cuda: onnxruntime has no CUDA provider here (has {available})"
        )
    return ["CPUExecutionProvider"]


class OnnxYoloDetector:
    def __init__(self, weights: Path, *, device: str = "auto", confidence: float = 0.25) -> None:
        try:
            import onnxruntime  # noqa: F401  (only: is it installed)
        except ImportError:
            raise DetectorSetupError(
                "detector yolo-onnx needs onnxruntime (pip install onnxruntime, or "
                "onnxruntime-gpu on a GPU machine)"
            ) from None
        try:
            # Without spinning: idle worker threads would take the CPU the decoder needs.
            # `device: cpu` is the step's own choice: honoured even when the job asks for a GPU.
            self._session = onnx_session(
                weights, _providers(device), spinning=False, cpu_by_choice=device == "cpu"
            )
        except (DetectorSetupError, GpuUnavailable):
            raise
        except Exception as exc:
            raise DetectorSetupError(f"cannot load YOLO model {weights}: {exc}") from None
        check_yolo_signature(self._session, weights.name)
        self.on_gpu = self._session.get_providers()[0] == "CUDAExecutionProvider"
        self.confidence = confidence
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self._dtype = input_dtype(inp)
        batch, _, height, width = inp.shape
        if isinstance(height, int) and isinstance(width, int):
            if height != width:
                raise DetectorSetupError(f"{weights}: expected a square input, got {inp.shape}")
            self.size = height
        else:
            self.size = INPUT_SIZE
        # A fixed batch dimension is the most the model accepts per run.
        self._max_batch = batch if isinstance(batch, int) else None
        self.batch_size = 32 if self.on_gpu else 4

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        results: list[list[Box]] = []
        step = self._max_batch or len(frames) or 1
        for start in range(0, len(frames), step):
            results.extend(self._run(frames[start : start + step]))
        return results

    def _run(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        n = len(frames)
        # One uint8 letterboxed copy per frame, then one HWC→CHW float conversion per batch.
        images = np.empty((self._max_batch or n, self.size, self.size, 3), np.uint8)
        boxes: list[Letterbox] = []
        for i, frame in enumerate(frames):
            boxes.append(letterbox(frame, self.size, out=images[i])[1])
        if len(images) > n:  # a fixed-batch model given fewer frames: pad with grey
            images[n:] = 114
        tensor = images.transpose(0, 3, 1, 2).astype(self._dtype) / self._dtype(255)
        head = self._session.run(None, {self._input: tensor})[0]
        out: list[list[Box]] = []
        for i, fit in enumerate(boxes):
            xyxy, _ = decode_head(np.asarray(head[i], np.float32), self.confidence)
            out.append([tuple(map(float, b)) for b in fit.to_frame(xyxy)])
        return out
