"""One Batch task, a worker: `python -m batch_jobs.task`.

A job runs as many workers as its parallelism (`BATCH_TASK_INDEX` names one; it picks no
chunk). Each claims the next unfinished chunk (batch_jobs/claims.py), decodes it (plus the pre-
and post-roll its processors need), runs the chain, encodes the part with the same encoder
settings as every other part, stores it, marks the chunk's claim done, and claims again until
every chunk is done (waiting for chunks other workers hold: one stopped past its lease loses
its chunk; if it wakes and finishes it too, second, that changes nothing). Models load once
per process (processors/models/sessions.py) and side inputs once per item
(batch_jobs/worker.py). The worker that completes an item's chunks stitches it (see
`batch_jobs.stitch`).
Exit codes: 0 done, 1 failed (Batch retries it), 2 misconfigured (retrying will not help).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from batch_jobs.claims import (
    ChunkPicker,
    ClaimKeeper,
    Finished,
    fail_claim,
    record_done,
    release_claim,
)
from batch_jobs.encoder_choice import item_encoder
from batch_jobs.liveness import HEARTBEAT_SECONDS, current_owner
from batch_jobs.machines import record_this_machine
from batch_jobs.scratch import task_scratch
from batch_jobs.stitch import stitch_when_ready
from batch_jobs.worker import WorkerSetup, unstitched_items
from batch_jobs.workspace import WorkArea, work_area
from core import logs
from core.config import Settings
from core.domain import Chunk, Plan, PlannedItem, VideoInfo
from core.jobstatus import ROLE_KEY, fail, transition
from core.logs import event
from core.status import open_status
from core.status.base import StatusStore
from core.status.model import ChunkClaim, JobRecord, JobState, LeaseHolder, TaskProgress
from core.storage import open_store
from core.storage.base import NotFound, ObjectStore
from processors.base import ProcessorContext
from processors.chain import Chain, ChainSetupError
from processors.gpu import GPU_UNAVAILABLE, gpu_required_here
from processors.media.encoders import X264, decode_args
from processors.media.frames import EncodeSettings, FrameBatch, FrameReader, FrameWriter
from processors.media.preview import PreviewTap, preview_indices
from processors.registry import step_spec

log = logging.getLogger("dropbatch.task")
PROGRESS_INTERVAL = 1.0  # seconds; Firestore sustains about one write per second per document


class ProgressReporter:
    """Writes the task's progress record, which is also its heartbeat (`batch_jobs.liveness`):
    rewritten at least every HEARTBEAT_SECONDS while the task runs, frames flowing or not."""

    def __init__(self, status: StatusStore, progress: TaskProgress) -> None:
        self.status, self.progress = status, progress
        self._last = 0.0
        self._started = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)

    def update(self, frames_done: int, force: bool = False, **fields: object) -> None:
        with self._lock:
            now = time.time()
            self.progress.frames_done = frames_done
            self.progress.fps = round(frames_done / max(now - self._started, 1e-6), 2)
            for key, value in fields.items():
                setattr(self.progress, key, value)
            if force or now - self._last >= PROGRESS_INTERVAL:
                self.progress.updated_at = now
                self.status.put_progress(self.progress)
                self._last = now

    def start_chunk(self, item: int, chunk: int, frames_total: int) -> None:
        """A new chunk: its frame count and fps start from zero."""
        with self._lock:
            self._started = time.time()
        self.update(0, force=True, item=item, chunk=chunk, frames_total=frames_total)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                with self._lock:
                    if time.time() - self._last < HEARTBEAT_SECONDS:
                        continue
                self.update(self.progress.frames_done, force=True)
            except Exception as exc:  # a missed beat is not fatal; the next one may land
                event(log, "heartbeat failed", logging.WARNING, reason=str(exc))

    def __enter__(self) -> ProgressReporter:
        self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._beat.join()


def encode_settings(encode: dict, threads: int | None, encoder: str = X264) -> EncodeSettings:
    return EncodeSettings(
        crf=int(encode.get("crf", 20)),
        preset=str(encode.get("preset", "medium")),
        threads=threads,
        encoder=encoder,
    )


def hold_last_frame(batches: Iterable[FrameBatch], first: int, end: int) -> Iterator[FrameBatch]:
    """The decoded batches from index `first` on, then copies of the last frame up to `end`.

    Lipsync's `extend` policy makes the output longer than the video: the frames past its end
    are its last frame held (the mouth keeps moving with the audio).
    """
    last: FrameBatch | None = None
    upto = first
    for batch in batches:
        if len(batch) and batch.indices[-1] >= first:
            last = batch.take(batch.indices >= first) if batch.indices[0] < first else batch
            upto = int(last.indices[-1]) + 1
            yield last
        elif len(batch):
            last = batch
    if last is None:
        return
    frame = last.frames[-1]
    while upto < end:
        n = min(8, end - upto)
        yield FrameBatch(np.repeat(frame[None], n, axis=0), np.arange(upto, upto + n))
        upto += n


# -- one chunk, in stages: context → decode → run (and encode) → upload ------------------------
# The shape of Ultralytics' BasePredictor: each stage a short function with its own inputs, so a
# test or a benchmark can build the same context or run the same decode as a task does.
@dataclass(frozen=True)
class ChunkSpan:
    """The frames one chunk decodes and keeps."""

    first: int  # the first frame decoded: the chunk's start less its pre-roll
    count: int  # frames decoded from `first`, the post-roll included
    total: int  # the item's length out (a lipsync length policy may change it)
    keep: tuple[int, int]  # the frames the chunk emits, [start, end)
    holds: bool  # past the video's end (lipsync `extend`): decode to its last frame, hold it

    @classmethod
    def of(cls, item: PlannedItem, chunk: Chunk) -> ChunkSpan:
        info = item.info
        first = chunk.start_frame - chunk.preroll
        count = (chunk.end_frame + chunk.postroll) - first
        total = item.frames or info.frame_count
        holds = first + count > info.frame_count and total > info.frame_count
        return cls(first, count, total, (chunk.start_frame, chunk.end_frame), holds)

    @property
    def last_chunk(self) -> bool:
        return self.keep[1] >= self.total

    @property
    def wanted(self) -> int:
        return self.keep[1] - self.keep[0]

    def read_first(self, frame_count: int) -> int:
        return min(self.first, frame_count - 1) if self.holds else self.first

    def read_count(self, frame_count: int) -> int | None:
        """Frames to decode; None: to the end (the last chunk reads to the end: a header's
        frame count can be one short)."""
        if self.holds:
            return frame_count - self.read_first(frame_count)
        return None if self.last_chunk else self.count


def speech_object(item: PlannedItem) -> str | None:
    """The object whose audio the item's chain follows (lipsync) or listens to (crop's
    speaker framing): the item's speech file, else the video's own track; None when no step
    hears anything, or when only listeners would hear a video that has no audio."""
    specs = [(step_spec(s["name"]), s.get("options", {})) for s in item.chain]
    if any(spec.speech for spec, _ in specs):
        return item.audio or item.video
    if any(spec.listens(spec.parse(options)) for spec, options in specs):
        return item.audio or (item.video if item.info.has_audio else None)
    return None


def chunk_context(
    item: PlannedItem, model_store: str, folder: Path | None, audio: Path | str | None
) -> ProcessorContext:
    """What a task gives a chunk's chain: the whole video's facts, the model store, the folder
    of the item's side inputs, and the speech the chain follows (`speech_object`'s file)."""
    info = item.info
    return ProcessorContext(
        info=info,
        rate=Fraction(info.fps_num, info.fps_den),
        width=info.width,
        height=info.height,
        model_store=model_store,
        folder=folder,
        audio_path=audio,
        audio_skip=item.audio_skip,
        frames=item.frames,
    )


def build_chain(
    store: ObjectStore, bucket: str, item: PlannedItem, model_store: str, folder: Path | None
) -> tuple[Chain, float]:
    """The context stage: the chunk's chain, and the seconds spent building it."""
    speech = speech_object(item)
    with store.media_source(bucket, speech) if speech else contextlib.nullcontext() as audio:
        ctx = chunk_context(item, model_store, folder, audio)
        building = time.perf_counter()
        chain = Chain(item.chain, ctx)  # lipsync reads its audio features here
        return chain, time.perf_counter() - building


