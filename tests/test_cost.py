"""The run-cost estimate README quotes, derived from compute settings and a rate table."""

from __future__ import annotations

import pytest

from dropbatch.cost import HOURS_PER_MONTH, Rates, Throughput, estimate_cost
from manifests.model import ComputeOptions

RATES = Rates(
    {
        ("g2-standard-8", "spot"): 0.3,
        ("g2-standard-8", "standard"): 0.9,
        ("n2-standard-8", "spot"): 0.1,
        ("n2-standard-8", "standard"): 0.4,
    },
    disk_gb_month=0.0,
)
SPEED = Throughput(frames_per_second=15.0, vm_startup_seconds=300.0, task_setup_seconds=60.0)


def test_cost_follows_vm_time_at_the_machines_rate() -> None:
    compute = ComputeOptions(gpu="l4", spot=True, chunk_seconds=10, max_parallel_tasks=4)
    est = estimate_cost(compute, video_seconds=95, fps=30, throughput=SPEED, rates=RATES)
    assert (est.tasks, est.vms, est.machine_type) == (10, 4, "g2-standard-8")
    # Four workers set up once each, then pull the ten chunks.
    per_chunk = SPEED.chunk_setup_seconds + 10 * 30 / 15.0
    assert est.vm_hours == pytest.approx((10 * per_chunk + 4 * (300.0 + 60.0)) / 3600)
    assert est.usd == pytest.approx(est.vm_hours * 0.3)
    assert est.wall_seconds == pytest.approx(300.0 + 60.0 + 3 * per_chunk)  # 10 on 4 VMs


def test_spot_is_cheaper_and_parallelism_buys_time_not_savings() -> None:
    spot = ComputeOptions(gpu="l4", spot=True, chunk_seconds=10, max_parallel_tasks=10)
    standard = spot.model_copy(update={"spot": False})
    narrow = spot.model_copy(update={"max_parallel_tasks": 1})
    a, b, c = (
        estimate_cost(x, 600, throughput=SPEED, rates=RATES) for x in (spot, standard, narrow)
    )
    assert a.usd < b.usd and b.usd / a.usd == pytest.approx(0.9 / 0.3)
    assert c.wall_seconds > a.wall_seconds and c.usd < a.usd  # fewer VM start-ups


def test_the_boot_disk_is_charged_by_the_hour() -> None:
    compute = ComputeOptions(gpu="none", spot=False, chunk_seconds=60, max_parallel_tasks=1)
    with_disk = Rates(RATES.vm_hourly, disk_gb_month=0.1)
    est = estimate_cost(compute, 60, throughput=SPEED, rates=with_disk)
    assert est.hourly_usd == pytest.approx(0.4 + 100 * 0.1 / HOURS_PER_MONTH)


def test_the_cost_command_quotes_the_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    from dropbatch.cli import main
    from dropbatch.cost import Throughput

    assert main(["cost", "--minutes", "10", "--processing-fps", "8"]) == 0
    line = capsys.readouterr().out
    est = estimate_cost(ComputeOptions(), 600, throughput=Throughput(frames_per_second=8))
    assert f"{est.tasks} tasks on {est.vms} spot g2-standard-8" in line
    assert f"= ${est.usd:.2f}" in line


def test_readme_cost_table_is_what_the_estimate_says() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = re.findall(
        r"^\| (\d+) min \| (\d+) \| (\d+) \| ~(\d+) min \| ([\d.]+) "
        r"\| \$([\d.]+) \| \$([\d.]+) \|$",
        readme,
        re.M,
    )
    assert len(rows) == 3
    for minutes, tasks, vms, wall, hours, spot, standard in rows:
        s = estimate_cost(ComputeOptions(), int(minutes) * 60)
        t = estimate_cost(ComputeOptions(spot=False), int(minutes) * 60)
        assert (s.tasks, s.vms, round(s.wall_seconds / 60)) == (int(tasks), int(vms), int(wall))
        assert f"{s.vm_hours:.2f}" == hours
        assert (f"{s.usd:.2f}", f"{t.usd:.2f}") == (spot, standard)
