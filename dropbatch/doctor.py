"""`dropbatch doctor`: is this deployment ready to run a job? Run from a laptop with the
deployment's settings (config file, DROPBATCH_*), it checks each part a job touches and prints
a checklist, with what to do for each failure:

- the inbox, work and model buckets answer;
- the status store takes a write and reads it back;
- the model store holds what a manifest needs, hashes verified (`dropbatch models check`);
- a one-task job, launched the way the trigger launches (the task's own Job, running
  `python -m batch_jobs.selfcheck` instead of the task), reports from the VM: GPU, onnxruntime,
  ffmpeg, the model cache. Its report comes back through the status store under the job's id;
- with `--canary`: the service accounts' grants (dropbatch/access.py), then one real job
  through the inbox, stage by stage, cleaned up after (dropbatch/canary.py).

A GPU is expected only where one is asked for: a Cloud Batch deployment whose compute (the
manifest's, else the default `gpu: l4`) names one. The local executor runs on whatever this
machine has, so there a missing GPU is reported, not failed.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from core.config import Settings
from core.status.base import StatusStore
from core.status.model import CheckReport, CheckResult
from core.storage.base import gs_bucket

# What the canary's job depends on: a failure here would only fail it at a known stage. (The
# self-check's findings do not stop it: the canary shows what they mean for a real job.)
CANARY_NEEDS = frozenset(
    {"inbox bucket", "work bucket", "status store", "function account", "job account"}
)
MODELS_FIX = "upload it to the model store (README, 'Filling the model store')"


@dataclass
class Checklist:
    """The results so far, printed as they come (a Batch VM can take minutes to start)."""

    out: TextIO
    results: list[CheckResult] = field(default_factory=list)

    def add(self, result: CheckResult) -> None:
        self.results.append(result)
        print(f"  {'ok' if result.ok else 'FAIL':<5} {result.name:<16} {result.detail}",
              file=self.out, flush=True)  # fmt: skip
        if not result.ok and result.fix:
            print(f"  {'':<5} {'fix:':<16} {result.fix}", file=self.out, flush=True)


# -- buckets ---------------------------------------------------------------------------------
def bucket_name(text: str) -> str:
    """`gs://bucket/` or `bucket` → bucket ("" for a path, which names no bucket)."""
    name = text.removeprefix("gs://").rstrip("/")
    return "" if "/" in name or name in ("", ".", "..") else name


def check_bucket(label: str, settings: Settings, bucket: str, gcs: bool) -> CheckResult:
    """The bucket exists and lists for us. Listing (one object) needs only object read
    access, which anyone running jobs has; reading the bucket's metadata would need more."""
    if not bucket:
        return CheckResult(
            name=label,
            ok=False,
            detail="no bucket name given",
            fix="name the bucket: gs://BUCKET/ or BUCKET (locally, a folder in local_root)",
        )
    if gcs:
        from google.api_core import exceptions

        from core.storage.gcs import GcsStore

        uri = f"gs://{bucket}/"
        try:
            client = GcsStore(project=settings.project or None).client
            next(iter(client.list_blobs(bucket, max_results=1)), None)
        except exceptions.NotFound:
            return CheckResult(
                name=label,
                ok=False,
                detail=f"{uri}: no such bucket",
                fix="create it (terraform -chdir=infra apply) or correct the name",
            )
        except exceptions.Forbidden as exc:
            return CheckResult(
                name=label,
                ok=False,
                detail=f"{uri}: access denied ({exc.message})",
                fix="grant your account roles/storage.objectViewer on it "
                "(gcloud auth application-default login as the right user)",
            )
        except Exception as exc:  # unreachable endpoint, no credentials: the text says which
            return CheckResult(
                name=label,
                ok=False,
                detail=f"{uri}: {_one_line(exc)}",
                fix="check your network and credentials (gcloud auth application-default login)",
            )
        return CheckResult(name=label, ok=True, detail=f"{uri} answers")
    folder = settings.local_root / bucket
    if not folder.is_dir():
        return CheckResult(
            name=label,
            ok=False,
            detail=f"{folder}: no such folder",
            fix=f"create it (mkdir -p {folder}) or correct DROPBATCH_LOCAL_ROOT",
        )
    return CheckResult(name=label, ok=True, detail=f"{folder} is there")


# -- status store ----------------------------------------------------------------------------
def status_where(settings: Settings) -> str:
    if settings.status == "firestore":
        return (
            f"Firestore {settings.firestore_database}/{settings.firestore_collection}"
            f"{' in ' + settings.project if settings.project else ''}"
        )
    return f"SQLite {settings.sqlite_file}"


