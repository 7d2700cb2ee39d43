"""`compute.workers`: the planner sizes a job's workers from its work and the deployment's VM
start-up (batch_jobs/worker_count.py), and the cost model prices what it chose."""

from __future__ import annotations

from dataclasses import replace

import pytest

from batch_jobs.worker_count import (
    OVERHEAD_SHARE,
    Throughput,
    batch_throughput,
    deployment_throughput,
)
from core.config import Settings
from dropbatch.cost import estimate_cost, simulate, synthetic_plan
from manifests.loader import ManifestInvalid, load_manifest
from manifests.model import ComputeOptions

BATCH = Throughput()  # batch-debian: the driver installed at every VM start
CROP = [{"crop": {"aspect": "9:16"}}]  # context frames: every chunk decodes pre/post-roll


def spent(minutes: float, workers: int, speed: Throughput, chain: list) -> tuple[float, float]:
    """(what `workers` workers spend beyond the frames, the floor) for this video: the job the
    planner cuts when that many are asked for, run on simulated VMs (dropbatch/cost.py), which
    pay every start-up, chunk, pre/post-roll and stitch as they happen."""
    compute = ComputeOptions(max_parallel_tasks=max(10, workers), workers=workers)
    plan = synthetic_plan(compute, minutes * 60, chain=chain, speed=speed)
    run = simulate(plan, speed)
    assert run.preemptions == 0  # on-demand VMs: nothing but the job's own work
    return run.vm_seconds - run.floor_seconds, run.floor_seconds


@pytest.mark.parametrize("minutes", [0.5, 1, 5, 10, 30, 60, 180])
@pytest.mark.parametrize("startup", [250.0, 100.0, 40.0])
@pytest.mark.parametrize("chain", [[], CROP], ids=["bare", "crop"])
def test_auto_starts_the_most_workers_the_floor_pays_for(
    minutes: float, startup: float, chain: list
) -> None:
    speed = replace(BATCH, vm_startup_seconds=startup)
    n = synthetic_plan(ComputeOptions(), minutes * 60, chain=chain, speed=speed).parallelism
    assert 1 <= n <= 10
    if n > 1:  # what it spends beyond the frames stays within half the floor...
        beyond, floor = spent(minutes, n, speed, chain)
        assert beyond <= OVERHEAD_SHARE * floor
    if n < 10:  # ...and one more worker would not have
        beyond, floor = spent(minutes, n + 1, speed, chain)
        assert beyond > OVERHEAD_SHARE * floor


def test_a_wide_cap_is_searched_to_the_same_rule() -> None:
    """max_parallel_tasks up to 1000: the count is found by bisection (more workers never cost
    less), and it is still the most the floor pays for."""
    compute = ComputeOptions(max_parallel_tasks=1000)
    n = synthetic_plan(compute, 24 * 60 * 60, chain=CROP, speed=BATCH).parallelism
    assert 10 < n < 1000
    beyond, floor = spent(24 * 60, n, BATCH, CROP)
    assert beyond <= OVERHEAD_SHARE * floor
    beyond, floor = spent(24 * 60, n + 1, BATCH, CROP)
    assert beyond > OVERHEAD_SHARE * floor


def test_more_video_or_a_faster_start_never_gets_fewer_workers() -> None:
    counts = [
        synthetic_plan(ComputeOptions(), m * 60, speed=BATCH).parallelism
        for m in (1, 5, 10, 20, 40, 60, 120)
    ]
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] == 10
    fast = replace(BATCH, vm_startup_seconds=40.0)
    for m in (1, 10, 60):
        slow_n = synthetic_plan(ComputeOptions(), m * 60, speed=BATCH).parallelism
        assert synthetic_plan(ComputeOptions(), m * 60, speed=fast).parallelism >= slow_n


def test_auto_stays_near_the_floor_where_ten_workers_do_not() -> None:
    """What the README's table says, from the model: auto stays within about 1.5× the floor at
    10 and 60 minutes; ten workers are faster and cost more."""
    for minutes in (10, 60):
        auto = estimate_cost(ComputeOptions(), minutes * 60)
        ten = estimate_cost(ComputeOptions(workers=10), minutes * 60)
        assert auto.ratio <= 1 + OVERHEAD_SHARE + 0.01
        assert ten.wall_seconds < auto.wall_seconds and ten.usd > auto.usd


def test_a_number_of_workers_is_what_the_job_gets() -> None:
    plan = synthetic_plan(ComputeOptions(workers=4), 60, speed=BATCH)
    assert plan.parallelism == 4 and plan.workers == 4
    assert simulate(plan, BATCH).vms_started == 4
    # Never more workers than chunks: an idle VM would cost its start-up for nothing.
    tiny = synthetic_plan(ComputeOptions(workers=4, chunk_seconds=60), 60, speed=BATCH)
    assert len(tiny.tasks()) == 1 and tiny.parallelism == 1


def test_auto_chunks_follow_the_workers_it_chose() -> None:
    one = synthetic_plan(ComputeOptions(), 60, speed=BATCH)  # one VM for a minute
    ten = synthetic_plan(ComputeOptions(workers=10), 60, speed=BATCH)
    assert one.parallelism == 1 and len(one.tasks()) < len(ten.tasks())
    assert len(ten.tasks()) >= 10


def test_workers_above_max_parallel_tasks_is_invalid_naming_the_field() -> None:
    text = b"version: 1\ninputs: [a.mp4]\ncompute: {max_parallel_tasks: 4, workers: 5}\n"
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(text)
    [error] = caught.value.errors
    assert error.field == "compute.workers" and "max_parallel_tasks (4)" in error.message
    for bad in (b"0", b"2.5", b"many", b"true"):
        with pytest.raises(ManifestInvalid) as caught:
            load_manifest(b"version: 1\ninputs: [a.mp4]\ncompute: {workers: " + bad + b"}\n")
        assert [e.field for e in caught.value.errors] == ["compute.workers"]


def test_the_deployment_decides_the_start_up() -> None:
    assert deployment_throughput(Settings(launcher="local")).start_seconds == 0
    on_batch = deployment_throughput(Settings(launcher="batch"))
    assert on_batch.vm_startup_seconds == 250
    baked = Settings(launcher="batch", gpu_driver_preinstalled=True, chain_fps=60)
    assert (
        batch_throughput(baked).vm_startup_seconds,
        batch_throughput(baked).frames_per_second,
    ) == (
        100,
        60,
    )
    # infra/boot-image/ also pulls the task image: no pull while the job runs that digest.
    image = "us-central1-docker.pkg.dev/acme/dropbatch/task@sha256:" + "ab" * 32
    both = baked.model_copy(update={"image": image, "boot_image_task_image": image})
    assert batch_throughput(both).vm_startup_seconds == 40
    pushed_since = both.model_copy(update={"image": image[:-2] + "cd"})
    assert batch_throughput(pushed_since).vm_startup_seconds == 100
    measured = Settings(launcher="batch", vm_startup_seconds=75)
    assert deployment_throughput(measured).vm_startup_seconds == 75
    # Locally the machine is up: every chunk may have its worker (local_workers bounds them).
    local = synthetic_plan(ComputeOptions(), 60, speed=deployment_throughput(Settings()))
    assert local.parallelism == min(10, len(local.tasks())) > 1
