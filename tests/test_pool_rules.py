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


# -- a capacity job's end, as Batch notifies it (on_batch_state's reconcile) ------------------
def pool_job(tmp_path, state):  # type: ignore[no-untyped-def]
    from core.domain import Plan
    from core.status.model import JobRecord
    from core.status.sqlite import SqliteStatusStore
    from core.storage.local import LocalStore

    status = SqliteStatusStore(tmp_path / "status.sqlite")
    record = JobRecord(job_id="db-job", bucket="inbox", manifest="j.yaml", manifest_generation=1,
                       manifest_uri="gs://inbox/j.yaml", plan=Plan(), pool="p", chunks_total=4,
                       capacity_launched=1, capacity_jobs=["db-job"])  # fmt: skip
    record.set_state(state)
    status.create(record)
    (tmp_path / "root" / "inbox").mkdir(parents=True)
    return LocalStore(tmp_path / "root"), status


def hold_chunk(status, worker_id: str, chunk: int):  # type: ignore[no-untyped-def]
    """A pool worker of capacity `db-job` holding the chunk, as pool.py records both."""
    from batch_jobs.claims import claim_chunk

    owner = f"host:1:{worker_id}"
    assert claim_chunk(status, "db-job", 0, chunk, owner, None, lease=600) is not None
    status.put_worker(PoolWorker(worker_id=worker_id, pool="p", engine_job="db-job",
                                 state="busy", job_id="db-job", item=0, chunk=chunk,
                                 owner=owner))  # fmt: skip


def notify(store, status, state: str) -> None:  # type: ignore[no-untyped-def]
    from batch_jobs.reconcile import BatchNotification, apply_notification

    attributes = {"JobName": "projects/p/locations/r/jobs/db-job", "NewJobState": state,
                  "Type": "JOB_STATE_CHANGED", "JobUID": "u"}  # fmt: skip
    note = BatchNotification.from_pubsub(attributes, "tasks failed")
    assert note is not None
    apply_notification(store, status, note)


def test_a_failed_capacity_job_frees_its_workers_chunks_and_leaves_the_job_to_the_pool(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from batch_jobs.claims import finish_claim
    from core.status.model import JobState

    store, status = pool_job(tmp_path, JobState.RUNNING)
    hold_chunk(status, "db-job-0", 1)
    finish_claim(status, "db-job", 0, 0, 3.0)  # some of the job is done
    notify(store, status, "FAILED")
    [claim] = [c for c in status.claims("db-job") if c.chunk == 1]
    assert claim.expires_at == 0.0 and not claim.done  # free for the next worker at once
    assert {w.state for w in status.pool_workers("p")} == {"gone"}
    record = status.get("db-job")
    assert record is not None and record.state == JobState.RUNNING  # not the capacity's state
    notify(store, status, "SUCCEEDED")  # its workers exited after their warm time
    assert status.get("db-job").state == JobState.RUNNING  # type: ignore[union-attr]


def test_capacity_that_failed_with_nothing_done_and_no_worker_left_fails_its_job(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from core.status.model import JobState

    store, status = pool_job(tmp_path, JobState.QUEUED)
    notify(store, status, "FAILED")
    record = status.get("db-job")
    assert record is not None and record.state == JobState.FAILED
    assert (
        record.error is not None and "pool capacity launched for it failed" in record.error.message
    )
