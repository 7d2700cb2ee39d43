"""The claim decision and `chunk_seconds: auto`: pure functions the workers and bench/cloud.py
share; and the `ChunkPicker` each worker claims through (where a crowd of workers start, what a
lost race costs, waiting for chunks others hold), on a real SQLite store."""

from __future__ import annotations

import time

import pytest

from batch_jobs.chunk_size import ROLL_SHARE, auto_chunk_seconds
from batch_jobs.claims import next_claim
from core.status.model import ChunkClaim

NOW = 1000.0


def test_next_claim_takes_free_then_expired_or_dead_chunks_and_none_when_all_are_held() -> None:
    chunks = [
        ChunkClaim(item=0, chunk=0, done=True),
        ChunkClaim(item=0, chunk=1, owner="a", expires_at=NOW + 30),  # live lease
        ChunkClaim(item=0, chunk=2, owner="b", expires_at=NOW - 1),  # lease ran out
        ChunkClaim(item=1, chunk=0),  # never claimed
    ]
    assert (next_claim(chunks, NOW).item, next_claim(chunks, NOW).chunk) == (0, 2)
    # The worker's own item first (its chain and side inputs are set up).
    assert (next_claim(chunks, NOW, prefer_item=1).item) == 1
    held = [chunks[0], chunks[1]]
    assert next_claim(held, NOW) is None
    # A holder known dead loses its chunk before its lease runs out.
    dead = next_claim(held, NOW, dead=lambda c: "gone" if c.owner == "a" else "")
    assert dead is not None and dead.chunk == 1


def chunks_of(seconds: float, chunk: float) -> int:
    return -(-round(seconds * 30) // round(chunk * 30))


@pytest.mark.parametrize("minutes", [1 / 60, 1, 10, 60])
@pytest.mark.parametrize("context", [0, 15, 200])
def test_auto_chunks_give_each_worker_several_and_keep_roll_under_five_percent(
    minutes: float, context: int
) -> None:
    seconds, workers = minutes * 60, 10
    chunk = auto_chunk_seconds(seconds, 30.0, workers, context, context)
    frames = chunk * 30
    assert 2 * context / (frames + 2 * context) <= ROLL_SHARE + 1e-9
    count = chunks_of(seconds, chunk)
    if minutes == 1 / 60:
        assert count == 1  # a one-second video is one chunk
    if minutes >= 10 and context <= 15:
        assert count >= 3 * workers  # long enough: at least three chunks per worker
    if minutes >= 10 and context == 200:
        # Big context: the roll bound sets the length, just within it.
        assert 2 * context / (frames + 2 * context) > ROLL_SHARE * 0.95
    if minutes == 60:
        assert count >= workers
    if minutes == 1 and context == 0:
        assert 4 <= chunk <= 6  # short video: short chunks, but not so short that setup rules


def test_an_explicit_chunk_length_wins_over_auto() -> None:
    from batch_jobs.plan import build_plan
    from core.domain import VideoInfo
    from manifests.loader import load_manifest
    from manifests.resolve import ResolvedItem

    info = VideoInfo(duration=600, fps_num=30, fps_den=1, frame_count=18000, width=64, height=64)
    item = ResolvedItem(index=0, video="a.mp4", audio=None, output_name=None)
    for text, expected in [("", 30), ("compute: {chunk_seconds: 60}\n", 10)]:
        manifest = load_manifest(f"version: 1\ninputs: a.mp4\n{text}".encode())
        plan = build_plan(manifest, "", [(item, info)])
        assert len(plan.items[0].chunks) == expected
        assert plan.parallelism == 10


# -- ChunkPicker: where each worker takes its chunks (real SQLite store) ------------------------
def one_item_plan(chunks: int, workers: int):
    from core.domain import Plan, VideoInfo
    from tests.crowd import even_chunks, named_item

    info = VideoInfo(duration=chunks, fps_num=30, fps_den=1, frame_count=30 * chunks, width=64,
                     height=64)  # fmt: skip
    item = named_item(0, "a", "", "out/", info, even_chunks(chunks, 30), ".jpg")
    return Plan(items=[item], max_parallel_tasks=workers)


@pytest.fixture
def sqlite_job(tmp_path):
    from core.status.model import JobRecord
    from core.status.sqlite import SqliteStatusStore

    status = SqliteStatusStore(tmp_path / "status.sqlite")
    status.create(JobRecord(job_id="job", bucket="b", manifest="m.yaml", manifest_generation=1,
                            manifest_uri="gs://b/m.yaml"))  # fmt: skip
    return status


def picker(status, plan, index: int, workers: int, **options):
    from batch_jobs.claims import ChunkPicker
    from core.status.model import LeaseHolder

    holder = LeaseHolder(task_index=index, attempt=0)
    return ChunkPicker(status, "job", plan, f"w{index}", holder, task_index=index,
                       task_count=workers, **options)  # fmt: skip


def test_workers_starting_together_claim_different_chunks_without_reading_any_claim(
    sqlite_job,
) -> None:
    plan = one_item_plan(100, 10)
    pickers = [picker(sqlite_job, plan, i, 10) for i in range(10)]
    firsts = [p.next() for p in pickers]
    assert [c.chunk for c in firsts] == list(range(0, 100, 10))  # evenly spread, none lost
    assert all(p.reads == {"all": 0, "pending": 0} for p in pickers)
    assert all(c.grants == 1 for c in sqlite_job.claims("job"))


def test_a_walk_that_meets_another_workers_chunk_jumps_to_the_middle_of_the_free_run(
    sqlite_job,
) -> None:
    from batch_jobs.claims import record_done

    plan = one_item_plan(10, 2)
    first, second = picker(sqlite_job, plan, 0, 2), picker(sqlite_job, plan, 1, 2)
    assert second.next().chunk == 5
    for expected in range(5):  # the first worker walks 0..4 ...
        claim = first.next()
        assert claim.chunk == expected
        record_done(sqlite_job, "job", plan, 0, claim.chunk)
    # ... loses 5 to the second worker, and splits the run 6..9 it walks: no claim read.
    assert first.next().chunk == 8
    assert first.reads == {"all": 0, "pending": 0} and first.losses == 0


def test_a_worker_with_nothing_free_waits_for_a_lease_then_ends_once_all_is_done(
    sqlite_job,
) -> None:
    from batch_jobs.claims import claim_chunk, record_done

    plan = one_item_plan(1, 2)
    # Another worker, alive but silent, holds the only chunk for one more second.
    assert claim_chunk(sqlite_job, "job", 0, 0, "silent", None, lease=1.0)
    waiting = picker(sqlite_job, plan, 1, 2, poll=0.2)
    started = time.monotonic()
    claim = waiting.next()
    assert 0.8 < time.monotonic() - started < 5
    assert (claim.chunk, claim.owner, claim.grants) == (0, "w1", 2)  # taken over
    assert record_done(sqlite_job, "job", plan, 0, 0).item_complete
    assert waiting.next() is None
    assert record_done(sqlite_job, "job", plan, 0, 0).first is False  # the silent one, later
    assert sqlite_job.done_counts("job") == {0: 1}
