"""The StatusStore contract, held by SQLite and by Firestore (the npm emulator): the same tests
and assertions for both — create-if-absent, transactions that lose no update across processes,
the queries behind `dropbatch status` / `dropbatch jobs`, per-task progress."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest

from core.config import Settings
from core.domain import JobError, Plan, VideoInfo
from core.status import open_status
from core.status.base import JobNotFound, StatusStore
from core.status.model import (
    CheckReport,
    CheckResult,
    JobRecord,
    JobState,
    LeaseHolder,
    MachineFacts,
    PoolWorker,
    ProcessOwner,
    TaskProgress,
)
from tests.contract.backends import StatusBackend
from tests.crowd import even_chunks, named_item

PROCESSES = 4
APPENDS_PER_PROCESS = 15


def record(
    job_id: str = "job-1",
    *,
    bucket: str = "inbox",
    manifest: str = "c7/manifest.yaml",
    state: JobState = JobState.RECEIVED,
    created_at: float = 1000.0,
) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        bucket=bucket,
        manifest=manifest,
        manifest_generation=1_795_288_545_046_154,  # Cloud Storage generations are µs stamps
        manifest_uri=f"gs://{bucket}/{manifest}",
        state=state,
        created_at=created_at,
        updated_at=created_at,
    )


# -- create and get ----------------------------------------------------------------------------


def test_create_only_if_absent(status: StatusStore) -> None:
    assert status.create(record(state=JobState.QUEUED)) is True
    assert status.create(record(state=JobState.FAILED)) is False
    stored = status.get("job-1")
    assert stored is not None
    assert stored.state == JobState.QUEUED


def test_concurrent_creates_have_exactly_one_winner(status: StatusStore) -> None:
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def attempt(i: int) -> None:
        barrier.wait()
        results.append(status.create(record(created_at=1000.0 + i)))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False] * 7 + [True]


def test_get_returns_what_was_created(status: StatusStore) -> None:
    original = record()
    original.error = JobError(code="X", message="y", field="chain[0]")
    original.items_stitched = [1, 2]
    status.create(original)
    stored = status.get("job-1")
    assert stored is not None
    assert stored.revision >= 1
    assert stored.model_dump(exclude={"revision"}) == original.model_dump(exclude={"revision"})


def test_a_plan_with_hundreds_of_inputs_round_trips(status: StatusStore) -> None:
    info = VideoInfo(duration=600.0, fps_num=30000, fps_den=1001, frame_count=17982, width=1920,
                     height=1080, has_audio=True, codec="h264")  # fmt: skip
    items = [
        named_item(
            i,
            f"take-{i:03d}",
            "c7/clips/",
            "c7/out/",
            info,
            even_chunks(60, 300, 17982, roll=15),
            chain=[{"crop": {"aspect": "9:16", "smoothing_seconds": 0.5}}],
            encode={"crf": 20, "preset": "medium"},
        )
        for i in range(500)
    ]
    big = record()
    big.plan = Plan(items=items, max_parallel_tasks=100)
    big.chunks_total = 500 * 60
    assert status.create(big)
    stored = status.get("job-1")
    assert stored is not None and stored.plan == big.plan
    status.transact("job-1", lambda r: r.items_stitched.append(499))
    assert status.get("job-1").items_stitched == [499]


def test_get_of_unknown_job_is_none(status: StatusStore) -> None:
    assert status.get("nobody") is None


def test_records_survive_reopening_the_store(status_backend: StatusBackend) -> None:
    status_backend.open().create(record())
    reopened = status_backend.open()
    assert reopened.get("job-1") is not None
    assert reopened.create(record()) is False


# -- transact ------------------------------------------------------------------------------------


def test_transact_increments_revision_only_when_the_record_changed(status: StatusStore) -> None:
    status.create(record())
    start = status.get("job-1")
    assert start is not None

    unchanged, result = status.transact("job-1", lambda r: r.state)
    assert result == JobState.RECEIVED
    assert unchanged.revision == start.revision
    assert status.get("job-1").revision == start.revision

    def to_queued(r: JobRecord) -> str:
        r.set_state(JobState.QUEUED, now=2000.0)
        return "moved"

    changed, result = status.transact("job-1", to_queued)
    assert result == "moved"
    assert changed.revision == start.revision + 1
    stored = status.get("job-1")
    assert stored.revision == start.revision + 1
    assert stored.state == JobState.QUEUED
    assert stored.updated_at >= start.updated_at

    again, _ = status.transact("job-1", to_queued)  # already QUEUED: set_state is a no-op
    assert again.revision == start.revision + 1


def test_transact_on_unknown_job_raises(status: StatusStore) -> None:
    with pytest.raises(JobNotFound):
        status.transact("nobody", lambda r: None)


def test_transact_that_raises_writes_nothing(status: StatusStore) -> None:
    status.create(record())

    def half_done(r: JobRecord) -> None:
        r.set_state(JobState.RUNNING)
        raise RuntimeError("task crashed mid-update")

    with pytest.raises(RuntimeError):
        status.transact("job-1", half_done)
    stored = status.get("job-1")
    assert stored.state == JobState.RECEIVED
    assert stored.revision == 1
    status.transact("job-1", lambda r: r.set_state(JobState.RUNNING))  # nothing left locked
    assert status.get("job-1").state == JobState.RUNNING


def test_marking_a_chunk_done_twice_counts_once_and_never_writes_the_job(
    status: StatusStore,
) -> None:
    from batch_jobs.claims import finish_claim

    status.create(record())
    created = status.get("job-1").revision
    assert finish_claim(status, "job-1", 0, 3) is True
    assert finish_claim(status, "job-1", 0, 3) is False  # the second finisher changes nothing
    assert finish_claim(status, "job-1", 1, 0) is True
    assert status.count_done("job-1", 0) == 1 and status.count_done("job-1") == 2
    assert status.done_counts("job-1") == {0: 1, 1: 1}
    assert status.get("job-1").revision == created  # the done-set is off the job document


def _append_many(
    settings_json: str, env: dict[str, str], worker: int, barrier: multiprocessing.Barrier
) -> None:
    os.environ.update(env)
    store = open_status(Settings.model_validate_json(settings_json))
    barrier.wait()
    for i in range(APPENDS_PER_PROCESS):
        value = worker * APPENDS_PER_PROCESS + i
        store.transact("job-1", lambda r, v=value: r.items_stitched.append(v))


def test_concurrent_transactions_from_several_processes_lose_no_update(
    status_backend: StatusBackend,
) -> None:
    store = status_backend.open()
    store.create(record())
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    args = (status_backend.settings.model_dump_json(), status_backend.env)
    workers = [
        context.Process(target=_append_many, args=(*args, w, barrier)) for w in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    stored = store.get("job-1")
    total = PROCESSES * APPENDS_PER_PROCESS
    assert sorted(stored.items_stitched) == list(range(total))
    assert stored.revision == 1 + total


def test_the_stitch_lease_goes_to_one_of_many_claimants(status: StatusStore) -> None:
    from batch_jobs.leases import claim_stitch

    status.create(record())
    barrier = threading.Barrier(6)
    outcomes: dict[str, str] = {}

    def claim(owner: str) -> None:
        barrier.wait()
        outcomes[owner] = claim_stitch(status, "job-1", 0, owner, lease=60)

    threads = [threading.Thread(target=claim, args=(f"task-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes.values()) == ["claimed"] + ["held"] * 5
    stored = status.get("job-1")
    [winner] = [owner for owner, outcome in outcomes.items() if outcome == "claimed"]
    assert stored.stitch_leases["0"].owner == winner
    assert [c.owner for c in stored.stitch_claims] == [winner]


def test_a_kept_lease_outlives_its_length_and_lapses_once_its_keeper_stops(
    status: StatusStore,
) -> None:
    from batch_jobs.leases import LeaseKeeper, claim_stitch

    status.create(record())
    lease = 1.5
    assert claim_stitch(status, "job-1", 0, "stitcher", lease) == "claimed"
    with LeaseKeeper(status, "job-1", 0, "stitcher", lease):
        time.sleep(lease * 2.5)  # a stitch longer than the lease
        assert claim_stitch(status, "job-1", 0, "retry", lease) == "held"
    time.sleep(lease * 1.2)  # the stitcher died: nobody renews any more
    assert claim_stitch(status, "job-1", 0, "retry", lease) == "claimed"
    assert [c.owner for c in status.get("job-1").stitch_claims] == ["stitcher", "retry"]


def dead_process() -> ProcessOwner:
    """The owner record of a process that has exited (and been reaped)."""
    code = "from batch_jobs.liveness import current_owner; print(current_owner().model_dump_json())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ProcessOwner.model_validate_json(out.stdout)


def test_a_lease_whose_holder_is_known_dead_is_taken_over_before_it_runs_out(
    status: StatusStore,
) -> None:
    from batch_jobs.leases import claim_stitch
    from batch_jobs.liveness import current_owner

    status.create(record())
    me = current_owner()
    lease = 300.0  # none of these runs out during the test

    def holder(process: ProcessOwner, task: int, attempt: int) -> LeaseHolder:
        return LeaseHolder(process=process, task_index=task, attempt=attempt)

    assert claim_stitch(status, "job-1", 0, "dead", lease, holder(dead_process(), 1, 0)) == (
        "claimed"
    )
    # Its process is gone: the next claimant takes over at once.
    assert claim_stitch(status, "job-1", 0, "live", lease, holder(me, 2, 0)) == "claimed"
    # A live holder keeps it against another task...
    assert claim_stitch(status, "job-1", 0, "other", lease, holder(me, 4, 0)) == "held"
    # ...but not against a later attempt of its own task (one attempt runs at a time).
    assert claim_stitch(status, "job-1", 0, "retry", lease, holder(me, 2, 1)) == "claimed"
    stored = status.get("job-1")
    assert [c.owner for c in stored.stitch_claims] == ["dead", "live", "retry"]
    assert stored.stitch_leases["0"].holder == holder(me, 2, 1)


def test_the_leases_of_a_task_seen_to_die_are_released(status: StatusStore) -> None:
    from batch_jobs.leases import claim_stitch, release_task_leases
    from batch_jobs.liveness import current_owner

    status.create(record())
    me = LeaseHolder(process=current_owner(), task_index=3, attempt=0)
    assert claim_stitch(status, "job-1", 0, "stitcher", 300, me) == "claimed"
    assert release_task_leases(status, "job-1", 3, 1) == 0  # another attempt: not its lease
    assert claim_stitch(status, "job-1", 0, "waiter", 300) == "held"
    assert release_task_leases(status, "job-1", 3, 0) == 1
    assert claim_stitch(status, "job-1", 0, "waiter", 300) == "claimed"


def test_the_executor_is_recorded_and_only_a_dead_one_is_replaced(status: StatusStore) -> None:
    from batch_jobs.liveness import current_owner, process_started
    from batch_jobs.local_executor import claim_executor

    status.create(record(state=JobState.RUNNING))
    me = current_owner()
    assert claim_executor(status, "job-1", me)
    assert status.get("job-1").executor == me
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = ProcessOwner(host=me.host, pid=sleeper.pid, started=process_started(sleeper.pid))
        status.transact("job-1", lambda r: setattr(r, "executor", other))
        assert not claim_executor(status, "job-1", me)  # a live executor runs it
        assert status.get("job-1").executor == other
    finally:
        sleeper.kill()
        sleeper.wait()
    assert claim_executor(status, "job-1", me)  # it died: ours now
    assert status.get("job-1").executor == me


def test_task_liveness_from_the_stored_progress(status: StatusStore) -> None:
    from batch_jobs.liveness import HEARTBEAT_TIMEOUT, current_owner, task_alive

    status.create(record())
    elsewhere = ProcessOwner(host="another-vm", pid=1, started="x")
    now = time.time()
    for index, owner, beat in [
        (0, current_owner(), now),
        (1, dead_process(), now),
        (2, elsewhere, now),
        (3, elsewhere, now - HEARTBEAT_TIMEOUT - 1),
    ]:
        progress = TaskProgress(job_id="job-1", task_index=index, item=0, chunk=index, owner=owner)
        progress.updated_at = beat
        status.put_progress(progress)
    stored = status.progress("job-1")
    assert [p.owner.host for p in stored][:2] == [current_owner().host] * 2
    # This host: the process decides; another host: the heartbeat's age.
    assert [task_alive(p) for p in stored] == [True, False, True, False]


# -- recent ----------------------------------------------------------------------------------------


@pytest.fixture
def history(status: StatusStore) -> StatusStore:
    jobs = [
        record("a", bucket="inbox", manifest="c7/m.yaml", state=JobState.SUCCEEDED, created_at=1),
        record("b", bucket="inbox", manifest="c8/m.yaml", state=JobState.FAILED, created_at=3),
        record("c", bucket="other", manifest="c7/m.yaml", state=JobState.RUNNING, created_at=2),
        record("d", bucket="inbox", manifest="c7/m.yaml", state=JobState.RUNNING, created_at=4),
    ]
    for job in jobs:
        assert status.create(job)
    return status


def ids(records: list[JobRecord]) -> list[str]:
    return [r.job_id for r in records]


def test_recent_is_newest_first_and_limited(history: StatusStore) -> None:
    assert ids(history.recent()) == ["d", "b", "c", "a"]
    assert ids(history.recent(limit=2)) == ["d", "b"]


def test_recent_filters_by_bucket_manifest_and_state(history: StatusStore) -> None:
    assert ids(history.recent(bucket="inbox")) == ["d", "b", "a"]
    assert ids(history.recent(manifest="c7/m.yaml")) == ["d", "c", "a"]
    assert ids(history.recent(bucket="inbox", manifest="c7/m.yaml")) == ["d", "a"]
    assert ids(history.recent(1, bucket="inbox", manifest="c7/m.yaml")) == ["d"]
    assert ids(history.recent(states=[JobState.RUNNING])) == ["d", "c"]
    assert ids(history.recent(states=[JobState.FAILED, JobState.SUCCEEDED])) == ["b", "a"]
    assert ids(history.recent(bucket="other", states=[JobState.FAILED])) == []
    assert ids(history.recent(states=[])) == ["d", "b", "c", "a"]


def test_recent_sees_state_changed_by_transact(history: StatusStore) -> None:
    history.transact("c", lambda r: r.set_state(JobState.CANCELLED))
    assert ids(history.recent(states=[JobState.RUNNING])) == ["d"]
    assert ids(history.recent(states=[JobState.CANCELLED])) == ["c"]


def test_by_state_filters_by_folder_exactly(status: StatusStore) -> None:
    waiting = JobState.WAITING_FOR_INPUTS
    jobs = [
        record("root", manifest="m.yaml", state=waiting, created_at=1),
        record("c7", manifest="c7/m.yaml", state=waiting, created_at=2),
        record("c7-sub", manifest="c7/sub/m.yaml", state=waiting, created_at=3),
        record("c7x", manifest="c7x/m.yaml", state=waiting, created_at=4),  # a prefix, not c7/
        record("upper", manifest="C7/m.yaml", state=waiting, created_at=5),  # names keep case
        record("wild", manifest="c_/m.yaml", state=waiting, created_at=6),  # '_' is no wildcard
        record("c7-done", manifest="c7/n.yaml", state=JobState.SUCCEEDED, created_at=7),
        record("c7-got", manifest="c7/o.yaml", state=JobState.RECEIVED, created_at=8),
        record("other", bucket="other", manifest="c7/m.yaml", state=waiting, created_at=0),
    ]
    for job in jobs:
        assert status.create(job)
    chain = ["c7/sub/", "c7/", ""]
    both = [waiting, JobState.RECEIVED]
    assert ids(status.by_state(both, bucket="inbox", folders=chain)) == [
        "root", "c7", "c7-sub", "c7-got"
    ]  # fmt: skip
    assert ids(status.by_state([waiting], bucket="inbox", folders=["c7/"])) == ["c7"]
    assert ids(status.by_state([waiting], bucket="inbox", folders=["c_/"])) == ["wild"]
    assert ids(status.by_state([waiting], bucket="inbox", folders=[])) == []
    assert ids(status.by_state([waiting])) == [
        "other", "root", "c7", "c7-sub", "c7x", "upper", "wild"
    ]  # fmt: skip
    assert status.by_state([]) == []
    status.transact("c7", lambda r: r.set_state(JobState.QUEUED))
    assert ids(status.by_state([waiting], bucket="inbox", folders=["c7/"])) == []


def test_by_state_returns_every_match_oldest_first(status: StatusStore) -> None:
    """No page size: the trigger re-checks every waiting manifest (recent() stops at 200)."""
    count = 230
    for i in range(count):
        assert status.create(
            record(
                f"w{i:03d}",
                manifest=f"big/m{i:03d}.yaml",
                created_at=1000.0 + i,
                state=JobState.WAITING_FOR_INPUTS,
            )
        )
    found = status.by_state([JobState.WAITING_FOR_INPUTS], bucket="inbox", folders=["big/"])
    assert ids(found) == [f"w{i:03d}" for i in range(count)]


# -- progress ------------------------------------------------------------------------------------


def test_progress_is_listed_by_task_index_and_kept_per_task(status: StatusStore) -> None:
    for task in (2, 0, 1, 10):
        status.put_progress(TaskProgress(job_id="job-1", task_index=task, item=0, chunk=task))
    status.put_progress(TaskProgress(job_id="job-2", task_index=0, item=0, chunk=0))
    listed = status.progress("job-1")
    assert [p.task_index for p in listed] == [0, 1, 2, 10]
    assert [p.chunk for p in listed] == [0, 1, 2, 10]
    assert [p.job_id for p in status.progress("job-2")] == ["job-2"]
    assert status.progress("nobody") == []


def test_a_task_finishing_right_after_a_progress_update_ends_finished(status: StatusStore) -> None:
    """However often a task reports, the state it ends in is the one that is stored."""
    started = TaskProgress(job_id="job-1", task_index=3, item=0, chunk=3, frames_total=300)
    status.put_progress(started)
    for frames in range(0, 300, 30):  # a burst, faster than anyone should write
        status.put_progress(started.model_copy(update={"frames_done": frames}))
    status.put_progress(
        started.model_copy(update={"frames_done": 300, "state": "SUCCEEDED", "fps": 41.5})
    )
    [stored] = status.progress("job-1")
    assert (stored.state, stored.frames_done, stored.fps) == ("SUCCEEDED", 300, 41.5)


def test_a_failed_task_keeps_its_message(status: StatusStore) -> None:
    running = TaskProgress(job_id="job-1", task_index=0, item=0, chunk=0, frames_done=10)
    status.put_progress(running)
    status.put_progress(running.model_copy(update={"state": "FAILED", "message": "decode: EOF"}))
    [stored] = status.progress("job-1")
    assert (stored.state, stored.message, stored.frames_done) == ("FAILED", "decode: EOF", 10)
    assert abs(stored.updated_at - time.time()) < 60


def test_a_self_check_report_is_kept_by_its_id_apart_from_the_jobs(status: StatusStore) -> None:
    assert status.get_check("doctor-1") is None
    status.put_check(CheckReport(check_id="doctor-1"))  # the doctor's placeholder
    failed = CheckResult(name="ffmpeg", ok=False, detail="not on PATH", fix="install it")
    status.put_check(CheckReport(check_id="doctor-1", host="vm-7", finished=True, results=[failed]))
    stored = status.get_check("doctor-1")
    assert stored is not None and stored.finished and stored.host == "vm-7"
    assert stored.results == [failed] and not stored.ok
    assert status.recent(10) == [] and status.get("doctor-1") is None


def test_each_machine_is_recorded_once_by_the_first_of_its_racing_workers(
    status: StatusStore,
) -> None:
    from batch_jobs.machines import add_machine

    status.create(record(state=JobState.RUNNING))
    vm = MachineFacts(machine="boot-a", host="vm-1", gpus=["NVIDIA L4"], driver="550.90.07",
                      cuda="12.4", onnxruntime="1.22.0",
                      providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
                      nvenc=True, nvdec=True)  # fmt: skip
    barrier = threading.Barrier(4)
    added: list[bool] = []

    def first_worker(host: str) -> None:
        barrier.wait()
        added.append(add_machine(status, "job-1", vm.model_copy(update={"host": host})))

    workers = [threading.Thread(target=first_worker, args=(f"vm-{i}",)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(added) == [False, False, False, True]
    cpu = MachineFacts(machine="boot-b", host="laptop", onnxruntime="1.22.0",
                       providers=["CPUExecutionProvider"])  # fmt: skip
    assert add_machine(status, "job-1", cpu) is True
    stored = status.get("job-1")
    assert stored is not None
    assert [m.machine for m in stored.machines] == ["boot-a", "boot-b"]
    assert stored.machines[0].model_dump(exclude={"host"}) == vm.model_dump(exclude={"host"})
    assert stored.machines[1] == cpu
    assert stored.summary(0)["machines"][0]["gpus"] == ["NVIDIA L4"]


# -- chunk claims (workers that pull chunks) ---------------------------------------------------


def test_a_chunk_goes_to_one_of_many_racing_workers_and_to_another_once_its_holder_dies(
    status: StatusStore,
) -> None:
    from batch_jobs.claims import claim_chunk, finish_claim, renew_claim
    from batch_jobs.liveness import current_owner

    status.create(record())
    barrier = threading.Barrier(6)
    won: dict[int, bool] = {}

    def race(worker: int) -> None:
        holder = LeaseHolder(process=current_owner(), task_index=worker, attempt=0)
        barrier.wait()
        won[worker] = claim_chunk(status, "job-1", 0, 3, f"w{worker}", holder, 300) is not None

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    [winner] = [w for w, ok in won.items() if ok]
    [stored] = status.claims("job-1")
    assert (stored.item, stored.chunk, stored.owner, stored.grants) == (0, 3, f"w{winner}", 1)
    assert renew_claim(status, "job-1", 0, 3, f"w{winner}", 300)
    assert not renew_claim(status, "job-1", 0, 3, "someone-else", 300)

    # Held by a process that is gone: the next worker takes it over before its lease ends.
    dead = LeaseHolder(process=dead_process(), task_index=7, attempt=0)
    assert claim_chunk(status, "job-1", 0, 4, "dead", dead, 300) is not None
    taken = claim_chunk(status, "job-1", 0, 4, "live", LeaseHolder(process=current_owner()), 300)
    assert taken is not None and (taken.owner, taken.grants) == ("live", 2)
    finish_claim(status, "job-1", 0, 4)
    assert claim_chunk(status, "job-1", 0, 4, "late", None, 300) is None  # done stays done
    assert [(c.chunk, c.done) for c in status.claims("job-1")] == [(3, False), (4, True)]


def test_the_open_claims_and_the_done_counts_are_read_from_the_claims(
    status: StatusStore,
) -> None:
    from batch_jobs.claims import claim_chunk, finish_claim

    status.create(record())
    for item, chunk in [(0, 0), (0, 1), (0, 2), (2, 5)]:
        assert claim_chunk(status, "job-1", item, chunk, f"w{item}{chunk}", None, 300)
    finish_claim(status, "job-1", 0, 1)
    finish_claim(status, "job-1", 2, 5)
    finish_claim(status, "job-1", 3, 0)  # finished by a worker whose claim was never read
    assert [(c.item, c.chunk) for c in status.claims("job-1", pending=True)] == [(0, 0), (0, 2)]
    assert len(status.claims("job-1")) == 5
    assert status.done_counts("job-1") == {0: 1, 2: 1, 3: 1}
    assert [status.count_done("job-1", i) for i in range(4)] == [1, 0, 1, 1]
    assert status.count_done("job-1") == 3 and status.count_done("job-2") == 0


# -- what runs cost: chunk seconds on the claims, the warm pool's worker documents -------------


def test_the_seconds_of_finished_chunks_are_kept_on_their_claims_and_sum_to_the_vm_time(
    status: StatusStore,
) -> None:
    from batch_jobs.claims import claim_chunk, finish_claim
    from core.status.costs import vm_time

    status.create(record())
    for chunk in range(3):
        assert claim_chunk(status, "job-1", 0, chunk, f"w{chunk}", None, 300)
    finish_claim(status, "job-1", 0, 0, 12.25)
    finish_claim(status, "job-1", 0, 1, 7.5)
    finish_claim(status, "job-1", 0, 1, 99.0)  # a second finisher: the first one's seconds stay
    assert [c.seconds for c in status.claims("job-1")] == [12.25, 7.5, 0.0]
    spent = vm_time(status.claims("job-1"))
    assert (spent.seconds, spent.chunks) == (19.75, 2)  # the open chunk counts nothing yet


def test_pool_worker_documents_round_trip_by_pool_and_are_replaced_whole(
    status: StatusStore,
) -> None:
    owner = ProcessOwner(host="vm-1", pid=42, started="boot:7")
    warm = PoolWorker(
        worker_id="cap-1-0", pool="img|T4|spot", engine_job="jobs/cap-1", state="idle",
        job_id="job-1", owner="vm-1:42:ab", launched_at=1000.0, updated_at=1010.0,
        busy_seconds=8.5, idle_seconds=1.25, jobs=1, process=owner,
    )  # fmt: skip
    status.put_worker(warm.model_copy(update={"worker_id": "cap-1-1"}))
    status.put_worker(warm)
    status.put_worker(PoolWorker(worker_id="cap-2-0", pool="local|none|standard", engine_job="x"))
    assert status.pool_workers("img|T4|spot") == [
        warm,
        warm.model_copy(update={"worker_id": "cap-1-1"}),
    ]
    assert [w.worker_id for w in status.pool_workers()] == ["cap-1-0", "cap-1-1", "cap-2-0"]
    assert status.pool_workers("nobody") == []
    gone = warm.model_copy(
        update={"state": "gone", "job_id": "job-2", "idle_seconds": 61.0, "updated_at": 1070.0}
    )
    status.put_worker(gone)
    assert status.pool_workers("img|T4|spot")[0] == gone
    # What counting the pool reads: every state but gone, in one pool or in all.
    present = warm.model_copy(update={"worker_id": "cap-1-1"})
    assert status.pool_workers("img|T4|spot", present=True) == [present]
    assert [w.worker_id for w in status.pool_workers(present=True)] == ["cap-1-1", "cap-2-0"]