def decode(
    source: str, info: VideoInfo, span: ChunkSpan, threads: int | None
) -> tuple[FrameReader, Iterable[FrameBatch]]:
    """The decode stage: the reader (to close) and the batches the chain reads."""
    read_first = span.read_first(info.frame_count)
    reader = FrameReader.for_video(
        source,
        info,
        read_first,
        span.read_count(info.frame_count),
        threads=threads,
        decode=tuple(decode_args()),
    )
    batches = hold_last_frame(reader, span.first, span.first + span.count) if span.holds else reader
    return reader, batches


def encoder_for(
    part: Path, chain: Chain, item: PlannedItem, threads: int | None, encoder: str
) -> FrameWriter:
    """The encode stage's writer: the part, with the item's encoder settings."""
    return FrameWriter(
        part,
        width=chain.width,
        height=chain.height,
        rate=Fraction(item.info.fps_num, item.info.fps_den),
        settings=encode_settings(item.encode, threads, encoder),
    )


def run_chain(
    chain: Chain,
    batches: Iterable[FrameBatch],
    writer: FrameWriter,
    tap: PreviewTap,
    reporter: ProgressReporter,
    keep: tuple[int, int],
) -> tuple[int, int]:
    """The run stage: the chain over the batches, each frame it emits encoded; returns (frames
    the chain emitted, frames written)."""
    done = 0

    def tapped(frames: Iterable[FrameBatch]) -> Iterator[FrameBatch]:
        for batch in frames:
            tap.see_input(batch)
            yield batch

    def emit(batch: FrameBatch) -> None:
        nonlocal done
        tap.see_output(batch)
        writer.write(batch.frames)
        done += len(batch)
        reporter.update(done)

    emitted = chain.run(tapped(batches), emit, keep=keep)
    return emitted, done


