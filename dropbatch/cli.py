"""The `dropbatch` command: validate, run, serve, submit, status, jobs, demo, schema, models,
doctor, cost."""

from __future__ import annotations

import argparse
import json
import logging
import mimetypes
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from core.config import ConfigFileError, Settings, load_settings
from core.status.base import StatusStore
from core.status.costs import pool_costs, vm_time
from core.status.model import TERMINAL_STATES, JobRecord, JobState
from core.storage.base import split_gs_uri
from dropbatch.inbox import (
    LocalInbox,
    find_inbox,
    inboxes_near,
    is_inbox,
    legacy_store,
)
from dropbatch.local_run import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    _inbox_settings,
    _manifest_models,
    local_intake,
    progress_line,
    report,
    run_manifest,
    watch,
)


# -- validate ------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from batch_jobs.containment import unreadable_manifest
    from manifests.loader import MAX_MANIFEST_BYTES, ManifestInvalid, load_manifest
    from manifests.model import MAX_INPUTS
    from manifests.resolve import resolve_inputs

    path = Path(args.file)
    errors = []
    try:
        with path.open("rb") as file:  # one byte over the limit is enough to refuse it
            manifest = load_manifest(file.read(MAX_MANIFEST_BYTES + 1))
    except OSError as exc:  # missing, a folder, unreadable: one line, never a traceback
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    except ManifestInvalid as exc:
        errors = exc.errors
        manifest = None
    except Exception as exc:  # the loader's gap: still one line, as the trigger reports it
        errors = [unreadable_manifest(exc, str(path))]
        manifest = None
    if manifest is not None and not args.no_files:
        folder = path.parent
        try:
            present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        except OSError as exc:
            print(f"{folder}: cannot list the folder ({exc.strerror or exc})", file=sys.stderr)
            return EXIT_INVALID
        try:
            resolution = resolve_inputs(manifest, present, manifest.output.prefix, MAX_INPUTS)
            errors = [*resolution.errors, *resolution.missing]
        except Exception as exc:  # a pattern the matcher cannot take
            errors = [unreadable_manifest(exc, str(path), field="inputs")]
    if args.json:
        print(
            json.dumps(
                {"valid": not errors, "errors": [e.model_dump(exclude_none=True) for e in errors]},
                indent=2,
            )
        )
    elif errors:
        for e in errors:
            print(f"{path}: {e.line()}")
    else:
        print(f"{path}: valid")
    return EXIT_INVALID if errors else EXIT_OK


# -- run -----------------------------------------------------------------------------------
def workers_argument(text: str) -> int | str:
    """`--workers`: a positive number of workers at a time on this machine, or `auto` (as many
    as its cores and free memory hold, batch_jobs/worker_memory.py)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive number of workers, or auto")
    return value


MAX_LIST = 10_000  # jobs one `dropbatch jobs` lists


def limit_argument(text: str) -> int:
    """`jobs --limit`: how many of the newest jobs, 1 to MAX_LIST."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIST:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of jobs from 1 to {MAX_LIST}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    return run_manifest(Path(args.manifest), args.workers, args.again, args.quiet)


