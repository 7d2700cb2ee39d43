"""A whole job on one machine: trigger → plan → two workers (separate processes pulling
chunks, with faults injected by a wrapping task command) → stitch → output and status."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest

from batch_jobs.intake import StorageEvent
from batch_jobs.workspace import work_area
from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState
from core.storage.local import LocalStore
from tests.indexed_video import decoded_indices, make_indexed_video, read_index

FPS = 30
MANIFEST = """\
version: 1
inputs: [clip.mp4]
chain: [{crop: {aspect: "1:1", smoothing_seconds: 0.2}}]
output: {preset: ultrafast, crf: 23}
compute: {chunk_seconds: 10, max_parallel_tasks: 2, max_retries: 2}
"""


@pytest.fixture(scope="module")
def sixty_seconds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    make_indexed_video(path, 60 * FPS, fps=FPS, size=(640, 240), audio=True, preset="ultrafast")
    return path


def run_job(deployment: dict, clip: Path, fault_plan: dict | None, monkeypatch) -> JobRecord:
    from tests.local_jobs import wait_local_job
    from triggers.main import intake

    monkeypatch.setenv(
        "DROPBATCH_TASK_COMMAND", f"python {Path(__file__).parent / 'fault_task.py'}"
    )
    monkeypatch.setenv("FAULT_PLAN", json.dumps(fault_plan or {}))
    intake.cache_clear()
    folder = deployment["inbox"] / "job"
    folder.mkdir()
    shutil.copyfile(clip, folder / "clip.mp4")  # a copy: links out of the inbox are refused
    (folder / "manifest.yaml").write_text(MANIFEST)
    store = LocalStore(deployment["root"])
    info = store.stat("inbox", "job/manifest.yaml")
    [job_id] = intake().handle(StorageEvent("inbox", "job/manifest.yaml", info.generation))
    assert wait_local_job(job_id, timeout=300)
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None
    return record


def task_log(deployment: dict) -> list[dict]:
    return [json.loads(x) for x in Path(deployment["tmp"], "tasks.log").read_text().splitlines()]


def max_concurrency(log: list[dict]) -> int:
    events = sorted(
        (e["at"], 1 if e["what"] == "start" else -1)
        for e in log
        if e["what"] == "start" or e["what"].startswith("end") or e["what"] == "fail"
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def check_preview(path: Path, in_width: int, out_width: int) -> None:
    """Input tiles above output tiles, each showing the frame at the middle of its quarter
    (the tiles come from different tasks' chunks)."""
    sheet = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    wanted = [225, 675, 1125, 1575]
    assert sheet.shape[0] == 2 * 240 + 8
    top = [sheet[:240, i * in_width : (i + 1) * in_width] for i in range(4)]
    bottom = [sheet[248:, i * out_width : (i + 1) * out_width] for i in range(4)]
    assert [read_index(t) for t in top] == wanted
    assert [read_index(t) for t in bottom] == wanted


def check_output(deployment: dict, record: JobRecord) -> None:
    assert record.state == JobState.SUCCEEDED, record.error
    out = deployment["inbox"] / "job/out/clip.mp4"
    # No person in the clip: the window holds the centre, where the frame code is.
    assert decoded_indices(out) == list(range(60 * FPS))
    streams = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(out)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next(s for s in streams if s["codec_type"] == "audio")
    assert (int(video["width"]), int(video["height"])) == (240, 240)
    assert abs(float(audio["duration"]) - 60.0) <= 1 / FPS + 0.05
    check_preview(deployment["inbox"] / "job/out/clip.preview.jpg", in_width=640, out_width=240)
    # Parts and tiles lived in the work bucket, and are gone; the inbox only ever held what the
    # user dropped and what the user reads.
    work = work_area(Settings.from_env(), "inbox")
    assert list((deployment["root"] / work.bucket).rglob("*.mp4")) == []
    inbox = sorted(p.relative_to(deployment["inbox"]).as_posix()
                   for p in deployment["inbox"].rglob("*") if p.is_file())  # fmt: skip
    assert inbox == ["job/clip.mp4", "job/manifest.status.json", "job/manifest.yaml",
                     "job/out/clip.mp4", "job/out/clip.preview.jpg"]  # fmt: skip
    mirror = json.loads((deployment["inbox"] / "job/manifest.status.json").read_text())
    assert mirror["state"] == "SUCCEEDED" and mirror["chunks"] == {"done": 6, "total": 6}


def test_sixty_seconds_in_six_chunks_by_two_workers(
    deployment: dict, sixty_seconds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = run_job(deployment, sixty_seconds, None, monkeypatch)
    assert record.chunks_total == 6 and record.plan.parallelism == 2
    check_output(deployment, record)
    log = task_log(deployment)
    # Two workers, started once each, pulled the six chunks between them.
    assert sorted(e["task"] for e in log if e["what"] == "start") == [0, 1]
    assert max_concurrency(log) == 2
    status = open_status(Settings.from_env())
    workers = status.progress(record.job_id)
    assert sum(w.chunks_done for w in workers) == 6 and all(w.chunks_done for w in workers)
    assert [c.grants for c in status.claims(record.job_id)] == [1] * 6
    assert len(record.stitch_claims) == 1


def test_failed_and_killed_workers_are_retried_and_stitch_once(
    deployment: dict, sixty_seconds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = run_job(
        deployment, sixty_seconds, {"fail_once": [1], "kill_mid_chunk": [0]}, monkeypatch
    )
    log = task_log(deployment)
    assert any(e["what"] == "fail" and e["task"] == 1 for e in log)
    assert any(e["what"] == "killed-mid-chunk" and e["task"] == 0 for e in log)
    assert [e["attempt"] for e in log if e["task"] == 0 and e["what"] == "start"] == [0, 1]
    check_output(deployment, record)
    assert len(record.stitch_claims) == 1
    assert open_status(Settings.from_env()).done_counts(record.job_id) == {0: 6}
    # The killed worker's chunk went to another worker (or its retry): claimed twice.
    grants = [c.grants for c in open_status(Settings.from_env()).claims(record.job_id)]
    assert sorted(grants) == [1] * 5 + [2]


def test_a_killed_stitcher_is_replaced(
    deployment: dict, sixty_seconds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = run_job(deployment, sixty_seconds, {"kill_in_stitch": True}, monkeypatch)
    assert any(e["what"] == "killed-in-stitch" for e in task_log(deployment))
    check_output(deployment, record)
    assert len(record.stitch_claims) == 2  # the dead stitcher's lease, then its replacement
    assert record.items_stitched == [0]
