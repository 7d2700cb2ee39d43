"""Static checks of infra/ (terraform init cannot run here): the wiring the deployment needs
and least-privilege IAM for both service accounts, exactly as README lists it. The IAM check
is also run on mutated copies, to show it fails when a role is widened."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import hcl2
import pytest

INFRA = Path(__file__).resolve().parent.parent / "infra"

CLAIMS_ONLY = (
    'resource.name.startsWith("projects/_/buckets/${google_storage_bucket.work.name}'
    '/objects/${var.inbox_bucket}/outputs/")'
)
FUNCTION_ROLES = {
    ("inbox", "roles/storage.objectViewer", None),
    ("inbox", "roles/storage.objectUser", 'resource.name.endsWith(".status.json")'),
    # Output-name claims, and nothing else, in the work bucket.
    ("work", "roles/storage.objectUser", CLAIMS_ONLY),
    ("models", "roles/storage.objectViewer", None),
    ("project", "roles/batch.jobsEditor", None),
    ("job-account", "roles/iam.serviceAccountUser", None),
    ("project", "roles/datastore.user", None),
    ("project", "roles/logging.logWriter", None),
    ("project", "roles/eventarc.eventReceiver", None),
    # On the project: the functions' Cloud Run services do not exist before the functions.
    ("project", "roles/run.invoker", None),
    # It creates the Batch jobs that publish state notifications there: Batch's "enable
    # notifications" page asks Pub/Sub Editor of a job's creator, here on the topic alone.
    ("batch-topic", "roles/pubsub.editor", None),
}
# Whoever runs `dropbatch doctor` creates its self-check job, which names the same topic.
OPERATOR_ROLES = {("batch-topic", "roles/pubsub.editor", None)}
JOB_ROLES = {
    ("inbox", "roles/storage.objectUser", None),
    ("work", "roles/storage.objectUser", None),
    ("models", "roles/storage.objectViewer", None),
    ("project", "roles/datastore.user", None),
    ("project", "roles/logging.logWriter", None),
    ("project", "roles/batch.agentReporter", None),
    ("images", "roles/artifactregistry.reader", None),
    ("batch-topic", "roles/pubsub.publisher", None),
}
# The Cloud Build account the functions build as (the provider's builder example).
BUILDER_ROLES = {
    ("project", "roles/logging.logWriter", None),
    ("project", "roles/artifactregistry.writer", None),
    ("project", "roles/storage.objectAdmin", None),
}
FUNCTIONS = ("on_inbox_object", "on_batch_state", "on_sweep")
FORBIDDEN = re.compile(
    r"roles/(owner|editor|viewer)$|\.admin$|roles/iam\.serviceAccountTokenCreator"
)


def _clean(value):
    """python-hcl2 keeps HCL quoting and block markers; give plain Python values."""
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"')
        return value
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k != "__is_block__"}
    return value


def load(folder: Path) -> dict[str, dict[str, dict]]:
    """{resource or data type: {name: attributes}} over every .tf file in `folder`."""
    found: dict[str, dict[str, dict]] = {}
    for path in sorted(folder.glob("*.tf")):
        with open(path) as handle:
            parsed = _clean(hcl2.load(handle))
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for rtype, named in block.items():
                    for name, attrs in named.items():
                        found.setdefault(f"{kind}.{rtype}", {})[name] = attrs
    return found


def scope_of(rtype: str, attrs: dict) -> str:
    if rtype == "google_project_iam_member":
        return "project"
    if rtype == "google_storage_bucket_iam_member":
        return {
            "${google_storage_bucket.inbox.name}": "inbox",
            "${google_storage_bucket.models.name}": "models",
            "${google_storage_bucket.work.name}": "work",
        }.get(attrs["bucket"], attrs["bucket"])
    if rtype == "google_service_account_iam_member":
        return {"${google_service_account.job.name}": "job-account"}.get(
            attrs["service_account_id"], attrs["service_account_id"]
        )
    if rtype == "google_artifact_registry_repository_iam_member":
        return "images" if "artifact_registry_repository.images" in attrs["repository"] else "?"
    if rtype == "google_pubsub_topic_iam_member":
        return "batch-topic" if "pubsub_topic.batch_state" in attrs["topic"] else "?"
    if rtype == "google_cloud_run_v2_service_iam_member":
        return "function-service" if "cloudfunctions2_function" in attrs["name"] else "?"
    return rtype


def grants(infra: dict) -> dict[str, set[tuple[str, str, str | None]]]:
    """member → {(scope, role, condition expression)} over every IAM member resource."""
    members = {
        "${local.function_member}": "function",
        "${local.job_member}": "job",
        "${local.builder_member}": "builder",
        "${each.value}": "operators",  # var.operators, one grant each
    }
    out: dict[str, set] = {}
    for kind, named in infra.items():
        rtype = kind.split(".", 1)[1]
        if not rtype.endswith("_iam_member"):
            continue
        for attrs in named.values():
            who = members.get(attrs["member"], attrs["member"])
            condition = attrs.get("condition")
            expression = condition[0]["expression"] if condition else None
            out.setdefault(who, set()).add((scope_of(rtype, attrs), attrs["role"], expression))
    return out


def check_iam(infra: dict) -> None:
    found = grants(infra)
    for who, roles in found.items():
        for _, role, _ in roles:
            assert not FORBIDDEN.search(role), f"{who} is granted {role}"
    assert found["function"] == FUNCTION_ROLES
    assert found["job"] == JOB_ROLES
    assert found["builder"] == BUILDER_ROLES
    assert found["operators"] == OPERATOR_ROLES
    [operators] = [
        attrs
        for attrs in infra["resource.google_pubsub_topic_iam_member"].values()
        if attrs["member"] == "${each.value}"
    ]
    assert operators["for_each"] == "${toset(var.operators)}"


@pytest.fixture(scope="module")
def infra() -> dict:
    return load(INFRA)


def test_service_accounts_have_least_privilege(infra: dict) -> None:
    check_iam(infra)
    agent = infra["resource.google_project_iam_member"]["storage_agent_publishes"]
    assert agent["role"] == "roles/pubsub.publisher"
    assert "google_storage_project_service_account.gcs_agent" in agent["member"]


@pytest.mark.parametrize(
    "original,widened",
    [
        ('role    = "roles/batch.jobsEditor"', 'role    = "roles/editor"'),
        ('role    = "roles/datastore.user"', 'role    = "roles/owner"'),
        ('role   = "roles/storage.objectViewer"', 'role   = "roles/storage.admin"'),
        ('expression = "resource.name.endsWith(\\".status.json\\")"', 'expression = "true"'),
    ],
)
def test_the_iam_check_fails_when_a_role_is_widened(
    tmp_path: Path, original: str, widened: str
) -> None:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy, ignore=shutil.ignore_patterns(".terraform", ".build"))
    source = (copy / "iam.tf").read_text()
    assert original in source
    (copy / "iam.tf").write_text(source.replace(original, widened, 1))
    with pytest.raises(AssertionError):
        check_iam(load(copy))


def test_required_apis_are_enabled(infra: dict) -> None:
    locals_text = (INFRA / "apis.tf").read_text()
    for api in [
        "batch",
        "compute",
        "cloudfunctions",
        "run",
        "eventarc",
        "pubsub",
        "firestore",
        "artifactregistry",
        "storage",
        "logging",
        "cloudbuild",
    ]:
        assert f'"{api}.googleapis.com"' in locals_text
    assert infra["resource.google_project_service"]["apis"]["for_each"] == "${local.apis}"


def test_buckets_are_private(infra: dict) -> None:
    buckets = infra["resource.google_storage_bucket"]
    for name in ("inbox", "work", "models"):
        assert buckets[name]["uniform_bucket_level_access"] is True
        assert buckets[name]["public_access_prevention"] == "enforced"
    assert infra["resource.google_firestore_database"]["status"]["type"] == "FIRESTORE_NATIVE"
    assert infra["resource.google_artifact_registry_repository"]["images"]["format"] == "DOCKER"


def test_inbox_event_reaches_the_trigger_function_with_retries(infra: dict) -> None:
    fn = infra["resource.google_cloudfunctions2_function"]["on_inbox_object"]
    assert fn["build_config"][0]["entry_point"] == "on_inbox_object"
    [trigger] = fn["event_trigger"]
    assert trigger["event_type"] == "google.cloud.storage.object.v1.finalized"
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
    assert trigger["event_filters"][0]["attribute"] == "bucket"
    assert trigger["event_filters"][0]["value"] == "${google_storage_bucket.inbox.name}"
    assert fn["service_config"][0]["service_account_email"] == (
        "${google_service_account.function.email}"
    )


def test_batch_notifications_reach_the_reconcile_function(infra: dict) -> None:
    fn = infra["resource.google_cloudfunctions2_function"]["on_batch_state"]
    assert fn["build_config"][0]["entry_point"] == "on_batch_state"
    [trigger] = fn["event_trigger"]
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert trigger["pubsub_topic"] == "${google_pubsub_topic.batch_state.id}"
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"


def test_functions_get_the_settings_the_batch_launcher_needs(infra: dict) -> None:
    from batch_jobs.cloud_batch import require_settings  # noqa: F401 (names below)
    from core.config import Settings

    env_text = (INFRA / "functions.tf").read_text()
    for name in (
        "launcher",
        "project",
        "region",
        "image",
        "job_service_account",
        "notification_topic",
        "storage",
        "status",
        "model_store",
    ):
        assert name in Settings.model_fields
        assert f"DROPBATCH_{name.upper()} " in env_text or f"DROPBATCH_{name.upper()}=" in env_text
    wired = {
        "NOTIFICATION_TOPIC": r"google_pubsub_topic\.batch_state\.id",
        "JOB_SERVICE_ACCOUNT": r"google_service_account\.job\.email",
        "IMAGE_VARIANT": r"var\.image_variant",
    }
    for name, value in wired.items():
        assert re.search(rf"DROPBATCH_{name} += {value}\n", env_text), name


def test_every_variable_terraform_sets_on_the_functions_is_a_setting(infra: dict) -> None:
    # A misspelt name would be silently ignored by Settings.from_env: the default would win.
    from core.config import ENV_PREFIX, Settings

    set_by_infra = set(
        re.findall(r"\b(DROPBATCH_[A-Z_]+)\s*=", (INFRA / "functions.tf").read_text())
    )
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert set_by_infra and set_by_infra <= known, sorted(set_by_infra - known)


def test_example_tfvars_sets_every_variable_without_a_default(infra: dict) -> None:
    with open(INFRA / "variables.tf") as handle:
        variables = _clean(hcl2.load(handle))["variable"]
    required = {
        name for block in variables for name, attrs in block.items() if "default" not in attrs
    }
    example = (INFRA / "terraform.tfvars.example").read_text()
    assert required and all(re.search(rf"^{name}\s*=", example, re.M) for name in required)


# -- deployment order, the builder, the sweep and the image digest: each check below is also
# run on a copy with one resource, grant or dependency removed, and must fail there.


def needs(attrs: dict, *resources: str) -> bool:
    return {f"${{{r}}}" for r in resources} <= set(attrs.get("depends_on", []))


def check_builder(infra: dict) -> None:
    functions = infra["resource.google_cloudfunctions2_function"]
    assert set(functions) == set(FUNCTIONS)
    wait = infra["resource.time_sleep"]["builder_roles_propagate"]
    assert needs(
        wait,
        "google_project_iam_member.builder_log_writer",
        "google_project_iam_member.builder_pushes_images",
        "google_project_iam_member.builder_reads_sources",
    )
    for name, fn in functions.items():
        build = fn["build_config"][0]
        assert build["service_account"] == "${google_service_account.builder.id}", name
        assert needs(fn, "time_sleep.builder_roles_propagate"), name
    assert grants(infra)["builder"] == BUILDER_ROLES


def check_ordering(infra: dict) -> None:
    apis = "google_project_service.apis"
    for kind in (
        "google_service_account",  # the IAM API
        "google_storage_bucket",
        "google_pubsub_topic",
        "google_firestore_database",
        "google_artifact_registry_repository",
        "google_cloud_scheduler_job",
        "google_cloudfunctions2_function",
    ):
        for name, attrs in infra[f"resource.{kind}"].items():
            assert needs(attrs, apis), f"{kind}.{name} does not wait for the APIs"
    for name, fn in infra["resource.google_cloudfunctions2_function"].items():
        # The trigger delivers as the function account from the moment it exists.
        assert needs(
            fn,
            "google_project_iam_member.function_invokes_functions",
            "google_project_iam_member.function_event_receiver",
        ), name
        assert fn["event_trigger"][0]["service_account_email"] == (
            "${google_service_account.function.email}"
        )
    invoker = infra["resource.google_project_iam_member"]["function_invokes_functions"]
    assert (invoker["role"], invoker["member"]) == ("roles/run.invoker", "${local.function_member}")
    assert "google_cloud_run_v2_service_iam_member" not in {k.split(".")[1] for k in infra}
    inbox = infra["resource.google_cloudfunctions2_function"]["on_inbox_object"]
    assert needs(inbox, "google_project_iam_member.storage_agent_publishes")


def check_sweep(infra: dict) -> None:
    job = infra["resource.google_cloud_scheduler_job"]["sweep"]
    assert job["pubsub_target"][0]["topic_name"] == "${google_pubsub_topic.sweep.id}"
    assert job["schedule"] == "${var.sweep_schedule}"
    fn = infra["resource.google_cloudfunctions2_function"]["on_sweep"]
    assert fn["build_config"][0]["entry_point"] == "on_sweep"
    [trigger] = fn["event_trigger"]
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert trigger["pubsub_topic"] == "${google_pubsub_topic.sweep.id}"
    # The same settings as the trigger, so it sees the same status store and wait.
    assert fn["service_config"][0]["environment_variables"] == "${local.function_env}"


def check_work_bucket(folder: Path) -> None:
    """Internal objects go to a bucket of their own that no trigger watches; what a failed job
    leaves there is deleted after a while, the output claims are not; the inbox keeps only
    the rule for XML multipart uploads (a JSON API resumable upload never finalised is no
    object: nothing to delete)."""
    infra = load(folder)
    buckets = infra["resource.google_storage_bucket"]
    work = buckets["work"]
    [rule] = work["lifecycle_rule"]
    assert rule["action"][0]["type"] == "Delete"
    assert rule["condition"][0]["matches_prefix"] == ["${var.inbox_bucket}/jobs/"]
    assert rule["condition"][0]["age"] == "${var.leftover_parts_days}"
    [inbox_rule] = buckets["inbox"]["lifecycle_rule"]
    assert inbox_rule["action"][0]["type"] == "AbortIncompleteMultipartUpload"
    for name, fn in infra["resource.google_cloudfunctions2_function"].items():
        for trigger in fn.get("event_trigger", []):
            values = [f["value"] for f in trigger.get("event_filters", [])]
            assert "${google_storage_bucket.work.name}" not in values, name
    env = infra["resource.google_cloudfunctions2_function"]["on_inbox_object"]
    assert env["service_config"][0]["environment_variables"] == "${local.function_env}"
    text = (folder / "functions.tf").read_text()
    assert re.search(r"DROPBATCH_WORK_BUCKET +=\s*google_storage_bucket\.work\.name\n", text)


def check_image(folder: Path) -> None:
    text = (folder / "functions.tf").read_text()
    [image] = re.findall(r"^\s*image\s*=\s*(.+)$", text, re.M)
    assert image.endswith('"${local.repository}@${var.image_digest}"'), image
    assert re.search(r"DROPBATCH_IMAGE +=\s*local\.image\n", text)
    variables = (folder / "variables.tf").read_text()
    assert 'regex("^sha256:[0-9a-f]{64}$", var.image_digest)' in variables
    inbox = load(folder)["resource.google_cloudfunctions2_function"]["on_inbox_object"]
    conditions = [p["condition"] for p in inbox["lifecycle"][0]["precondition"]]
    assert "${var.image_digest != null}" in conditions


def test_functions_build_as_a_dedicated_builder_account(infra: dict) -> None:
    check_builder(infra)


def test_resources_wait_for_their_apis_and_triggers_for_their_grants(infra: dict) -> None:
    check_ordering(infra)


def test_a_scheduler_sweeps_expired_waiting_manifests(infra: dict) -> None:
    from dropbatch.build_function import FUNCTIONS as BUILT
    from triggers import main as trigger_main

    check_sweep(infra)
    assert '"cloudscheduler.googleapis.com"' in (INFRA / "apis.tf").read_text()
    assert set(BUILT) == set(FUNCTIONS)
    assert all(callable(getattr(trigger_main, name)) for name in FUNCTIONS)


def test_internal_objects_go_to_an_unwatched_work_bucket() -> None:
    check_work_bucket(INFRA)


def test_the_task_image_is_referenced_by_digest() -> None:
    check_image(INFRA)


def _remove_block(text: str, header: str) -> str:
    """`text` without the top-level block opening with `header` (up to its closing brace)."""
    start = text.index(header)
    end = text.index("\n}\n", start) + 3
    return text[:start] + text[end:]


def _remove_line(text: str, line: str) -> str:
    assert line in text
    return text.replace(line + "\n", "", 1)


MUTATIONS = {
    "builder account dropped from a build": (
        "functions.tf",
        lambda t: _remove_line(t, "    service_account = google_service_account.builder.id"),
        "builder",
    ),
    "builder waits no longer for its roles": (
        "functions.tf",
        lambda t: _remove_line(t, "    time_sleep.builder_roles_propagate,"),
        "builder",
    ),
    "builder role removed": (
        "iam.tf",
        lambda t: _remove_block(
            t, 'resource "google_project_iam_member" "builder_pushes_images"'
        ).replace("    google_project_iam_member.builder_pushes_images,\n", ""),
        "iam",
    ),
    "job creator's topic grant removed": (
        "iam.tf",
        lambda t: _remove_block(
            t, 'resource "google_pubsub_topic_iam_member" "function_edits_batch_state"'
        ),
        "iam",
    ),
    "job creator only a publisher on the topic": (
        "iam.tf",
        lambda t: t.replace(
            '  role   = "roles/pubsub.editor"\n  member = local.function_member',
            '  role   = "roles/pubsub.publisher"\n  member = local.function_member',
        ),
        "iam",
    ),
    "job creator an editor of every topic in the project": (
        "iam.tf",
        lambda t: t.replace(
            'resource "google_pubsub_topic_iam_member" "function_edits_batch_state" {\n'
            "  topic  = google_pubsub_topic.batch_state.id\n",
            'resource "google_project_iam_member" "function_edits_batch_state" {\n'
            "  project = var.project_id\n",
        ),
        "iam",
    ),
    "operators not granted the topic": (
        "iam.tf",
        lambda t: _remove_block(
            t, 'resource "google_pubsub_topic_iam_member" "operators_edit_batch_state"'
        ),
        "iam",
    ),
    "invoker granted after the functions": (
        "functions.tf",
        lambda t: _remove_line(t, "    google_project_iam_member.function_invokes_functions,"),
        "ordering",
    ),
    "service account not waiting for the IAM API": (
        "iam.tf",
        lambda t: t.replace(
            '  display_name = "dropbatch Batch task VMs"\n'
            "  depends_on   = [google_project_service.apis]\n",
            '  display_name = "dropbatch Batch task VMs"\n',
        ),
        "ordering",
    ),
    "function not waiting for the APIs": (
        "functions.tf",
        lambda t: _remove_line(t, "    google_project_service.apis,"),
        "ordering",
    ),
    "scheduler removed": (
        "data.tf",
        lambda t: _remove_block(t, 'resource "google_cloud_scheduler_job" "sweep"'),
        "sweep",
    ),
    "work bucket's leftovers never deleted": (
        "storage.tf",
        lambda t: t.replace(
            'matches_prefix = ["${var.inbox_bucket}/jobs/"]', "matches_prefix = []"
        ),
        "work",
    ),
    "claims deleted by the leftover rule": (
        "storage.tf",
        lambda t: t.replace('["${var.inbox_bucket}/jobs/"]', '["${var.inbox_bucket}/"]'),
        "work",
    ),
    "work bucket not given to the functions": (
        "functions.tf",
        lambda t: _remove_line(
            t, "    DROPBATCH_WORK_BUCKET             = google_storage_bucket.work.name"
        ),
        "work",
    ),
    "tasks cannot write parts": (
        "iam.tf",
        lambda t: _remove_block(t, 'resource "google_storage_bucket_iam_member" "job_writes_work"'),
        "iam",
    ),
    "image by tag": (
        "functions.tf",
        lambda t: t.replace("@${var.image_digest}", ":latest"),
        "image",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_check_fails_when_its_piece_is_removed(tmp_path: Path, mutation: str) -> None:
    filename, mutate, check = MUTATIONS[mutation]
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy, ignore=shutil.ignore_patterns(".terraform", ".build"))
    before = (copy / filename).read_text()
    after = mutate(before)
    assert after != before
    (copy / filename).write_text(after)
    run = {
        "builder": lambda: check_builder(load(copy)),
        "iam": lambda: check_iam(load(copy)),
        "ordering": lambda: check_ordering(load(copy)),
        "sweep": lambda: check_sweep(load(copy)),
        "image": lambda: check_image(copy),
        "work": lambda: check_work_bucket(copy),
    }[check]
    with pytest.raises((AssertionError, KeyError)):
        run()


def test_planning_deadline_fits_inside_the_inbox_functions_timeout(infra: dict) -> None:
    """The trigger must record PLANNING_TIMEOUT before Cloud Functions stops it: the deadline
    reaches the function (with the setting's own default) and sits under its timeout."""
    from core.config import Settings

    with open(INFRA / "variables.tf") as handle:
        variables = {
            name: attrs
            for block in _clean(hcl2.load(handle))["variable"]
            for name, attrs in block.items()
        }
    with open(INFRA / "functions.tf") as handle:
        [locals_] = _clean(hcl2.load(handle))["locals"]
    fn = infra["resource.google_cloudfunctions2_function"]["on_inbox_object"]
    assert fn["service_config"][0]["timeout_seconds"] == "${local.inbox_function_timeout}"
    timeout = locals_["inbox_function_timeout"]
    for name, unit in (("trigger_deadline_seconds", 1), ("queued_timeout_minutes", 1)):
        default = Settings.model_fields[name].default
        assert variables[name]["default"] == default / unit, name
        assert f"DROPBATCH_{name.upper()} " in (INFRA / "functions.tf").read_text()
    deadline = variables["trigger_deadline_seconds"]["default"]
    assert 0 < deadline <= timeout - 30, (deadline, timeout)
    conditions = [p["condition"] for p in fn["lifecycle"][0]["precondition"]]
    assert any(
        "var.trigger_deadline_seconds" in c and "inbox_function_timeout" in c for c in conditions
    )
