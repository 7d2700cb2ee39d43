"""The stitch: the task that completes an item's chunks (batch_jobs/claims.py, `record_done`)
assembles it once."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from batch_jobs.leases import LeaseKeeper, claim_stitch, release_stitch
from batch_jobs.workspace import WorkArea, work_area
from core.config import Settings
from core.domain import PlannedItem
from core.jobstatus import JOB_KEY, ROLE_KEY, fail, publish, transition
from core.logs import event
from core.status.base import StatusStore
from core.status.model import JobRecord, JobState, LeaseHolder
from core.storage.base import NotFound, ObjectStore, PreconditionFailed
from processors.media.assemble import audio_offset_for, concat_and_mux, mix_tracks
from processors.media.preview import contact_sheet, decode_jpeg

log = logging.getLogger("dropbatch.stitch")
HOLDER_CHECK_SECONDS = 1.0  # how often a waiting stitcher looks at the lease holder again


class OutputConflict(Exception):
    """The output name is taken by an object we did not write; we never overwrite it."""


def finish_stitch(status: StatusStore, job_id: str, item: int, outputs: list[str]) -> bool:
    """Record the item as stitched; True if that completes the whole job."""

    def mutate(record: JobRecord) -> bool:
        if item not in record.items_stitched:
            record.items_stitched = sorted({*record.items_stitched, item})
            record.outputs = [*record.outputs, *[o for o in outputs if o not in record.outputs]]
        record.stitch_leases.pop(str(item), None)
        assert record.plan is not None
        return len(record.items_stitched) == len(record.plan.items)

    _, complete = status.transact(job_id, mutate)
    return complete


def _put_output(
    store: ObjectStore, bucket: str, name: str, path: Path, content_type: str, job_id: str
) -> None:
    """Write an output without ever overwriting a user's object or another stitch of ours."""
    metadata = {ROLE_KEY: "output", JOB_KEY: job_id}
    try:
        existing = store.stat(bucket, name)
    except NotFound:
        existing = None
    if existing is not None and existing.metadata.get(ROLE_KEY) != "output":
        raise OutputConflict(
            f"{store.uri(bucket, name)} exists and was not written by dropbatch; "
            "move it away or set output.prefix"
        )
    if existing is not None and existing.metadata.get(JOB_KEY) == job_id:
        return  # an earlier stitcher of this job got this far before it died
    generation = existing.generation if existing else 0
    try:
        store.upload_file(
            bucket,
            name,
            path,
            content_type=content_type,
            metadata=metadata,
            if_generation_match=generation,
        )
    except PreconditionFailed:
        raise OutputConflict(f"{store.uri(bucket, name)} changed while we wrote it") from None


def stitch_item(
    store: ObjectStore,
    status: StatusStore,
    settings: Settings,
    record: JobRecord,
    item: PlannedItem,
) -> None:
    bucket, job_id = record.bucket, record.job_id
    work = work_area(settings, bucket)  # the parts and tiles; the outputs go to the inbox
    transition(
        store,
        status,
        job_id,
        JobState.STITCHING,
        allowed_from=frozenset({JobState.QUEUED, JobState.RUNNING, JobState.STITCHING}),
    )
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="dropbatch-stitch-") as tmp:
        scratch = Path(tmp)
        parts = _fetch_parts(store, work, job_id, item, scratch)
        output = scratch / "output.mp4"
        _join_parts(store, bucket, item, parts, output, scratch)
        preview = scratch / "preview.jpg"
        sheet = _preview_sheet(store, work, job_id, item.index)
        if sheet is not None:
            preview.write_bytes(sheet)
        _put_output(store, bucket, item.output, output, "video/mp4", job_id)
        if preview.exists():
            _put_output(store, bucket, item.preview, preview, "image/jpeg", job_id)
    outputs = [store.uri(bucket, item.output)]
    if_complete = finish_stitch(status, job_id, item.index, outputs)
    event(
        log,
        "stitched",
        job_id=job_id,
        item=item.index,
        output=outputs[0],
        seconds=round(time.time() - started, 3),
        chunks=len(item.chunks),
    )
    for leftover in store.list(work.bucket, work.parts_folder(job_id, item.index)):
        with contextlib.suppress(NotFound):
            store.delete(work.bucket, leftover.name)
    if if_complete:
        transition(store, status, job_id, JobState.SUCCEEDED)
    else:
        publish(store, status, job_id)