def check_status(settings: Settings, check_id: str) -> tuple[CheckResult, StatusStore | None]:
    """(result, the store) — the store is None when it does not answer. The doctor's
    placeholder report is the write; reading it back is the read."""
    from core.status import open_status

    where = status_where(settings)
    try:
        status = open_status(settings)
        status.put_check(CheckReport(check_id=check_id))
        if status.get_check(check_id) is None:
            raise RuntimeError("a report written was not read back")
    except Exception as exc:
        fix = (
            "check project, firestore_database and firestore_collection, and that your "
            "account has roles/datastore.user"
            if settings.status == "firestore"
            else "check that DROPBATCH_SQLITE_PATH's folder exists and is writable"
        )
        return CheckResult(
            name="status store", ok=False, detail=f"{where}: {_one_line(exc)}", fix=fix
        ), None
    return CheckResult(name="status store", ok=True, detail=f"{where} answers"), status


# -- models ----------------------------------------------------------------------------------
def check_models(settings: Settings, manifest: Path | None) -> list[CheckResult]:
    """The store answers; with a manifest, every model file it needs is there and verified,
    by the same checks as `dropbatch models check --manifest`."""
    from dropbatch.local_run import _manifest_models
    from processors.models.store import default_cache, open_model_store

    names = _manifest_models(manifest) if manifest else []
    if not settings.model_store:
        if names:
            return [
                CheckResult(
                    name="model store",
                    ok=False,
                    detail=f"not set, and the manifest needs {', '.join(names)}",
                    fix="set model_store (DROPBATCH_MODEL_STORE) to the store's folder or "
                    "gs://bucket/prefix/",
                )
            ]
        return [CheckResult(name="model store", ok=True, detail="not set (no model needed)")]
    results = []
    if settings.model_store.startswith("gs://"):
        results.append(
            check_bucket("model bucket", settings, gs_bucket(settings.model_store), gcs=True)
        )
        if not results[-1].ok:
            return results
    elif not Path(settings.model_store).is_dir():
        return [
            CheckResult(
                name="model store",
                ok=False,
                detail=f"{settings.model_store}: no such folder",
                fix="correct model_store (DROPBATCH_MODEL_STORE), or create and fill the folder",
            )
        ]
    try:
        # Verified copies go to this machine's cache: `model_cache` is the VMs' folder.
        here = default_cache(settings.model_copy(update={"model_cache": ""}))
        store = open_model_store(settings.model_store, settings, cache_dir=here)
        assert store is not None
        listed = store.entries()  # reads the store's catalog additions: the store answers
        reports = store.check(names)
    except Exception as exc:
        return [
            *results,
            CheckResult(
                name="model store",
                ok=False,
                detail=f"{settings.model_store}: {_one_line(exc)}",
                fix="check model_store and your read access to it",
            ),
        ]
    if not names:
        detail = f"{settings.model_store} answers ({len(listed)} catalog entries)"
        return [*results, CheckResult(name="model store", ok=True, detail=detail)]
    for r in reports:
        ok = r.state in ("present", "unpinned")
        fix = {
            "missing": f"{MODELS_FIX}: {r.file}",
            "corrupt": f"replace {r.file} with the file the catalog pins ({MODELS_FIX})",
        }.get(r.state, "")
        detail = f"{r.model}: {r.file} {r.state}{' (' + r.detail + ')' if r.detail else ''}"
        results.append(CheckResult(name="model", ok=ok, detail=detail, fix=fix))
    return results


# -- the self-check job ----------------------------------------------------------------------
def run_selfcheck(
    settings: Settings,
    status: StatusStore,
    check_id: str,
    bucket: str,
    gpu: str,
    spot: bool,
    timeout: float,
) -> list[CheckResult]:
    from batch_jobs.launcher import LaunchError
    from batch_jobs.selfcheck_job import (
        await_report,
        launch_locally,
        launch_on_batch,
        selfcheck_record,
    )

    record = selfcheck_record(check_id, bucket, gpu, spot)
    batch = settings.launcher == "batch"
    try:
        name, ended = (launch_on_batch if batch else launch_locally)(settings, record)
    except LaunchError as exc:
        return [CheckResult(name="self-check job", ok=False, detail=str(exc),
                            fix="set the missing settings (README, Configuration)")]  # fmt: skip
    except Exception as exc:
        return [
            CheckResult(
                name="self-check job",
                ok=False,
                detail=f"not launched: {_one_line(exc)}",
                fix="check batch_api_endpoint / region and that your account may create "
                "Batch jobs (roles/batch.jobsEditor) and act as the job's service account",
            )
        ]
    got = await_report(status, check_id, ended, timeout)
    if isinstance(got, str):
        where = (
            f"gcloud batch jobs describe {check_id} --location {settings.region}, and the "
            "job's logs"
            if batch
            else "the log lines above"
        )
        fix = (
            f"see {where}; a job that cannot write its report lacks access to the status "
            "store (the job's service account needs roles/datastore.user)"
        )
        return [CheckResult(name="self-check job", ok=False, detail=f"{name}: {got}", fix=fix)]
    ran = CheckResult(name="self-check job", ok=True, detail=f"{name} ran on {got.host}")
    return [ran, *got.results]


