"""A local stand-in for the Cloud Batch API: a gRPC server for
`google.cloud.batch.v1.BatchService` (CreateJob, GetJob, ListTasks, DeleteJob) speaking the
package's own message types, so the real `BatchServiceClient` talks to it over loopback. A
held job can be given the status events Batch adds to a job it cannot start (`report`).

It keeps every CreateJobRequest that reached the wire, and (unless told not to) runs each job
the way Batch would: the Job's own container command and environment, its task count,
parallelism, max_retry_count and RETRY_TASK exit codes, handed to the local executor as the
"VMs". Job state changes become Batch-style Pub/Sub notifications (attributes JobUID, JobName,
NewJobState, Type) passed to `on_notification`, which tests wire to the `on_batch_state`
function.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path

import grpc
from cloudevents.http import CloudEvent
from google.cloud import batch_v1
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from batch_jobs.ids import JOB_ID_RE
from batch_jobs.local_executor import LocalExecutor

SERVICE = "google.cloud.batch.v1.BatchService"
PUBSUB_EVENT = "google.cloud.pubsub.topic.v1.messagePublished"
State = batch_v1.JobStatus.State
TaskState = batch_v1.TaskStatus.State

Notification = Callable[[CloudEvent], None]


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def pubsub_event(topic: str, attributes: dict[str, str], text: str) -> CloudEvent:
    """The CloudEvent Eventarc delivers for a Pub/Sub message (data base64, as on the wire)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    message_id = uuid.uuid4().hex
    return CloudEvent(
        {
            "type": PUBSUB_EVENT,
            "source": f"//pubsub.googleapis.com/{topic}",
            "id": message_id,
            "time": now,
        },
        {
            "message": {
                "attributes": attributes,
                "data": base64.b64encode(text.encode()).decode(),
                "messageId": message_id,
                "publishTime": now,
            },
            "subscription": f"{topic.replace('/topics/', '/subscriptions/')}-reconcile",
        },
    )


