"""What each of the deployment's service accounts needs, checked against the IAM policies that
grant it: `dropbatch doctor --canary` runs this before uploading anything.

`testIamPermissions` answers for the caller only, so it cannot say what another account may
do. Instead the doctor reads the policies (the buckets', the notification topic's, the job
account's and the project's, which every resource inherits) and looks, for each need, for a
binding of the account to a role that grants it, evaluating the `resource.name` conditions
infra/iam.tf uses against the object names the account really writes
(docs/decisions/0099-doctor-reads-policies.md). A grant on a folder or the organisation, or
through a group or a custom role, is not seen: the canary that follows is the proof either way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import Settings
from core.status.model import CheckResult

# Predefined roles that hold each permission we need (basic roles included: a project's
# Owner or Editor binding works too). Custom roles are not expanded.
_OBJECT_READ = {
    "roles/storage.objectViewer",
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
    "roles/storage.admin",
    "roles/owner",
    "roles/editor",
    "roles/viewer",
}
_OBJECT_WRITE = {
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
    "roles/storage.admin",
    "roles/owner",
    "roles/editor",
}
GRANTED_BY: dict[str, frozenset[str]] = {
    "storage.objects.get": frozenset(_OBJECT_READ | {"roles/storage.legacyObjectReader"}),
    "storage.objects.list": frozenset(_OBJECT_READ | {"roles/storage.legacyBucketReader"}),
    # Replacing an object (a status file, a claim) needs delete as well as create.
    "storage.objects.create": frozenset(_OBJECT_WRITE),
    "storage.objects.delete": frozenset(_OBJECT_WRITE),
    "pubsub.topics.publish": frozenset(
        {
            "roles/pubsub.publisher",
            "roles/pubsub.editor",
            "roles/pubsub.admin",
            "roles/owner",
            "roles/editor",
        }
    ),
    # Batch's "enable notifications" page asks roles/pubsub.editor on the topic of whoever
    # creates a job that notifies it; publisher alone is not what it documents.
    "batch notifications (creator)": frozenset(
        {"roles/pubsub.editor", "roles/pubsub.admin", "roles/owner", "roles/editor"}
    ),
    "batch.jobs.create": frozenset(
        {"roles/batch.jobsEditor", "roles/batch.admin", "roles/owner", "roles/editor"}
    ),
    "iam.serviceAccounts.actAs": frozenset(
        {"roles/iam.serviceAccountUser", "roles/owner", "roles/editor"}
    ),
    "datastore.entities.update": frozenset(
        {"roles/datastore.user", "roles/datastore.owner", "roles/owner", "roles/editor"}
    ),
    "logging.logEntries.create": frozenset(
        {"roles/logging.logWriter", "roles/logging.admin", "roles/owner", "roles/editor"}
    ),
    "eventarc.events.receiveEvent": frozenset(
        {"roles/eventarc.eventReceiver", "roles/eventarc.admin", "roles/owner"}
    ),
    "run.routes.invoke": frozenset({"roles/run.invoker", "roles/run.admin", "roles/owner"}),
    "batch.states.report": frozenset(
        {"roles/batch.agentReporter", "roles/batch.admin", "roles/owner", "roles/editor"}
    ),
    "artifactregistry.repositories.uploadArtifacts": frozenset(
        {
            "roles/artifactregistry.writer",
            "roles/artifactregistry.repoAdmin",
            "roles/artifactregistry.admin",
            "roles/owner",
            "roles/editor",
        }
    ),
}


@dataclass(frozen=True)
class Need:
    """One permission an account needs on one resource, why, and the role infra/ grants."""

    permission: str
    resource: str  # "gs://B", "topic", "project", "job-account"
    why: str
    role: str  # the grant that gives it (infra/iam.tf's)
    sample: str = ""  # an object name the grant must cover (checked against conditions)


@dataclass(frozen=True)
class Account:
    label: str  # "function account"
    email: str
    needs: tuple[Need, ...]


@dataclass
class Binding:
    role: str
    members: frozenset[str]
    condition: str = ""  # the CEL expression, "" when unconditional


@dataclass
class Deployment:
    """The names the needs are about."""

    project: str
    inbox: str
    work: str  # "" when internal objects live in the inbox
    models: str  # "" when the model store is not a bucket
    topic: str  # projects/P/topics/T, "" when not set
    job_account: str
    function_account: str
    builder_account: str


def accounts(d: Deployment) -> list[Account]:
    """The table: each account's needs, as infra/iam.tf grants them (README, deploy)."""
    inbox, work = f"gs://{d.inbox}", f"gs://{d.work or d.inbox}"
    claim = f"{d.inbox}/outputs/0.json" if d.work else "_dropbatch/outputs/0.json"
    function = [
        Need("storage.objects.get", inbox, "read uploads", "roles/storage.objectViewer"),
        Need(
            "storage.objects.list", inbox, "find a folder's manifests", "roles/storage.objectViewer"
        ),
        Need(
            "storage.objects.create",
            inbox,
            "write status files",
            'roles/storage.objectUser (if resource.name.endsWith(".status.json"))',
            "_doctor/x.status.json",
        ),
        Need(
            "storage.objects.delete",
            inbox,
            "replace status files",
            'roles/storage.objectUser (if resource.name.endsWith(".status.json"))',
            "_doctor/x.status.json",
        ),
        Need(
            "storage.objects.create",
            work,
            "claim output names",
            "roles/storage.objectUser (if on the claims folder)",
            claim,
        ),
        Need(
            "storage.objects.get",
            work,
            "read output claims",
            "roles/storage.objectUser (if on the claims folder)",
            claim,
        ),
        Need("batch.jobs.create", "project", "create Batch jobs", "roles/batch.jobsEditor"),
        Need(
            "iam.serviceAccounts.actAs",
            "job-account",
            "run jobs as the job account",
            "roles/iam.serviceAccountUser",
        ),
        Need("datastore.entities.update", "project", "write job records", "roles/datastore.user"),
        Need("logging.logEntries.create", "project", "write logs", "roles/logging.logWriter"),
        Need(
            "eventarc.events.receiveEvent",
            "project",
            "receive storage events",
            "roles/eventarc.eventReceiver",
        ),
        Need("run.routes.invoke", "project", "be invoked by its triggers", "roles/run.invoker"),
    ]
    job = [
        Need("storage.objects.get", inbox, "read inputs", "roles/storage.objectUser"),
        Need(
            "storage.objects.create",
            inbox,
            "write outputs and status files",
            "roles/storage.objectUser",
            "_doctor/out/x.mp4",
        ),
        Need(
            "storage.objects.delete",
            inbox,
            "replace outputs",
            "roles/storage.objectUser",
            "_doctor/out/x.mp4",
        ),
        Need(
            "storage.objects.create",
            work,
            "write chunk parts",
            "roles/storage.objectUser",
            f"{d.inbox}/jobs/x/parts/0000/part-00000.mp4",
        ),
        Need("storage.objects.list", work, "list chunk parts", "roles/storage.objectUser"),
        Need(
            "storage.objects.delete",
            work,
            "delete chunk parts",
            "roles/storage.objectUser",
            f"{d.inbox}/jobs/x/parts/0000/part-00000.mp4",
        ),
        Need("datastore.entities.update", "project", "write progress", "roles/datastore.user"),
        Need("logging.logEntries.create", "project", "write logs", "roles/logging.logWriter"),
        Need("batch.states.report", "project", "report to Batch", "roles/batch.agentReporter"),
    ]
    if d.models:
        models = f"gs://{d.models}"
        function.append(
            Need(
                "storage.objects.get", models, "check the model store", "roles/storage.objectViewer"
            )
        )
        job.append(
            Need("storage.objects.get", models, "fetch models", "roles/storage.objectViewer")
        )
    if d.topic:
        function.append(
            Need(
                "batch notifications (creator)",
                "topic",
                "create jobs that notify the topic",
                "roles/pubsub.editor",
            )
        )
        job.append(
            Need(
                "pubsub.topics.publish",
                "topic",
                "publish Batch's state notifications",
                "roles/pubsub.publisher",
            )
        )
    builder = [
        Need("logging.logEntries.create", "project", "write build logs", "roles/logging.logWriter"),
        Need(
            "artifactregistry.repositories.uploadArtifacts",
            "project",
            "push the functions' images",
            "roles/artifactregistry.writer",
        ),
        Need(
            "storage.objects.get",
            "project",
            "read the functions' staged source",
            "roles/storage.objectAdmin",
        ),
    ]
    return [
        Account("function account", d.function_account, tuple(function)),
        Account("job account", d.job_account, tuple(job)),
        Account("builder account", d.builder_account, tuple(builder)),
    ]


