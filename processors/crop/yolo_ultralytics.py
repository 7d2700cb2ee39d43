"""YOLO through ultralytics (the GPU image): `.engine`, `.pt` or `.onnx` weights, fp16 on GPU.

ultralytics' `AutoBackend` hides which of the three it was given. We letterbox the frames
ourselves (the same maths as the onnxruntime backend) and hand ultralytics a ready
`[B, 3, 640, 640]` tensor: it then skips its own preprocessing, which would otherwise read
our RGB frames as BGR and copy every frame twice more.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from processors.crop.detectors import Box, DetectorSetupError
from processors.crop.yolo import INPUT_SIZE, IOU_THRESHOLD, MAX_DETECTIONS, PERSON, letterbox


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
            self._model = YOLO(str(weights), task="detect")
        except Exception as exc:
            raise DetectorSetupError(f"cannot load YOLO model {weights}: {exc}") from None

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        if not frames:
            return []
        torch = self._torch
        images = np.empty((len(frames), INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
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
        for fit, result in zip(fits, results, strict=True):
            xyxy = result.boxes.xyxy.float().cpu().numpy()
            out.append([tuple(map(float, b)) for b in fit.to_frame(xyxy)])
        return out
