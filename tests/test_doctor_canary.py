"""`dropbatch doctor --canary` end to end on the Google Cloud stand-ins: the inbox and work
buckets on fake-gcs-server behind the storage front (which notifies `on_inbox_object` of each
upload, as Eventarc does, and serves the buckets' IAM policies), Firestore on its emulator, the
built functions served by functions-framework, the Batch stand-in running the tasks and sending
its state notifications to `on_batch_state`, and the IAM stand-in serving the topic's, the job
account's and the project's policies as infra/iam.tf grants them.

The canary passes, printing every stage, and leaves nothing behind; broken, it names the stage:
an account without a role, a VM that cannot run the task, a job Batch never schedules.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.storage.gcs import GcsStore
from dropbatch.cli import main
from tests.batch_standin import BatchStandin
from tests.function_servers import FunctionServer
from tests.iam_standin import IamStandin
from tests.storage_notifications import StorageNotifications
from tests.test_batch_end_to_end import built_function  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "acme-video"
FUNCTION = f"dropbatch-function@{PROJECT}.iam.gserviceaccount.com"
JOB = f"dropbatch-job@{PROJECT}.iam.gserviceaccount.com"
BUILDER = f"dropbatch-builder@{PROJECT}.iam.gserviceaccount.com"
TOPIC = f"projects/{PROJECT}/topics/dropbatch-batch-state"
CPU = "version: 1\ninputs: [clip.mp4]\nchain: [{crop: {}}]\ncompute: {gpu: none}\n"
STAGES = ("received", "queued", "running", "stitching", "succeeded")


def grants(inbox: str, work: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """(bucket policies, other policies): what infra/iam.tf grants, plus the topic's
    roles/pubsub.editor for the function that Batch's notification docs ask of a job's
    creator."""
    f, j, b = (f"serviceAccount:{a}" for a in (FUNCTION, JOB, BUILDER))

    def binding(role: str, *members: str, condition: str = "") -> dict:
        out: dict = {"role": role, "members": list(members)}
        if condition:
            out["condition"] = {"title": "only", "expression": condition}
        return out

    claims = f'resource.name.startsWith("projects/_/buckets/{work}/objects/{inbox}/outputs/")'
    buckets = {
        inbox: {"bindings": [
            binding("roles/storage.objectViewer", f),
            binding("roles/storage.objectUser", f,
                    condition='resource.name.endsWith(".status.json")'),
            binding("roles/storage.objectUser", j),
        ]},
        work: {"bindings": [
            binding("roles/storage.objectUser", f, condition=claims),
            binding("roles/storage.objectUser", j),
        ]},
    }  # fmt: skip
    others = {
        TOPIC: {"bindings": [binding("roles/pubsub.publisher", j),
                             binding("roles/pubsub.editor", f)]},
        f"projects/{PROJECT}/serviceAccounts/{JOB}": {
            "bindings": [binding("roles/iam.serviceAccountUser", f)]
        },
        f"projects/{PROJECT}": {"bindings": [
            binding("roles/owner", "user:operator@example.com"),
            binding("roles/batch.jobsEditor", f),
            binding("roles/datastore.user", f, j),
            binding("roles/logging.logWriter", f, j, b),
            binding("roles/eventarc.eventReceiver", f),
            binding("roles/run.invoker", f),
            binding("roles/batch.agentReporter", j),
            binding("roles/artifactregistry.writer", b),
            binding("roles/storage.objectAdmin", b),
        ]},
    }  # fmt: skip
    return buckets, others


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest,
    gcs_emulator: str,
    firestore_emulator: str,
    built_function: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict]:
    """The whole deployment on the stand-ins; indirect param "hold": Batch never starts VMs;
    "pool": jobs run on the warm pool (nine seconds of warm time), else each on its own."""
    hold = getattr(request, "param", "") == "hold"
    pool = getattr(request, "param", "") == "pool"
    for key in [k for k in os.environ if k.startswith("DROPBATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "laptop-cache"))
    notifications = StorageNotifications(gcs_emulator)
    iam = IamStandin()
    inbox, work = f"inbox-{uuid.uuid4().hex[:10]}", f"work-{uuid.uuid4().hex[:10]}"
    env = {
        "STORAGE_EMULATOR_HOST": notifications.host,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator,
        "DROPBATCH_STORAGE": "gcs",
        "DROPBATCH_STATUS": "firestore",
        "DROPBATCH_FIRESTORE_COLLECTION": f"canary-{uuid.uuid4().hex[:10]}",
        "DROPBATCH_WORK_BUCKET": work,
        "DROPBATCH_LAUNCHER": "batch",
        "DROPBATCH_PROJECT": PROJECT,
        "DROPBATCH_REGION": "us-central1",
        "DROPBATCH_IMAGE": f"us-central1-docker.pkg.dev/{PROJECT}/dropbatch/task:test",
        "DROPBATCH_JOB_SERVICE_ACCOUNT": JOB,
        "DROPBATCH_NOTIFICATION_TOPIC": TOPIC,
        "DROPBATCH_IAM_EMULATOR_HOST": iam.host,
        "DROPBATCH_WARM_MINUTES": "0.15" if pool else "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    store = GcsStore(project=PROJECT)
    store.client.create_bucket(inbox)
    store.client.create_bucket(work)
    buckets, others = grants(inbox, work)
    notifications.bucket_policies.update(buckets)
    iam.policies.update(others)
    standin = BatchStandin(
        hold=hold,
        vm_env={k: env[k] for k in ("STORAGE_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")},
    )
    standin.start()
    monkeypatch.setenv("DROPBATCH_BATCH_EMULATOR_HOST", standin.endpoint)
    inbox_fn = FunctionServer(built_function, "on_inbox_object", tmp_path / "inbox-fn.log")
    state_fn = FunctionServer(built_function, "on_batch_state", tmp_path / "state-fn.log")
    inbox_fn.start()
    state_fn.start()
    standin.on_notification = state_fn.post
    notifications.watch(inbox, inbox_fn.post)
    (tmp_path / "cpu.yaml").write_text(CPU)
    try:
        yield {
            "inbox": inbox,
            "work": work,
            "store": store,
            "standin": standin,
            "notifications": notifications,
            "tmp": tmp_path,
            "env": env,
        }
    finally:
        standin.release.set()
        standin.stop()
        inbox_fn.stop()
        state_fn.stop()
        notifications.close()
        iam.close()


def doctor(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, dict[str, list[str]], str]:
    """Exit code, the checklist (name → its "ok …"/"FAIL …" and "fix: …" lines), the text."""
    code = main(["doctor", "--canary", *args])
    captured = capsys.readouterr()
    print(captured.out)
    print(captured.err, file=sys.stderr)  # shown when the test fails
    lines: dict[str, list[str]] = {}
    last = ""
    for line in captured.out.splitlines():
        words = line.split(maxsplit=1)
        if words and words[0] in ("ok", "FAIL"):
            last = line.strip()[6:22].strip()  # the name's column (dropbatch.doctor.Checklist)
            lines.setdefault(last, []).append(" ".join(line.split()))
        elif words and words[0] == "fix:":
            lines[last].append(" ".join(line.split()))
    return code, lines, captured.out


def leftovers(deployment: dict) -> list[str]:
    store, inbox, work = deployment["store"], deployment["inbox"], deployment["work"]
    return [i.name for i in store.list(inbox, "")] + [
        f"{work}/{i.name}" for i in store.list(work, "")
    ]


@pytest.mark.parametrize("deployment", ["", "pool"], indirect=True)
def test_the_canary_passes_every_stage_and_leaves_nothing_behind(
    deployment: dict, capsys: pytest.CaptureFixture
) -> None:
    tmp = deployment["tmp"]
    code, lines, text = doctor(capsys, "--inbox", f"gs://{deployment['inbox']}/",
                               "--manifest", str(tmp / "cpu.yaml"), "--timeout", "240",
                               "--stage-timeout", "180")  # fmt: skip
    assert code == 0, text
    for account in ("function account", "job account", "builder account"):
        assert lines[account][0].startswith("ok"), lines[account]
    for stage in STAGES:
        [line] = lines[f"canary {stage}"]
        assert line.startswith("ok") and "s after the upload" in line, line
    assert lines["canary vm"][0].startswith("ok") and "onnxruntime" in lines["canary vm"][0]
    assert lines["canary output"][0].startswith("ok"), lines["canary output"]
    assert "_doctor/" in lines["canary output"][0] and "out/clip.mp4" in lines["canary output"][0]
    assert lines["canary cleanup"][0].startswith("ok"), lines["canary cleanup"]
    # The upload went the user's way: storage notified the function of the clip and the
    # manifest under _doctor/, and the job ran on Batch as the deployment's compute.
    delivered = {d.name for d in deployment["notifications"].deliveries}
    assert any(n.startswith("_doctor/") and n.endswith("/canary.yaml") for n in delivered)
    canary_jobs = [r for r in deployment["standin"].requests if r.job_id.startswith("db-")]
    assert canary_jobs, [r.job_id for r in deployment["standin"].requests]
    assert leftovers(deployment) == []


def test_a_function_account_without_a_role_is_named_with_its_grant(
    deployment: dict, capsys: pytest.CaptureFixture
) -> None:
    inbox = deployment["inbox"]
    policy = deployment["notifications"].bucket_policies[inbox]
    policy["bindings"] = [
        b for b in policy["bindings"] if b["role"] != "roles/storage.objectViewer"
    ]
    # And a claims grant whose condition names another inbox's folder in the work bucket.
    work = deployment["notifications"].bucket_policies[deployment["work"]]
    for binding in work["bindings"]:
        if "condition" in binding:
            expression = binding["condition"]["expression"]
            binding["condition"]["expression"] = expression.replace(f"/{inbox}/", "/other/")
    code, lines, text = doctor(capsys, "--inbox", f"gs://{inbox}/", "--manifest",
                               str(deployment["tmp"] / "cpu.yaml"), "--timeout", "120")  # fmt: skip
    assert code == 1, text
    function = lines["function account"]
    assert function[0].startswith("FAIL")
    assert f"lacks storage.objects.get on gs://{inbox} (read uploads)" in function[0]
    assert function[1].startswith("fix: grant roles/storage.objectViewer to ")
    assert f"add-iam-policy-binding gs://{inbox} --member=serviceAccount:{FUNCTION}" in function[1]
    assert any(
        f"lacks storage.objects.create on gs://{deployment['work']} (claim output names)" in line
        for line in function
    ), function
    assert lines["job account"][0].startswith("ok")
    assert lines["canary"][0].startswith("FAIL") and "function account" in lines["canary"][0]
    assert leftovers(deployment) == []  # nothing was uploaded


def test_a_task_without_a_cuda_provider_is_named_as_the_task_stage_with_the_cuda_fix(
    deployment: dict, capsys: pytest.CaptureFixture
) -> None:
    """The deployment's default compute (an L4) on this CPU machine: the task runs, but the
    machine its worker recorded has no GPU and onnxruntime only on the CPU, so the canary
    names the task on the VM, with the CUDA fix, instead of passing a CPU run."""
    standin = deployment["standin"]
    code, lines, text = doctor(capsys, "--inbox", f"gs://{deployment['inbox']}/",
                               "--timeout", "240", "--stage-timeout", "180")  # fmt: skip
    assert code == 1, text
    [vm, fix] = lines["canary vm"]
    assert vm.startswith("FAIL"), vm
    assert "task on the VM: the job asked for gpu: l4 but ran without it" in vm, vm
    assert "no GPU" in vm and "CPUExecutionProvider" in vm, vm  # the machine's own facts
    assert "onnxruntime-gpu cannot load CUDA" in fix
    for before in ("received", "queued", "running"):
        assert lines[f"canary {before}"][0].startswith("ok")
    canary = [r for r in standin.requests if r.job_id.startswith("db-")][-1]
    accelerators = canary.job.allocation_policy.instances[0].policy.accelerators
    assert accelerators and accelerators[0].type_ == "nvidia-l4"  # it asked for its GPU
    assert lines["canary cleanup"][0].startswith("ok")
    assert leftovers(deployment) == []


@pytest.mark.parametrize("deployment", ["hold"], indirect=True)
def test_a_job_batch_never_schedules_is_named_with_batchs_events_and_the_quota_fixes(
    deployment: dict, capsys: pytest.CaptureFixture
) -> None:
    code, lines, text = doctor(capsys, "--inbox", f"gs://{deployment['inbox']}/", "--manifest",
                               str(deployment["tmp"] / "cpu.yaml"), "--timeout", "60",
                               "--stage-timeout", "15")  # fmt: skip
    assert code == 1, text
    assert lines["canary queued"][0].startswith("ok")
    [stage, fix] = lines["canary stage"]
    assert "Batch did not schedule the job: still QUEUED after 1" in stage, stage
    assert "Batch's events: Job state is set to QUEUED" in stage
    assert "GPUS_ALL_REGIONS" in fix and "L4" in fix and "image" in fix
    # The waiting Batch job was deleted, so no VM starts after the canary has gone.
    canary = [r for r in deployment["standin"].requests if r.job_id.startswith("db-")][-1]
    assert f"{canary.parent}/jobs/{canary.job_id}" not in deployment["standin"].jobs
    assert lines["canary cleanup"][0].startswith("ok")
    assert leftovers(deployment) == []


@pytest.mark.parametrize("deployment", ["hold"], indirect=True)
def test_ctrl_c_while_the_canary_waits_still_removes_it_and_its_batch_job(
    deployment: dict,
) -> None:
    command = [sys.executable, "-m", "dropbatch.cli", "doctor", "--canary", "--inbox",
               f"gs://{deployment['inbox']}/", "--manifest", str(deployment["tmp"] / "cpu.yaml"),
               "--timeout", "10", "--stage-timeout", "300"]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    doctor = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    assert doctor.stdout is not None
    for line in doctor.stdout:
        seen.append(line)
        if "canary queued" in line:
            doctor.send_signal(signal.SIGINT)
            break
    rest, _ = doctor.communicate(timeout=120)
    text = "".join(seen) + rest
    assert doctor.returncode != 0, text
    assert "canary cleanup" in rest and "ok    canary cleanup" in rest, text
    canary = [r for r in deployment["standin"].requests if r.job_id.startswith("db-")][-1]
    assert f"{canary.parent}/jobs/{canary.job_id}" not in deployment["standin"].jobs
    assert leftovers(deployment) == []


def test_gpu_unavailable_is_the_task_on_the_vm_with_the_cuda_fix() -> None:
    """The code the task gives a job on a VM whose onnxruntime has no CUDA provider."""
    from core.domain import JobError
    from core.status.model import JobRecord, JobState
    from dropbatch.canary import ended_result

    manifest = "_doctor/x/canary.yaml"
    record = JobRecord(job_id="db-canary-0", bucket="inbox", manifest=manifest,
                       manifest_generation=1, manifest_uri=f"gs://inbox/{manifest}")  # fmt: skip
    record.set_state(JobState.FAILED)
    record.error = JobError(code="GPU_UNAVAILABLE", message="no CUDAExecutionProvider")
    result = ended_result(record, JobState.STITCHING)
    assert result.detail.startswith("task on the VM: the job ended FAILED before stitching")
    assert "GPU_UNAVAILABLE" in result.detail
    assert "onnxruntime-gpu cannot load CUDA" in result.fix


def test_a_gpu_job_passes_the_vm_check_only_on_machines_with_cuda_active() -> None:
    from core.status.model import JobRecord, MachineFacts
    from dropbatch.canary import machines_result

    manifest = "_doctor/x/canary.yaml"
    record = JobRecord(job_id="db-canary-0", bucket="inbox", manifest=manifest,
                       manifest_generation=1, manifest_uri=f"gs://inbox/{manifest}")  # fmt: skip
    assert not machines_result(record, "l4").ok  # nothing shows the GPU was there
    assert machines_result(record, "none").ok
    l4 = MachineFacts(machine="a", host="vm-1", gpus=["NVIDIA L4"], driver="580.82.07",
                      cuda="13.0", onnxruntime="1.31.1",
                      providers=["CUDAExecutionProvider", "CPUExecutionProvider"])  # fmt: skip
    record.machines = [l4]
    assert machines_result(record, "l4").ok
    # The GPU is there but onnxruntime came up on the CPU: the worst failure, named.
    on_cpu = {"machine": "b", "host": "vm-2", "providers": ["CPUExecutionProvider"]}
    record.machines.append(l4.model_copy(update=on_cpu))
    result = machines_result(record, "l4")
    assert not result.ok and "vm-2" in result.detail and "vm-1" not in result.detail


def test_conditions_are_evaluated_on_the_object_names_the_account_writes() -> None:
    from dropbatch.access import condition_allows

    status = 'resource.name.endsWith(".status.json")'
    claims = 'resource.name.startsWith("projects/_/buckets/w/objects/inbox/outputs/")'
    assert condition_allows(status, "projects/_/buckets/inbox/objects/a/job.status.json")
    assert not condition_allows(status, "projects/_/buckets/inbox/objects/a/out/clip.mp4")
    assert condition_allows(claims, "projects/_/buckets/w/objects/inbox/outputs/0.json")
    assert not condition_allows(claims, "projects/_/buckets/w/objects/other/outputs/0.json")
    assert condition_allows(f"{status} || {claims}", "projects/_/buckets/w/objects/x.status.json")
    assert not condition_allows(
        f"{status} && {claims}", "projects/_/buckets/w/objects/x.status.json"
    )
    # A form not evaluated is said to be so, never taken as granted.
    assert condition_allows('request.time < timestamp("2030-01-01T00:00:00Z")', "x") is None


def test_a_project_grant_counts_on_buckets_and_an_unreadable_policy_is_named() -> None:
    from dropbatch.access import Deployment, check_access, parse_bindings

    deployment = Deployment(
        project=PROJECT, inbox="inbox", work="work", models="", topic="",
        job_account=JOB, function_account=FUNCTION, builder_account=BUILDER,
    )  # fmt: skip
    everyone = [f"serviceAccount:{a}" for a in (FUNCTION, JOB, BUILDER)]
    policies = {
        # Editor on the project: every need of every account, inherited by the buckets.
        f"projects/{PROJECT}": {"bindings": [{"role": "roles/editor", "members": everyone},
                                              {"role": "roles/eventarc.eventReceiver",
                                               "members": everyone[:1]},
                                              {"role": "roles/run.invoker",
                                               "members": everyone[:1]}]},
        "gs://inbox": {"bindings": []},
        "gs://work": {"bindings": []},
        f"projects/{PROJECT}/serviceAccounts/{JOB}": {"bindings": []},
    }  # fmt: skip

    def read(key: str) -> list:
        if key not in policies:
            raise PermissionError(f"HTTP 403: no storage.buckets.getIamPolicy on {key}")
        return parse_bindings(policies[key])

    results = check_access(deployment, read)
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    del policies["gs://work"]
    failed = [r for r in check_access(deployment, read) if not r.ok]
    # The project's Editor still grants them, so nothing is missing: an unreadable bucket
    # policy matters only where no readable one grants the need.
    assert failed == []
    del policies[f"projects/{PROJECT}"]
    failed = [r for r in check_access(deployment, read) if not r.ok]
    work = [r for r in failed if "on gs://work" in r.detail]
    assert work and all("policy unreadable: gs://work: HTTP 403" in r.detail for r in work)
    assert all("may read IAM policies" in r.fix for r in work)