# -- conditions ------------------------------------------------------------------------------
_CALL = re.compile(r'^resource\.name\.(startsWith|endsWith)\("((?:[^"\\]|\\.)*)"\)$')


def condition_allows(expression: str, resource_name: str) -> bool | None:
    """Whether a binding's condition holds for `resource_name` (None: a form we do not
    evaluate). Covers the forms infra/iam.tf writes: one startsWith or endsWith call on
    resource.name, and `||`/`&&` of them."""
    expression = expression.strip()
    if not expression:
        return True
    for operator, combine in (("||", any), ("&&", all)):
        if operator in expression:
            parts = [condition_allows(p, resource_name) for p in expression.split(operator)]
            return None if None in parts else combine(parts)
    match = _CALL.match(expression)
    if match is None:
        return None
    text = match.group(2).encode().decode("unicode_escape")
    return (
        resource_name.startswith(text)
        if match.group(1) == "startsWith"
        else (resource_name.endswith(text))
    )


# -- policies --------------------------------------------------------------------------------
PolicyReader = Callable[[str], list[Binding]]  # resource key → its bindings (raises on error)


def parse_bindings(policy: dict) -> list[Binding]:
    """An IAM policy's JSON (`bindings` of role, members, condition.expression)."""
    return [
        Binding(
            role=str(b.get("role", "")),
            members=frozenset(b.get("members") or ()),
            condition=str((b.get("condition") or {}).get("expression", "")),
        )
        for b in policy.get("bindings") or []
    ]