def _fetch_parts(
    store: ObjectStore, work: WorkArea, job_id: str, item: PlannedItem, scratch: Path
) -> list[Path]:
    """The item's parts in chunk order: in place when the store is a folder, else downloaded."""
    parts = []
    for chunk in item.chunks:
        name = work.part(job_id, item.index, chunk.index)
        local = store.local_path(work.bucket, name)
        if local is None:
            local = scratch / f"part-{chunk.index:05d}.mp4"
            store.download_file(work.bucket, name, local)
        parts.append(local)
    return parts


def _join_parts(
    store: ObjectStore,
    bucket: str,
    item: PlannedItem,
    parts: list[Path],
    output: Path,
    scratch: Path,
) -> None:
    """The parts joined into `output`, with the item's soundtrack."""
    info = item.info
    rate = Fraction(info.fps_num, info.fps_den)
    frames = sum(c.end_frame - c.start_frame for c in item.chunks)
    duration = float(frames / rate)
    audio_name = item.audio or (item.video if info.has_audio else None)
    with contextlib.ExitStack() as sources:
        if item.mix:  # several speakers: their tracks, mixed, are the soundtrack
            tracks = [sources.enter_context(store.media_source(bucket, n)) for n in item.mix]
            audio_source: str | None = str(mix_tracks(tracks, scratch / "mix.wav"))
            audio_name = None
        else:
            audio_source = sources.enter_context(_maybe_source(store, bucket, audio_name))
        offset = 0.0
        if audio_name == item.video:
            offset = audio_offset_for(info.start_time, info.format_start_time, rate)
        concat_and_mux(
            parts,
            output,
            audio_source=audio_source,
            audio_offset=offset,
            duration=duration,
            audio_bitrate=item.encode.get("audio_bitrate", "192k"),
            # Lipsync's speech is the soundtrack of the whole output, however long.
            pad_audio=item.frames is not None,
        )


def _preview_sheet(store: ObjectStore, work: WorkArea, job_id: str, item: int) -> bytes | None:
    """Lay out the tiles the tasks stored; a missing tile only shortens the sheet."""
    tiles: dict[str, dict[str, object]] = {}
    prefix = work.parts_folder(job_id, item) + "preview-"
    for obj in store.list(work.bucket, prefix):
        key = obj.name[len(prefix) : -len(".jpg")]
        index, _, end = key.partition("-")
        image = decode_jpeg(store.read_bytes(work.bucket, obj.name))
        if image is not None:
            tiles.setdefault(index, {})[end] = image
    pairs = [tiles[i] for i in sorted(tiles) if {"in", "out"} <= tiles[i].keys()]
    return contact_sheet([p["in"] for p in pairs], [p["out"] for p in pairs])


class _maybe_source:
    """`store.media_source` for an optional object name."""

    def __init__(self, store: ObjectStore, bucket: str, name: str | None) -> None:
        self._cm = store.media_source(bucket, name) if name else None

    def __enter__(self) -> str | None:
        return self._cm.__enter__() if self._cm else None

    def __exit__(self, *exc: object) -> None:
        if self._cm:
            self._cm.__exit__(*exc)


def stitch_when_ready(
    store: ObjectStore,
    status: StatusStore,
    settings: Settings,
    job_id: str,
    item_index: int,
    owner: str,
    holder: LeaseHolder | None = None,
) -> None:
    """Claim the item's stitch; wait while another stitcher holds it, until it finishes, its
    lease runs out, or it is known dead (`holder_dead`)."""
    while True:
        outcome = claim_stitch(
            status, job_id, item_index, owner, settings.stitch_lease_seconds, holder
        )
        if outcome == "done":
            return
        if outcome == "claimed":
            record = status.get(job_id)
            assert record is not None and record.plan is not None
            lease = settings.stitch_lease_seconds
            try:
                with LeaseKeeper(status, job_id, item_index, owner, lease):
                    stitch_item(store, status, settings, record, record.plan.items[item_index])
            except OutputConflict as exc:
                uri = store.uri(record.bucket, record.plan.items[item_index].output)
                fail(store, status, job_id, "OUTPUT_CONFLICT", str(exc), uri)
            except BaseException:
                release_stitch(status, job_id, item_index, owner)  # a retry may take over now
                raise
            return
        record = status.get(job_id)
        assert record is not None
        lease = record.stitch_leases.get(str(item_index))
        wait = (lease.expires_at - time.time()) if lease else 0.0
        # Look again soon: a holder that dies is seen dead at the next look, not at expiry.
        time.sleep(min(max(wait, 0.2), HOLDER_CHECK_SECONDS))
