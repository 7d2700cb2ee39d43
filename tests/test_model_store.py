"""The model store: catalog merging, hash verification, the per-VM cache under concurrent
tasks, `dropbatch models check`, and the trigger refusing a manifest whose models are missing."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.status.model import JobRecord
from core.storage.local import LocalStore
from processors.models.store import (
    CatalogError,
    ModelCorrupt,
    ModelMissing,
    ModelStore,
    ObjectStoreLocation,
    open_model_store,
    require_models,
)

ROOT = Path(__file__).resolve().parent.parent


def write_store(folder: Path, files: dict[str, bytes], models: dict[str, dict]) -> Path:
    """A store folder with these files and a catalog.yaml pinning their real hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    catalog = {}
    for model, spec in models.items():
        catalog[model] = {
            "step": spec.get("step", "swap"),
            "files": spec["files"],
            "sha256": {f: hashlib.sha256(files[f]).hexdigest() for f in spec["files"]},
            "size": {f: len(files[f]) for f in spec["files"]},
            "licence": "test",
            "source": "built by the test",
        }
    (folder / "catalog.yaml").write_text(yaml.safe_dump({"models": catalog}))
    return folder


PACK = {"files": ["a.onnx", "b.onnx"]}
FILES = {"a.onnx": os.urandom(4096), "b.onnx": os.urandom(1000)}


def test_a_store_catalog_adds_models_and_their_hashes_are_verified(tmp_path: Path) -> None:
    store = open_model_store(
        write_store(tmp_path / "models", FILES, {"test_pack": PACK}), cache_dir=tmp_path / "c"
    )
    fetched = store.fetch("test_pack")
    assert fetched.paths["a.onnx"].read_bytes() == FILES["a.onnx"]
    assert [r.state for r in store.check(["test_pack"])] == ["present", "present"]


def test_a_corrupt_model_file_is_caught_by_its_hash(tmp_path: Path) -> None:
    folder = write_store(tmp_path / "models", FILES, {"test_pack": PACK})
    data = bytearray(FILES["a.onnx"])
    data[100] ^= 0xFF  # same size: only the hash can tell
    (folder / "a.onnx").write_bytes(bytes(data))
    store = open_model_store(folder, cache_dir=tmp_path / "c")
    with pytest.raises(ModelCorrupt, match=r"test_pack: a\.onnx .*sha256"):
        store.fetch("test_pack")
    states = {r.file: r.state for r in store.check(["test_pack"])}
    assert states == {"a.onnx": "corrupt", "b.onnx": "present"}


def test_a_verified_file_replaced_later_is_verified_again(tmp_path: Path) -> None:
    folder = write_store(tmp_path / "models", FILES, {"test_pack": PACK})
    store = open_model_store(folder, cache_dir=tmp_path / "c")
    store.fetch("test_pack")
    (folder / "b.onnx").write_bytes(os.urandom(1000))
    with pytest.raises(ModelCorrupt):
        open_model_store(folder, cache_dir=tmp_path / "c").fetch("test_pack")


def test_missing_and_wrong_size_are_found_without_reading_the_file(tmp_path: Path) -> None:
    folder = write_store(tmp_path / "models", FILES, {"test_pack": PACK})
    (folder / "b.onnx").unlink()
    with pytest.raises(ModelMissing, match=r"test_pack .*b\.onnx"):
        open_model_store(folder).require("test_pack")
    (folder / "b.onnx").write_bytes(b"short")
    with pytest.raises(ModelCorrupt, match="5 bytes"):
        open_model_store(folder).require("test_pack")


def test_a_store_cannot_repin_a_published_model(tmp_path: Path) -> None:
    files = {"det_10g.onnx": b"x" * 10, "w600k_r50.onnx": b"y" * 10}
    folder = write_store(
        tmp_path / "models", files, {"buffalo_l": {"files": list(files)}}
    )  # tries to swap the published buffalo_l hashes for its own
    with pytest.raises(CatalogError, match="re-pin"):
        open_model_store(folder).entries()


