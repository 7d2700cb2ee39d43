"""A job's speed comes from its own chain in the per-step cost table (processors/step_costs.yaml):
`dropbatch cost` prices the common chains at four speeds, each the table's, and the planner
sizes `workers: auto` with it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from batch_jobs.worker_count import Throughput
from dropbatch.cost import synthetic_plan
from manifests.loader import load_manifest
from processors.step_costs import TABLE_PATH, chain_fps, chain_step_ms, load_table

ROOT = Path(__file__).resolve().parent.parent
CHAINS = ["crop", "crop-swap", "swap-enhance", "full"]  # bench/chains/*.yaml
FROM_TABLE = Throughput(frames_per_second=0)


def planned_chain(name: str) -> list[dict]:
    manifest = load_manifest((ROOT / "bench" / "chains" / f"{name}.yaml").read_bytes())
    [item] = synthetic_plan(manifest.compute, 60, manifest=manifest, speed=FROM_TABLE).items
    return item.chain


def test_the_cost_command_prices_each_chain_at_the_tables_speed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dropbatch.cli import main

    (tmp_path / "empty.toml").write_text("")  # a deployment that sets no chain_fps
    monkeypatch.setenv("DROPBATCH_CONFIG", str(tmp_path / "empty.toml"))
    speeds = {}
    for name in CHAINS:
        assert main(["cost", str(ROOT / "bench" / "chains" / f"{name}.yaml")]) == 0
        out = capsys.readouterr().out
        [quoted] = re.findall(r" at ([\d.]+) fps \(step-cost table, l4, estimated\)", out)
        assert "per video-minute" in out
        speeds[name] = float(quoted)
        assert speeds[name] == round(chain_fps(planned_chain(name), (1920, 1080), "l4"), 1)
    assert len(set(speeds.values())) == 4, speeds
    # Each step added costs time: the full chain is the slowest, crop alone the fastest.
    assert speeds["crop"] > speeds["crop-swap"] > speeds["full"]
    assert speeds["swap-enhance"] > speeds["full"]


def test_a_set_chain_fps_overrides_the_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dropbatch.cli import main

    config = tmp_path / "dropbatch.toml"
    config.write_text("chain_fps = 12.5\n")
    monkeypatch.setenv("DROPBATCH_CONFIG", str(config))
    assert main(["cost", str(ROOT / "bench" / "chains" / "full.yaml")]) == 0
    assert " at 12.5 fps (chain_fps)" in capsys.readouterr().out


def test_the_estimate_follows_the_table(tmp_path: Path) -> None:
    chain = planned_chain("full")
    size = (1920, 1080)
    before = chain_step_ms(chain, size, "l4")
    copy = tmp_path / "step_costs.yaml"
    shutil.copy(TABLE_PATH, copy)
    data = yaml.safe_load(copy.read_text())
    data["kinds"]["l4"]["steps"]["enhance"]["face_ms"] += 40.0
    copy.write_text(yaml.safe_dump(data))
    table = load_table(copy)
    after = chain_step_ms(chain, size, "l4", table=table)
    assert after["enhance"] == pytest.approx(before["enhance"] + 40.0)
    assert {k: v for k, v in after.items() if k != "enhance"} == {
        k: v for k, v in before.items() if k != "enhance"
    }
    assert chain_fps(chain, size, "l4", table=table) == pytest.approx(1000 / sum(after.values()))


def test_faces_and_frame_size_set_the_cost() -> None:
    size = (1920, 1080)
    largest = [{"name": "swap", "options": {"target": "largest"}}]
    every = [{"name": "swap", "options": {"target": "all"}}]
    mapped = [{"name": "swap", "options": {"face_map": [{}, {}, {}]}}]
    face = load_table().kinds["l4"]["swap"].face_ms
    one = chain_step_ms(largest, size, "l4")["swap"]
    assert chain_step_ms(every, size, "l4")["swap"] == one  # one face expected by default
    assert chain_step_ms(every, size, "l4", expected_faces=3)["swap"] == one + 2 * face
    assert chain_step_ms(mapped, size, "l4")["swap"] == one + 2 * face
    # Lipsync as swap: `target: all` syncs every face expected, speakers one face each.
    lips = load_table().kinds["l4"]["lipsync"].face_ms
    lip = {t: [{"name": "lipsync", "options": {"target": t}}] for t in ("largest", "all")}
    lip_one = chain_step_ms(lip["largest"], size, "l4")["lipsync"]
    assert chain_step_ms(lip["largest"], size, "l4", expected_faces=3)["lipsync"] == lip_one
    assert chain_step_ms(lip["all"], size, "l4", expected_faces=3)["lipsync"] == pytest.approx(
        lip_one + 2 * lips
    )
    talks = [{"name": "lipsync", "options": {"speakers": [{}, {}]}}]
    assert chain_step_ms(talks, size, "l4", expected_faces=3)["lipsync"] == pytest.approx(
        lip_one + lips
    )
    # Encode sees the frame after crop: a 9:16 window of 1080p has under a third its pixels.
    bare = chain_step_ms([], size, "l4")["encode"]
    cropped = chain_step_ms([{"name": "crop", "options": {"aspect": "9:16"}}], size, "l4")
    assert cropped["encode"] == pytest.approx(bare * 606 * 1080 / (1920 * 1080))
    assert cropped["decode"] == chain_step_ms([], size, "l4")["decode"]


def test_a_slower_chain_gets_more_workers_for_the_same_video() -> None:
    """workers: auto spends up to half the floor on start-ups: the full chain's floor is
    longer than crop's, so it pays for more VMs."""
    counts = {}
    for name in ("crop", "full"):
        manifest = load_manifest((ROOT / "bench" / "chains" / f"{name}.yaml").read_bytes())
        plan = synthetic_plan(manifest.compute, 30 * 60, manifest=manifest, speed=FROM_TABLE)
        counts[name] = plan.parallelism
    assert counts["full"] > counts["crop"], counts