# -- submit --------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    """Upload videos and side files first and manifests last, so the manifest's own event
    finds its inputs already there (any order works, this one starts sooner)."""
    from manifests.loader import ManifestInvalid, load_manifest
    from manifests.resolve import MANIFEST_SUFFIXES

    files = [Path(f) for f in args.files]
    missing = [f for f in files if not f.is_file()]
    if missing:
        for f in missing:
            print(f"{f}: no such file", file=sys.stderr)
        return EXIT_INVALID
    manifests = [f for f in files if f.name.endswith(MANIFEST_SUFFIXES)]
    for manifest in manifests:  # refuse before uploading anything
        try:
            load_manifest(manifest.read_bytes())
        except ManifestInvalid as exc:
            for e in exc.errors:
                print(f"{manifest}: {e.line()}", file=sys.stderr)
            return EXIT_INVALID
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        print("two files with the same name would land on one object", file=sys.stderr)
        return EXIT_INVALID
    with tempfile.TemporaryDirectory(prefix="dropbatch-submit-") as scratch:
        store, bucket, folder = _destination(args.destination, Path(scratch))
        ordered = [f for f in files if f not in manifests] + manifests
        for path in ordered:
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            name = f"{folder}{path.name}"
            # No metadata of ours: an object carrying it is one the trigger ignores.
            store.upload_file(bucket, name, path, content_type=content_type)
            print(f"uploaded {store.uri(bucket, name)}")
    for manifest in manifests:
        target = store.uri(bucket, f"{folder}{manifest.name}")
        print(f"follow it: dropbatch status {target} --watch")
    return EXIT_OK


def _destination(destination: str, scratch: Path):
    """(store, bucket, folder/) for gs://BUCKET/FOLDER/ or a local inbox folder."""
    if destination.startswith("gs://"):
        from core.storage.gcs import GcsStore

        bucket, folder = split_gs_uri(destination)
        if folder and not folder.endswith("/"):
            folder += "/"
        return GcsStore(project=load_settings().project or None), bucket, folder
    from core.storage.local import LocalStore

    # A local folder: written through LocalStore so each file appears whole (temp + rename),
    # as objects of the inbox it is in.
    target = Path(destination).resolve()
    target.mkdir(parents=True, exist_ok=True)
    inbox = find_inbox(target)
    if inbox is None:
        # In no inbox yet: which folder is the inbox is for the `serve --inbox` or `run` to come
        # to say, so no store is made here (its lock and type notes go to `scratch`; a file's
        # type is its name's anyway).
        return LocalStore(target.parent, scratch), target.name, ""
    folder = inbox.object_name(target)
    return LocalStore(inbox.root, inbox.state), inbox.bucket, f"{folder}/" if folder else ""


# -- status / jobs -------------------------------------------------------------------------
FOLDER_JOBS = 1000  # the most jobs `dropbatch status FOLDER` reads from one status store


@dataclass
class StatusQuery:
    """What `dropbatch status [TARGET]` asks for, and the status store(s) that can answer."""

    stores: list[StatusStore]
    job_id: str | None = None
    bucket: str | None = None
    manifest: str | None = None  # an object name: its newest job
    folder: str | None = None  # an object-name prefix ('' the whole bucket): every job in it


def _inbox_status(inbox: LocalInbox) -> StatusStore:
    from core.status import open_status

    return open_status(_inbox_settings(inbox))


def _stores_here() -> list[StatusStore]:
    """The inbox(es) the working directory is in or beside; else the configured store."""
    from core.status import open_status

    near = inboxes_near(Path.cwd())
    return [_inbox_status(inbox) for inbox in near] or [open_status(load_settings())]


def _no_inbox(path: Path) -> ValueError:
    return ValueError(
        f"{path.resolve()}: in no dropbatch inbox (no folder at or above it holds "
        ".dropbatch/INBOX, which `dropbatch serve --inbox` and `dropbatch run` create)"
    )


def status_query(target: str | None) -> StatusQuery:
    """A job id, a manifest path (also one deleted since: its job's record stays), a folder
    (the jobs under it), a gs:// manifest or folder/, or nothing (the newest job here)."""
    from core.status import open_status
    from manifests.resolve import MANIFEST_SUFFIXES

    if target is None:
        return StatusQuery(_stores_here())
    if target.startswith("gs://"):
        bucket, name = split_gs_uri(target)
        stores = [open_status(load_settings())]
        if not name or name.endswith("/"):
            return StatusQuery(stores, bucket=bucket, folder=name)
        return StatusQuery(stores, bucket=bucket, manifest=name)
    path = Path(target)
    if path.is_dir():
        inbox = find_inbox(path)
        if inbox is None:  # a folder holding inboxes (where `serve --inbox ./inbox` started)
            inner = inboxes_near(path)
            if not inner:
                raise _no_inbox(path)
            return StatusQuery([_inbox_status(i) for i in inner], folder="")
        name = inbox.object_name(path)
        return StatusQuery([_inbox_status(inbox)], bucket=inbox.bucket,
                           folder=f"{name}/" if name else "")  # fmt: skip
    if path.exists() or target.endswith(MANIFEST_SUFFIXES) or os.sep in target:
        inbox = find_inbox(path.parent)
        if inbox is None:
            raise _no_inbox(path)
        return StatusQuery(
            [_inbox_status(inbox)], bucket=inbox.bucket, manifest=inbox.object_name(path)
        )
    return StatusQuery(_stores_here(), job_id=target)


