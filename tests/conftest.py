"""Shared fixtures: a fresh local deployment (storage root, SQLite status) per test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- The ultralytics tests need their own 6 GB venv (tests/gpu_venv.py) ------------------------
# A plain `pytest` does not build it: on a fresh machine that alone would take most of ten
# minutes. Without it those tests are deselected and the summary says how many and how to run
# them — never a silent pass. `.ci/run` builds it and sets DROPBATCH_REQUIRE_GPU_VENV=1, so
# in CI a missing venv fails the run instead.
_NOT_RUN: dict[str, None] = {}  # ordered set: with pytest-xdist every worker reports them
BUILD_COMMAND = "python tests/gpu_venv.py"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ultralytics: runs in the ultralytics venv (gpu_venv.py)")
    config.addinivalue_line("markers", "slow: takes tens of seconds or more")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.gpu_venv import venv_dir, venv_ready

    wanted = [i for i in items if i.get_closest_marker("ultralytics")]
    if not wanted or venv_ready():
        return
    if os.environ.get("DROPBATCH_REQUIRE_GPU_VENV") == "1":
        raise pytest.UsageError(
            f"the ultralytics venv {venv_dir()} is not built and DROPBATCH_REQUIRE_GPU_VENV=1: "
            f"run `{BUILD_COMMAND}` first"
        )
    _NOT_RUN.update(dict.fromkeys(i.nodeid for i in wanted))
    if hasattr(config, "workeroutput"):  # a pytest-xdist worker: tell the controller
        config.workeroutput["ultralytics_not_run"] = list(_NOT_RUN)
    config.hook.pytest_deselected(items=wanted)
    items[:] = [i for i in items if not i.get_closest_marker("ultralytics")]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """The controller's summary lists what the workers deselected."""
    _NOT_RUN.update(dict.fromkeys(getattr(node, "workeroutput", {}).get("ultralytics_not_run", [])))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _NOT_RUN:
        return
    from tests.gpu_venv import venv_dir

    terminalreporter.section("ultralytics tests NOT RUN", sep="!", red=True, bold=True)
    terminalreporter.write_line(
        f"{len(_NOT_RUN)} ultralytics tests not run: their venv ({venv_dir()}) is not built. "
        f"Build it with `{BUILD_COMMAND}` (about 6 GB, several minutes; `.ci/run` does it), "
        f"then run `python -m pytest -m ultralytics`.",
        red=True,
        bold=True,
    )
    for nodeid in _NOT_RUN:
        terminalreporter.write_line(f"  not run: {nodeid}")


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Env for the trigger and its tasks: local storage under tmp, SQLite, local executor."""
    root = tmp_path / "root"
    (root / "inbox").mkdir(parents=True)
    env = {
        "DROPBATCH_LOCAL_ROOT": str(root),
        "DROPBATCH_SQLITE_PATH": str(tmp_path / "status.sqlite"),
        "DROPBATCH_INPUT_WAIT_SECONDS": "3600",
        # Short enough that a killed stitcher is replaced quickly, long enough that a slow
        # stitch on a loaded CI machine keeps its lease.
        "DROPBATCH_STITCH_LEASE_SECONDS": "12",
        "FAULT_LOG": str(tmp_path / "tasks.log"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from triggers import main as trigger_main

    trigger_main.intake.cache_clear()
    yield {"root": root, "bucket": "inbox", "inbox": root / "inbox", "tmp": tmp_path}
    from tests.local_jobs import wait_local_jobs

    wait_local_jobs(timeout=120)
    trigger_main.intake.cache_clear()


# -- Google Cloud stand-ins (tests/servers.py), one of each per test session -----------------
@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """STORAGE_EMULATOR_HOST of a fake-gcs-server that lives for the whole session."""
    from tests.servers import fake_gcs_server

    with fake_gcs_server(tmp_path_factory.mktemp("fake-gcs")) as host:
        yield host


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """FIRESTORE_EMULATOR_HOST of the npm Firestore emulator for the whole session."""
    from tests.servers import firestore_emulator as start

    with start(tmp_path_factory.mktemp("firestore")) as host:
        yield host


# -- Real model files and footage from registry packages (tests/real_assets.py) --------------
@pytest.fixture(scope="session")
def real_asset():
    """`real_asset("pexels.mp4")` → its verified path; fails (never skips) when unreachable."""
    from tests.real_assets import AssetUnavailable, asset

    def get(name: str) -> Path:
        try:
            return asset(name)
        except AssetUnavailable as exc:
            pytest.fail(f"real-model tier: {exc}", pytrace=False)

    return get
