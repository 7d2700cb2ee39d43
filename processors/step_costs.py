"""A job's chain speed from the per-step cost table (processors/step_costs.yaml).

The planner (batch_jobs/worker_count.py) sizes `workers: auto` with it and `dropbatch cost`
prices with it, so a crop-only job and a crop → swap → enhance → lipsync job are no longer
planned at one speed. A step's cost is its `frame_ms` plus `face_ms` for each face it works
on; decode's and encode's `frame_ms` scale with the pixels they see (the input's, and the
frame after crop), the model steps' do not (their networks run at fixed input sizes); crop's
is divided by its `detect_every` (the detector is most of its cost; the table's figure is
at 1, as bench/chain.py measures it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from processors.crop.path import window_size

TABLE_PATH = Path(__file__).with_name("step_costs.yaml")
PIXEL_BOUND = ("decode", "encode")
# Faces a step working on every face (`target: all`) is expected to meet: one unless told.
EXPECTED_FACES = 1
# The VM kind each `compute.gpu` runs on. `none` (n2-standard-8) has no column of its own yet:
# the 2-core figures measured here stand in, an underestimate of an 8-vCPU VM's speed.
GPU_KINDS = {"l4": "l4", "none": "cpu-2core"}


@dataclass(frozen=True)
class StepCost:
    frame_ms: float
    face_ms: float = 0.0


@dataclass(frozen=True)
class CostTable:
    reference_pixels: int
    kinds: Mapping[str, Mapping[str, StepCost]]
    measured: Mapping[str, bool]


@cache
def _load(path: Path, mtime: float) -> CostTable:
    data = yaml.safe_load(path.read_text())
    kinds = {
        kind: {name: StepCost(**cost) for name, cost in entry["steps"].items()}
        for kind, entry in data["kinds"].items()
    }
    measured = {kind: bool(entry.get("measured")) for kind, entry in data["kinds"].items()}
    return CostTable(int(data["reference_pixels"]), kinds, measured)


def load_table(path: Path = TABLE_PATH) -> CostTable:
    """The table as the file holds it now (re-read when the file changes)."""
    return _load(path, path.stat().st_mtime)


def step_faces(name: str, options: Mapping, expected_faces: int = EXPECTED_FACES) -> int:
    """How many faces a step works on in a frame, from its options: swap's `target`
    (`largest` and `reference`: one; `all`: the expected faces; a `face_map`: its entries),
    enhance's `target` (default all), lipsync's speakers (else one, or the expected faces with
    `target: all`)."""
    if name == "swap":
        if options.get("face_map"):
            return len(options["face_map"])
        return expected_faces if options.get("target", "largest") == "all" else 1
    if name == "enhance":
        return expected_faces if options.get("target", "all") == "all" else 1
    if name == "lipsync":
        if options.get("speakers"):
            return len(options["speakers"])
        return expected_faces if options.get("target", "largest") == "all" else 1
    return 0


def output_size(chain: list[dict], size: tuple[int, int]) -> tuple[int, int]:
    """The frame after the chain's crop (the largest window of its aspect), else the input's."""
    for step in chain:
        if step["name"] == "crop":
            w, h = (int(x) for x in str(step.get("options", {}).get("aspect", "9:16")).split(":"))
            size = window_size(size[0], size[1], (w, h))
    return size


def chain_step_ms(
    chain: list[dict],
    size: tuple[int, int],
    kind: str,
    *,
    expected_faces: int = EXPECTED_FACES,
    table: CostTable | None = None,
) -> dict[str, float]:
    """Milliseconds per output frame for each step of `chain` (a planned item's steps,
    [{"name", "options"}]) on `size` input frames, decode and encode included."""
    table = table or load_table()
    costs = table.kinds[kind]
    out = output_size(chain, size)
    pixels = {"decode": size[0] * size[1], "encode": out[0] * out[1]}
    spent: dict[str, float] = {}
    for name, options in [("decode", {}), *((s["name"], s.get("options", {})) for s in chain)]:
        spent[name] = spent.get(name, 0.0) + _ms(
            costs, name, options, pixels, table, expected_faces
        )
    spent["encode"] = _ms(costs, "encode", {}, pixels, table, expected_faces)
    return spent


def _ms(
    costs: Mapping[str, StepCost],
    name: str,
    options: Mapping,
    pixels: Mapping[str, int],
    table: CostTable,
    expected_faces: int,
) -> float:
    if name not in costs:  # a step with no row (noop): no model, a copy of the frame
        return 0.0
    cost = costs[name]
    frame = cost.frame_ms
    if name in PIXEL_BOUND:
        frame *= pixels[name] / table.reference_pixels
    if name == "crop":  # its detector, most of its cost, runs on every detect_every-th frame
        frame /= int(options.get("detect_every", 1))
    return frame + cost.face_ms * step_faces(name, options, expected_faces)


def chain_fps(
    chain: list[dict],
    size: tuple[int, int],
    gpu: str,
    *,
    expected_faces: int = EXPECTED_FACES,
    table: CostTable | None = None,
) -> float:
    """The chain's frames per second on one VM of `compute.gpu`'s kind."""
    total = sum(chain_step_ms(chain, size, GPU_KINDS[gpu], expected_faces=expected_faces,
                              table=table).values())  # fmt: skip
    return 1000.0 / total
