"""The warm pool's decisions (batch_jobs/pool_rules.py), which the workers, the trigger and the
simulation all take: which job a free worker serves, who counts as free, what to launch."""

from __future__ import annotations

import time

from batch_jobs.pool_rules import (
    JobLoad,
    free_workers,
    pick_job,
    pool_key,
    shortfall,
    worker_alive,
)
from core.status.model import PoolWorker


def test_a_free_worker_takes_the_job_with_the_fewest_workers_then_stays_then_the_oldest() -> None:
    long = JobLoad("long", created_at=1.0, claimable=40, workers=3)
    short = JobLoad("short", created_at=9.0, claimable=2, workers=0)
    assert pick_job([long, short], current="long") == "short"  # fewest workers first
    tied = JobLoad("tied", created_at=0.5, claimable=5, workers=3)
    assert pick_job([long, tied], current="long") == "long"  # among equals: no switch
    assert pick_job([long, tied], current="other") == "tied"  # then the oldest
    done = JobLoad("done", created_at=0.0, claimable=0, workers=0)
    assert pick_job([done]) is None and pick_job([]) is None  # nothing to claim anywhere


def test_free_workers_are_counted_once_per_burst_and_capacity_only_for_the_shortfall() -> None:
    assert free_workers(idle=2, finishing=1, starting=3, waiting=0) == 6
    assert free_workers(idle=2, finishing=1, starting=3, waiting=4) == 2  # earlier jobs first
    assert free_workers(idle=0, finishing=0, starting=2, waiting=5) == 0
    assert shortfall(wanted=4, available=1, live=6, cap=20) == 3
    assert shortfall(wanted=4, available=6, live=6, cap=20) == 0  # the pool covers it
    assert shortfall(wanted=4, available=0, live=18, cap=20) == 2  # the cap
    assert shortfall(wanted=4, available=0, live=25, cap=20) == 0


def test_pools_split_by_image_and_machine_kind_and_dead_workers_do_not_count() -> None:
    assert pool_key("img@sha256:1", "l4", True) != pool_key("img@sha256:2", "l4", True)
    assert pool_key("img", "l4", True) != pool_key("img", "l4", False)
    assert pool_key("", "none", False) == "local|none|standard"
    now = time.time()
    beating = PoolWorker(worker_id="a-0", pool="p", engine_job="a", state="idle", updated_at=now)
    silent = beating.model_copy(update={"updated_at": now - 120})
    starting = beating.model_copy(update={"state": "starting", "launched_at": now - 100})
    gone = beating.model_copy(update={"state": "gone"})
    assert worker_alive(beating, now, starting_grace=300)
    assert not worker_alive(silent, now, starting_grace=300)
    assert worker_alive(starting, now, starting_grace=300)
    assert not worker_alive(starting, now, starting_grace=60)
    assert not worker_alive(gone, now, starting_grace=300)
