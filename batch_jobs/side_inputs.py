"""Side inputs of a chain (face images, audio): copied next to the task before the chain starts.

Processors read them from `ProcessorContext.folder` by the relative paths the manifest gives.
"""

from __future__ import annotations

from pathlib import Path

from dropbatch.storage.base import ObjectStore


def side_paths(steps: list[dict]) -> list[str]:
    """Every relative path a planned chain's options name besides the video."""
    found: list[str] = []
    for step in steps:
        options = step.get("options", {})
        names = list(options.get("source") or [])
        names += [options[k] for k in ("reference", "audio") if options.get(k)]
        for entry in options.get("face_map") or []:
            names += [entry["reference"], entry["source"]]
        for speaker in options.get("speakers") or []:
            names += [speaker["reference"], speaker["audio"]]
        found += [n for n in names if n not in found]
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