def find_jobs(query: StatusQuery) -> list[tuple[StatusStore, JobRecord]]:
    """The records the query names, each with the store it is in, newest first."""
    found: list[tuple[StatusStore, JobRecord]] = []
    for store in query.stores:
        if query.job_id is not None:
            record = store.get(query.job_id)
            found += [(store, record)] if record else []
        elif query.folder is not None:
            records = store.recent(FOLDER_JOBS, bucket=query.bucket)
            found += [(store, r) for r in records if r.manifest.startswith(query.folder)]
        else:
            records = store.recent(1, bucket=query.bucket, manifest=query.manifest)
            found += [(store, r) for r in records]
    return sorted(found, key=lambda pair: pair[1].created_at, reverse=True)


def local_pool_alive(status: StatusStore, record: JobRecord) -> bool:
    """Does a worker of the local warm pool the job runs on live (False: none, or no local
    pool)? Read only for such a job."""
    from batch_jobs.pool_capacity import pool_alive
    from batch_jobs.pool_rules import LOCAL_POOL, starting_grace

    if not record.pool.startswith(LOCAL_POOL):
        return False
    return pool_alive(status, record.pool, starting_grace(Settings(launcher="local")))


def stalled_line(record: JobRecord, tasks: list, pool_alive: bool = False) -> str:
    """A local job whose executor is gone (or, on serve's warm pool, whose pool has no live
    worker: `pool_alive` False) stays RUNNING until a serve resumes it: say so."""
    from batch_jobs.liveness import executor_alive
    from batch_jobs.pool_rules import LOCAL_POOL

    if record.state in TERMINAL_STATES:
        return ""
    if record.pool:
        if not record.pool.startswith(LOCAL_POOL) or pool_alive:
            return ""
    elif not (record.batch_job or "").startswith("local/") or executor_alive(record, tasks):
        return ""
    return (
        "  stalled: the process that ran its tasks is gone; "
        "`dropbatch serve` on this inbox resumes it from the chunks done"
    )


def capacity_line(record: JobRecord, tasks: list) -> str:
    """A job the engine has not started, and why, as the sweep last heard it."""
    wait = record.engine_wait
    if wait is None or tasks or record.state not in (JobState.QUEUED, JobState.RUNNING):
        return ""
    ago = max(0, int(time.time() - wait.checked_at))
    reason = wait.reason or f"no reason given yet (its state is {wait.state})"
    return f"  waiting for capacity: {reason} (the engine's job is {wait.state}, {ago} s ago)"


def cmd_status(args: argparse.Namespace) -> int:
    query = status_query(args.target)
    found = find_jobs(query)
    if not found:
        print(f"no job found for {args.target or 'this status store'}", file=sys.stderr)
        return EXIT_FAILED
    if query.folder is not None:  # every job under the folder, one line each
        return print_jobs(found, as_json=args.json)
    status, record = found[0]
    if args.watch:
        watch(status, record.job_id)
        record = status.get(record.job_id) or record
    vm = vm_time(status.claims(record.job_id))  # the job's VM-seconds, so far
    if args.json:
        print(json.dumps(record.summary(status.count_done(record.job_id), vm.seconds), indent=2))
        return EXIT_OK
    done = status.done_counts(record.job_id)
    print(progress_line(record, sum(done.values())))
    if record.workers is not None:  # how many the local executor started, and why
        print(f"  workers: {record.workers.reason}")
    stalled = stalled_line(record, status.progress(record.job_id), local_pool_alive(status, record))
    if stalled:
        print(stalled)
    waiting = capacity_line(record, status.progress(record.job_id))
    if waiting:
        print(waiting)
    if record.plan is not None and len(record.plan.items) > 1:
        for item in record.plan.items:
            print(
                f"  item {item.index:>3}: {done.get(item.index, 0)}/{len(item.chunks)} chunks"
                f"  {item.video}"
            )
    for task in status.progress(record.job_id):  # one per worker
        print(
            f"  worker {task.task_index:>3} item {task.item} chunk {task.chunk}: {task.state:<9}"
            f" {task.frames_done}/{task.frames_total} frames {task.fps:.1f} fps,"
            f" {task.chunks_done} chunk(s) done"
            f"{'  ' + task.message if task.message else ''}"
        )
    for machine in record.machines:  # what the workers ran on, as each machine's first saw it
        print(f"  machine {machine.line()}")
    print(f"  {vm.line()}")
    if record.pool:  # its workers' warm time is the pool's, in `dropbatch jobs --costs`
        print(f"  pool: {record.pool}, capacity launched: {record.capacity_launched}")
    return report(record)