def check_emitted(emitted: int, span: ChunkSpan, chunk: Chunk) -> None:
    if emitted != span.wanted and not (span.last_chunk and emitted > 0):
        raise RuntimeError(
            f"decoded {emitted} of {span.wanted} frames for chunk {chunk.index} "
            f"(frames {chunk.start_frame}–{chunk.end_frame}); the video may be truncated"
        )


def upload_part(
    store: ObjectStore, work: WorkArea, job_id: str, item: int, chunk: int, tap: PreviewTap,
    part: Path,
) -> None:  # fmt: skip
    """The upload stage. Tiles first: a part's presence is what marks the chunk's outputs
    complete. Both go to the work bucket, which the inbox trigger does not watch."""
    for key, jpeg in tap.jpegs().items():
        store.write_bytes(
            work.bucket,
            work.preview_tile(job_id, item, key),
            jpeg,
            content_type="image/jpeg",
            metadata={ROLE_KEY: "part"},
        )
    store.upload_file(
        work.bucket,
        work.part(job_id, item, chunk),
        part,
        content_type="video/mp4",
        metadata={ROLE_KEY: "part"},
    )


def process_chunk(
    store: ObjectStore,
    settings: Settings,
    status: StatusStore,
    job_id: str,
    bucket: str,
    item: PlannedItem,
    chunk: Chunk,
    reporter: ProgressReporter,
    threads: int | None,
    folder: Path | None = None,
    still_wanted: Callable[[], bool] | None = None,
) -> float:
    """Process one chunk into its part; returns the seconds spent building its chain (the
    per-chunk setup a worker pays; models come from the process's session cache).
    `still_wanted`, asked once the part is encoded: False (another worker finished the chunk
    meanwhile) stores nothing."""
    span = ChunkSpan.of(item, chunk)
    chain, chain_seconds = build_chain(store, bucket, item, settings.model_store, folder)
    tap = PreviewTap([i for i in preview_indices(span.total) if span.keep[0] <= i < span.keep[1]])
    # Before any frame is decoded: a machine that cannot follow the item's encoder fails fast.
    encoder = item_encoder(store, work_area(settings, bucket), job_id, item.index)
    with tempfile.TemporaryDirectory(prefix="dropbatch-task-") as tmp:
        part = Path(tmp) / "part.mp4"
        with store.media_source(bucket, item.video) as source:
            reader, batches = decode(source, item.info, span, threads)
            writer = encoder_for(part, chain, item, threads, encoder)
            try:
                emitted, done = run_chain(chain, batches, writer, tap, reporter, span.keep)
            finally:
                reader.close()
            writer.close()
        check_emitted(emitted, span, chunk)
        if still_wanted is not None and not still_wanted():
            return chain_seconds
        upload_part(store, work_area(settings, bucket), job_id, item.index, chunk.index, tap, part)
        reporter.update(done, force=True)
    return chain_seconds


