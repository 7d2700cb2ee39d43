"""The cost model README, `dropbatch cost` and bench/cloud.py share: the real planner's chunks,
pulled by simulated workers, priced at the machine's rate."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from batch_jobs.claims import next_claim
from dropbatch.cost import (
    HOURS_PER_MONTH,
    CostEstimate,
    Rates,
    Throughput,
    estimate,
    estimate_cost,
    simulate,
    synthetic_plan,
)
from manifests.loader import load_manifest
from manifests.model import ComputeOptions

ROOT = Path(__file__).resolve().parent.parent

RATES = Rates(
    {
        ("g2-standard-8", "spot"): 0.3,
        ("g2-standard-8", "standard"): 0.9,
        ("n2-standard-8", "spot"): 0.1,
        ("n2-standard-8", "standard"): 0.4,
    },
    disk_gb_month=0.0,
)
SPEED = Throughput(
    frames_per_second=15.0,
    vm_startup_seconds=300.0,
    worker_setup_seconds=60.0,
    chunk_overhead_seconds=2.0,
    stitch_seconds=0.0,
    stitch_seconds_per_video_second=0.0,
)


def test_workers_pull_chunks_and_vms_stop_when_none_is_left() -> None:
    compute = ComputeOptions(gpu="l4", spot=True, chunk_seconds=10, max_parallel_tasks=4, workers=4)
    plan = synthetic_plan(compute, 95, fps=30)  # 2850 frames: 9 chunks of 300, one of 150
    est = estimate(plan, compute, SPEED, RATES)
    assert (est.chunks, est.tasks, est.vms, est.machine_type) == (10, 4, 4, "g2-standard-8")
    # Ready at 360 s; a 300-frame chunk takes 2 + 20 s, the last (150 frames) 2 + 10 s.
    # Chunks 0-3 end at 382, 4-7 at 404; then two workers take 8 and 9 (ending 426 and 416)
    # and the other two find nothing left at 404 and end.
    assert est.vm_hours * 3600 == pytest.approx(404 + 404 + 416 + 426)
    assert est.wall_seconds == pytest.approx(426)
    assert est.usd == pytest.approx(est.vm_hours * 0.3)
    assert est.floor_hours * 3600 == pytest.approx(2850 / 15)


def test_with_no_overheads_vm_time_is_the_floor_plus_the_rolls() -> None:
    free = replace(SPEED, frames_per_second=30.0, vm_startup_seconds=0, worker_setup_seconds=0,
                   chunk_overhead_seconds=0)  # fmt: skip
    compute = ComputeOptions(chunk_seconds=10, max_parallel_tasks=3)
    bare = simulate(synthetic_plan(compute, 60), free)
    assert bare.vm_seconds == pytest.approx(bare.floor_seconds) == pytest.approx(60)
    # crop's smoothing reads context frames around every chunk: the planner's rolls are paid.
    chain = [{"crop": {"aspect": "9:16"}}]
    plan = synthetic_plan(compute, 60, chain=chain)
    rolls = sum(c.preroll + c.postroll for c in plan.items[0].chunks)
    assert rolls > 0
    rolled = simulate(plan, free)
    assert rolled.vm_seconds == pytest.approx(60 + rolls / 30)
    assert rolled.floor_seconds == pytest.approx(60)


def test_the_worker_that_finishes_an_items_last_chunk_stitches_it() -> None:
    # Two workers, a 300-frame chunk and a 150-frame one: the short one (claimed last) ends
    # first; the item is complete only when the long one ends, and its worker stitches then.
    compute = ComputeOptions(chunk_seconds=10, max_parallel_tasks=2, workers=2)
    plan = synthetic_plan(compute, 15)
    assert [c.end_frame - c.start_frame for c in plan.items[0].chunks] == [300, 150]
    sim = simulate(plan, replace(SPEED, stitch_seconds=10.0))
    # Ready at 360; chunk 0 ends at 360 + 2 + 20 = 382, chunk 1 at 372.
    assert sim.timeline == [(pytest.approx(392.0), "w0 stitched item 0")]
    assert sim.wall_seconds == pytest.approx(392.0)
    assert sim.vm_seconds == pytest.approx(392.0 + 372.0)


def test_preempted_chunks_are_taken_over_and_every_chunk_is_done_once() -> None:
    compute = ComputeOptions(chunk_seconds=10, max_parallel_tasks=5, workers=5)
    plan = synthetic_plan(compute, 600)
    calm = simulate(plan, SPEED)
    stormy = simulate(plan, Throughput(**{**SPEED.__dict__, "preemptions_per_vm_hour": 6.0}))
    assert calm.preemptions == 0 and stormy.preemptions > 0
    assert stormy.vms_started == 5 + stormy.preemptions  # Batch retries each preempted task
    assert stormy.vm_seconds > calm.vm_seconds and stormy.wall_seconds > calm.wall_seconds
    assert stormy.floor_seconds == calm.floor_seconds


def test_the_simulation_asks_the_claim_rule_it_is_given() -> None:
    asked: list[float] = []

    def rule(chunks, now, *, prefer_item=None):  # the workers' next_claim has this signature
        asked.append(now)
        return next_claim(chunks, now, prefer_item=prefer_item)

    compute = ComputeOptions(chunk_seconds=10, max_parallel_tasks=2, workers=2)
    sim = simulate(synthetic_plan(compute, 30), SPEED, claim_rule=rule)
    assert sim.chunks == 3 and len(asked) == 3 + 2  # one ask per chunk, one per worker's end


def test_spot_is_cheaper_and_parallelism_buys_time_not_savings() -> None:
    spot = ComputeOptions(gpu="l4", spot=True, chunk_seconds=10, workers=10)
    standard = spot.model_copy(update={"spot": False})
    narrow = spot.model_copy(update={"workers": 1})
    a, b, c = (
        estimate_cost(x, 600, throughput=SPEED, rates=RATES) for x in (spot, standard, narrow)
    )
    assert a.usd < b.usd and b.usd / a.usd == pytest.approx(0.9 / 0.3)
    assert c.wall_seconds > a.wall_seconds and c.usd < a.usd  # fewer VM start-ups


def test_the_boot_disk_is_charged_by_the_hour() -> None:
    compute = ComputeOptions(gpu="none", spot=False, chunk_seconds=60, max_parallel_tasks=1)
    with_disk = Rates(RATES.vm_hourly, disk_gb_month=0.17)
    est = estimate_cost(compute, 60, throughput=SPEED, rates=with_disk)
    assert est.hourly_usd == pytest.approx(0.4 + 50 * 0.17 / HOURS_PER_MONTH)


def test_the_cost_command_quotes_the_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    from dropbatch.cli import main

    assert main(["cost", "--minutes", "10", "--processing-fps", "8"]) == 0
    line = capsys.readouterr().out
    est = estimate_cost(ComputeOptions(), 600, throughput=Throughput(frames_per_second=8))
    assert f"{est.chunks} chunks pulled by {est.tasks} spot g2-standard-8" in line
    assert f"= ${est.usd:.2f} ({est.ratio:.1f}× the GPU-time floor" in line


def test_the_cost_command_prices_the_deployments_boot_image(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The config file names a boot image built by infra/boot-image/ for the deployed image:
    # `dropbatch cost` prices each VM's start-up without the driver install and the pull.
    from dropbatch.cli import main

    image = "us-central1-docker.pkg.dev/acme/dropbatch/task@sha256:" + "ab" * 32
    config = tmp_path / "dropbatch.toml"
    config.write_text(
        f'image = "{image}"\nboot_image = "projects/acme/global/images/family/dropbatch-boot"\n'
        f'gpu_driver_preinstalled = true\nboot_image_task_image = "{image}"\n'
    )
    monkeypatch.setenv("DROPBATCH_CONFIG", str(config))
    manifest = tmp_path / "ten.yaml"
    manifest.write_text("version: 1\ninputs: [talk.mp4]\ncompute: {workers: 10}\n")
    assert main(["cost", str(manifest), "--minutes", "10"]) == 0
    ten = ComputeOptions(workers=10)
    # No chain_fps in the config: the speed is the (empty) chain's, from the step-cost table.
    prices = {
        startup: estimate_cost(
            ten, 600, throughput=Throughput(frames_per_second=0, vm_startup_seconds=startup)
        )
        for startup in (40, 100, 250)
    }
    quoted = {
        startup: f"= ${e.usd:.2f} ({e.ratio:.1f}× the GPU-time floor"
        for startup, e in prices.items()
    }
    assert len(set(quoted.values())) == 3  # the three start-ups quote three prices
    line = capsys.readouterr().out
    assert [startup for startup, text in quoted.items() if text in line] == [40]


def test_readme_cost_table_is_what_the_model_says() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(
        r"^\| (\d+) min \| (auto|\d+) \| (\d+) \| (\d+) \| ~(\d+) min \| ([\d.]+) \| ([\d.]+)× "
        r"\| \$([\d.]+) \| \$([\d.]+) \|$",
        readme,
        re.M,
    )
    assert len(rows) == 6
    # The full chain at its speed in the step-cost table (bench/chains/full.yaml).
    full = load_manifest((ROOT / "bench" / "chains" / "full.yaml").read_bytes())
    speed = Throughput(frames_per_second=0)
    for minutes, workers, chunks, vms, wall, hours, ratio, spot, standard in rows:
        compute = ComputeOptions(workers=workers if workers == "auto" else int(workers))
        standard_compute = compute.model_copy(update={"spot": False})

        def quote(c: ComputeOptions, minutes: str = minutes) -> CostEstimate:
            job = full.model_copy(update={"compute": c})
            return estimate_cost(c, int(minutes) * 60, throughput=speed, manifest=job)

        s, t = quote(compute), quote(standard_compute)
        assert (s.chunks, s.vms, round(s.wall_seconds / 60)) == (int(chunks), int(vms), int(wall))
        assert (f"{s.vm_hours:.2f}", f"{s.ratio:.1f}") == (hours, ratio)
        assert (f"{s.usd:.2f}", f"{t.usd:.2f}") == (spot, standard)


def test_a_manifests_chain_context_is_priced(capsys: pytest.CaptureFixture[str]) -> None:
    from dropbatch.cli import main
    from manifests.loader import load_manifest

    example = Path(__file__).resolve().parent.parent / "manifests/examples/06-crop-yolo.yaml"
    manifest = load_manifest(example.read_bytes())
    assert main(["cost", str(example), "--minutes", "10"]) == 0
    # A fixed chunk length, so both plans cut the same chunks and only the context differs
    # (under `auto` the context would also lengthen the chunks; tested below).
    fixed = manifest.compute.model_copy(update={"chunk_seconds": 10.0})
    with_chain = estimate_cost(fixed, 600, manifest=manifest.model_copy(update={"compute": fixed}))
    bare = estimate_cost(fixed, 600)
    auto_chain = estimate_cost(manifest.compute, 600, manifest=manifest)
    assert auto_chain.chunk_seconds > estimate_cost(manifest.compute, 600).chunk_seconds
    assert with_chain.vm_hours > bare.vm_hours  # crop's context frames, decoded per chunk
    # The command prices it at the chain's own speed, from the step-cost table.
    quoted = estimate_cost(
        manifest.compute, 600, manifest=manifest, throughput=Throughput(frames_per_second=0)
    )
    assert f"= ${quoted.usd:.2f} ({quoted.ratio:.1f}×" in capsys.readouterr().out


def test_readme_cost_tables_pool_rows_are_what_the_pool_model_says() -> None:
    from dropbatch.cost import hourly_rate
    from dropbatch.pool_cost import ALONE, BURST, per_job_vms, planner, simulate_pool

    readme = (ROOT / "README.md").read_text()
    rows = re.findall(
        r"^\| (20 × 1 min, then 10 min|1 min alone): (per-job VMs|pool warm \d+) \| auto "
        r"\| (\d+) \| (\d+) \| (?:p50 )?~(\d+) min(?:; 10 min ~(\d+) min)? \| ([\d.]+) "
        r"\| ([\d.]+)× \| \$([\d.]+) \| \$([\d.]+) \|$",
        readme,
        re.M,
    )
    assert len(rows) == 5
    full = load_manifest((ROOT / "bench" / "chains" / "full.yaml").read_bytes())
    plan, speed = planner(manifest=full), Throughput(frames_per_second=0)
    spot = hourly_rate(full.compute)[2]
    standard = hourly_rate(full.compute.model_copy(update={"spot": False}))[2]
    for scenario, how, chunks, vms, p50, long, hours, ratio, usd, usd_standard in rows:
        uploads = BURST if scenario.startswith("20") else ALONE
        if how == "per-job VMs":
            run = per_job_vms(uploads, speed, plan)
        else:
            minutes = int(how.removeprefix("pool warm "))
            run = simulate_pool(uploads, speed, plan, warm_seconds=minutes * 60)
        assert (sum(j.chunks for j in run.jobs), run.vms_started) == (int(chunks), int(vms))
        assert round(run.wait_quantile(0.5) / 60) == int(p50)
        if long:
            assert round(run.jobs[-1].wait_seconds / 60) == int(long)
        assert (f"{run.vm_seconds / 3600:.2f}", f"{run.ratio:.1f}") == (hours, ratio)
        assert f"{run.vm_seconds / 3600 * spot:.2f}" == usd
        assert f"{run.vm_seconds / 3600 * standard:.2f}" == usd_standard