def print_jobs(found: list[tuple[StatusStore, JobRecord]], as_json: bool = False) -> int:
    """One line a job (or their summaries); each job's done chunks counted in its own store."""
    if as_json:
        print(json.dumps([r.summary(s.count_done(r.job_id)) for s, r in found], indent=2))
        return EXIT_OK
    for store, r in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        print(
            f"{when}  {r.job_id:<50} {r.state.value:<19} "
            f"{store.count_done(r.job_id)}/{r.chunks_total}"
            f"  {r.manifest_uri}"
        )
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    stores = _stores_here()
    found = [(store, record) for store in stores for record in store.recent(args.limit)]
    found.sort(key=lambda pair: pair[1].created_at, reverse=True)
    code = print_jobs(found[: args.limit])
    if args.costs:
        print_pool_costs(stores)
    return code


def print_pool_costs(stores: list[StatusStore]) -> None:
    """Each warm pool's workers and their busy and idle seconds: the idle ones are the
    deployment's warm cost, which no job's VM time includes."""
    from batch_jobs.pool_rules import starting_grace, worker_alive

    now, grace = time.time(), starting_grace(load_settings())
    workers = [w for store in stores for w in store.pool_workers()]
    costs = pool_costs(workers, lambda w: worker_alive(w, now, grace))
    if not costs:
        print("no warm pool workers in this status store")
    for cost in costs:
        print(cost.line())


# -- serve ---------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from dropbatch.watcher import serve

    folder = Path(args.inbox).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    inbox = LocalInbox(folder)
    older = None if is_inbox(folder) else legacy_store(inbox)
    inbox.mark()
    if older is not None:  # jobs served before inboxes kept their own store: not lost, shown
        print(f"dropbatch: this inbox now keeps its jobs in {inbox.state}/; jobs served "
              f"before are in {older} (DROPBATCH_SQLITE_PATH={older} dropbatch jobs)",
              flush=True)  # fmt: skip
    settings = _inbox_settings(inbox)
    if args.workers:
        settings = settings.model_copy(update={"local_workers": args.workers})
    serve(folder, local_intake(settings, pools=True), poll_seconds=args.poll, once=args.once)
    return EXIT_OK


# -- demo / schema -------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from dropbatch.demo import run_demo

    return run_demo(Path(args.dir), workers=args.workers, seconds=args.seconds)


def cmd_schema(args: argparse.Namespace) -> int:
    from manifests.schema import schema_text

    sys.stdout.write(schema_text())
    return EXIT_OK


# -- models --------------------------------------------------------------------------------
def cmd_models_check(args: argparse.Namespace) -> int:
    from manifests.loader import ManifestInvalid
    from processors.models.store import ModelStoreError, open_model_store

    settings = Settings.from_env()
    location = args.store or settings.model_store
    try:
        store = open_model_store(location, settings)
        if store is None:
            print("no model store configured (--store or DROPBATCH_MODEL_STORE)", file=sys.stderr)
            return EXIT_INVALID
        names = _manifest_models(Path(args.manifest)) if args.manifest else list(store.entries())
        reports = store.check(names)
    except (ModelStoreError, ManifestInvalid, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps({"store": store.uri, "files": [r.__dict__ for r in reports]}, indent=2))
    else:
        print(f"model store: {store.uri}")
        for r in reports:
            print(f"  {r.model:<16} {r.file:<22} {r.state:<9} {r.detail}")
    bad = [r for r in reports if r.state in ("missing", "corrupt")]
    return EXIT_FAILED if bad else EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from dropbatch.doctor import DoctorRequest, run_doctor
    from manifests.loader import ManifestInvalid

    manifest = Path(args.manifest) if args.manifest else None
    settings, inbox = load_settings(), args.inbox
    if settings.storage == "local" and not inbox.startswith("gs://"):
        local = _doctor_inbox(settings, inbox)
        if local is None:
            return EXIT_FAILED
        settings, inbox = local
    try:
        request = DoctorRequest(
            inbox,
            manifest,
            args.timeout,
            canary=args.canary,
            stage_timeout=args.stage_timeout,
            function_account=args.function_account or "",
            builder_account=args.builder_account or "",
        )
        return run_doctor(settings, request)
    except ManifestInvalid as exc:
        for error in exc.errors:
            print(f"{manifest}: {error.line()}", file=sys.stderr)
        return EXIT_INVALID


