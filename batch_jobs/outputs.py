"""Which job may write an output object: the manifest that first planned it, while it exists.

Two manifests in one folder that process one video with the default output name would both
write `out/<video>.mp4`, the second overwriting the first. Before a job launches, the trigger
claims every object its plan writes (outputs and previews) by a create-only write of a claim
object in the work bucket (`WorkArea.claim`, batch_jobs/workspace.py) that names the
manifest. A new version of the same manifest (a re-upload, `dropbatch run --again`) writes over
its own earlier outputs; another manifest is refused, naming both, for as long as the claiming
manifest is in the bucket. Storage's generation preconditions make the claim atomic on every
backend, so two manifests evaluated at the same moment cannot both win; claiming in name
order keeps them from both losing (`claim_outputs`).
"""

from __future__ import annotations

import contextlib
import json

from batch_jobs.workspace import WorkArea
from core.domain import JobError, Plan
from core.jobstatus import ROLE_KEY
from core.storage.base import NotFound, ObjectInfo, ObjectStore, PreconditionFailed, folder_of

CLAIM_ATTEMPTS = 5  # races with another claimant before giving up (each loser re-reads)


def _claim(
    store: ObjectStore, work: WorkArea, bucket: str, output: str, manifest: str, job_id: str
) -> tuple[str | None, bool]:
    """(the other manifest holding `output` or None, whether this call created the claim).
    The claim lives in the work area; the manifests it names are in the inbox `bucket`."""
    name = work.claim(output)
    body = json.dumps({"output": output, "manifest": manifest, "job_id": job_id}).encode()

    def write(generation: int) -> bool:
        try:
            store.write_bytes(
                work.bucket,
                name,
                body,
                content_type="application/json",
                metadata={ROLE_KEY: "claim"},
                if_generation_match=generation,
            )
        except PreconditionFailed:
            return False
        return True

    for _ in range(CLAIM_ATTEMPTS):
        if write(0):
            return None, True
        try:
            generation = store.stat(work.bucket, name).generation
            holder = json.loads(store.read_bytes(work.bucket, name))["manifest"]
        except (NotFound, ValueError, KeyError):
            continue  # released or being replaced right now: look again
        if holder == manifest:
            return None, False
        try:
            store.stat(bucket, holder)
            return holder, False
        except NotFound:
            pass  # its manifest is gone: the name is free, if nobody took it first
        if write(generation):
            return None, True
    raise PreconditionFailed(f"{store.uri(work.bucket, name)}: too many claimants at once")


def _holder(
    store: ObjectStore, work: WorkArea, bucket: str, output: str, manifest: str
) -> str | None:
    """The other, still present manifest that holds `output`, read without claiming it."""
    name = work.claim(output)
    try:
        holder = json.loads(store.read_bytes(work.bucket, name))["manifest"]
    except (NotFound, ValueError, KeyError):
        return None
    if holder == manifest:
        return None
    try:
        store.stat(bucket, holder)
    except NotFound:
        return None
    return holder


def claim_outputs(
    store: ObjectStore,
    work: WorkArea,
    bucket: str,
    manifest: str,
    job_id: str,
    plan: Plan,
    fields: list[str],
) -> list[JobError]:
    """Claim every object the plan writes for `manifest`; the problems, if any, in plan order
    (then nothing stays claimed by this call). `fields[n]`: the manifest field of plan item n.

    Claims are taken one at a time in name order and stop at the first problem; the names after
    it are only read, to report every one another manifest holds. Two manifests racing for
    the same outputs then cannot each take a part and both be refused: whichever takes the
    first name they share goes on to take the rest (ordered locking). Claiming concurrently
    lost that — a manifest holding `clip.mp4` and another holding `clip.preview.jpg` refused
    each other.
    """
    writes, clashes = _planned_writes(store, bucket, plan, fields)
    if clashes:
        return clashes
    # What already sits at the output names: one listing per output folder, not one stat per
    # output (1000 requests for a 500-input manifest).
    present = {
        info.name: info
        for folder in sorted({folder_of(output) for output in writes})
        for info in store.list(bucket, folder, recursive=False)
    }
    problems: list[tuple[int, JobError]] = []
    made: list[str] = []
    try:
        for output in sorted(writes):
            order, field = writes[output]
            problem = _claim_one(store, work, bucket, manifest, job_id, output, field,
                                 present.get(output), bool(problems), made)  # fmt: skip
            if problem is not None:
                problems.append((order, problem))
    except BaseException:
        _release(store, work, made)
        raise
    if problems:
        _release(store, work, made)  # refused: hold nothing, so the other side is not blocked
    return [problem for _, problem in sorted(problems, key=lambda p: p[0])]


def _planned_writes(
    store: ObjectStore, bucket: str, plan: Plan, fields: list[str]
) -> tuple[dict[str, tuple[int, str]], list[JobError]]:
    """Every object the plan writes → (its place in plan order, its item's field); and the
    names two items of this manifest would both write (an output named like a preview)."""
    problems: list[JobError] = []
    writes: dict[str, tuple[int, str]] = {}
    for item, field in zip(plan.items, fields, strict=True):
        for output in (item.output, item.preview):
            if output in writes:
                problems.append(
                    JobError(
                        code="OUTPUT_TAKEN",
                        message=f"{output} would be written by {writes[output][1]} too; "
                        "set output_name on one",
                        field=field,
                        uri=store.uri(bucket, output),
                    )
                )
            writes[output] = (len(writes), field)
    return writes, problems


def _claim_one(
    store: ObjectStore,
    work: WorkArea,
    bucket: str,
    manifest: str,
    job_id: str,
    output: str,
    field: str,
    existing: ObjectInfo | None,
    refused: bool,
    made: list[str],
) -> JobError | None:
    """Claim `output` (once refused, only read who holds it); what stops it, if anything.
    A claim this call created is appended to `made`."""
    if existing is not None and existing.metadata.get(ROLE_KEY) != "output":
        return JobError(
            code="OUTPUT_EXISTS",
            message=f"{output} exists and was not written by dropbatch; move "
            "it away or set output.prefix / output_name",
            field=field,
            uri=store.uri(bucket, output),
        )
    if refused:
        holder = _holder(store, work, bucket, output, manifest)
    else:
        holder, created = _claim(store, work, bucket, output, manifest, job_id)
        if created:
            made.append(output)
    if holder is None:
        return None
    return JobError(
        code="OUTPUT_TAKEN",
        message=f"{output} is the output of another manifest, "
        f"{store.uri(bucket, holder)}; set output_name on this input or "
        "output.prefix so each manifest writes its own files",
        field=field,
        uri=store.uri(bucket, output),
    )


def _release(store: ObjectStore, work: WorkArea, outputs: list[str]) -> None:
    for output in outputs:
        with contextlib.suppress(NotFound):
            store.delete(work.bucket, work.claim(output))
