"""Face restoration models (GFPGAN, GPEN-BFR, CodeFormer ONNX exports) through onnxruntime.

The exports FaceFusion publishes share one contract: an aligned face crop in `input`,
`[N, 3, S, S]` float32, RGB scaled to [-1, 1]; the restored crop in `output`, the same layout
and range (clipped to it before it becomes pixels again). CodeFormer takes one more input,
`weight`: its fidelity, a single float64 (FaceFusion feeds shape `[1]`). S is 512 for the three
models here. Other exports rename these, so inputs are found by shape — the one 4-D image input
and at most one single-value input — and by the names `input`/`weight` only where a shape is
not declared. Calls always carry `batch_size` crops (a short batch is padded), so the model
sees one shape per job. Many exports fix the batch at 1: those get one face per call, whatever
`batch_size` says; a fixed batch above 1 is used as the batch size. Some declare a dynamic
batch yet work only with one (a reshape to a fixed shape inside): a file whose batch is open
is tried with a call of two at set-up, and one that fails it gets one face per call
(FaceFusion's own way for every file), logged once — `batch_size` is an upper bound.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from processors.models.sessions import describe_io, model_session

log = logging.getLogger("dropbatch.enhance")

EXPECTED = (
    "an image input [N,3,S,S] (float, RGB in [-1,1]), optionally one single-value `weight` "
    "input, and an output [N,3,S,S]"
)
DEFAULT_SIZE = 512  # every model of this step works on 512×512 crops


class RestorerUnusable(Exception):
    """The file is not a face restoration model of this contract; the message names it."""

    code = "MODEL_INCOMPATIBLE"


def _numpy_type(item) -> type:
    return {"tensor(double)": np.float64, "tensor(float16)": np.float16}.get(item.type, np.float32)


def _same_layout(image, output) -> bool:
    """A square crop in, the same crop out, as far as the file declares its shapes."""
    dims = list(image.shape)
    height, width = (dims[2], dims[3]) if len(dims) == 4 else (None, None)
    if isinstance(height, int) and isinstance(width, int) and height != width:
        return False
    declared = list(output.shape)
    if len(declared) != 4:
        return not declared  # an output whose shape the file leaves open is checked per call
    return all(
        not (isinstance(a, int) and isinstance(b, int)) or a == b
        for a, b in zip(declared[1:], [3, height, width], strict=True)
    )


def _single_value(shape: list) -> bool:
    # [], [1] or [1, 1]: one number however the export shaped it.
    return len(shape) <= 2 and all(d == 1 for d in shape)


class FaceRestorer:
    """One restoration model, ready to restore batches of aligned crops."""

    def __init__(self, path: Path, providers: list[str], *, batch_size: int = 8) -> None:
        try:
            import onnxruntime  # noqa: F401  (only: is it installed)
        except ImportError:
            raise RestorerUnusable(
                "enhance needs onnxruntime (pip install onnxruntime, or the gpu extra)"
            ) from None
        self.session = model_session(path, providers, RestorerUnusable)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        image = next((i for i in inputs if len(i.shape) == 4 and i.shape[1] == 3), None)
        if image is None:
            image = next((i for i in inputs if i.name == "input"), None)
        rest = [i for i in inputs if i is not image]
        weight = next((i for i in rest if _single_value(list(i.shape))), None)
        if weight is None:
            weight = next((i for i in rest if i.name == "weight"), None)
        unknown = len(inputs) - 1 - (weight is not None)  # inputs it would not know to feed
        found = f"inputs {describe_io(inputs)}; outputs {describe_io(outputs)}"
        if image is None or unknown or len(outputs) != 1 or not _same_layout(image, outputs[0]):
            raise RestorerUnusable(
                f"{path.name} is not a face restoration model: expected {EXPECTED}, got {found}"
            )
        self.file = path.name
        self.image_name = image.name
        self._image_dtype = _numpy_type(image)
        side = image.shape[2]
        self.size = side if isinstance(side, int) and side > 0 else DEFAULT_SIZE
        self.weight_name = weight.name if weight is not None else None
        self._weight_dtype = _numpy_type(weight) if weight is not None else np.float64
        # The weight goes in with the rank the file declares; [1], as FaceFusion feeds it, where
        # it declares none (onnxruntime reports an undeclared shape and a scalar alike as []).
        declared = list(weight.shape) if weight is not None else []
        self._weight_shape = tuple(1 for _ in declared) or (1,)
        self.output_name = outputs[0].name
        batch = image.shape[0]
        # A file exported with a fixed batch takes only that many crops per call.
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.batch_size = self.fixed_batch or max(1, batch_size)
        if self.fixed_batch is None and self.batch_size > 1 and not self._takes_two():
            log.warning(
                "%s declares a dynamic batch but fails a call of two faces: one face per call",
                self.file,
            )
            self.batch_size = 1

    def _takes_two(self) -> bool:
        """Whether a call of two (blank) crops runs and gives two crops back."""
        blob = np.zeros((2, 3, self.size, self.size), self._image_dtype)
        feed = {self.image_name: blob}
        if self.weight_name is not None:
            feed[self.weight_name] = np.full(self._weight_shape, 0.5, self._weight_dtype)
        try:
            pred = self.session.run([self.output_name], feed)[0]
        except Exception:  # onnxruntime's errors share no narrower base
            return False
        return tuple(pred.shape)[:2] == (2, 3)

    @property
    def has_weight(self) -> bool:
        return self.weight_name is not None

    def restore(self, crops: np.ndarray, weight: float = 0.5) -> np.ndarray:
        """Aligned RGB uint8 crops [N, S, S, 3] -> restored RGB uint8 crops [N, S, S, 3]."""
        out = np.empty_like(crops)
        for start in range(0, len(crops), self.batch_size):
            part = crops[start : start + self.batch_size]
            out[start : start + len(part)] = self._run(part, weight)
        return out

    def _run(self, crops: np.ndarray, weight: float) -> np.ndarray:
        count = len(crops)
        blob = crops.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
        if count < self.batch_size:
            # Always one shape: a GPU backend may pick another algorithm for another batch
            # size, and a face's pixels must not depend on its batch-mates (chunks = one task).
            pad = np.zeros((self.batch_size - count, *blob.shape[1:]), np.float32)
            blob = np.concatenate([blob, pad])
        feed = {self.image_name: blob.astype(self._image_dtype)}
        if self.weight_name is not None:
            feed[self.weight_name] = np.full(self._weight_shape, weight, self._weight_dtype)
        pred = self.session.run([self.output_name], feed)[0][:count]
        if pred.shape[1:] != (3, self.size, self.size):
            raise RestorerUnusable(
                f"{self.file}: gave {list(pred.shape)} for {count} crops of "
                f"{self.size}×{self.size}; expected {EXPECTED}"
            )
        restored = (np.clip(pred.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5
        return np.rint(restored).astype(np.uint8).transpose(0, 2, 3, 1)