@dataclass
class PolicyReaders:
    """Reads each kind of resource's policy over Google's APIs (or the stand-in's)."""

    settings: Settings
    _session: object = field(default=None, repr=False)

    def _base(self, api: str) -> str:
        if self.settings.iam_emulator_host:  # a local stand-in: plaintext, no credentials
            return f"http://{self.settings.iam_emulator_host}"
        return f"https://{api}.googleapis.com"

    def _request(self, method: str, url: str, body: dict | None = None) -> dict:
        if self.settings.iam_emulator_host:
            import requests

            response = requests.request(method, url, json=body, timeout=30)
        else:
            if self._session is None:
                import google.auth
                from google.auth.transport.requests import AuthorizedSession

                credentials, _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
                self._session = AuthorizedSession(credentials)
            response = self._session.request(method, url, json=body, timeout=30)  # type: ignore[attr-defined]
        if response.status_code != 200:
            raise PermissionError(f"HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def read(self, key: str) -> list[Binding]:
        """`gs://B`, `projects/P/topics/T`, `projects/P`, `projects/P/serviceAccounts/E`."""
        options = {"options": {"requestedPolicyVersion": 3}}
        if key.startswith("gs://"):
            from core.storage.gcs import GcsStore

            client = GcsStore(project=self.settings.project or None).client
            policy = client.bucket(key.removeprefix("gs://")).get_iam_policy(
                requested_policy_version=3
            )
            return parse_bindings(policy.to_api_repr())
        if "/topics/" in key:
            # Pub/Sub's getIamPolicy takes the options in the query, as a GET.
            url = f"{self._base('pubsub')}/v1/{key}:getIamPolicy?options.requestedPolicyVersion=3"
            return parse_bindings(self._request("GET", url))
        if "/serviceAccounts/" in key:
            url = f"{self._base('iam')}/v1/{key}:getIamPolicy"
            return parse_bindings(self._request("POST", url, {}))
        url = f"{self._base('cloudresourcemanager')}/v1/{key}:getIamPolicy"
        return parse_bindings(self._request("POST", url, options))


# -- the check -------------------------------------------------------------------------------
def _resource_key(need: Need, d: Deployment) -> str:
    if need.resource == "topic":
        return d.topic
    if need.resource == "job-account":
        return f"projects/{d.project}/serviceAccounts/{d.job_account}"
    if need.resource == "project":
        return f"projects/{d.project}"
    return need.resource


def _condition_target(need: Need, key: str) -> str:
    """The resource name a condition sees: an object's full name for a bucket's needs."""
    if key.startswith("gs://") and need.sample:
        return f"projects/_/buckets/{key.removeprefix('gs://')}/objects/{need.sample}"
    if key.startswith("gs://"):
        return f"projects/_/buckets/{key.removeprefix('gs://')}"
    return key


def holds(member: str, need: Need, bindings: list[Binding], target: str) -> tuple[bool, list[str]]:
    """(whether a binding grants the need to member, conditions we could not evaluate)."""
    unknown = []
    for binding in bindings:
        if member not in binding.members or binding.role not in GRANTED_BY[need.permission]:
            continue
        allowed = condition_allows(binding.condition, target)
        if allowed:
            return True, []
        if allowed is None:
            unknown.append(binding.condition)
    return False, unknown


def grant_command(need: Need, key: str, email: str) -> str:
    role = need.role.split(" ", 1)[0]
    member = f"serviceAccount:{email}"
    if key.startswith("gs://"):
        return (
            f"gcloud storage buckets add-iam-policy-binding {key} --member={member} --role={role}"
        )
    if "/topics/" in key:
        return f"gcloud pubsub topics add-iam-policy-binding {key} --member={member} --role={role}"
    if "/serviceAccounts/" in key:
        account = key.rsplit("/", 1)[1]
        return (
            f"gcloud iam service-accounts add-iam-policy-binding {account} --member={member} "
            f"--role={role}"
        )
    project = key.removeprefix("projects/")
    return f"gcloud projects add-iam-policy-binding {project} --member={member} --role={role}"


def check_access(d: Deployment, read: PolicyReader) -> list[CheckResult]:
    """One line per account that holds all it needs; one per missing need otherwise."""
    results: list[CheckResult] = []
    cache: dict[str, list[Binding] | Exception] = {}

    def policy(key: str) -> list[Binding] | Exception:
        if key not in cache:
            try:
                cache[key] = read(key)
            except Exception as exc:
                cache[key] = exc
        return cache[key]

    project_key = f"projects/{d.project}"
    for account in accounts(d):
        if not account.email:
            results.append(
                CheckResult(
                    name=account.label,
                    ok=False,
                    detail="not named",
                    fix="pass its e-mail (terraform output)",
                )
            )
            continue
        member = f"serviceAccount:{account.email}"
        missing: list[CheckResult] = []
        for need in account.needs:
            key = _resource_key(need, d)
            target = _condition_target(need, key)
            keys = [key] if key == project_key else [key, project_key]  # inherited from above
            found, unknown, unread = False, [], []
            for k in keys:
                got = policy(k)
                if isinstance(got, Exception):
                    unread.append(f"{k}: {got}")
                    continue
                ok, conditions = holds(member, need, got, target)
                found = found or ok
                unknown += conditions
            if found:
                continue
            where = key if key.startswith("gs://") else key.replace(f"{project_key}/", "")
            detail = f"lacks {need.permission} on {where} ({need.why})"
            if unread:
                detail += "; policy unreadable: " + "; ".join(unread)
                fix = (
                    "run the doctor as an account that may read IAM policies (Owner, or "
                    "roles/iam.securityReviewer), or check the grant by hand: "
                    + grant_command(need, key, account.email)
                )
            else:
                if unknown:
                    detail += f"; a condition the doctor does not evaluate: {unknown[0]}"
                fix = (
                    f"grant {need.role} to {member} (terraform -chdir=infra apply, or "
                    f"{grant_command(need, key, account.email)})"
                )
            missing.append(CheckResult(name=account.label, ok=False, detail=detail, fix=fix))
        if missing:
            results.extend(missing)
        else:
            results.append(
                CheckResult(
                    name=account.label,
                    ok=True,
                    detail=f"{account.email} holds its {len(account.needs)} grants",
                )
            )
    return results
