"""`dropbatch demo`: a real face, real speech, a fresh local inbox, one run, where to look.

With a model store (DROPBATCH_MODEL_STORE) that holds a face analyser pack, a swapper and a
Wav2Lip model, the demo runs the whole chain (crop → swap → lipsync); otherwise it runs the
weight-free crop alone and says which files would turn on swap and lipsync.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from dropbatch.samples import make_talking_video, write_source_face

# Catalog names tried first, in order; then any other model the store's own catalog.yaml
# registers for the role.
PREFERRED = {
    "analyser": ("buffalo_l", "buffalo_s", "scrfd_500m_mbf"),
    "swapper": ("inswapper_128", "inswapper_128_fp16"),
    "lipsync": ("wav2lip_gan_96", "wav2lip_96", "wav2lip_gan", "wav2lip"),
}
SOURCE_FACE = "faces/cameraman.png"

CHAIN_CROP = """\
  - crop:
      aspect: "9:16"
      smoothing_seconds: 0.5
"""
CHAIN_FACES = """\
  - swap:                       # the cameraman's face on the speaker
      analyser: {analyser}
      model: {swapper}
      source: {source}
  - lipsync:                    # her lips to the soundtrack
      model: {lipsync}
"""
DEMO_MANIFEST = """\
# Written by `dropbatch demo`. {what}
version: 1
inputs:
  - video: talk.mp4
chain:
{chain}output:
  prefix: out/
  crf: 20
  preset: veryfast
compute:
  gpu: none
  chunk_seconds: 4
  max_parallel_tasks: 2
  max_retries: 2
"""


@dataclass
class DemoModels:
    """The catalog names the demo's face steps would use, and what is missing for the rest."""

    store: str = ""
    chosen: dict[str, str] = field(default_factory=dict)  # role -> catalog name
    missing: dict[str, list[str]] = field(default_factory=dict)  # role -> files to add

    @property
    def whole_chain(self) -> bool:
        return not self.missing


def _present(store, name: str) -> bool:
    from processors.models.store import ModelStoreError

    try:
        store.require(name)
    except ModelStoreError:
        return False
    return True


def find_models(location: str) -> DemoModels:
    """Which analyser pack, swapper and Wav2Lip the store at `location` holds (presence and
    size only; each task verifies the hashes before it loads a file)."""
    from processors.models.store import catalog, open_model_store

    found = DemoModels(store=location)
    store = open_model_store(location) if location else None
    entries = store.entries() if store is not None else {}
    for role, preferred in PREFERRED.items():
        others = sorted(n for n, e in entries.items() if e.role == role and n not in preferred)
        if role == "lipsync":
            others = []  # lipsync.model names one of the catalog's Wav2Lip entries
        names = [n for n in preferred if n in entries] + others
        chosen = next((n for n in names if _present(store, n)), None)
        if chosen is not None:
            found.chosen[role] = chosen
        else:
            default = preferred[0]
            found.missing[role] = [f"{f} ({default})" for f in catalog()[default]["files"]]
    return found


def demo_manifest(models: DemoModels) -> str:
    if not models.whole_chain:
        what = "Reframe the talking head to a 9:16 vertical video."
        return DEMO_MANIFEST.format(what=what, chain=CHAIN_CROP)
    what = "Reframe, put another face on the speaker, sync her lips to the speech."
    faces = CHAIN_FACES.format(source=SOURCE_FACE, **models.chosen)
    return DEMO_MANIFEST.format(what=what, chain=CHAIN_CROP + faces)


def what_is_missing(models: DemoModels) -> list[str]:
    """Lines that say which files would turn on the steps the demo leaves out."""
    where = models.store or "(none: set DROPBATCH_MODEL_STORE to a folder)"
    lines = [f"dropbatch demo: running crop only; the model store {where} lacks"]
    from processors.models.store import catalog

    for role, files in models.missing.items():
        step = catalog()[PREFERRED[role][0]]["step"]  # the step whose catalog lists the model
        lines.append(f"dropbatch demo:   for {step} ({role}): {', '.join(files)}")
    lines.append(
        "dropbatch demo: put them in the store (README, 'Filling the model store') to run "
        "crop → swap → lipsync"
    )
    return lines


def run_demo(base: Path, workers: int | str = 2, seconds: float = 12.0) -> int:
    from core.config import Settings
    from dropbatch.inbox import LocalInbox
    from dropbatch.local_run import run_manifest

    folder = base.resolve() / "inbox" / time.strftime("demo-%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    # `inbox/` is the inbox (each demo a folder in it), so `serve --inbox` on it finds the demos'
    # jobs in its store instead of taking each demo folder for an inbox of its own.
    LocalInbox(folder.parent).mark()
    models = find_models(Settings.from_env().model_store)
    print(f"dropbatch demo: making a {seconds:g} s sample video in {folder}", flush=True)
    make_talking_video(folder / "talk.mp4", duration=seconds)
    if models.whole_chain:
        write_source_face(folder / SOURCE_FACE)
        chosen = ", ".join(f"{role} {name}" for role, name in models.chosen.items())
        print(f"dropbatch demo: crop → swap → lipsync with {chosen}", flush=True)
    else:
        for line in what_is_missing(models):
            print(line, flush=True)
    (folder / "manifest.yaml").write_text(demo_manifest(models))
    print("dropbatch demo: dropped talk.mp4 + manifest.yaml; running…", flush=True)
    code = run_manifest(folder / "manifest.yaml", workers, again=False, quiet=False)
    print(f"dropbatch demo: input   {folder / 'talk.mp4'}")
    print(f"dropbatch demo: output  {folder / 'out' / 'talk.mp4'}")
    print(f"dropbatch demo: preview {folder / 'out' / 'talk.preview.jpg'}")
    print(f"dropbatch demo: status  {folder / 'manifest.status.json'}")
    return code