def _doctor_inbox(settings: Settings, name: str) -> tuple[Settings, str] | None:
    """(settings, bucket) for `doctor --inbox NAME` on local storage: the folder NAME (as
    `serve --inbox NAME` takes it) with its own store, else a bucket folder in local_root.
    None, having said what to do, when neither is there: then no store is created for it."""
    folder = Path(name)
    if folder.is_dir():
        inbox = find_inbox(folder) or LocalInbox(folder.resolve())
        inbox.mark()
        return settings.model_copy(update=inbox.store_settings()), inbox.bucket
    if (settings.local_root / name).is_dir():  # a deployment's local root (functions-framework)
        return settings, name
    where = folder.resolve()
    print(f"dropbatch doctor: {where}: no such folder (the inbox `dropbatch serve --inbox {name}`"
          f" would watch)\n  fix: mkdir -p {where} && dropbatch serve --inbox {name}")  # fmt: skip
    return None


def cmd_cost(args: argparse.Namespace) -> int:
    from batch_jobs.worker_count import batch_throughput
    from dropbatch.cost import estimate_cost
    from manifests.loader import ManifestInvalid, load_manifest
    from manifests.model import ComputeOptions
    from processors.step_costs import GPU_KINDS, load_table

    compute, manifest = ComputeOptions(), None
    if args.manifest:
        try:
            manifest = load_manifest(Path(args.manifest).read_bytes())
            compute = manifest.compute
        except ManifestInvalid as exc:
            for error in exc.errors:
                print(error.line(), file=sys.stderr)
            return EXIT_INVALID
    # Batch's figures whatever this machine's launcher: the deployment's boot image and chain
    # speed from the config file, the speed on the command line first.
    speed = batch_throughput(load_settings())
    if args.processing_fps is not None:
        speed = replace(speed, frames_per_second=args.processing_fps)
    est = estimate_cost(
        compute,
        args.minutes * 60,
        fps=args.fps,
        throughput=speed,
        manifest=manifest,
    )
    # The speed it assumed, and where from: the command line, the deployment's chain_fps, or
    # the job's chain in the step-cost table (its VM kind's figures, measured or estimated).
    if args.processing_fps is not None:
        source = "--processing-fps"
    elif speed.frames_per_second > 0:
        source = "chain_fps"
    else:
        kind = GPU_KINDS[compute.gpu]
        source = (
            f"step-cost table, {kind}, {'measured' if load_table().measured[kind] else 'estimated'}"
        )
    print(
        f"{args.minutes:g} min of {args.fps:g} fps video at {est.frames_per_second:.1f} fps "
        f"({source}), chunks of {est.chunk_seconds:g} s: "
        f"{est.chunks} chunks pulled by {est.tasks} {est.provisioning} {est.machine_type} "
        f"VM(s), about {est.wall_seconds / 60:.0f} min, {est.vm_hours:.2f} VM-hours "
        f"at ${est.hourly_usd:.3f}/h = ${est.usd:.2f} ({est.ratio:.1f}× the GPU-time floor "
        f"of ${est.floor_usd:.2f}), ${est.usd_per_video_minute:.3f} per video-minute"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    # --log-format is taken before or after the command; SUPPRESS keeps a subcommand's absent
    # option from overwriting the top-level value (and no set_defaults: the parsers share
    # this one action, so a default set on one would be every parser's).
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=argparse.SUPPRESS,
        help="text: one plain line per event (default); json: Cloud Logging's JSON lines",
    )
    parser = argparse.ArgumentParser(prog="dropbatch", description=__doc__, parents=[shared])
    sub = parser.add_subparsers(dest="command", required=True)
    real_add_parser = sub.add_parser

    def add_parser(name: str, **kwargs: object) -> argparse.ArgumentParser:
        return real_add_parser(name, parents=[shared], **kwargs)  # type: ignore[arg-type]

    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser("validate", help="check a manifest (exit 0 valid, 2 invalid)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-files", action="store_true", help="do not check that inputs exist")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run one manifest now on this machine")
    p.add_argument("manifest")
    p.add_argument(
        "--workers",
        type=workers_argument,
        help="tasks at a time: a number, or auto (default: the job's, at most what this "
        "machine's cores and free memory hold)",
    )
    p.add_argument("--again", action="store_true", help="run again even if it already ran")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="watch a local inbox folder and run what lands in it")
    p.add_argument("--inbox", required=True)
    p.add_argument(
        "--workers", type=workers_argument, help="tasks at a time: a number, or auto (default)"
    )
    p.add_argument("--poll", type=float, default=1.0, help="seconds between folder scans")
    p.add_argument("--once", action="store_true", help="handle what is there, then exit")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "submit", help="upload files to gs://BUCKET/FOLDER/ or a local inbox, manifests last"
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("destination", metavar="DEST", help="gs://BUCKET/FOLDER/ or a local folder")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a job's state and progress")
    p.add_argument(
        "target", nargs="?", help="job id, manifest path or gs:// URI (default: newest job)"
    )
    p.add_argument("--watch", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("jobs", help="recent jobs")
    p.add_argument("--limit", type=limit_argument, default=20, help=f"1 to {MAX_LIST}")
    p.add_argument(
        "--costs", action="store_true", help="then each warm pool's busy and idle worker seconds"
    )
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("demo", help="make a sample video, drop it in a local inbox, run it")
    p.add_argument("--dir", default="demo-inbox")
    p.add_argument("--workers", type=workers_argument, default=2, help="a number, or auto")
    p.add_argument("--seconds", type=float, default=12.0, help="length of the sample video")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("schema", help="print the manifest JSON Schema")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("models", help="the model store")
    models = p.add_subparsers(dest="models_command", required=True)
    p = models.add_parser("check", help="which models are present, missing or corrupt")
    p.add_argument("--manifest", help="only the models this manifest needs")
    p.add_argument("--store", help="folder or gs://bucket/prefix/ (default DROPBATCH_MODEL_STORE)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_check)
    p = sub.add_parser(
        "doctor", help="check a deployment: buckets, status store, models, a self-check job"
    )
    p.add_argument("--inbox", required=True, help="the inbox bucket (gs://BUCKET/ or BUCKET)")
    p.add_argument("--manifest", help="check the models and the compute this manifest needs")
    p.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds to wait for the self-check's report (and, with --canary, for the canary)",
    )
    p.add_argument(
        "--canary",
        action="store_true",
        help="also check the service accounts' grants and run one real 2-second job through "
        "the inbox, printing each stage's time; removes all it uploaded and the job wrote",
    )
    p.add_argument(
        "--stage-timeout",
        type=float,
        default=600.0,
        help="--canary: seconds to wait for each next stage (a first VM takes minutes)",
    )
    p.add_argument("--function-account", help="default: dropbatch-function@PROJECT.iam…")
    p.add_argument("--builder-account", help="default: dropbatch-builder@PROJECT.iam…")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("cost", help="estimate a Cloud Batch run's cost from compute settings")
    p.add_argument("manifest", nargs="?", help="take `compute` from this manifest")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of video")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument(
        "--processing-fps",
        type=float,
        help="chain speed on one VM (default: chain_fps, else the chain's from the step costs)",
    )
    p.set_defaults(func=cmd_cost)
    return parser


