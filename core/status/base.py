"""The status store interface: create-if-absent, transactions, and the queries users run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from core.status.model import (
    CheckReport,
    ChunkClaim,
    JobRecord,
    JobState,
    PoolWorker,
    TaskProgress,
)

T = TypeVar("T")


class JobNotFound(KeyError):
    pass


class RecordTooLarge(ValueError):
    """The record cannot be stored whole (a Firestore document holds 1 MiB): nothing was
    written. Raised by `create` and `transact` of a backend with such a limit."""


class StatusContention(RuntimeError):
    """Too many writers raced for the same record, over every retry; nothing was written.
    A worker takes it as a lost race (a claim) or retries later (a done mark)."""


class StatusStore(Protocol):
    def create(self, record: JobRecord) -> bool:
        """Insert the record unless a job with its id exists. True if this call created it."""
        ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def transact(self, job_id: str, mutate: Callable[[JobRecord], T]) -> tuple[JobRecord, T]:
        """Read-modify-write atomically: `mutate` edits the record in place and returns a value.

        The write happens only if the record changed; the stored revision then increases by
        one. `mutate` may run more than once (optimistic backends retry on contention), so
        it must not have side effects outside the record.
        """
        ...

    def recent(
        self,
        limit: int = 20,
        *,
        bucket: str | None = None,
        manifest: str | None = None,
        states: list[JobState] | None = None,
    ) -> list[JobRecord]:
        """Newest first."""
        ...

    def by_state(
        self,
        states: list[JobState],
        *,
        bucket: str | None = None,
        folders: list[str] | None = None,
    ) -> list[JobRecord]:
        """Every job in one of `states`, oldest first, with no limit: the trigger re-checks
        each waiting manifest, however many wait. `folders` (with `bucket`): only jobs whose
        manifest lies directly in one of them ('c7/', '' for the bucket's root)."""
        ...

    def claims(self, job_id: str, *, pending: bool = False) -> list[ChunkClaim]:
        """Every chunk claim of the job that was ever written (a chunk never claimed has
        none), in (item, chunk) order; `pending`: only those not done (a claim, once written,
        is never removed and never undone, so a claim seen before and missing here is done)."""
        ...

    def done_counts(self, job_id: str) -> dict[int, int]:
        """Item → how many of its chunks are done (their claims say so); items with none
        done are left out. The done-set lives on the claims, not on the job record: a job's
        progress is these counts."""
        ...

    def count_done(self, job_id: str, item: int | None = None) -> int:
        """How many of the item's chunks (None: the job's) are done: one cheap count, not a
        read of each claim, so a finished chunk and a watching `dropbatch status` can ask."""
        ...

    def transact_claim(
        self, job_id: str, item: int, chunk: int, mutate: Callable[[ChunkClaim], T]
    ) -> tuple[ChunkClaim, T]:
        """Read-modify-write one chunk's claim atomically, on its own small record (not the
        job's): `mutate` gets the stored claim, or a fresh one for a chunk never claimed,
        edits it in place and returns a value; written only if it changed. Like `transact`,
        `mutate` may run more than once."""
        ...

    def put_progress(self, progress: TaskProgress) -> None: ...

    def put_worker(self, worker: PoolWorker) -> None:
        """Write (or replace) a warm-pool worker's document."""
        ...

    def pool_workers(self, pool: str | None = None, *, present: bool = False) -> list[PoolWorker]:
        """The pool's workers (None: every pool's), by worker id; `present`: only those not
        `gone` (what counting the pool reads: gone ones stay for the cost report)."""
        ...

    def progress(self, job_id: str) -> list[TaskProgress]: ...

    def put_check(self, report: CheckReport) -> None:
        """Write (or replace) the self-check report with `report.check_id`."""
        ...

    def get_check(self, check_id: str) -> CheckReport | None: ...