@dataclass(frozen=True)
class TaskFailure:
    reason: str
    code: str = ""  # the job's error code when the cause has one
    uri: str = ""  # the object at fault, when there is one
    exit_code: int = 1  # 1: Batch retries the task; 2: every retry would fail the same way


INPUT_GONE = "INPUT_GONE"


def task_failure(exc: BaseException, internal: str = "") -> TaskFailure:
    """What a chunk's failure means for the task. A chain that cannot be set up (bad model,
    bad side image) and an input that is gone (deleted after the job was planned: no retry
    brings it back) fail the same way on every retry: exit 2 says so, and Batch and the
    local executor do not retry it. `internal`: the URI prefix of the job's own objects in
    the work bucket, whose absence is a race among workers, not a user's input gone."""
    if isinstance(exc, ChainSetupError):
        return TaskFailure(failure_text(exc), exc.code, exit_code=2)
    if isinstance(exc, NotFound) and not (internal and str(exc).startswith(internal)):
        uri = str(exc)
        return TaskFailure(
            f"{uri}: the job's input is gone (deleted or moved after the job was planned); "
            "upload it again, then upload the manifest again to run the job",
            INPUT_GONE,
            uri,
            exit_code=2,
        )
    return TaskFailure(failure_text(exc))


def failure_text(exc: BaseException) -> str:
    """What went wrong, in words a user can act on; the exception's kind when it is terse."""
    text = str(exc)
    if isinstance(exc, RuntimeError) and text:
        return text  # our own messages already say what happened
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- one worker: claim → (context → decode → run → encode → upload) → record, until done --------
@dataclass
class Worker:
    """One task's state across the chunks it claims: what each stage of its loop reads."""

    settings: Settings
    store: ObjectStore
    status: StatusStore
    record: JobRecord
    job_id: str
    index: int
    attempt: int
    owner: str  # this worker's claim owner: host, process, a nonce
    holder: LeaseHolder
    reporter: ProgressReporter
    picker: ChunkPicker
    work: WorkArea
    threads: int | None
    # A warm-pool worker (batch_jobs/pool.py): a failed chunk is counted on its claim and
    # fails the job past max_retries; the worker goes on with other chunks.
    pooled: bool = False

    @property
    def plan(self) -> Plan:
        assert self.record.plan is not None
        return self.record.plan


def plan_problem(record: JobRecord | None, job_id: str, index: int) -> int | None:
    """The exit code when there is nothing this task may run (no plan, a bad index, a job
    that has ended), else None."""
    if record is None or record.plan is None:
        event(
            log,
            "task failed",
            logging.ERROR,
            reason=f"job {job_id} has no plan in the status store",
        )
        return 2
    if index < 0:
        event(log, "task failed", logging.ERROR, reason=f"task index {index} is negative")
        return 2
    if record.state in (JobState.FAILED, JobState.CANCELLED, JobState.SUCCEEDED):
        return 0  # nothing left to do for this job
    return None


def start_worker(
    settings: Settings,
    store: ObjectStore,
    status: StatusStore,
    record: JobRecord,
    job_id: str,
    index: int,
    attempt: int,
    task_count: int | None,
) -> Worker:
    """The job RUNNING, this machine's facts recorded, the worker's claim picker ready."""
    plan = record.plan
    assert plan is not None
    logs.bind(job_id=job_id, task_index=index)
    transition(store, status, job_id, JobState.RUNNING, allowed_from=frozenset({JobState.QUEUED}))
    me = current_owner()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    holder = LeaseHolder(process=me, task_index=index, attempt=attempt)
    progress = TaskProgress(
        job_id=job_id, task_index=index, item=0, chunk=0, attempt=attempt, owner=me
    )
    reporter = ProgressReporter(status, progress)
    threads = limit_threads(settings)
    try:
        record_this_machine(status, record, plan.gpu != "none")
    except Exception as exc:  # the facts inform; the job does not depend on them
        event(log, "machine facts not recorded", logging.WARNING, reason=failure_text(exc))
    picker = ChunkPicker(
        status,
        job_id,
        plan,
        owner,
        holder,
        task_index=index,
        task_count=task_count or plan.parallelism,
        lease=settings.claim_lease_seconds,
    )
    work = work_area(settings, record.bucket)
    return Worker(
        settings, store, status, record, job_id, index, attempt, owner, holder, reporter,
        picker, work, threads,
    )  # fmt: skip


