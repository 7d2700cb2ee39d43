"""The warm pool's cost model (issue 22): uploads on one pool of workers, with the pool's own
rules (batch_jobs/pool_rules.py), against each upload on VMs of its own (`simulate()`)."""

from __future__ import annotations

import pytest

from core.domain import Plan
from dropbatch.cost import Throughput, simulate
from dropbatch.pool_cost import Upload, per_job_vms, planner, simulate_pool
from manifests.model import ComputeOptions

SPEED = Throughput(
    frames_per_second=15.0,
    vm_startup_seconds=300.0,
    worker_setup_seconds=60.0,
    chunk_overhead_seconds=2.0,
    stitch_seconds=5.0,
    stitch_seconds_per_video_second=0.0,
)
HOUR = 3600.0


def test_with_no_warm_time_jobs_that_never_overlap_run_as_on_vms_of_their_own() -> None:
    plan = planner(ComputeOptions(chunk_seconds=10, max_parallel_tasks=3, workers=3))
    uploads = [Upload(0.0, 95.0), Upload(HOUR, 45.0), Upload(2 * HOUR, 95.0)]
    pool = simulate_pool(uploads, SPEED, plan, warm_seconds=0)
    alone = per_job_vms(uploads, SPEED, plan)
    for upload, job in zip(uploads, pool.jobs, strict=True):
        sim = simulate(plan(upload, SPEED), SPEED)
        assert job.vm_seconds == pytest.approx(sim.vm_seconds)
        assert job.wait_seconds == pytest.approx(sim.wall_seconds)
    assert pool.vm_seconds == pytest.approx(alone.vm_seconds)
    assert pool.vms_started == alone.vms_started == 9
    assert pool.idle_seconds == 0


def test_warm_time_is_billed_to_the_deployment_not_to_the_job() -> None:
    plan = planner(ComputeOptions(chunk_seconds=10, max_parallel_tasks=2, workers=2))
    alone = per_job_vms([Upload(0.0, 60.0)], SPEED, plan)
    pool = simulate_pool([Upload(0.0, 60.0)], SPEED, plan, warm_seconds=300)
    [job], [own] = pool.jobs, alone.jobs
    assert job.vm_seconds == pytest.approx(own.vm_seconds)  # the job pays what it paid alone
    assert job.wait_seconds == pytest.approx(own.wait_seconds)
    # Each of its two VMs stays up five minutes after it finds nothing left: the deployment's.
    assert pool.idle_seconds == pytest.approx(2 * 300)
    assert pool.vm_seconds == pytest.approx(alone.vm_seconds + 2 * 300)


def test_a_job_arriving_to_warm_workers_starts_no_vm_and_pays_no_start_up() -> None:
    plan = planner(ComputeOptions(chunk_seconds=60, max_parallel_tasks=1, workers=1))
    first, second = Upload(0.0, 60.0), Upload(600.0, 60.0)  # 1 chunk each; the first ends ~426 s
    pool = simulate_pool([first, second], SPEED, plan, warm_seconds=300)
    a, b = pool.jobs
    assert (a.launched, b.launched, pool.vms_started) == (1, 0, 1)
    assert b.free == 1
    chunk = 2.0 + 1800 / 15 + 5.0  # fixed cost, frames, stitch: no start-up, no setup
    assert b.vm_seconds == pytest.approx(chunk)
    assert b.wait_seconds == pytest.approx(chunk)
    assert a.vm_seconds == pytest.approx(360 + chunk)
    # Idle from ~487 s to 600 s (billed to the deployment), then five minutes after the second.
    assert pool.idle_seconds == pytest.approx((600 - (360 + chunk)) + 300)


def test_a_short_job_behind_a_long_one_gets_a_worker_within_one_chunk() -> None:
    # A long job holds every worker the cap allows; a short one arriving later gets the next
    # worker that ends a chunk (fewest workers first), not the long job's last chunk's end.
    long = ComputeOptions(chunk_seconds=10, max_parallel_tasks=4, workers=4)
    short = ComputeOptions(chunk_seconds=10, max_parallel_tasks=1, workers=1)

    def plan(upload: Upload, speed: Throughput) -> Plan:
        compute = long if upload.video_seconds > 60 else short
        return planner(compute)(upload, speed)

    uploads = [Upload(0.0, 600.0), Upload(400.0, 10.0)]
    pool = simulate_pool(uploads, SPEED, plan, warm_seconds=60, cap=4)
    big, small = pool.jobs
    assert small.launched == 0  # the cap: no VM for it, it waits for a worker of the pool
    chunk = 2.0 + 300 / 15  # one 10 s chunk
    assert small.wait_seconds <= chunk + chunk + 5.0  # the next chunk end, its chunk, stitch
    assert small.done_at < big.done_at - 10 * chunk


def test_starting_vms_the_waiting_jobs_need_are_not_free_for_a_new_job() -> None:
    plan = planner(ComputeOptions(chunk_seconds=60, max_parallel_tasks=1, workers=1))
    pool = simulate_pool([Upload(0.0, 60.0), Upload(30.0, 60.0)], SPEED, plan, warm_seconds=0)
    a, b = pool.jobs
    # The first job's VM is still starting and the first job wants it: the second launches.
    assert (a.launched, b.free, b.launched) == (1, 0, 1)
    assert b.wait_seconds == pytest.approx(a.wait_seconds)


def test_the_planner_is_told_the_free_workers() -> None:
    # Warm workers start nothing (auto_workers), so a job arriving to ten of them is planned
    # for ten, and its auto chunks are cut for ten: three per worker, not three in all.
    plan = planner(ComputeOptions(max_parallel_tasks=10))
    cold = plan(Upload(0.0, 300.0), SPEED)
    assert (cold.parallelism, len(cold.tasks())) == (1, 3)
    wide = planner(ComputeOptions(chunk_seconds=30, max_parallel_tasks=10, workers=10))

    def plan_both(upload: Upload, speed: Throughput) -> Plan:
        return (wide if upload.at == 0 else plan)(upload, speed)

    uploads = [Upload(0.0, 300.0), Upload(1000.0, 300.0)]  # the first leaves ten warm workers
    told = simulate_pool(uploads, SPEED, plan_both, warm_seconds=600).jobs[1]
    unaware = simulate_pool(uploads, SPEED, plan_both, warm_seconds=600, plan_with_free=False)
    assert (told.free, told.launched, told.workers, told.chunks) == (10, 0, 10, 30)
    assert (unaware.jobs[1].workers, unaware.jobs[1].chunks) == (1, 3)
    # Ten workers on 30 chunks of 10 s against three on three chunks of 100 s.
    assert told.wait_seconds == pytest.approx(3 * (2 + 300 / 15) + 5)
    assert unaware.jobs[1].wait_seconds == pytest.approx(2 + 3000 / 15 + 5)


def test_workers_idle_at_the_start_take_the_first_job_and_their_wait_is_the_deployments() -> None:
    plan = planner(ComputeOptions(chunk_seconds=10, max_parallel_tasks=2, workers=2))
    pool = simulate_pool([Upload(0.0, 20.0)], SPEED, plan, warm_seconds=120, idle_at_start=3)
    [job] = pool.jobs
    assert (job.free, job.launched, pool.vms_started) == (3, 0, 0)
    chunk = 2.0 + 300 / 15
    assert job.wait_seconds == pytest.approx(chunk + 5.0)
    # Two take a chunk each; the third waits out its warm time, the two theirs after the job.
    assert pool.idle_seconds == pytest.approx(120 + 120 + 120)
    assert pool.vm_seconds == pytest.approx(job.vm_seconds + pool.idle_seconds)
