"""inswapper-style face swappers through onnxruntime, whatever the export calls its inputs.

An inswapper takes the aligned face crop (`target`, `[1, 3, S, S]` RGB in 0..1, S = 128) and
the identity (`source`, `[1, 512]`: the source face's normalised ArcFace embedding projected
through `emap` and normalised again) and returns the swapped crop `[1, 3, S, S]`. Exports and
conversions rename the inputs and reorder them, so they are found by shape, else (shapes not
declared) by the names `target` and `source`. `emap` is the graph's last initializer, where
insightface's inswapper_128.onnx and FaceFusion's conversions keep it. A half-precision export
gets half-precision inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from processors.models.sessions import describe_io, input_dtype, model_session
from processors.swap.pixel_boost import join, split

IDENTITY = 512  # ArcFace embedding width
EXPECTED = "inputs target [1,3,S,S] and source [1,512] (any order), output [1,3,S,S]"


class SwapperUnusable(Exception):
    """The file is not an inswapper-style model; the message names it and its shapes."""

    code = "MODEL_INCOMPATIBLE"


def _declared(shape: list) -> bool:
    return all(isinstance(d, int) for d in shape[1:])


def signature(session, file: str) -> tuple[str, str]:
    """(target input name, source input name) of an inswapper-style session."""
    inputs = session.get_inputs()
    target = source = None
    for item in inputs:
        shape = list(item.shape)
        if len(shape) == 4 and _declared(shape) and shape[1] == 3 and shape[2] == shape[3]:
            target = item.name
        elif len(shape) == 2 and _declared(shape) and shape[1] == IDENTITY:
            source = item.name
    # Names decide only for inputs whose shapes are not declared.
    open_names = [i.name for i in inputs if not _declared(list(i.shape))]
    if target is None and "target" in open_names:
        target = "target"
    if source is None and "source" in open_names:
        source = "source"
    if len(inputs) != 2 or target is None or source is None or target == source:
        found = f"inputs {describe_io(inputs)}; outputs {describe_io(session.get_outputs())}"
        raise SwapperUnusable(
            f"{file} is not an inswapper-style swapper: expected {EXPECTED}, got {found}"
        )
    return target, source


class Swapper:
    """One swapper model, ready to swap aligned crops."""

    def __init__(self, path: Path, providers: list[str]) -> None:
        try:
            import onnx
            import onnxruntime  # noqa: F401  (only: is it installed)
            from onnx import numpy_helper
        except ImportError:
            raise SwapperUnusable(
                "swap needs onnxruntime and onnx (pip install onnxruntime onnx, or the gpu extra)"
            ) from None
        self.session = model_session(path, providers, SwapperUnusable)
        self.target_name, self.source_name = signature(self.session, path.name)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._target_dtype = input_dtype(inputs[self.target_name])
        self._source_dtype = input_dtype(inputs[self.source_name])
        side = list(inputs[self.target_name].shape)[2]
        self.size = side if isinstance(side, int) else 128
        self.output_name = self.session.get_outputs()[0].name
        # The graph itself, once, for the projection it carries (weights stay in onnxruntime).
        graph = onnx.load(str(path)).graph
        emap = numpy_helper.to_array(graph.initializer[-1]) if graph.initializer else None
        if emap is None or emap.shape != (IDENTITY, IDENTITY):
            shape = "none" if emap is None else list(emap.shape)
            raise SwapperUnusable(
                f"{path.name}: its last initializer should be the {IDENTITY}×{IDENTITY} identity "
                f"projection (emap) an inswapper carries, got {shape}"
            )
        self.emap = emap.astype(np.float32)

    def latent(self, embedding: np.ndarray) -> np.ndarray:
        """The swapper's identity input: the normalised embedding through `emap`."""
        latent = embedding.reshape(1, -1).astype(np.float32) @ self.emap
        return (latent / np.linalg.norm(latent)).astype(np.float32)

    def swap(self, crop: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """An aligned RGB uint8 crop -> the swapped RGB uint8 crop. A crop k times the model's
        side (pixel boost) is swapped as k×k interleaved sub-images (pixel_boost.py)."""
        k = crop.shape[0] // self.size
        if k > 1:
            pieces = split(crop, k)
            return join(np.stack([self._swap(p, latent) for p in pieces]), k)
        return self._swap(crop, latent)

    def _swap(self, crop: np.ndarray, latent: np.ndarray) -> np.ndarray:
        blob = crop.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        pred = self.session.run(
            [self.output_name],
            {
                self.target_name: blob.astype(self._target_dtype),
                self.source_name: latent.astype(self._source_dtype),
            },
        )[0]
        out = np.asarray(pred[0], np.float32).transpose(1, 2, 0)
        # Rounded, not truncated: a model that returns its input gives back the same bytes.
        return np.rint(np.clip(out * 255.0, 0, 255)).astype(np.uint8)