def run_task(
    settings: Settings,
    job_id: str,
    index: int,
    attempt: int,
    max_chunks: int | None = None,
    task_count: int | None = None,
) -> int:
    """One worker: claim a chunk, process it, record it done, and again, until every chunk
    is done (batch_jobs/claims.py: it waits for chunks others hold) or it has done
    `max_chunks`; the worker that completes an item stitches it. `task_count`: how many
    workers the job runs (where this one starts in the job; default: its parallelism)."""
    store, status = open_store(settings), open_status(settings)
    record = status.get(job_id)  # the plan, read once: nothing below reads the job again
    problem = plan_problem(record, job_id, index)
    if problem is not None:
        return problem
    assert record is not None
    worker = start_worker(settings, store, status, record, job_id, index, attempt, task_count)
    # Every model this worker loads runs on the GPU when the job asks for one, or the chunk's
    # setup fails GPU_UNAVAILABLE (processors/gpu.py): never a quiet CPU run on a GPU VM.
    gpu_asked = worker.plan.gpu != "none"
    with gpu_required_here(gpu_asked), worker.reporter, WorkerSetup(store, record) as setup:
        return work_until_done(worker, setup, max_chunks)


def work_until_done(worker: Worker, setup: WorkerSetup, max_chunks: int | None) -> int:
    """Claim and process chunks until none is left (or `max_chunks`), then stitch what nobody
    is stitching; the task's exit code."""
    reporter = worker.reporter
    reporter.update(0, force=True, state="RUNNING")
    worker_started = time.time()
    event(log, "task started", attempt=worker.attempt, threads=worker.threads or 0)
    while max_chunks is None or reporter.progress.chunks_done < max_chunks:
        claim = worker.picker.next()
        if claim is None:
            break
        failed = do_claim(worker, setup, claim)
        if failed:
            return failed
    # Every chunk is done. An item whose chunks are all done but which nobody is stitching
    # (its stitcher died, or a worker died between its last chunk and the stitch): this
    # worker stitches it.
    for orphan in unstitched_items(worker.status, worker.job_id, worker.holder):
        failed = stitch_item_of(worker, orphan)
        if failed:
            return failed
    reporter.update(reporter.progress.frames_done, force=True, state="SUCCEEDED")
    event(
        log,
        "task finished",
        chunks=reporter.progress.chunks_done,
        seconds=round(time.time() - worker_started, 3),
        claim_reads=worker.picker.reads,
        **peak_memory_mb(),
    )
    return 0


def do_claim(worker: Worker, setup: WorkerSetup, claim: ChunkClaim) -> int:
    """One claimed chunk: processed (or its stored part kept), recorded done, its item
    stitched when it was the last; 0, or the task's exit code when it must stop."""
    item = worker.plan.items[claim.item]
    chunk = item.chunks[claim.chunk]
    frames = chunk.end_frame - chunk.start_frame
    logs.bind(item=claim.item, chunk=claim.chunk)
    worker.reporter.start_chunk(claim.item, claim.chunk, frames)
    started = time.time()
    try:
        stored, chain_seconds, finished = process_claimed(worker, setup, claim, item, chunk)
    except Exception as exc:
        return chunk_failed(worker, claim, exc)
    if not finished.first:
        # Another worker took the chunk over (this one was stopped past its lease) and
        # finished it first: ours changes nothing, and what we stored goes if the item was
        # stitched before it landed.
        event(log, "chunk finished by another worker first", chunk=claim.chunk)
        remove_late_parts(worker.store, worker.status, worker.work, worker.job_id, claim.item)
        return 0
    elapsed = time.time() - started
    progress = worker.reporter.progress
    worker.reporter.update(frames, force=True, chunks_done=progress.chunks_done + 1)
    event(
        log,
        "chunk finished",
        seconds=round(elapsed, 3),
        chain_setup_seconds=round(chain_seconds, 3),
        fps=round(frames / max(elapsed, 1e-6), 2),
        kept_stored_part=stored,
    )
    return stitch_item_of(worker, claim.item) if finished.item_complete else 0


