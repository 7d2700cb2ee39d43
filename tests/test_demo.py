"""`dropbatch demo` as a new user runs it: the whole chain when the model store holds the models
(here the real SCRFD + ArcFace pack, the test-signature swapper and Wav2Lip), crop alone and
a list of the files that would turn on swap and lipsync when it does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.real_chain import build_real_store, cli_env, dropbatch


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, real_asset) -> Path:
    return build_real_store(tmp_path_factory.mktemp("demo-store"), real_asset)


def demo_folder(base: Path) -> Path:
    [folder] = (base / "inbox").glob("demo-*")
    return folder


def steps_of(folder: Path) -> list[str]:
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    return [next(iter(step)) for step in manifest["chain"]]


@pytest.mark.slow
def test_demo_without_models_runs_crop_and_names_the_files_for_swap_and_lipsync(
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path / "nothing-here", tmp_path / "cache")
    del env["DROPBATCH_MODEL_STORE"]
    done = dropbatch("demo", "--dir", str(tmp_path / "demo"), "--seconds", "2", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = demo_folder(tmp_path / "demo")
    assert steps_of(folder) == ["crop"]
    assert json.loads((folder / "manifest.status.json").read_text())["state"] == "SUCCEEDED"
    assert (folder / "out" / "talk.mp4").is_file()
    said = done.stdout
    assert "running crop only" in said and "DROPBATCH_MODEL_STORE" in said
    for needed in ("det_10g.onnx", "w600k_r50.onnx", "inswapper_128.onnx", "wav2lip_gan_96.onnx"):
        assert needed in said, said


@pytest.mark.slow
def test_demo_with_a_filled_store_runs_crop_swap_lipsync(tmp_path: Path, store: Path) -> None:
    env = cli_env(store, tmp_path / "cache")
    done = dropbatch("demo", "--dir", str(tmp_path / "demo"), "--seconds", "2", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = demo_folder(tmp_path / "demo")
    assert steps_of(folder) == ["crop", "swap", "lipsync"]
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    swap = manifest["chain"][1]["swap"]
    assert (swap["analyser"], swap["model"]) == ("scrfd_500m_mbf", "test_swapper")
    assert (folder / swap["source"]).is_file()
    status = json.loads((folder / "manifest.status.json").read_text())
    assert status["state"] == "SUCCEEDED", status
    assert (folder / "out" / "talk.mp4").is_file()
    assert "crop → swap → lipsync" in done.stdout and "lacks" not in done.stdout
