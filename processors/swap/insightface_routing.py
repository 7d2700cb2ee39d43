"""The one use of insightface left: its routing and `INSwapper` class for the swapper file.

Kept in its own module so what imports the face analysis (the trigger's face check, lipsync)
does not need insightface installed.
"""

from __future__ import annotations

from pathlib import Path


def load_insightface_model(path: Path, providers: list[str]):
    """Load one ONNX file through insightface's routing (the swapper)."""
    from insightface.model_zoo import model_zoo

    # insightface prints its routing decisions to stdout; the task's stdout is its log.
    model = model_zoo.get_model(str(path), providers=providers)
    if model is None:
        raise ValueError(f"{path.name}: insightface does not recognise this model's signature")
    return model