def process_claimed(
    worker: Worker, setup: WorkerSetup, claim: ChunkClaim, item: PlannedItem, chunk: Chunk
) -> tuple[bool, float, Finished]:
    """The chunk under its kept claim: (its part was stored already, chain seconds, what
    recording it done found)."""
    status, job_id = worker.status, worker.job_id
    chain_seconds = 0.0
    started = time.time()
    with ClaimKeeper(status, job_id, claim, worker.settings.claim_lease_seconds):
        # Taken over from a worker that stored the part but never recorded it (its done mark
        # failed, or it died in between): the work is kept.
        stored = claim.grants > 1 and part_stored(worker.store, worker.work, job_id, claim)
        if not stored:
            chain_seconds = process_chunk(
                worker.store,
                worker.settings,
                status,
                job_id,
                worker.record.bucket,
                item,
                chunk,
                worker.reporter,
                worker.threads,
                folder=setup.side_inputs(item),
                still_wanted=lambda c=claim: not chunk_done(status, job_id, c),
            )
        took = time.time() - started
        finished = record_done(status, job_id, worker.plan, claim.item, claim.chunk, took)
    return stored, chain_seconds, finished


def chunk_failed(worker: Worker, claim: ChunkClaim, exc: Exception) -> int:
    """The claim released, the failure in the task's progress and log; the exit code. A chain
    that cannot be set up (bad model, bad side image, a GPU job whose models cannot load on
    the GPU) or an input that is gone fails the same way on every retry: exit 2."""
    internal = worker.store.uri(worker.work.bucket, worker.work.job_folder(worker.job_id))
    failure = task_failure(exc, internal)
    if worker.pooled:
        return pooled_chunk_failed(worker, claim, failure)
    with contextlib.suppress(Exception):  # the lease runs out if this fails too
        release_claim(worker.status, worker.job_id, claim)  # another worker may take it now
    worker.reporter.update(
        worker.reporter.progress.frames_done,
        force=True,
        state="FAILED",
        message=failure.reason,
        code=failure.code,
        uri=failure.uri,
    )
    event(
        log,
        "task failed",
        logging.ERROR,
        reason=failure.reason,
        attempt=worker.attempt,
        code=failure.code,
    )
    return failure.exit_code


def pooled_chunk_failed(worker: Worker, claim: ChunkClaim, failure: TaskFailure) -> int:
    """A warm-pool worker's failed chunk: the failure counted on the chunk's claim (which
    frees it for the next try, by any worker); the job FAILED once the chunk has failed
    max_retries + 1 times, or at once when no retry can help (exit 2: a chain that cannot be
    set up, an input gone). 0: the worker goes on; 2 only when this machine cannot run a GPU
    job at all (GPU_UNAVAILABLE), so it takes no other job's chunks either."""
    failures = 0
    with contextlib.suppress(Exception):  # the lease runs out if this fails too
        failures = fail_claim(worker.status, worker.job_id, claim, failure.reason)
    tries = worker.plan.max_retries + 1
    event(
        log,
        "chunk failed",
        logging.ERROR,
        reason=failure.reason,
        code=failure.code,
        failures=failures,
        tries=tries,
    )
    if failure.exit_code == 2 or failures >= tries:
        message = failure.reason
        if failure.exit_code != 2:
            message = (
                f"chunk {claim.chunk} of item {claim.item} failed {failures} times "
                f"(max_retries {worker.plan.max_retries}): {failure.reason}"
            )
        fail(
            worker.store, worker.status, worker.job_id, failure.code or "TASKS_FAILED", message,
            failure.uri or None,
        )  # fmt: skip
    return 2 if failure.code == GPU_UNAVAILABLE else 0


def stitch_item_of(worker: Worker, item: int) -> int:
    """Stitch the item; 0 or the task's exit code. A warm-pool worker goes on either way: a
    stitch no retry can help (its input gone) fails the job, naming it; any other failure
    leaves the stitch lease to run out, and a worker takes the item over."""
    code = stitch(
        worker.store,
        worker.status,
        worker.settings,
        worker.job_id,
        item,
        worker.owner,
        worker.holder,
        worker.reporter,
    )
    if worker.pooled and code == 2:
        said = worker.reporter.progress
        fail(
            worker.store, worker.status, worker.job_id, said.code or "STITCH_FAILED",
            said.message or f"item {item} could not be stitched", said.uri or None,
        )  # fmt: skip
    return 0 if worker.pooled else code


