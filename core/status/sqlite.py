"""Status in one SQLite file: the embedded default, safe across processes on one machine.

`BEGIN IMMEDIATE` takes the write lock before reading, so `transact` is a true
read-modify-write even when several task processes finish chunks at the same moment.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from core.status.base import JobNotFound
from core.status.model import (
    CheckReport,
    ChunkClaim,
    JobRecord,
    JobState,
    PoolWorker,
    TaskProgress,
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    manifest TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_manifest ON jobs (bucket, manifest, created_at DESC);
CREATE TABLE IF NOT EXISTS tasks (
    job_id TEXT NOT NULL,
    task_index INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (job_id, task_index)
);
CREATE TABLE IF NOT EXISTS checks (
    check_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    job_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (job_id, item, chunk)
);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    doc TEXT NOT NULL
);
"""


class SqliteStatusStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            yield conn
        finally:
            conn.close()

    def create(self, record: JobRecord) -> bool:
        record.revision = max(record.revision, 1)
        with self._connect() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.job_id,
                    record.bucket,
                    record.manifest,
                    record.state.value,
                    record.created_at,
                    record.updated_at,
                    record.model_dump_json(),
                ),
            )
            return cur.rowcount == 1

    def get(self, job_id: str) -> JobRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT doc FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return JobRecord.model_validate_json(row[0]) if row else None

    def transact(self, job_id: str, mutate: Callable[[JobRecord], T]) -> tuple[JobRecord, T]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT doc FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                if row is None:
                    raise JobNotFound(job_id)
                record = JobRecord.model_validate_json(row[0])
                before = record.model_dump_json()
                result = mutate(record)
                if record.model_dump_json() != before:
                    record.revision += 1
                    record.updated_at = time.time()
                    conn.execute(
                        "UPDATE jobs SET state = ?, updated_at = ?, doc = ? WHERE job_id = ?",
                        (record.state.value, record.updated_at, record.model_dump_json(), job_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return record, result

    def recent(
        self,
        limit: int = 20,
        *,
        bucket: str | None = None,
        manifest: str | None = None,
        states: list[JobState] | None = None,
    ) -> list[JobRecord]:
        clauses, args = [], []
        if bucket is not None:
            clauses.append("bucket = ?")
            args.append(bucket)
        if manifest is not None:
            clauses.append("manifest = ?")
            args.append(manifest)
        if states:
            clauses.append(f"state IN ({','.join('?' for _ in states)})")
            args.extend(s.value for s in states)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT doc FROM jobs {where} ORDER BY created_at DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [JobRecord.model_validate_json(r[0]) for r in rows]

    def by_state(
        self,
        states: list[JobState],
        *,
        bucket: str | None = None,
        folders: list[str] | None = None,
    ) -> list[JobRecord]:
        if not states or folders == []:
            return []
        clauses = [f"state IN ({','.join('?' for _ in states)})"]
        args: list[object] = [s.value for s in states]
        if bucket is not None:
            clauses.append("bucket = ?")
            args.append(bucket)
        if folders is not None:
            # Directly in the folder: the name starts with it and has no '/' after it.
            # (substr, not LIKE: LIKE ignores case and treats '%' and '_' in names as wildcards.)
            within = "(substr(manifest, 1, ?) = ? AND instr(substr(manifest, ?), '/') = 0)"
            clauses.append("(" + " OR ".join(within for _ in folders) + ")")
            for folder in folders:
                args += [len(folder), folder, len(folder) + 1]
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT doc FROM jobs WHERE {' AND '.join(clauses)} ORDER BY created_at, job_id",
                args,
            ).fetchall()
        return [JobRecord.model_validate_json(r[0]) for r in rows]

    def claims(self, job_id: str, *, pending: bool = False) -> list[ChunkClaim]:
        only = " AND json_extract(doc, '$.done') = 0" if pending else ""
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT doc FROM claims WHERE job_id = ?{only} ORDER BY item, chunk", (job_id,)
            ).fetchall()
        return [ChunkClaim.model_validate_json(r[0]) for r in rows]

    def done_counts(self, job_id: str) -> dict[int, int]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT item, COUNT(*) FROM claims WHERE job_id = ? AND json_extract(doc, "
                "'$.done') = 1 GROUP BY item ORDER BY item",
                (job_id,),
            ).fetchall()
        return {int(item): int(count) for item, count in rows}

    def count_done(self, job_id: str, item: int | None = None) -> int:
        of_item = "" if item is None else " AND item = ?"
        with self._connect() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM claims WHERE job_id = ? AND json_extract(doc, '$.done') = 1"
                + of_item,
                (job_id,) if item is None else (job_id, item),
            ).fetchone()
        return int(count)

    def transact_claim(
        self, job_id: str, item: int, chunk: int, mutate: Callable[[ChunkClaim], T]
    ) -> tuple[ChunkClaim, T]:
        key = (job_id, item, chunk)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT doc FROM claims WHERE job_id = ? AND item = ? AND chunk = ?", key
                ).fetchone()
                claim = (
                    ChunkClaim.model_validate_json(row[0])
                    if row
                    else ChunkClaim(item=item, chunk=chunk)
                )
                before = claim.model_dump_json()
                result = mutate(claim)
                if claim.model_dump_json() != before:
                    conn.execute(
                        "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)",
                        (*key, claim.model_dump_json()),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return claim, result

    def put_progress(self, progress: TaskProgress) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)",
                (progress.job_id, progress.task_index, progress.model_dump_json()),
            )

    def progress(self, job_id: str) -> list[TaskProgress]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT doc FROM tasks WHERE job_id = ? ORDER BY task_index", (job_id,)
            ).fetchall()
        return [TaskProgress.model_validate_json(r[0]) for r in rows]

    def put_worker(self, worker: PoolWorker) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers VALUES (?, ?, ?)",
                (worker.worker_id, worker.pool, worker.model_dump_json()),
            )

    def pool_workers(self, pool: str | None = None, *, present: bool = False) -> list[PoolWorker]:
        terms, args = [], []
        if pool is not None:
            terms, args = ["pool = ?"], [pool]
        if present:
            terms.append("json_extract(doc, '$.state') != 'gone'")
        where = f"WHERE {' AND '.join(terms)} " if terms else ""
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT doc FROM workers {where}ORDER BY worker_id", args
            ).fetchall()
        return [PoolWorker.model_validate_json(r[0]) for r in rows]

    def put_check(self, report: CheckReport) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO checks VALUES (?, ?)",
                (report.check_id, report.model_dump_json()),
            )

    def get_check(self, check_id: str) -> CheckReport | None:
        with self._connect() as conn:
            row = conn.execute("SELECT doc FROM checks WHERE check_id = ?", (check_id,)).fetchone()
        return CheckReport.model_validate_json(row[0]) if row else None