def test_real_models_are_pinned_to_their_published_hashes(tmp_path: Path) -> None:
    store = open_model_store(tmp_path)
    entries = store.entries()
    for name in ("buffalo_l", "inswapper_128"):
        for f in entries[name].files:
            assert f.sha256 and len(f.sha256) == 64 and f.size
    assert entries["buffalo_l"].file_for("detection") == "det_10g.onnx"


def test_the_light_packs_pins_are_the_real_files(tmp_path: Path, real_asset) -> None:
    # The registry's real files, dropped into a store under their own names, verify against
    # the packaged catalog's pins (the task's own check, hashing each file).
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx", "2d106det.onnx"):
        (folder / name).symlink_to(real_asset(name))
    (folder / "det_500m.onnx").write_bytes(b"whatever buffalo_s.zip holds")
    store = open_model_store(folder, cache_dir=tmp_path / "cache")
    reports = {(r.model, r.file): r.state for r in store.check(
        ["scrfd_500m_mbf", "landmarks_2d106", "buffalo_s"])}  # fmt: skip
    assert reports == {
        ("scrfd_500m_mbf", "scrfd_500m_bnkps.onnx"): "present",
        ("scrfd_500m_mbf", "w600k_mbf.onnx"): "present",
        ("landmarks_2d106", "2d106det.onnx"): "present",
        # buffalo_s: its recogniser is the same file; its detector is not pinned.
        ("buffalo_s", "det_500m.onnx"): "unpinned",
        ("buffalo_s", "w600k_mbf.onnx"): "present",
    }
    pack = store.fetch("scrfd_500m_mbf")
    assert pack.module("detection").name == "scrfd_500m_bnkps.onnx"
    assert pack.module("recognition").name == "w600k_mbf.onnx"


def test_the_file_names_users_download_are_catalogued(tmp_path: Path) -> None:
    entries = open_model_store(tmp_path).entries()
    files = {f.name: name for name, e in entries.items() for f in e.files}
    for name in ("wav2lip_gan_96.onnx", "wav2lip_96.onnx", "inswapper_128_fp16.onnx",
                 "inswapper_128.onnx", "yolo11n.onnx"):  # fmt: skip
        assert name in files, name
    # FaceFusion's files: unpinned (no sha256 of theirs could be checked), sourced.
    for model in ("wav2lip_gan_96", "wav2lip_96", "inswapper_128_fp16"):
        assert entries[model].files[0].sha256 is None
        assert "facefusion-assets/releases/download/models-3.0.0/" in entries[model].source
    # The pinned inswapper_128 is insightface's file; no mirror is vouched for by name.
    assert "facefusion" not in entries["inswapper_128"].source.lower()


def test_lipsync_defaults_to_the_facefusion_file_name(tmp_path: Path) -> None:
    (tmp_path / "wav2lip_gan_96.onnx").write_bytes(b"model")
    require_models("lipsync", {}, tmp_path)  # present: the default model's file
    with pytest.raises(ModelMissing, match=r"wav2lip_gan_96\.onnx"):
        require_models("lipsync", {}, tmp_path / "empty")


def _fetch_in_process(args: tuple[str, str]) -> str:
    root, cache = args
    location = ObjectStoreLocation(LocalStore(Path(root)), "models", "v1/", "gs://models/v1/")
    fetched = ModelStore(location, Path(cache)).fetch("test_pack")
    return str(fetched.paths["a.onnx"])