def _log_level(args: argparse.Namespace) -> int:
    """DROPBATCH_LOG_LEVEL when set. Otherwise INFO, except where a progress line tells the
    story on a person's screen (run, demo): there only warnings and errors are logged."""
    from core import logs

    quiet_default = args.command in ("run", "demo", "doctor") and args.log_format == "text"
    return logs.env_level(logging.WARNING if quiet_default else logging.INFO)


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):  # a DROPBATCH_* value or an option out of range
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from core import logs
    from core.storage.base import NotFound

    args = build_parser().parse_args(argv)
    args.log_format = getattr(args, "log_format", "text")  # given neither before nor after
    logs.setup(_log_level(args), fmt=args.log_format)
    try:
        return int(args.func(args))
    except ConfigFileError as exc:
        print(f"dropbatch: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except ValidationError as exc:
        print(f"dropbatch: invalid setting: {_one_line(exc)}", file=sys.stderr)
        return EXIT_INVALID
    except (OSError, NotFound, ValueError) as exc:
        # What a person's machine or input can cause (a file not there or not readable, a
        # path that is no object name): one line, never a traceback.
        print(f"dropbatch: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("dropbatch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _no_credentials(exc):
            raise
        print(
            "dropbatch: no Google Cloud credentials on this machine: run "
            "`gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service account key file)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _no_credentials(exc: BaseException) -> bool:
    """google-auth's DefaultCredentialsError: the client libraries found no credentials.
    Matched by class so this module does not import google-auth on every command."""
    return any(
        cls.__name__ == "DefaultCredentialsError" and cls.__module__.startswith("google.auth")
        for cls in type(exc).__mro__
    )


if __name__ == "__main__":
    sys.exit(main())
