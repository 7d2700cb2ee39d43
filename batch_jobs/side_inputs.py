"""Side inputs of a chain (face images, audio): copied next to the task before the chain starts.

Processors read them from `ProcessorContext.folder` by the relative paths the manifest gives.
"""

from __future__ import annotations

from pathlib import Path

from core.storage.base import ObjectStore
from processors.registry import step_spec


def side_paths(steps: list[dict]) -> list[str]:
    """Every relative path a planned chain's options name besides the video (each step's
    spec says which)."""
    found: list[str] = []
    for i, step in enumerate(steps):
        spec = step_spec(step["name"])
        named = spec.side_files(spec.parse(step.get("options")), f"chain[{i}].{spec.name}")
        found += [f.path for f in named if f.path not in found]
    return found


def fetch_side_inputs(
    store: ObjectStore, bucket: str, folder: str, steps: list[dict], workdir: Path
) -> Path:
    """Copies under `workdir` keep their manifest-relative paths; returns `workdir`."""
    for name in side_paths(steps):
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        store.download_file(bucket, folder + name, target)
    return workdir
