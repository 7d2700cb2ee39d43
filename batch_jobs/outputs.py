"""Which job may write an output object: the manifest that first planned it, while it exists.

Two manifests in one folder that process one video with the default output name would both
write `out/<video>.mp4`, the second overwriting the first. Before a job launches, the trigger
claims every object its plan writes (outputs and previews) by a create-only write of a claim
object in the work bucket (`WorkArea.claim`, batch_jobs/workspace.py) that names the
manifest. A new version of the same manifest (a re-upload, `dropbatch run --again`) writes over
its own earlier outputs; another manifest is refused, naming both, for as long as the claiming
manifest is in the bucket. Storage's generation preconditions make the claim atomic on every
backend, so two manifests evaluated at the same moment cannot both win.
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor

from batch_jobs.workspace import WorkArea
from dropbatch.domain import JobError, Plan
from dropbatch.jobstatus import ROLE_KEY
from dropbatch.storage.base import NotFound, ObjectStore, PreconditionFailed, folder_of

CLAIM_ATTEMPTS = 5  # races with another claimant before giving up (each loser re-reads)
CLAIM_CONCURRENCY = 16  # claims in flight at once (each mostly waits on storage)


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


def claim_outputs(
    store: ObjectStore,
    work: WorkArea,
    bucket: str,
    manifest: str,
    job_id: str,
    plan: Plan,
    fields: list[str],
    concurrency: int = CLAIM_CONCURRENCY,
) -> list[JobError]:
    """Claim every object the plan writes for `manifest`, `concurrency` at a time; the
    problems, if any, in plan order (then nothing stays claimed by this call).
    `fields[n]`: the manifest field of plan item n."""
    problems: list[JobError] = []
    writes: dict[str, str] = {}
    for item, field in zip(plan.items, fields, strict=True):
        for output in (item.output, item.preview):
            if output in writes:  # two items of this manifest (an output named like a preview)
                problems.append(
                    JobError(
                        code="OUTPUT_TAKEN",
                        message=f"{output} would be written by {writes[output]} too; "
                        "set output_name on one",
                        field=field,
                        uri=store.uri(bucket, output),
                    )
                )
            writes[output] = field
    if problems:
        return problems

    # What already sits at the output names: one listing per output folder, not one stat per
    # output (1000 requests for a 500-input manifest).
    present = {
        info.name: info
        for folder in sorted({folder_of(output) for output in writes})
        for info in store.list(bucket, folder, recursive=False)
    }

    def claim_one(output: str, field: str) -> tuple[JobError | None, bool]:
        """(the problem with `output` or None, whether this call created its claim)."""
        existing = present.get(output)
        if existing is not None and existing.metadata.get(ROLE_KEY) != "output":
            return JobError(
                code="OUTPUT_EXISTS",
                message=f"{output} exists and was not written by dropbatch; move it away "
                "or set output.prefix / output_name",
                field=field,
                uri=store.uri(bucket, output),
            ), False
        holder, created = _claim(store, work, bucket, output, manifest, job_id)
        if holder is None:
            return None, created
        return JobError(
            code="OUTPUT_TAKEN",
            message=f"{output} is the output of another manifest, "
            f"{store.uri(bucket, holder)}; set output_name on this input or "
            "output.prefix so each manifest writes its own files",
            field=field,
            uri=store.uri(bucket, output),
        ), created

    # A claim is one or two small requests that wait on storage (a create-only write, read
    # back when taken): on Cloud Storage each is a round trip, so several go at once.
    entries = list(writes.items())
    made: list[str] = []
    failure: Exception | None = None
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(entries)))) as pool:
        futures = [pool.submit(claim_one, output, field) for output, field in entries]
        for (output, _), future in zip(entries, futures, strict=True):
            try:
                problem, created = future.result()
            except Exception as exc:  # storage failed: release what we hold, then raise
                failure = failure or exc
                continue
            if created:
                made.append(output)
            if problem is not None:
                problems.append(problem)  # in the plan's order, as one after another gives
    if problems or failure is not None:
        for output in made:  # refused: hold nothing, so the other side is not blocked by us
            with contextlib.suppress(NotFound):
                store.delete(work.bucket, work.claim(output))
    if failure is not None:
        raise failure
    return problems
    made: list[str] = []
    for output, field in writes.items():
        try:
            existing = store.stat(bucket, output)
        except NotFound:
            existing = None
        if existing is not None and existing.metadata.get(ROLE_KEY) != "output":
            problems.append(
                JobError(
                    code="OUTPUT_EXISTS",
                    message=f"{output} exists and was not written by dropbatch; move it away "
                    "or set output.prefix / output_name",
                    field=field,
                    uri=store.uri(bucket, output),
                )
            )
            continue
        holder, created = _claim(store, work, bucket, output, manifest, job_id)
        if created:
            made.append(output)
        if holder is not None:
            problems.append(
                JobError(
                    code="OUTPUT_TAKEN",
                    message=f"{output} is the output of another manifest, "
                    f"{store.uri(bucket, holder)}; set output_name on this input or "
                    "output.prefix so each manifest writes its own files",
                    field=field,
                    uri=store.uri(bucket, output),
                )
            )
    if problems:
        for output in made:  # refused: hold nothing, so the other side is not blocked by us
            with contextlib.suppress(NotFound):
                store.delete(work.bucket, work.claim(output))
    return problems
