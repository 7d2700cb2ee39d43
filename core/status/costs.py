"""What a run cost, from what the store already holds: a job's VM-seconds are the worker seconds
on its finished chunks' claims (`ChunkClaim.seconds`); a warm pool's busy and idle seconds are
on its workers' documents (`PoolWorker`). The idle seconds are the deployment's warm cost, kept
apart from any job: no job asked for them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core.status.model import ChunkClaim, PoolWorker


@dataclass(frozen=True)
class VmTime:
    """A job's worker time: the seconds its finished chunks took, and how many chunks."""

    seconds: float
    chunks: int

    def line(self) -> str:
        return f"vm time: {self.seconds:.1f} s ({self.chunks} chunks)"


def vm_time(claims: Iterable[ChunkClaim]) -> VmTime:
    """The sum over the job's claims (`StatusStore.claims`); only a done claim has seconds."""
    done = [c for c in claims if c.done]
    return VmTime(seconds=round(sum(c.seconds for c in done), 3), chunks=len(done))


@dataclass(frozen=True)
class PoolCost:
    """One pool's workers, every job together: how many are up and how many have gone, the
    seconds they worked and the seconds they waited warm."""

    pool: str
    live: int
    gone: int
    busy_seconds: float
    idle_seconds: float

    @property
    def idle_share(self) -> float:
        """Idle seconds over all the seconds the workers were up (0 when none were)."""
        up = self.busy_seconds + self.idle_seconds
        return self.idle_seconds / up if up > 0 else 0.0

    def line(self) -> str:
        return (
            f"pool {self.pool}: {self.live + self.gone} workers ({self.live} live, {self.gone} "
            f"gone), busy {self.busy_seconds:.1f} s, idle (warm) {self.idle_seconds:.1f} s, "
            f"idle share {self.idle_share:.0%}"
        )


def pool_costs(
    workers: Iterable[PoolWorker], alive: Callable[[PoolWorker], bool]
) -> list[PoolCost]:
    """Per pool, by pool name; `alive` tells a live worker (the pool's own rule, with its
    heartbeat timeout) from one that has gone, whether it said so or just stopped beating."""
    by_pool: dict[str, list[PoolWorker]] = {}
    for worker in workers:
        by_pool.setdefault(worker.pool, []).append(worker)
    costs = []
    for pool, members in sorted(by_pool.items()):
        live = sum(1 for w in members if alive(w))
        costs.append(
            PoolCost(
                pool=pool,
                live=live,
                gone=len(members) - live,
                busy_seconds=sum(w.busy_seconds for w in members),
                idle_seconds=sum(w.idle_seconds for w in members),
            )
        )
    return costs
