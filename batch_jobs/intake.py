"""What the storage trigger does with one object event, in eight steps:

1 route (ignore our own writes) → 2 find the manifest(s) the object concerns → 3 validate →
4 check inputs (else WAITING_FOR_INPUTS) → 5 plan (probe headers) → 6 claim the job id →
7 launch → 8 record QUEUED. Every step that can fail because of what a user uploaded ends in
a status record and `.status.json` that say what is wrong and where; nothing raises.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from dataclasses import dataclass, field, replace

from batch_jobs.containment import (
    EVALUATE_ATTEMPTS,
    RETRY_DELAY_SECONDS,
    contain,
    is_transient,
    new_record,
    unreadable_manifest,
)
from batch_jobs.deadline import Deadline, PlanningDeferred
from batch_jobs.ids import job_id_for
from batch_jobs.launcher import Launcher
from batch_jobs.outputs import claim_outputs
from batch_jobs.plan import build_plan
from batch_jobs.pool_capacity import count_pool, launch_capacity, pooled
from batch_jobs.pool_rules import pool_key, starting_grace
from batch_jobs.probing import PLANNING_TIMEOUT, PROBE_CACHE_SIZE, InputProber, ProbeCache
from batch_jobs.worker_count import Throughput, deployment_throughput
from batch_jobs.workspace import INBOX_WORK_PREFIX, work_area
from core.config import Settings
from core.domain import JobError, Plan
from core.jobstatus import JOB_KEY, ROLE_KEY, publish, transition
from core.logs import event
from core.paths import is_glob
from core.status.base import StatusStore
from core.status.model import ENGINE_STATES, LAUNCHABLE_STATES, JobRecord, JobState
from core.storage.base import NotFound, ObjectStore, OutsideBucket, folder_of
from manifests.loader import MAX_MANIFEST_BYTES, ManifestInvalid, load_manifest
from manifests.model import MAX_INPUTS, Manifest
from manifests.resolve import MANIFEST_SUFFIXES, Resolution, resolve_inputs, side_files
from manifests.steps import checked_steps
from processors.models.store import (
    ModelStoreError,
    open_model_store,
    require_models,
    step_needs,
)
from processors.spec import CheckInputs, no_checks

log = logging.getLogger("dropbatch.intake")

MAX_IMAGE_BYTES = 50 << 20  # a face image larger than this is not read whole by the trigger
# Claimed states in which an engine job should exist.


@dataclass(frozen=True)
class StorageEvent:
    """The fields of a Cloud Storage `object.finalized` event that we use."""

    bucket: str
    name: str
    generation: int
    size: int = 0
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: dict) -> StorageEvent:
        # Eventarc sends int64 fields (generation, size) as strings.
        return cls(
            bucket=str(data["bucket"]),
            name=str(data["name"]),
            generation=int(data.get("generation") or 0),
            size=int(data.get("size") or 0),
            content_type=str(data.get("contentType") or ""),
            metadata=dict(data.get("metadata") or {}),
        )


def is_own_write(name: str, metadata: dict[str, str]) -> bool:
    """Outputs, previews, status files (and, in a one-bucket setup, parts and claims): what we
    write must never start work (no loops). Decided from the event alone, before any read."""
    if ROLE_KEY in metadata:  # everything we write carries it (core/jobstatus.py)
        return True
    # Recognised by our marker and our own places, never by a folder's name: a user's
    # manifest or input may live in a folder called `out`. The places cover an object whose
    # metadata was lost (copied by hand) and a bucket that is also its own work bucket.
    return name.startswith(INBOX_WORK_PREFIX) or name.endswith(".status.json")


def is_manifest(name: str) -> bool:
    base = posixpath.basename(name)
    return name.endswith(MANIFEST_SUFFIXES) and not base.startswith(".")


def located(
    manifest: Manifest, missing: list[JobError], store: ObjectStore, bucket: str, folder: str
) -> list[JobError]:
    """Each missing file with the object URI it will have: where to upload it, and what lets
    an arriving object re-check only the manifests that wait for it."""
    paths = dict(side_files(manifest))
    for i, item in enumerate(manifest.inputs):
        paths[f"inputs[{i}].video"] = item.video
        if item.audio:
            paths[f"inputs[{i}].audio"] = item.audio
    return [
        m.model_copy(update={"uri": store.uri(bucket, folder + paths[m.field])})
        if m.uri is None and m.field in paths
        else m
        for m in missing
    ]


def _option_naming(step: str, options: dict, exc: ModelStoreError) -> str:
    """The step's option that names the model at fault (e.g. swap's `occluder`), so the
    error's field is that option; `model` when the error names no model."""
    model = getattr(exc, "model", None)
    return next((n.option for n in step_needs(step, options) if n.name == model), "model")


