"""ArcFace face embeddings on onnxruntime (w600k_r50, w600k_mbf and files of their signature).

The face is aligned by its five landmarks onto insightface's ArcFace template at the model's
input size, then fed as insightface's `ArcFaceONNX` feeds it: RGB, (x − 127.5) / 127.5, NCHW —
except for an MXNet-converted file that normalises inside its graph (its first nodes are named
`Sub`/`_minus…` and `Mul`/`_mul…`), which gets raw pixels (mean 0, std 1), as insightface does.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from processors.gpu import GpuUnavailable
from processors.models.sessions import onnx_session


class RecogniserUnusable(ValueError):
    """The file is not an ArcFace-style recogniser; the message names it and its shapes."""


def _normalises_inside(path: Path) -> bool:
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node[:8]
    names = [n.name for n in nodes]
    sub = any(n.startswith(("Sub", "_minus")) for n in names)
    mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return sub and mul


class ArcFaceRecogniser:
    def __init__(self, path: Path, providers: list[str]) -> None:
        try:
            self.session = onnx_session(path, providers)
        except GpuUnavailable:  # not the file's fault: the status code says what it is
            raise
        except Exception as exc:  # onnxruntime raises its own types for a file it cannot read
            raise RecogniserUnusable(
                f"{path.name}: not an ONNX model onnxruntime can load"
            ) from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        size = shape[2] if len(shape) == 4 else None
        if (
            len(outputs) != 1
            or not isinstance(size, int)
            or shape[3] != size
            or shape[1] != 3
            or size % 16
        ):
            raise RecogniserUnusable(
                f"{path.name}: not an ArcFace face recogniser (expected one [1,3,S,S] input and "
                f"one embedding output); found inputs {[i.shape for i in inputs]}, outputs "
                f"{[o.shape for o in outputs]}"
            )
        self.size = size
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        inside = _normalises_inside(path)
        self.mean, self.std = (0.0, 1.0) if inside else (127.5, 127.5)

    def embed(self, rgb: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """The L2-normalised embedding of the face with these landmarks in an RGB image."""
        from processors.face_align import align_matrix

        matrix = align_matrix(kps, self.size)
        crop = cv2.warpAffine(rgb, matrix, (self.size, self.size), borderValue=0.0)
        blob = ((crop.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        feat = self.session.run([self.output_name], {self.input_name: blob})[0].reshape(-1)
        return (feat / max(float(np.linalg.norm(feat)), 1e-12)).astype(np.float32)
