"""`dropbatch demo`: a real face, real speech, a fresh local inbox, one run, where to look."""

from __future__ import annotations

import time
from pathlib import Path

from dropbatch.samples import make_talking_video

DEMO_MANIFEST = """\
# Written by `dropbatch demo`. Reframe the talking head to a 9:16 vertical video.
version: 1
inputs:
  - video: talk.mp4
chain:
  - crop:
      aspect: "9:16"
      smoothing_seconds: 0.5
output:
  prefix: out/
  crf: 20
  preset: veryfast
compute:
  gpu: none
  chunk_seconds: 4
  max_parallel_tasks: 2
  max_retries: 2
"""


def run_demo(base: Path, workers: int = 2) -> int:
    from dropbatch.cli import run_manifest

    folder = base.resolve() / "inbox" / time.strftime("demo-%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"dropbatch demo: making a 12 s sample video in {folder}", flush=True)
    make_talking_video(folder / "talk.mp4", duration=12.0)
    (folder / "manifest.yaml").write_text(DEMO_MANIFEST)
    print("dropbatch demo: dropped talk.mp4 + manifest.yaml; running…", flush=True)
    code = run_manifest(folder / "manifest.yaml", workers, again=False, quiet=False)
    print(f"dropbatch demo: input   {folder / 'talk.mp4'}")
    print(f"dropbatch demo: output  {folder / 'out' / 'talk.mp4'}")
    print(f"dropbatch demo: preview {folder / 'out' / 'talk.preview.jpg'}")
    print(f"dropbatch demo: status  {folder / 'manifest.status.json'}")
    return code