def may_wait_for(record: JobRecord, arrived: str) -> bool:
    """Whether the job may be waiting for the object at URI `arrived`. Only a job that says
    exactly which objects it waits for, none of them this one, is left alone; a glob, or a
    record from before waiting_for carried URIs, is re-checked."""
    if record.state != JobState.WAITING_FOR_INPUTS or not record.waiting_for:
        return True
    return any(w.uri is None or w.uri == arrived or is_glob(w.uri) for w in record.waiting_for)


@dataclass
class Intake:
    settings: Settings
    store: ObjectStore
    status: StatusStore
    launcher: Launcher
    # One object version's probe serves every manifest that names it (a folder of manifests
    # over one video; the re-checks a burst of uploads causes): ffprobe twice costs ~0.2 s.
    probed: ProbeCache = field(default_factory=lambda: ProbeCache(PROBE_CACHE_SIZE))

    # -- entry point ---------------------------------------------------------------------
    def handle(self, ev: StorageEvent) -> list[str]:
        """Route one event; returns the job ids it evaluated."""
        if is_own_write(ev.name, ev.metadata):
            return []
        # One deadline for the whole event: the function's timeout covers all of it.
        deadline = Deadline.after(self.settings.trigger_deadline_seconds)
        if is_manifest(ev.name):
            return [self.evaluate(ev.bucket, ev.name, ev.generation, deadline)]
        return self.recheck_waiting(ev.bucket, ev.name, deadline)

    def recheck_waiting(
        self, bucket: str, name: str, deadline: Deadline | None = None
    ) -> list[str]:
        """A non-manifest object arrived: re-evaluate every manifest waiting in its folder or
        above that may be waiting for it, however many wait. Those the deadline leaves
        unevaluated raise PlanningDeferred once the others are recorded (a redelivery
        evaluates them; the finished ones are no-ops then)."""
        deadline = deadline or Deadline.after(self.settings.trigger_deadline_seconds)
        folders = []
        folder = folder_of(name)
        while True:
            folders.append(folder)
            if not folder:
                break
            folder = folder_of(folder.rstrip("/"))
        arrived = self.store.uri(bucket, name)
        evaluated, deferred = [], []
        for record in self.status.by_state(
            [JobState.WAITING_FOR_INPUTS, JobState.RECEIVED], bucket=bucket, folders=folders
        ):
            if not may_wait_for(record, arrived):
                continue
            if deadline.passed():
                deferred.append(record.job_id)
                continue
            evaluated.append(
                self.evaluate(bucket, record.manifest, record.manifest_generation, deadline)
            )
        if deferred:
            event(log, "planning deferred", logging.WARNING, jobs=deferred, evaluated=evaluated)
            raise PlanningDeferred(f"{len(deferred)} manifest(s) left for a redelivery")
        return evaluated

    def sweep_expired(self, now: float | None = None) -> list[str]:
        """Manifests that waited longer than `input_wait_seconds` end INVALID."""
        now = now or time.time()
        return [
            self.evaluate(record.bucket, record.manifest, record.manifest_generation)
            for record in self.status.by_state([JobState.WAITING_FOR_INPUTS])
            if now - record.created_at >= self.settings.input_wait_seconds
        ]

    # -- one manifest --------------------------------------------------------------------
    def evaluate(
        self, bucket: str, name: str, generation: int, deadline: Deadline | None = None
    ) -> str:
        """Evaluate one manifest version. Whatever fails ends the job INVALID or FAILED with
        its reason (see `contain`); only a status store that cannot record that raises."""
        job_id = job_id_for(bucket, name, generation)
        deadline = deadline or Deadline.after(self.settings.trigger_deadline_seconds)
        for attempt in range(EVALUATE_ATTEMPTS):
            try:
                self._evaluate(job_id, bucket, name, generation, deadline)
                return job_id
            except Exception as exc:
                # Evaluating is idempotent (redeliveries do it too), so a fault that passes
                # (a storage hiccup) costs a retry here; one that stays ends the job.
                if attempt + 1 < EVALUATE_ATTEMPTS and is_transient(exc):
                    time.sleep(RETRY_DELAY_SECONDS * 2**attempt)
                    continue
                contain(self.store, self.status, job_id, (bucket, name, generation), exc)
        return job_id

    def _evaluate(
        self, job_id: str, bucket: str, name: str, generation: int, deadline: Deadline
    ) -> None:
        uri = self.store.uri(bucket, name)
        record = self.status.get(job_id)
        if record is None:
            self.status.create(new_record(job_id, (bucket, name, generation), uri))
            record = self.status.get(job_id)
            assert record is not None
            if record.state == JobState.RECEIVED and not record.history:
                transition(self.store, self.status, job_id, JobState.RECEIVED)
        if record.state in ENGINE_STATES and record.batch_job is None and not record.pool_counted:
            # Claimed but no engine job recorded: the delivery that claimed it died before
            # recording one (its job may be running already), or is launching right now.
            # Launching is idempotent per job id (Batch: same job id and request id,
            # ALREADY_EXISTS read back), so launch again; a failure here raises, and the
            # event is delivered again.
            self._submit(job_id)
            return
        if record.state not in LAUNCHABLE_STATES:
            return  # a duplicate delivery of an event we already acted on
        if self._abandoned(record):
            return  # an earlier delivery was stopped mid-planning: ended now, not replanned
        try:
            current = self.store.stat(bucket, name)
        except OutsideBucket as exc:  # a manifest linked in from elsewhere: say so
            self._invalid(job_id, JobError(code="MANIFEST_OUTSIDE", message=str(exc), uri=uri))
            return
        except NotFound:
            self._invalid(job_id, JobError(code="MANIFEST_GONE", message="deleted", uri=uri))
            return
        if current.generation != generation:
            # A newer upload replaced this version before we got to it; its own event runs it.
            self._fail(
                job_id,
                JobState.CANCELLED,
                JobError(
                    code="MANIFEST_REPLACED",
                    message=f"replaced by generation {current.generation}",
                    uri=uri,
                ),
            )
            return
        self._evaluate_current(job_id, bucket, name, deadline)

    def _abandoned(self, record: JobRecord) -> bool:
        """A planning that began longer ago than the deadline and never ended: the function
        that ran it was stopped (its timeout) before it could say so. End the job with that,
        so this and every later redelivery do not plan it again for a day."""
        since = record.planning_since
        if since is None or time.time() - since < self.settings.trigger_deadline_seconds:
            return False
        waited = int(time.time() - since)
        self._fail(
            record.job_id,
            JobState.FAILED,
            JobError(
                code=PLANNING_TIMEOUT,
                message=f"planning began {waited} s ago and never finished (the trigger was "
                f"stopped past trigger_deadline_seconds = "
                f"{self.settings.trigger_deadline_seconds:g} s); not planned again: upload the "
                "manifest again to retry",
                uri=record.manifest_uri,
            ),
        )
        return True

    def _evaluate_current(self, job_id: str, bucket: str, name: str, deadline: Deadline) -> None:
        manifest = self._read_manifest(job_id, bucket, name)
        if manifest is None:
            return
        problems = self._model_problems(manifest)
        if problems:
            self._invalid(job_id, *problems)
            return
        folder = folder_of(name)
        listing = {
            info.name[len(folder) :]: (info.generation, info.size)
            for info in self.store.list(bucket, folder)
            if not is_own_write(info.name, info.metadata)
        }
        present = set(listing)
        try:
            resolution = resolve_inputs(manifest, present, manifest.output.prefix, MAX_INPUTS)
        except Exception as exc:  # a pattern the matcher cannot take (an invalid glob)
            uri = self.store.uri(bucket, name)
            self._invalid(job_id, unreadable_manifest(exc, uri, field="inputs"))
            return
        if resolution.errors:
            self._invalid(job_id, *resolution.errors)
            return
        if resolution.missing:
            self._wait(job_id, located(manifest, resolution.missing, self.store, bucket, folder))
            return
        try:
            step_problems = self._step_problems(manifest, bucket, folder)
        except OutsideBucket:  # a side file is a link out of the inbox: say which
            step_problems = self._side_files_outside(manifest, bucket, folder)
        if step_problems:
            self._invalid(job_id, *step_problems)
            return
        self._probe_and_launch(job_id, bucket, name, manifest, resolution, listing, deadline)

    def _read_manifest(self, job_id: str, bucket: str, name: str) -> Manifest | None:
        """The manifest, or None when it is invalid or unreadable (the job says so then)."""
        uri = self.store.uri(bucket, name)
        try:
            return load_manifest(self.store.read_bytes(bucket, name, MAX_MANIFEST_BYTES + 1))
        except ManifestInvalid as exc:
            self._invalid(job_id, *[e.model_copy(update={"uri": uri}) for e in exc.errors])
            return None
        except Exception as exc:
            if is_transient(exc):
                raise
            self._invalid(job_id, unreadable_manifest(exc, uri))  # the loader's gap, not ours
            return None

    def _probe_and_launch(
        self,
        job_id: str,
        bucket: str,
        name: str,
        manifest: Manifest,
        resolution: Resolution,
        listing: dict[str, tuple[int, int]],
        deadline: Deadline,
    ) -> None:
        """Every input there and valid: probe them, plan, claim the outputs, launch."""
        folder = folder_of(name)
        # Probing is where the time goes: say when it began, so a redelivery after a stopped
        # function knows (`_abandoned`).
        self.status.transact(job_id, lambda r: setattr(r, "planning_since", time.time()))
        prober = InputProber(
            self.store,
            self.probed,
            bucket,
            folder,
            self.settings.probe_concurrency,
            timeout=self.settings.probe_timeout_seconds,
            until=deadline.until,
        )
        probed, errors = prober.videos(resolution.items, listing)
        speech, speech_errors = prober.speech(manifest, probed)
        errors += speech_errors + self._frames_too_large(probed, bucket, folder)
        late = [e for e in errors if e.code == PLANNING_TIMEOUT]
        if late:
            self._out_of_time(job_id, deadline, late)
            return
        if errors:
            self._invalid(job_id, *errors)
            return
        plan = build_plan(manifest, folder, probed, speech, self._throughput(manifest, job_id))
        outside = self._outputs_outside(bucket, plan)
        if outside:
            self._invalid(job_id, *outside)
            return
        fields = [f"inputs[{item.index}]" for item, _ in probed]
        work = work_area(self.settings, bucket)
        clashes = claim_outputs(self.store, work, bucket, name, job_id, plan, fields)
        if clashes:  # another manifest's outputs, or a user's file: never overwritten
            self._invalid(job_id, *clashes)
            return
        self._launch(job_id, plan)

    def _outputs_outside(self, bucket: str, plan: Plan) -> list[JobError]:
        """Outputs whose place leads out of the bucket (a local `out/` that is a symbolic link
        elsewhere): refused now, before any work, not when the stitcher writes."""
        problems = []
        for item in plan.items:
            for name in (item.output, item.preview):
                try:
                    self.store.local_path(bucket, name)
                except OutsideBucket as exc:
                    problems.append(
                        JobError(
                            code="OUTPUT_OUTSIDE",
                            message=str(exc),
                            field="output.prefix",
                            uri=self.store.uri(bucket, name),
                        )
                    )
                    break
        return problems

    def _model_problems(self, manifest: Manifest) -> list[JobError]:
        # Every combination a task will run (an override may name another model). A step
        # after one that hands faces on (swap) needs no detector of its own.
        checks = [
            (run.field, run.name, run.options.model_dump(mode="json"), run.faces_given)
            for run in checked_steps(manifest)
        ]
        problems: list[JobError] = []
        seen: set[str] = set()
        store = None
        for where, name, options, handed in checks:
            key = json.dumps([name, options, handed], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            try:
                store = store or open_model_store(self.settings.model_store, self.settings)
                require_models(name, options, store, self.settings, handed)
            except ModelStoreError as exc:
                problems.append(
                    JobError(
                        code=exc.code,
                        message=str(exc),
                        field=f"{where}.{_option_naming(name, options, exc)}",
                        uri=getattr(exc, "store", None) or None,
                    )
                )
        return problems

    def _frames_too_large(self, probed: list, bucket: str, folder: str) -> list[JobError]:
        """Videos whose frame (the probe's width × height, nothing decoded) has more pixels
        than max_video_pixels: every worker holds many such frames at once."""
        limit = self.settings.max_video_pixels
        return [
            JobError(
                code="VIDEO_TOO_LARGE",
                message=f"{info.width}×{info.height} frames have more than the {limit:,} "
                "pixels a frame may have (max_video_pixels); scale the video down",
                field=f"inputs[{item.index}].video",
                uri=self.store.uri(bucket, folder + item.video),
            )
            for item, info in probed
            if info.width * info.height > limit
        ]

    def _side_files_outside(self, manifest: Manifest, bucket: str, folder: str) -> list[JobError]:
        """Each side file (face images, speech) that leads out of the inbox through a symbolic
        link: INVALID naming its field and object, as an input video that does is."""
        problems = []
        for where, path in side_files(manifest):
            try:
                self.store.stat(bucket, folder + path)
            except OutsideBucket as exc:
                uri = self.store.uri(bucket, folder + path)
                problems.append(
                    JobError(code="INPUT_OUTSIDE", message=str(exc), field=where, uri=uri)
                )
        return problems

    def _step_problems(self, manifest: Manifest, bucket: str, folder: str) -> list[JobError]:
        """Each step's own trigger-time checks (crop: its detector is in the deployment's
        image; swap: its face images each show one face), run before any task starts, for the
        chain and for every input whose overrides change a step (what its tasks will run)."""
        runs = [(run.field, run.spec, run.options) for run in checked_steps(manifest)]
        store = None
        inputs = None
        problems: list[JobError] = []
        seen: set[str] = set()
        for where, spec, options in runs:
            key = json.dumps([spec.name, options.model_dump(mode="json")], sort_keys=True)
            if spec.checks is no_checks or key in seen:
                continue
            seen.add(key)
            try:
                store = store or open_model_store(self.settings.model_store, self.settings)
                inputs = inputs or CheckInputs(
                    models=store,
                    read=lambda n: self.store.read_bytes(bucket, folder + n, MAX_IMAGE_BYTES),
                    uri=lambda n: self.store.uri(bucket, folder + n),
                    image_variant=self.settings.image_variant,
                    check_faces=self.settings.check_faces,
                    max_image_pixels=self.settings.max_image_pixels,
                )
                problems += spec.checks(options, where, inputs)
            except ImportError as exc:
                # The function may be deployed without a step's runtime (onnxruntime): the
                # task checks instead.
                event(log, "step unchecked", logging.WARNING, step=spec.name, reason=str(exc))
            except ModelStoreError as exc:
                problems.append(JobError(code=exc.code, message=str(exc), field=f"{where}.model"))
        return problems

    def _launch(self, job_id: str, plan) -> None:
        total = sum(len(item.chunks) for item in plan.items)
        # On a warm pool the job is findable by the pool's free workers from here on.
        pool = pool_key(self.settings.image, plan.gpu, plan.spot) if self._pooled() else ""
        claimed = transition(
            self.store,
            self.status,
            job_id,
            JobState.QUEUED,
            allowed_from=LAUNCHABLE_STATES,
            plan=plan,
            chunks_total=total,
            waiting_for=[],
            pool=pool,
        )
        if not claimed:
            return  # a concurrent delivery won the claim and launches
        try:
            self._submit(job_id)
        except Exception as exc:  # the engine refused: say so in the record
            log.exception("launch failed")
            self._fail(
                job_id,
                JobState.FAILED,
                JobError(code="LAUNCH_FAILED", message=f"could not start the job: {exc}"),
            )

    def _submit(self, job_id: str) -> None:
        """Hand the claimed job to the engine and record the engine's job name."""
        record = self.status.get(job_id)
        assert record is not None
        if record.pool:  # capacity for what the warm pool lacks, if anything
            batch_job = launch_capacity(self.status, self.launcher, self.settings, record)
            if batch_job is None:
                event(log, "job queued on the warm pool", job_id=job_id, pool=record.pool)
                publish(self.store, self.status, job_id)
                return
        else:
            batch_job = self.launcher.launch(record, self.settings)

        def record_name(r: JobRecord) -> bool:
            first = r.batch_job is None
            r.batch_job = batch_job
            return first

        _, first = self.status.transact(job_id, record_name)
        publish(self.store, self.status, job_id)
        # Redeliveries may submit again (the engine answers with the same job); the event a
        # user searches for is logged once, by the delivery that recorded the engine's name.
        if first:
            workers = record.plan.parallelism if record.plan else 0
            event(
                log,
                "job launched",
                job_id=job_id,
                batch_job=batch_job,
                tasks=workers,
                chunks=record.chunks_total,
            )

    def _pooled(self) -> bool:
        return pooled(self.launcher, self.settings)

    def _throughput(self, manifest: Manifest, job_id: str) -> Throughput:
        """What the planner sizes the job with: the deployment's figures and, on a warm pool,
        the workers free for it, which start nothing (`workers: auto` may spread it over them)."""
        speed = deployment_throughput(self.settings)
        if not self._pooled():
            return speed
        pool = pool_key(self.settings.image, manifest.compute.gpu, manifest.compute.spot)
        free = count_pool(self.status, pool, job_id, starting_grace(self.settings)).free
        return replace(speed, warm_workers=free)

    # -- outcomes ------------------------------------------------------------------------
    def _invalid(self, job_id: str, *errors: JobError) -> None:
        first = errors[0]
        summary = (
            first
            if len(errors) == 1
            else first.model_copy(
                update={"message": f"{first.message} (and {len(errors) - 1} more problem(s))"}
            )
        )
        transition(
            self.store,
            self.status,
            job_id,
            JobState.INVALID,
            allowed_from=LAUNCHABLE_STATES,
            error=summary,
            errors=list(errors),
        )

    def _out_of_time(self, job_id: str, deadline: Deadline, late: list[JobError]) -> None:
        """FAILED PLANNING_TIMEOUT: the deadline came before these inputs were probed (each
        error names its field and object); what was probed is not kept."""
        names = ", ".join(f"{e.field} ({e.uri})" for e in late[:5])
        more = f" and {len(late) - 5} more" if len(late) > 5 else ""
        summary = late[0].model_copy(
            update={
                "message": f"planning did not finish within trigger_deadline_seconds = "
                f"{deadline.seconds:g} s; {len(late)} input(s) not yet probed: {names}{more} "
                "(split the manifest, or upload the manifest again to retry)"
            }
        )
        transition(
            self.store,
            self.status,
            job_id,
            JobState.FAILED,
            allowed_from=LAUNCHABLE_STATES,
            error=summary,
            errors=late,
        )

    def _fail(self, job_id: str, state: JobState, error: JobError) -> None:
        transition(self.store, self.status, job_id, state, error=error)

    def _wait(self, job_id: str, missing: list[JobError]) -> None:
        record = self.status.get(job_id)
        assert record is not None
        if time.time() - record.created_at >= self.settings.input_wait_seconds:
            waited = int(self.settings.input_wait_seconds)
            self._invalid(
                job_id,
                *[
                    m.model_copy(update={"message": f"{m.message} (waited {waited} s)"})
                    for m in missing
                ],
            )
            return
        transition(
            self.store,
            self.status,
            job_id,
            JobState.WAITING_FOR_INPUTS,
            allowed_from=LAUNCHABLE_STATES,
            waiting_for=missing,
        )
        if record.state == JobState.WAITING_FOR_INPUTS and record.waiting_for != missing:
            self.status.transact(job_id, lambda r: setattr(r, "waiting_for", missing))
            publish(self.store, self.status, job_id)


__all__ = ["JOB_KEY", "Intake", "StorageEvent", "is_own_write"]
