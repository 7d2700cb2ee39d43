"""`dropbatch doctor --canary`: one real job through the deployment, as a user makes it.

It uploads a 2-second clip (real video and audio, made by ffmpeg) and a one-step manifest into
`_doctor/<time>/` of the inbox, then follows the job's record through each stage a job passes
(the trigger's RECEIVED and QUEUED, Batch's RUNNING through the notification, the task's
STITCHING, SUCCEEDED) and prints when each was reached. A stage not reached in time, or a job
that ends INVALID or FAILED, is named with its fix. Whatever happens (Ctrl-C included), it
removes what it uploaded and what the job wrote, after cancelling a Batch job still waiting.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from core.config import Settings
from core.domain import JobError
from core.jobstatus import transition
from core.status.base import StatusStore
from core.status.model import TERMINAL_STATES, CheckResult, JobRecord, JobState
from core.storage.base import GS_SCHEME, NotFound, ObjectStore, split_gs_uri

CANARY_FOLDER = "_doctor/"
CLIP = "clip.mp4"
MANIFEST = "canary.yaml"
POLL_SECONDS = 0.5
# After a Batch job is deleted, how long the CANCELLED record (and its status file) may take.
SETTLE_SECONDS = 30.0
STAGES = (JobState.RECEIVED, JobState.QUEUED, JobState.RUNNING, JobState.STITCHING,
          JobState.SUCCEEDED)  # fmt: skip
STAGE_NAMES = {
    JobState.RECEIVED: "received",
    JobState.QUEUED: "queued",
    JobState.RUNNING: "running",
    JobState.STITCHING: "stitching",
    JobState.SUCCEEDED: "succeeded",
}
CUDA_FIX = (
    "the image's onnxruntime-gpu cannot load CUDA on the VM: check the task's log for the "
    "CUDA/cuDNN library it could not open, that the boot image's driver fits the image's CUDA "
    "(README, 'GPU image'), and `docker run --gpus all --entrypoint python IMAGE -m "
    "batch_jobs.selfcheck`"
)
SCHEDULE_FIXES = (
    "Batch did not start a VM: check the GPUS_ALL_REGIONS quota and the region's "
    "NVIDIA_L4_GPUS quota (IAM & Admin → Quotas), L4 capacity in the region's zones (widen "
    "allowed_locations, or try without Spot), and that the VM can pull the image (the job "
    "account's roles/artifactregistry.reader); `gcloud batch jobs describe JOB --location "
    "REGION` shows Batch's own events"
)
# A FAILED or INVALID record's error code → (the stage at fault, what to do).
STAGE_OF_CODE: dict[str, tuple[str, str]] = {
    "GPU_UNAVAILABLE": ("task on the VM", CUDA_FIX),
    "MODEL_INCOMPATIBLE": ("task on the VM", "replace the model file (dropbatch models check)"),
    "MODEL_UNLOADABLE": ("task on the VM", "replace the model file (dropbatch models check)"),
    "DETECTOR_NOT_IN_IMAGE": ("task on the VM", "build the image's ultralytics target"),
    "TASKS_FAILED": (
        "task on the VM",
        "read the task's log (gcloud logging read 'labels.job_uid=…'): the job account's "
        "access to the inbox and work buckets and Firestore, the image, ffmpeg",
    ),
    "STITCH_MISSING": ("stitch", "read the last task's log: the stitch did not write outputs"),
    "LAUNCH_FAILED": (
        "trigger → Batch",
        "the function could not create the Batch job: its roles/batch.jobsEditor, "
        "roles/iam.serviceAccountUser on the job account, image and region settings",
    ),
    "TRIGGER_ERROR": ("trigger", "read the function's log (gcloud functions logs read)"),
    "STORAGE_UNAVAILABLE": ("trigger", "the function's access to the inbox and work buckets"),
    "CANCELLED": ("Batch", "someone deleted or cancelled the job"),
    # The sweep's end for a job Batch never started (queued_timeout_minutes).
    "NO_CAPACITY": ("Batch did not schedule the job", SCHEDULE_FIXES),
    "PLANNING_TIMEOUT": (
        "trigger",
        "the function ran out of time probing the 2-second clip: "
        "its logs, and its access to the inbox",
    ),
}


def canary_manifest(gpu: str, spot: bool) -> str:
    """The cheapest job: one crop with the weight-free detector, on the deployment's compute
    (a GPU deployment asks for its GPU, so the task's GPU path is what is tested)."""
    return (
        "version: 1\n"
        f"inputs: [{CLIP}]\n"
        "chain: [{crop: {aspect: '1:1', detector: opencv-face}}]\n"
        "output: {preset: ultrafast}\n"
        f"compute: {{gpu: {gpu}, spot: {str(spot).lower()}}}\n"
    )


def make_clip(path: Path, seconds: float = 2.0) -> None:
    """A real H.264 + AAC clip: a moving test pattern and a tone."""
    from processors.media.ffmpeg import binary

    subprocess.run(
        [binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", f"{seconds:g}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@dataclass
class Canary:
    """One canary run: where it uploaded, what it saw."""

    settings: Settings
    store: ObjectStore
    status: StatusStore
    bucket: str
    folder: str
    out: TextIO
    gpu: str = "none"  # what the canary's manifest asks for (compute.gpu)
    # Set by Ctrl-C while the canary follows its job: the wait ends between two polls, never
    # inside a storage or status call, so the clean-up that follows starts from a sound state.
    interrupted: threading.Event = field(default_factory=threading.Event)
    uploaded_at: float = 0.0
    record: JobRecord | None = None

    @property
    def manifest(self) -> str:
        return f"{self.folder}{MANIFEST}"

    # -- reading the job ---------------------------------------------------------------
    def read_record(self) -> JobRecord | None:
        found = self.status.recent(5, bucket=self.bucket, manifest=self.manifest)
        if found:
            self.record = found[0]
        return self.record

    def read_mirror(self) -> dict | None:
        name = f"{self.folder}{Path(MANIFEST).stem}.status.json"
        try:
            return json.loads(self.store.read_bytes(self.bucket, name))
        except (NotFound, ValueError):
            return None

    def reached(self, record: JobRecord) -> dict[JobState, float]:
        return {h.state: h.at for h in record.history}


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def machines_result(record: JobRecord, gpu: str) -> CheckResult:
    """The machines the task ran on, as its first worker there recorded them (the job
    record's `machines`). A job that asked for a GPU passes only when every machine had one
    and onnxruntime came up on CUDA or TensorRT there: the canary's crop needs no model, so
    the task itself has no session to refuse, and a VM without its GPU would succeed."""
    if not record.machines:
        if gpu == "none":
            return CheckResult(name="canary vm", ok=True, detail="none recorded")
        return CheckResult(name="canary vm", ok=False,
                           detail="task on the VM: no machine facts recorded, so nothing shows "
                           "the job had its GPU", fix=CUDA_FIX)  # fmt: skip
    lines = "; ".join(m.line() for m in record.machines)
    if gpu != "none":
        without = [
            m for m in record.machines
            if not m.gpus or not any(p in m.providers for p in GPU_PROVIDERS)
        ]  # fmt: skip
        if without:
            return CheckResult(
                name="canary vm",
                ok=False,
                detail=f"task on the VM: the job asked for gpu: {gpu} but ran without it on "
                + "; ".join(m.line() for m in without),
                fix=CUDA_FIX,
            )
    return CheckResult(name="canary vm", ok=True, detail=lines)


def batch_events(settings: Settings, batch_job: str | None) -> tuple[str, list[str]]:
    """Batch's own state and status events for the job (the reason it is not scheduled,
    when Batch gives one); ("", []) when there is no Batch job, ("", [why]) when unreadable."""
    if not batch_job or settings.launcher != "batch":
        return "", []
    try:
        from batch_jobs.batch_launcher import batch_client

        job = batch_client(settings).get_job(name=batch_job, timeout=30)
    except Exception as exc:  # the events are a help, not the verdict
        return "", [f"(Batch's events unreadable: {type(exc).__name__}: {exc})"]
    return job.status.state.name, [e.description for e in job.status.status_events if e.description]


def cancel_batch_job(settings: Settings, batch_job: str | None) -> bool:
    """Delete a Batch job that has not ended, so no VM starts after the canary has gone."""
    if not batch_job or settings.launcher != "batch":
        return False
    from batch_jobs.batch_launcher import batch_client

    try:
        batch_client(settings).delete_job(name=batch_job, timeout=60)  # never hang the clean-up
    except Exception:
        return False
    return True


def follow(
    canary: Canary, add: Callable[[CheckResult], None], stage_timeout: float, timeout: float
) -> bool:
    """Wait for each stage in turn; True when the job succeeded with its output there."""
    deadline = time.monotonic() + timeout
    stage_started = time.time()
    for stage in STAGES:
        stage_deadline = min(deadline, time.monotonic() + stage_timeout)
        while True:
            record = canary.read_record()
            mirror = canary.read_mirror()
            if record is not None:
                at = canary.reached(record).get(stage)
                if at is not None:
                    after = max(0.0, at - canary.uploaded_at)
                    add(CheckResult(name=f"canary {STAGE_NAMES[stage]}", ok=True,
                                    detail=f"+{after:.1f} s after the upload"))  # fmt: skip
                    stage_started = time.time()
                    break
                if record.state == JobState.SUCCEEDED:  # passed between two reads, unrecorded
                    add(CheckResult(name=f"canary {STAGE_NAMES[stage]}", ok=True,
                                    detail="passed (no time recorded)"))  # fmt: skip
                    break
                if record.state in TERMINAL_STATES:
                    add(ended_result(record, stage))
                    return False
            if time.monotonic() > stage_deadline:
                add(stalled_result(canary, record, mirror, stage, time.time() - stage_started))
                return False
            if canary.interrupted.wait(POLL_SECONDS):
                detail = f"interrupted (Ctrl-C) before {STAGE_NAMES[stage]}"
                add(CheckResult(name="canary", ok=False, detail=detail))
                return False
    record = canary.read_record()
    assert record is not None
    machines = machines_result(record, canary.gpu)
    add(machines)
    if not machines.ok:
        return False
    for output in record.outputs:
        name = split_gs_uri(output)[1] if output.startswith(GS_SCHEME) else output
        name = name.removeprefix(f"{canary.bucket}/")
        try:
            info = canary.store.stat(canary.bucket, name)
        except NotFound:
            fix = "read the last task's log: the stitch did not upload it"
            add(CheckResult(name="canary output", ok=False, detail=f"{output}: not there",
                            fix=fix))  # fmt: skip
            return False
        add(CheckResult(name="canary output", ok=True, detail=f"{output} ({info.size} bytes)"))
    return True


def ended_result(record: JobRecord, waiting_for: JobState) -> CheckResult:
    """The stage a job that ended INVALID or FAILED names, from its error's code."""
    error = record.error
    code = error.code if error else ""
    message = error.message if error else ""
    if record.state == JobState.INVALID:
        stage, fix = (
            "trigger (validation)",
            "the canary's own manifest was refused: " + (error.line() if error else message),
        )
    else:
        stage, fix = STAGE_OF_CODE.get(
            code, ("task on the VM", "read the task's log (the job's logs in Cloud Logging)")
        )
    return CheckResult(
        name="canary stage",
        ok=False,
        detail=f"{stage}: the job ended {record.state.value} before {STAGE_NAMES[waiting_for]}"
        f" ({code}: {message})",
        fix=fix,
    )


def stalled_result(
    canary: Canary,
    record: JobRecord | None,
    mirror: dict | None,
    stage: JobState,
    waited: float,
) -> CheckResult:
    if record is None and mirror is None and canary.settings.storage == "local":
        return CheckResult(
            name="canary stage",
            ok=False,
            detail=f"trigger: no status record or .status.json {waited:.0f} s after the upload "
            "(nothing watches this inbox folder)",
            fix="start `dropbatch serve --inbox FOLDER` for this inbox, then run the doctor again",
        )
    if record is None and mirror is None:
        return CheckResult(
            name="canary stage",
            ok=False,
            detail=f"trigger: no status record or .status.json {waited:.0f} s after the upload "
            "(the function never took the upload)",
            fix="check the Eventarc trigger on the inbox (gcloud eventarc triggers list "
            f"--location {canary.settings.region}), the function's logs (gcloud functions "
            "logs read on_inbox_object), and the function account's roles above",
        )
    state = record.state.value if record else str((mirror or {}).get("state"))
    engine, events = (
        batch_events(canary.settings, record.batch_job if record else None)
        if stage in (JobState.RUNNING, JobState.STITCHING)
        else ("", [])
    )
    # Batch's SCHEDULED already moves the record to RUNNING: a job whose VMs never came
    # waits there, and it is Batch's stage, not the task's.
    if stage == JobState.RUNNING or engine in ("QUEUED", "SCHEDULED"):
        detail = f"Batch did not schedule the job: still {state} after {waited:.0f} s"
        if engine:
            detail += f" (Batch: {engine})"
        if events:
            detail += "; Batch's events: " + " | ".join(events)
        return CheckResult(name="canary stage", ok=False, detail=detail, fix=SCHEDULE_FIXES)
    if stage == JobState.QUEUED:
        return CheckResult(
            name="canary stage",
            ok=False,
            detail=f"trigger: the job is {state} after {waited:.0f} s, not QUEUED",
            fix="read the function's log; a job WAITING_FOR_INPUTS lacks its video",
        )
    return CheckResult(
        name="canary stage",
        ok=False,
        detail=f"task on the VM: still {state} after {waited:.0f} s, not "
        f"{STAGE_NAMES[stage].upper()}",
        fix="read the task's log; a slow VM start is normal for a first job, so a longer "
        "--stage-timeout may be all it needs",
    )


def clean_up(canary: Canary) -> CheckResult:
    """Cancel a Batch job still going, let its record settle, then remove every object of
    the canary's folder, its chunk parts and its output-name claims."""
    from batch_jobs.workspace import work_area

    record = canary.read_record()
    running = record is not None and record.state not in TERMINAL_STATES
    if running and record is not None and record.pool:
        # On a warm pool the Batch job is capacity other jobs may be using: the canary's job
        # is cancelled in its record, and the pool's workers leave it (batch_jobs/pool.py).
        transition(
            canary.store, canary.status, record.job_id, JobState.CANCELLED,
            error=JobError(code="CANCELLED", message="the canary was stopped before it ended"),
        )  # fmt: skip
    elif running and record is not None and cancel_batch_job(canary.settings, record.batch_job):
        # on_batch_state writes CANCELLED and the status file: remove after, not before.
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            record = canary.read_record()
            if record is None or record.state in TERMINAL_STATES:
                break
            time.sleep(POLL_SECONDS)
    removed = 0
    work = work_area(canary.settings, canary.bucket)
    places = [(canary.bucket, canary.folder)]
    if record is not None:
        places.append((work.bucket, f"{work.jobs_folder()}{record.job_id}/"))
    for bucket, prefix in places:
        for info in canary.store.list(bucket, prefix):
            with contextlib.suppress(NotFound):
                canary.store.delete(bucket, info.name)
                removed += 1
    if record is not None and record.plan is not None:
        for item in record.plan.items:
            for output in (item.output, item.preview):
                if not output:
                    continue
                claim = work.claim(output)
                with contextlib.suppress(NotFound, ValueError, KeyError):
                    held = json.loads(canary.store.read_bytes(work.bucket, claim))
                    if held["manifest"] == canary.manifest:
                        canary.store.delete(work.bucket, claim)
                        removed += 1
    left = [i.name for i in canary.store.list(canary.bucket, canary.folder)]
    if left:
        return CheckResult(
            name="canary cleanup",
            ok=False,
            detail=f"left in gs://{canary.bucket}/{canary.folder}: {', '.join(left)}",
            fix=f"gcloud storage rm -r gs://{canary.bucket}/{canary.folder}",
        )
    return CheckResult(
        name="canary cleanup",
        ok=True,
        detail=f"removed {removed} objects ({canary.bucket}/{canary.folder} and the job's own)",
    )


@contextlib.contextmanager
def interrupt_sets(flag: threading.Event) -> Iterator[None]:
    """While the canary follows its job, Ctrl-C sets `flag` instead of raising wherever the
    main thread is (inside a gRPC call an interrupt can leave a client unusable, and the
    clean-up needs it); outside, and in other threads, Ctrl-C is left as it was."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_canary(
    settings: Settings,
    store: ObjectStore,
    status: StatusStore,
    bucket: str,
    gpu: str,
    spot: bool,
    add: Callable[[CheckResult], None],
    out: TextIO,
    stage_timeout: float,
    timeout: float,
) -> bool:
    """Upload, follow, clean up; each result goes to `add` as it comes. True on success."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = f"{CANARY_FOLDER}{stamp}-{uuid.uuid4().hex[:6]}/"
    canary = Canary(settings, store, status, bucket, folder, out, gpu=gpu)
    print(f"  …     canary: uploading {CLIP} and {MANIFEST} to {store.uri(bucket, folder)}",
          file=out, flush=True)  # fmt: skip
    ok = False
    try:
        try:
            with tempfile.TemporaryDirectory(prefix="dropbatch-canary-") as tmp:
                clip = Path(tmp) / CLIP
                make_clip(clip)
                # As a user uploads: the video, then the manifest; none of our metadata.
                store.upload_file(bucket, f"{folder}{CLIP}", clip, content_type="video/mp4")
                canary.uploaded_at = time.time()
                store.write_bytes(bucket, canary.manifest, canary_manifest(gpu, spot).encode(),
                                  content_type="application/x-yaml")  # fmt: skip
        except Exception as exc:  # no ffmpeg here, or the upload refused: this machine's side
            fix = "install ffmpeg here, and check your write access to the inbox"
            detail = f"{type(exc).__name__}: {exc}"
            add(CheckResult(name="canary upload", ok=False, detail=detail, fix=fix))
            return False
        with interrupt_sets(canary.interrupted):
            ok = follow(canary, add, stage_timeout, timeout)
    finally:
        # Also on Ctrl-C: nothing of the canary stays in the inbox, no VM starts for it later.
        add(clean_up(canary))
    return ok