# -- the command -----------------------------------------------------------------------------
@dataclass
class DoctorRequest:
    inbox: str
    manifest: Path | None = None
    timeout: float = 900.0
    # --canary: check the accounts' grants, then run one real job through the deployment.
    canary: bool = False
    stage_timeout: float = 600.0  # the longest the canary waits for its next stage
    function_account: str = ""  # "": Terraform's dropbatch-function@PROJECT
    builder_account: str = ""  # "": Terraform's dropbatch-builder@PROJECT


# -- the accounts' grants (--canary) ---------------------------------------------------------
def check_accounts(settings: Settings, request: DoctorRequest, inbox: str) -> list[CheckResult]:
    """What each service account needs, against the policies that grant it (dropbatch/access.py)."""
    from batch_jobs.cloud_batch import notification_topic
    from dropbatch.access import Deployment, PolicyReaders, check_access

    if not settings.project:
        return [CheckResult(name="function account", ok=False,
                            detail="not checked: no project set (the policies live there)",
                            fix="set project (DROPBATCH_PROJECT) to the deployment's")]  # fmt: skip

    def terraform_name(account: str) -> str:  # infra/iam.tf's account_id
        return f"dropbatch-{account}@{settings.project}.iam.gserviceaccount.com"

    deployment = Deployment(
        project=settings.project,
        inbox=inbox,
        work=bucket_name(settings.work_bucket),
        models=gs_bucket(settings.model_store),
        topic=notification_topic(settings) if settings.notification_topic else "",
        job_account=settings.job_service_account or terraform_name("job"),
        function_account=request.function_account or terraform_name("function"),
        builder_account=request.builder_account or terraform_name("builder"),
    )
    return check_access(deployment, PolicyReaders(settings).read)


def run_doctor(settings: Settings, request: DoctorRequest, out: TextIO | None = None) -> int:
    """Print the checklist (on stdout by default); 0 when every check passed, 1 otherwise."""
    out = out or sys.stdout
    from manifests.loader import load_manifest
    from manifests.model import ComputeOptions

    compute = ComputeOptions()
    if request.manifest is not None:
        compute = load_manifest(request.manifest.read_bytes()).compute
    gcs = settings.storage == "gcs"
    print(
        f"dropbatch doctor: storage {settings.storage}, status {settings.status}, launcher "
        f"{settings.launcher}{' in ' + settings.project if settings.project else ''}",
        file=out,
    )
    checks = Checklist(out)
    inbox = bucket_name(request.inbox)
    checks.add(check_bucket("inbox bucket", settings, inbox, gcs))
    if settings.work_bucket:  # else internal objects live in the inbox bucket (or locally)
        checks.add(check_bucket("work bucket", settings, bucket_name(settings.work_bucket), gcs))
    check_id = f"doctor-{uuid.uuid4().hex[:12]}"
    result, status = check_status(settings, check_id)
    checks.add(result)
    for result in check_models(settings, request.manifest):
        checks.add(result)
    if request.canary and gcs:
        for result in check_accounts(settings, request, inbox):
            checks.add(result)
    if status is None:
        checks.add(CheckResult(name="self-check job", ok=False,
                               detail="not run: its report comes back through the status store",
                               fix="fix the status store first"))  # fmt: skip
    else:
        # Batch gives the VM the compute's GPU; the local executor runs on this machine as is.
        gpu = compute.gpu if settings.launcher == "batch" else "none"
        where = "Cloud Batch" if settings.launcher == "batch" else "this machine"
        print(f"  …     launching a one-task self-check job on {where} ({check_id})",
              file=out, flush=True)  # fmt: skip
        for result in run_selfcheck(
            settings, status, check_id, inbox, gpu, compute.spot, request.timeout
        ):
            checks.add(result)
    if request.canary:
        run_the_canary(settings, request, checks, status, inbox, compute.gpu, compute.spot)
    failed = list(dict.fromkeys(r.name for r in checks.results if not r.ok))
    verdict = "failed: " + ", ".join(failed) if failed else "all checks passed"
    print(f"dropbatch doctor: {verdict}", file=out)
    return 0 if not failed else 1


def run_the_canary(
    settings: Settings,
    request: DoctorRequest,
    checks: Checklist,
    status: StatusStore | None,
    inbox: str,
    gpu: str,
    spot: bool,
) -> None:
    """The canary runs only on a deployment that passed the checks it depends on: a job on a
    broken one would fail at a stage the checklist above already names."""
    from core.storage import open_store
    from dropbatch.canary import run_canary

    blocking = list(
        dict.fromkeys(r.name for r in checks.results if not r.ok and r.name in CANARY_NEEDS)
    )
    if blocking or status is None:
        checks.add(CheckResult(name="canary", ok=False,
                               detail=f"not run: {', '.join(blocking) or 'status store'} failed",
                               fix="fix the failures above first"))  # fmt: skip
        return
    run_canary(settings, open_store(settings), status, inbox, gpu, spot, checks.add, checks.out,
               request.stage_timeout, request.timeout)  # fmt: skip


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
