"""Costs you can see: `dropbatch status` shows a job's VM-seconds (the seconds on its finished
chunks' claims) and its pool, and `dropbatch jobs --costs` shows each warm pool's busy and idle
worker seconds from the workers' own documents.

One real `dropbatch serve` with its warm pool, real footage, a real crop; the figures shown are
checked against what the SQLite status store holds."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.config import Settings
from core.status import open_status
from core.status.base import StatusStore
from tests.real_chain import cli_env, trim
from tests.test_cli import run_cli
from tests.test_pool_local import HAAR_CROP, drop, finished, start_serve, stop, wait_for


@dataclass
class PoolRun:
    inbox: Path
    folder: Path  # the job's folder in the inbox
    env: dict[str, str]
    status: StatusStore


@pytest.fixture(scope="module")
def pool_run(real_asset, tmp_path_factory: pytest.TempPathFactory) -> PoolRun:
    """One job run by `dropbatch serve` on its warm pool, which has gone cold since (6 s of
    warm time), so its workers have idle seconds and have all exited."""
    tmp = tmp_path_factory.mktemp("costs")
    clip = trim(real_asset("pexels.mp4"), tmp / "clip.mp4", 1.0, 2.0)
    inbox = tmp / "inbox"
    inbox.mkdir()
    models = tmp / "models"  # the Haar crop needs no model file
    models.mkdir()
    env = cli_env(models, tmp / "cache")
    env["DROPBATCH_WARM_MINUTES"] = "0.1"
    proc = start_serve(inbox, env, tmp / "serve.log")
    status = open_status(Settings(local_state=inbox / ".dropbatch"))
    try:
        folder = drop(inbox, "upload", clip, HAAR_CROP)
        assert finished(folder) == "SUCCEEDED", (folder / "manifest.status.json").read_text()
        wait_for(
            lambda: (w := status.pool_workers()) and all(x.state == "gone" for x in w),
            90,
            "the warm workers to exit",
        )
    finally:
        stop(proc)
    return PoolRun(inbox, folder, env, status)


def test_status_shows_the_vm_time_summed_from_the_chunks_claims_and_the_pool(
    pool_run: PoolRun,
) -> None:
    summary = json.loads((pool_run.folder / "manifest.status.json").read_text())
    job_id = summary["job_id"]
    record = pool_run.status.get(job_id)
    assert record is not None and record.pool and record.capacity_launched >= 1
    claims = [c for c in pool_run.status.claims(job_id) if c.done]
    assert len(claims) == record.chunks_total >= 2
    spent = sum(c.seconds for c in claims)
    assert spent > 0 and all(c.seconds > 0 for c in claims)

    shown = run_cli(
        ("status", str(pool_run.folder / "manifest.yaml")), pool_run.inbox, pool_run.env
    )
    assert shown.returncode == 0, shown.stderr
    assert f"  vm time: {spent:.1f} s ({len(claims)} chunks)\n" in shown.stdout, shown.stdout
    line = f"  pool: {record.pool}, capacity launched: {record.capacity_launched}\n"
    assert line in shown.stdout, shown.stdout

    as_json = run_cli(("status", job_id, "--json"), pool_run.inbox, pool_run.env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["vm_seconds"] == pytest.approx(spent, abs=0.002)
    # The job ended, so its .status.json carries the final figure too.
    assert summary["vm_seconds"] == pytest.approx(spent, abs=0.002)
    assert (summary["pool"], summary["capacity_launched"]) == (
        record.pool,
        record.capacity_launched,
    )


def test_jobs_costs_shows_each_pools_busy_and_idle_worker_seconds(pool_run: PoolRun) -> None:
    workers = pool_run.status.pool_workers()
    [pool] = {w.pool for w in workers}
    busy = sum(w.busy_seconds for w in workers)
    idle = sum(w.idle_seconds for w in workers)
    assert busy > 0 and idle > 0, workers

    shown = run_cli(("jobs", "--costs"), pool_run.inbox, pool_run.env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert re.search(r"SUCCEEDED\s+2/2", lines[0]), lines  # the job list comes first
    expected = (
        f"pool {pool}: {len(workers)} workers (0 live, {len(workers)} gone), "
        f"busy {busy:.1f} s, idle (warm) {idle:.1f} s, idle share {idle / (busy + idle):.0%}"
    )
    assert lines[-1] == expected, shown.stdout