class BatchStandin:
    def __init__(
        self,
        *,
        run_jobs: bool = True,
        hold: bool = False,
        on_notification: Notification | None = None,
        python: str = sys.executable,
        vm_env: dict[str, str] | None = None,
        volume_root: Path | None = None,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.run_jobs = run_jobs
        # Where the "VMs'" host folders (the Job's container volumes) live.
        self.volume_root = volume_root or Path(tempfile.mkdtemp(prefix="batch-standin-volumes-"))
        self.mounts: dict[str, Path] = {}  # container path -> the folder standing in for it
        # Jobs wait in SCHEDULED (as for VMs) until `release` is set.
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.on_notification = on_notification
        self.python = python  # what the image's `python` is on these "VMs"
        # What a real VM has that no Job carries: credentials, or here emulator hosts
        # (STORAGE_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST) when the backends are emulated.
        self.vm_env = dict(vm_env or {})
        # Cleared: CreateJob calls wait before acting (an in-flight create whose caller can die).
        self.admit_creates = threading.Event()
        self.admit_creates.set()
        self.creates_arrived = 0
        self.requests: list[batch_v1.CreateJobRequest] = []  # every CreateJob on the wire
        self.jobs: dict[str, batch_v1.Job] = {}
        self.deletes: list[batch_v1.DeleteJobRequest] = []  # every DeleteJob on the wire
        self.notifications: list[CloudEvent] = []
        self._request_ids: dict[str, str] = {}
        self._executors: dict[str, LocalExecutor] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.endpoint = ""
        # (private key, certificate chain) PEM: serve TLS, as a real or private endpoint does.
        self.tls = tls
        self.metadata: list[dict[str, str]] = []  # each call's request metadata, in order

    # -- server --------------------------------------------------------------------------
    def start(self) -> str:
        # Each method: its handler, its request type, how its response is written.
        methods = {
            "CreateJob": (self.create_job, batch_v1.CreateJobRequest, batch_v1.Job.serialize),
            "GetJob": (self.get_job, batch_v1.GetJobRequest, batch_v1.Job.serialize),
            "ListTasks": (
                self.list_tasks,
                batch_v1.ListTasksRequest,
                batch_v1.ListTasksResponse.serialize,
            ),
            "DeleteJob": (
                self.delete_job,
                batch_v1.DeleteJobRequest,
                operations_pb2.Operation.SerializeToString,
            ),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                behavior, request_deserializer=request.deserialize, response_serializer=write
            )
            for name, (behavior, request, write) in methods.items()
        }
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        if self.tls:
            credentials = grpc.ssl_server_credentials([self.tls])
            port = self._server.add_secure_port("127.0.0.1:0", credentials)
            self.endpoint = f"localhost:{port}"  # the name the certificate is for
        else:
            port = self._server.add_insecure_port("127.0.0.1:0")
            self.endpoint = f"127.0.0.1:{port}"
        self._server.start()
        return self.endpoint

    def stop(self) -> None:
        self.wait_all(timeout=300)
        if self._server is not None:
            self._server.stop(grace=2).wait()

    def wait(self, name: str, timeout: float = 300) -> batch_v1.Job:
        thread = self._threads.get(name)
        if thread is not None:
            thread.join(timeout)
            assert not thread.is_alive(), f"batch job {name} still running after {timeout} s"
        return self.jobs[name]

    def wait_all(self, timeout: float = 300) -> None:
        for thread in list(self._threads.values()):
            thread.join(timeout)

    # -- BatchService --------------------------------------------------------------------
    def create_job(
        self, request: batch_v1.CreateJobRequest, context: grpc.ServicerContext
    ) -> batch_v1.Job:
        if not JOB_ID_RE.match(request.job_id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"job_id {request.job_id!r}")
        if len(batch_v1.Job.serialize(request.job)) >= 1 << 20:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job definition over 1 MB")
        name = f"{request.parent}/jobs/{request.job_id}"
        self.creates_arrived += 1
        self.admit_creates.wait(600)
        with self._lock:
            self.requests.append(request)
            if name in self.jobs:
                # A repeated request id is the same request again (Batch answers it as before).
                if request.request_id and self._request_ids.get(name) == request.request_id:
                    return self.jobs[name]
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"job {name} already exists")
            job = batch_v1.Job(request.job)
            job.name = name
            job.uid = f"{request.job_id[:40]}-{uuid.uuid4().hex[:8]}"
            job.create_time = _now()
            job.status = batch_v1.JobStatus(state=State.QUEUED)
            self.jobs[name] = job
            self._request_ids[name] = request.request_id
        self._change(name, State.QUEUED, "Job state is set to QUEUED")
        if self.run_jobs:
            thread = threading.Thread(target=self._run, args=(name,), name=f"standin-{name}")
            self._threads[name] = thread
            thread.start()
        return self.jobs[name]

    def get_job(
        self, request: batch_v1.GetJobRequest, context: grpc.ServicerContext
    ) -> batch_v1.Job:
        self.metadata.append(dict(context.invocation_metadata()))
        job = self.jobs.get(request.name)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.name} not found")
        return job

    def list_tasks(
        self, request: batch_v1.ListTasksRequest, context: grpc.ServicerContext
    ) -> batch_v1.ListTasksResponse:
        job_name = request.parent.split("/taskGroups/")[0]
        job = self.jobs.get(job_name)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_name} not found")
        executor = self._executors.get(job_name)
        done = {o.index: o for o in executor.outcomes} if executor else {}
        tasks = []
        for index in range(job.task_groups[0].task_count):
            outcome = done.get(index)
            if outcome is None:
                state = TaskState.RUNNING if executor else TaskState.PENDING
                events = []
            else:
                state = TaskState.SUCCEEDED if outcome.exit_code == 0 else TaskState.FAILED
                events = [
                    batch_v1.StatusEvent(
                        type_="STATUS_CHANGED",
                        description=f"Task state is updated to {state.name} "
                        f"with exit code {outcome.exit_code}",
                        task_execution=batch_v1.TaskExecution(exit_code=outcome.exit_code),
                        task_state=state,
                    )
                ]
            tasks.append(
                batch_v1.Task(
                    name=f"{request.parent}/tasks/{index}",
                    status=batch_v1.TaskStatus(state=state, status_events=events),
                )
            )
        return batch_v1.ListTasksResponse(tasks=tasks)

    def delete_job(
        self, request: batch_v1.DeleteJobRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        self.deletes.append(request)
        if request.name not in self.jobs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.name} not found")
        self._change(request.name, State.DELETION_IN_PROGRESS, "Job is being deleted")
        with self._lock:
            del self.jobs[request.name]
        response = any_pb2.Any()
        response.Pack(empty_pb2.Empty())
        return operations_pb2.Operation(
            name=f"{request.name}/operations/delete", done=True, response=response
        )

    # -- what Batch says of a job it cannot start ----------------------------------------
    def report(
        self, name: str, description: str, type_: str = "", state: State | None = None
    ) -> None:
        """A status event Batch adds to a job it holds (run with `hold`): no quota keeps the
        job QUEUED with an event saying so, no notification; with `state` (SCHEDULED: the VMs
        it asked for never come) the job moves there, notified as Batch does."""
        if state is not None:
            self._change(
                name,
                state,
                f"Job state is set from {self.jobs[name].status.state.name}"
                f" to {state.name} for job {name}.",
            )
        job = self.jobs[name]
        job.status.status_events.append(
            batch_v1.StatusEvent(type_=type_, description=description, event_time=_now())
        )
        job.update_time = _now()

    # -- running a job -------------------------------------------------------------------
    def _mounted(self, env: dict[str, str], volumes: list[str]) -> dict[str, str]:
        """A VM mounts each host folder at its container path; here each gets a folder of
        its own, and variables naming a container path name that folder instead."""
        for volume in volumes:
            host, _, inside = volume.partition(":")
            local = self.volume_root / host.strip("/").replace("/", "_")
            local.mkdir(parents=True, exist_ok=True)
            self.mounts[inside] = local
            env = {k: str(local) if v == inside else v for k, v in env.items()}
        return env

    def _run(self, name: str) -> None:
        self.release.wait(600)
        job = self.jobs.get(name)
        if job is None:
            return  # deleted before its VMs started
        group = job.task_groups[0]
        spec = group.task_spec
        # Script runnables set up the VM itself (folders, owners): not ours to run on this
        # machine. The container runnable is the task.
        container = next(r.container for r in spec.runnables if r.container.image_uri)
        command = [container.entrypoint, *container.commands] if container.entrypoint else []
        command = [self.python if part == "python" else part for part in command]
        retry_codes: frozenset[int] | None = None
        for policy in spec.lifecycle_policies:
            if policy.action == batch_v1.LifecyclePolicy.Action.RETRY_TASK:
                retry_codes = frozenset(policy.action_condition.exit_codes)
        # The container's environment: the Job's variables on a bare base, not ours.
        base_env = {
            k: os.environ[k] for k in ("PATH", "HOME", "LANG", "PYTHONPATH") if k in os.environ
        }
        base_env.update(self.vm_env)
        executor = LocalExecutor(
            job_name=name,
            task_count=group.task_count,
            parallelism=group.parallelism,
            max_retries=spec.max_retry_count,
            env=self._mounted(dict(spec.environment.variables), container.volumes),
            command=command,
            notify=lambda _name, state, _reason: self._engine_state(name, state),
            retry_exit_codes=retry_codes,
            base_env=base_env,
        )
        self._executors[name] = executor
        executor.run()

    def _engine_state(self, name: str, state: str) -> None:
        new = State[state]
        if new in (State.SUCCEEDED, State.FAILED):
            self._count_tasks(name)
        if new == State.FAILED:
            failed = sorted(
                (o for o in self._executors[name].outcomes if o.exit_code != 0),
                key=lambda o: o.index,
            )
            first = failed[0]
            detail = (
                f"{len(failed)} task(s) failed; task {first.index} exited with code "
                f"{first.exit_code} after {first.attempts} attempt(s)"
            )
        else:
            detail = ""
        previous = self.jobs[name].status.state.name
        self._change(name, new, f"Job state is set from {previous} to {new.name}. {detail}".strip())

    def _count_tasks(self, name: str) -> None:
        outcomes = self._executors[name].outcomes
        counts = {
            "SUCCEEDED": sum(o.exit_code == 0 for o in outcomes),
            "FAILED": sum(o.exit_code != 0 for o in outcomes),
        }
        job = self.jobs[name]
        job.status.task_groups["group0"] = batch_v1.JobStatus.TaskGroupStatus(
            counts={k: v for k, v in counts.items() if v}
        )

    def _change(self, name: str, state: State, description: str) -> None:
        job = self.jobs[name]
        job.status.state = state
        job.status.status_events.append(
            batch_v1.StatusEvent(type_="STATUS_CHANGED", description=description, event_time=_now())
        )
        job.update_time = _now()
        for notification in job.notifications:
            wanted = notification.message
            if wanted.type_ != batch_v1.JobNotification.Type.JOB_STATE_CHANGED:
                continue
            if wanted.new_job_state and wanted.new_job_state != state:
                continue
            event = pubsub_event(
                notification.pubsub_topic,
                {
                    "JobUID": job.uid,
                    "JobName": name.rsplit("/", 1)[-1],
                    "NewJobState": state.name,
                    "Type": "JOB_STATE_CHANGED",
                    "Region": name.split("/locations/")[1].split("/")[0],
                },
                description,
            )
            self.notifications.append(event)
            if self.on_notification is not None:
                self.on_notification(event)
        time.sleep(0)  # let a waiting reader see each state