def chunk_done(status: StatusStore, job_id: str, claim: ChunkClaim) -> bool:
    """Is the chunk done already (a read of its claim alone; nothing is written)?"""
    stored, _ = status.transact_claim(job_id, claim.item, claim.chunk, lambda c: None)
    return stored.done


def part_stored(store: ObjectStore, work: WorkArea, job_id: str, claim: ChunkClaim) -> bool:
    """Is the chunk's part in the work bucket? A part is uploaded whole and last (after its
    preview tiles), so one that is there is a finished chunk's."""
    try:
        store.stat(work.bucket, work.part(job_id, claim.item, claim.chunk))
    except NotFound:
        return False
    return True


def remove_late_parts(
    store: ObjectStore, status: StatusStore, work: WorkArea, job_id: str, item: int
) -> None:
    """A worker that finished a chunk second may have stored its part after the stitcher
    removed the item's parts: the item is stitched, so they go (before it is, the stitcher
    removes them itself)."""
    record = status.get(job_id)
    if record is None or item not in record.items_stitched:
        return
    for leftover in store.list(work.bucket, work.parts_folder(job_id, item)):
        with contextlib.suppress(NotFound):
            store.delete(work.bucket, leftover.name)


def peak_memory_mb() -> dict[str, float]:
    """This worker process's peak resident memory (its decoders and encoders are processes of
    their own, not counted): what bench/worker_memory.py reads beside the whole tree's."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_rss_mb": round(kib / 1024, 1)}


def limit_threads(settings: Settings) -> int | None:
    """The task's thread bound (None: unbounded), applied to OpenCV here, once per process:
    its pool is process-wide; ffmpeg gets it on each command line."""
    if not settings.task_threads:
        return None
    import cv2

    cv2.setNumThreads(settings.task_threads)
    return settings.task_threads


def stitch(
    store: ObjectStore,
    status: StatusStore,
    settings: Settings,
    job_id: str,
    item: int,
    owner: str,
    holder: LeaseHolder,
    reporter: ProgressReporter,
) -> int:
    """Stitch the item (or wait for the stitcher that has it); 0 when done, else the task's
    exit code: 2 when its input is gone since (the soundtrack is muxed from it), else 1."""
    logs.bind(item=item)
    try:
        stitch_when_ready(store, status, settings, job_id, item, owner, holder)
    except Exception as exc:
        record = status.get(job_id)
        work = work_area(settings, record.bucket if record else "")
        failure = task_failure(exc, store.uri(work.bucket, work.job_folder(job_id)))
        event(log, "stitch failed", logging.ERROR, reason=failure.reason, code=failure.code)
        if failure.exit_code == 2:  # the job's error names the input
            reporter.update(
                reporter.progress.frames_done,
                force=True,
                state="FAILED",
                message=failure.reason,
                code=failure.code,
                uri=failure.uri,
            )
        return failure.exit_code
    return 0


def main() -> int:
    logs.setup()
    settings = Settings.from_env()
    job_id = os.environ.get("DROPBATCH_JOB_ID", "")
    try:
        index = int(os.environ["BATCH_TASK_INDEX"])
    except (KeyError, ValueError):
        event(log, "task failed", logging.ERROR, reason="BATCH_TASK_INDEX is not set")
        return 2
    attempt = int(os.environ.get("BATCH_TASK_RETRY_ATTEMPT", "0") or 0)
    task_count = int(os.environ.get("BATCH_TASK_COUNT", "0") or 0) or None
    if not job_id:
        event(log, "task failed", logging.ERROR, reason="DROPBATCH_JOB_ID is not set")
        return 2
    # All temporary files under one folder that names this process, removed on the way out
    # (SIGTERM included) or, after a SIGKILL, by the next task on the machine.
    with task_scratch():
        return run_task(settings, job_id, index, attempt, task_count=task_count)


if __name__ == "__main__":
    sys.exit(main())
