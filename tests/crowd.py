"""A crowd of workers on one job, for tests/test_claims_crowd.py and bench/crowd.py: each worker
a thread running the real `ChunkPicker` and `record_done` a task runs, around a chunk whose work
is trivial (the bookkeeping alone), and a count of the writes each document takes.

How writes are counted: at the client, every Commit RPC the Firestore client sends (every
transaction's commit and every plain write goes through it) is wrapped; once a commit returns,
each document it wrote is stamped with that moment. Per document, `busiest(window)` is the most
writes in any sliding window of that many seconds; "sustained" is the 5 s figure / 5.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

from batch_jobs.claims import ChunkPicker, record_done
from core.domain import Chunk, Plan, PlannedItem, VideoInfo
from core.status.firestore import FirestoreStatusStore
from core.status.model import JobRecord, JobState, LeaseHolder


class CommitCounter:
    """Stamps each document a committed write touched (see the module doc)."""

    def __init__(self, store: FirestoreStatusStore) -> None:
        self.writes: dict[str, list[float]] = collections.defaultdict(list)
        self.failed = 0  # commits refused (a lost revision race, an abort): retried
        self._lock = threading.Lock()
        api = store.client._firestore_api
        send = api.commit

        def commit(*args: object, **kwargs: object) -> object:
            request = kwargs.get("request") or args[0]
            try:
                response = send(*args, **kwargs)
            except Exception:
                with self._lock:
                    self.failed += 1
                raise
            now = time.monotonic()
            with self._lock:
                for write in request["writes"] if isinstance(request, dict) else request.writes:
                    self.writes[write.update.name or write.delete].append(now)
            return response

        api.commit = commit

    def total(self) -> int:
        return sum(map(len, self.writes.values()))

    def busiest(self, window: float) -> tuple[int, str]:
        """The most writes any one document took in `window` seconds, and which document."""
        best, where = 0, ""
        for name, stamps in self.writes.items():
            stamps = sorted(stamps)
            first = 0
            for last, at in enumerate(stamps):
                while at - stamps[first] > window:
                    first += 1
                if last - first + 1 > best:
                    best, where = last - first + 1, name
        return best, where


def even_chunks(count: int, size: int, frames: int | None = None, roll: int = 0) -> list[Chunk]:
    """`count` chunks of `size` frames (the last cut at `frames` if given), each decoding `roll`
    frames either side of its own (none before the first)."""
    return [
        Chunk(
            index=c,
            start_frame=c * size,
            end_frame=(c + 1) * size if frames is None else min((c + 1) * size, frames),
            preroll=roll if c else 0,
            postroll=roll,
        )
        for c in range(count)
    ]


def named_item(
    index: int, stem: str, folder: str, out: str, info: VideoInfo, chunks: list[Chunk],
    preview: str = ".preview.jpg", **fields: object,
) -> PlannedItem:  # fmt: skip
    """The item reading `folder + stem + ".mp4"`, writing that name under `out` (the preview
    with the suffix `preview`); `fields`: the rest of PlannedItem."""
    return PlannedItem(
        index=index,
        video=f"{folder}{stem}.mp4",
        output=f"{out}{stem}.mp4",
        preview=f"{out}{stem}{preview}",
        info=info,
        chunks=chunks,
        **fields,
    )


def crowd_plan(items: int, chunks_per_item: int, workers: int) -> Plan:
    frames = 30 * chunks_per_item
    info = VideoInfo(duration=chunks_per_item, fps_num=30, fps_den=1, frame_count=frames,
                     width=64, height=64)  # fmt: skip
    return Plan(
        items=[
            named_item(i, f"in-{i}", "", "out/", info, even_chunks(chunks_per_item, 30), ".jpg")
            for i in range(items)
        ],
        max_parallel_tasks=workers,
    )


@dataclass
class Crowd:
    seconds: float = 0.0
    done_by: dict[tuple[int, int], list[int]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )  # chunk → the workers that did it
    completed: list[int] = field(default_factory=list)  # items a worker saw complete
    second: int = 0  # done marks that found the chunk done already
    failures: list[str] = field(default_factory=list)
    alive: int = 0  # workers still running when the wait ended
    reads: collections.Counter = field(default_factory=collections.Counter)


def run_crowd(
    store: FirestoreStatusStore, job_id: str, plan: Plan, workers: int, timeout: float = 300
) -> Crowd:
    """Create the job, start `workers` workers at once, wait for them; what they did."""
    total = sum(len(item.chunks) for item in plan.items)
    assert store.create(
        JobRecord(
            job_id=job_id,
            bucket="inbox",
            manifest="m.yaml",
            manifest_generation=1,
            manifest_uri="gs://inbox/m.yaml",
            state=JobState.RUNNING,
            plan=plan,
            chunks_total=total,
        )
    )
    crowd = Crowd()
    lock = threading.Lock()
    start = threading.Barrier(workers)

    def worker(index: int) -> None:
        holder = LeaseHolder(task_index=index, attempt=0)
        picker = ChunkPicker(store, job_id, plan, f"worker-{index}", holder, task_index=index,
                             task_count=workers)  # fmt: skip
        try:
            start.wait()
            while (claim := picker.next()) is not None:
                with lock:  # the chunk's "work"
                    crowd.done_by[(claim.item, claim.chunk)].append(index)
                finished = record_done(store, job_id, plan, claim.item, claim.chunk)
                with lock:
                    crowd.second += not finished.first
                    if finished.item_complete:
                        crowd.completed.append(claim.item)
        except Exception as exc:  # a worker that fails is what the caller looks for
            with lock:
                crowd.failures.append(f"worker {index}: {type(exc).__name__}: {exc}")
        finally:
            with lock:
                crowd.reads.update(picker.reads)

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, began + timeout - time.monotonic()))
    crowd.seconds = time.monotonic() - began
    crowd.alive = sum(t.is_alive() for t in threads)
    return crowd
