"""The model catalog and the check that a chain's models are in the configured store."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import yaml


class ModelMissing(Exception):
    def __init__(self, model: str, store: str, files: list[str], any_of: bool = False) -> None:
        expected = ("one of " if any_of else "") + ", ".join(files)
        super().__init__(
            f"model {model} not in the model store {store or '(none configured)'}: "
            f"expected {expected} (see README, 'Filling the model store')"
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


def crop_weights(options: dict, store: Path | str | None) -> Path:
    """The weights file the crop's yolo detector loads: for `yolo` (ultralytics) the first of
    the catalog's `weights` the store holds (a TensorRT engine beats .pt beats .onnx), for
    `yolo-onnx` the model's .onnx file. Raises ModelMissing when there is none."""
    name = options.get("model", "yolov8n")
    entry = catalog().get(name)
    if entry is None:
        raise ModelMissing(name, str(store or ""), [f"{name}.onnx"])
    if options.get("detector") == "yolo":
        candidates = entry.get("weights", entry["files"])
    else:
        candidates = [f for f in entry["files"] if f.endswith(".onnx")]
    if store and not str(store).startswith("gs://"):
        for file in candidates:
            if (Path(store) / file).is_file():
                return Path(store) / file
    raise ModelMissing(name, str(store or ""), candidates, any_of=len(candidates) > 1)


def require_models(step: str, options: dict, store: Path | str | None) -> None:
    """Raise ModelMissing for the first model of the step that the store lacks."""
    if step == "crop" and models_for_step(step, options):
        crop_weights(options, store)
        return
    for name in models_for_step(step, options):
        entry = catalog().get(name)
        files = entry["files"] if entry else [f"{name}.onnx"]
        if entry is None or not store or not isinstance(store, (str, Path)):
            raise ModelMissing(name, str(store or ""), files)
        root = Path(store)
        if str(store).startswith("gs://") or not all((root / f).is_file() for f in files):
            raise ModelMissing(name, str(store), files)
