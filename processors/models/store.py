"""The model catalog and the check that a chain's models are in the configured store."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import yaml


class ModelMissing(Exception):
    def __init__(self, model: str, store: str, files: list[str]) -> None:
        super().__init__(
            f"model {model} not in the model store {store or '(none configured)'}: "
            f"expected {', '.join(files)} (see README, 'Filling the model store')"
        )
        self.model = model
        self.store = store


@cache
def catalog() -> dict[str, dict]:
    text = resources.files("processors.models").joinpath("catalog.yaml").read_text()
    return yaml.safe_load(text)["models"]


def models_for_step(step: str, options: dict) -> list[str]:
    """The catalog names a step with these options needs."""
    if step == "crop":
        return (
            [options.get("model", "yolov8n")]
            if str(options.get("detector", "")).startswith("yolo")
            else []
        )
    if step == "swap":
        return [options.get("analyser", "buffalo_l"), options.get("model", "inswapper_128")]
    if step == "lipsync":
        return [options.get("model", "wav2lip_gan")]
    return []


def require_models(step: str, options: dict, store: Path | str | None) -> None:
    """Raise ModelMissing for the first model of the step that the store lacks."""
    for name in models_for_step(step, options):
        entry = catalog().get(name)
        files = entry["files"] if entry else [f"{name}.onnx"]
        if entry is None or not store or not isinstance(store, (str, Path)):
            raise ModelMissing(name, str(store or ""), files)
        root = Path(store)
        if str(store).startswith("gs://") or not all((root / f).is_file() for f in files):
            raise ModelMissing(name, str(store), files)