def test_concurrent_tasks_on_one_vm_fetch_each_file_once(tmp_path: Path) -> None:
    # A bucket store through the ObjectStore protocol: files are copied into the VM cache.
    write_store(tmp_path / "root" / "models" / "v1", FILES, {"test_pack": PACK})
    args = (str(tmp_path / "root"), str(tmp_path / "cache"))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        paths = pool.map(_fetch_in_process, [args] * 8)
    assert len(set(paths)) == 1
    cached = Path(paths[0])
    assert cached.read_bytes() == FILES["a.onnx"]
    leftovers = [p.name for p in cached.parent.iterdir() if p.name.endswith(".part")]
    assert leftovers == []
    stamp = json.loads((cached.parent / "a.onnx.verified").read_text())
    assert stamp["sha256"] == hashlib.sha256(FILES["a.onnx"]).hexdigest()


def test_a_corrupt_object_in_a_bucket_store_never_reaches_the_cache(tmp_path: Path) -> None:
    folder = write_store(tmp_path / "root" / "models" / "v1", FILES, {"test_pack": PACK})
    (folder / "b.onnx").write_bytes(os.urandom(1000))
    location = ObjectStoreLocation(LocalStore(tmp_path / "root"), "models", "v1/", "gs://m/v1/")
    with pytest.raises(ModelCorrupt):
        ModelStore(location, tmp_path / "cache").fetch("test_pack")
    cached = {p.name for p in (tmp_path / "cache").rglob("*.onnx")}
    assert cached == {"a.onnx"}


def test_require_models_names_the_model_and_the_store(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing) as err:
        require_models("swap", {"source": ["x.jpg"]}, tmp_path)
    assert "buffalo_l" in str(err.value) and str(tmp_path) in str(err.value)


def test_models_check_cli_says_present_missing_and_corrupt(tmp_path: Path) -> None:
    folder = write_store(tmp_path / "models", FILES, {"test_pack": PACK, "other": PACK})
    (folder / "a.onnx").write_bytes(os.urandom(4096))
    manifest = tmp_path / "in" / "job.yaml"
    manifest.parent.mkdir()
    manifest.write_text("version: 1\ninputs: [v.mp4]\nchain: [{swap: {source: s.jpg}}]\n")
    env = {**os.environ, "DROPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "dropbatch.cli", "models", "check", "--store", str(folder)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 1, out.stderr
    lines = {tuple(line.split()[:3]) for line in out.stdout.splitlines()[1:]}
    assert ("test_pack", "a.onnx", "corrupt") in lines
    assert ("test_pack", "b.onnx", "present") in lines
    assert ("inswapper_128", "inswapper_128.onnx", "missing") in lines
    out = subprocess.run(
        [*command, "--manifest", str(manifest), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert {f["model"] for f in report["files"]} == {"buffalo_l", "inswapper_128"}
    assert out.returncode == 1


def trigger_swap_job(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, store: Path, swap: bytes
) -> JobRecord:
    """The trigger, its model store `store`, given a clip, a face and a manifest whose one step
    is swap with options `swap` (flow YAML); the one job record it wrote."""
    from tests.test_trigger import deliver, put, records
    from triggers import main as trigger_main

    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(store))
    trigger_main.intake.cache_clear()
    put(deployment, "s/clip.mp4", video=5)
    put(deployment, "s/face.jpg", b"jpeg")
    put(
        deployment,
        "s/job.yaml",
        b"version: 1\ninputs: [clip.mp4]\nchain: [{swap: " + swap + b"}]\n",
    )
    deliver(LocalStore(deployment["root"]), "inbox", "s/job.yaml")
    [record] = records(deployment)
    return record


def test_trigger_rejects_a_manifest_whose_models_are_not_in_the_store(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from core.status.model import JobState

    folder = write_store(tmp_path / "models", FILES, {"test_pack": PACK})
    record = trigger_swap_job(deployment, monkeypatch, folder, b"{source: face.jpg}")
    assert record.state == JobState.INVALID
    assert record.error.code == "MODEL_MISSING"
    assert record.error.field == "chain[0].swap.analyser"  # buffalo_l is the missing one
    assert "buffalo_l" in record.error.message and str(folder) in record.error.message
    assert record.error.uri == str(folder)
