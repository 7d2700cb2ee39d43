"""Swapper files from the wild: inswapper-style models whose inputs are renamed, reordered,
half precision or of undeclared shape all load and swap the same face the reference layout
does, through the swap step itself; a model of another kind is refused naming its shapes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from processors.chain import ChainSetupError, build_processor
from processors.swap.swapper import Swapper, SwapperUnusable
from tests.face_models import build_face_store, build_recognizer, build_swapper, two_people
from tests.test_swap import MODELS, ctx_for, run

PROVIDERS = ["CPUExecutionProvider"]
VARIANTS = {
    # The names an export chose, identity input first.
    "renamed_reordered": dict(names=("img", "latent_id"), output="swapped", source_first=True),
    # FaceFusion's inswapper_128_fp16.onnx kind: half-precision inputs, output and emap.
    "fp16": dict(fp16=True),
    # Shapes left symbolic: found by the names `target` and `source`, in any order.
    "undeclared": dict(declared=False, source_first=True),
}


@pytest.fixture(autouse=True)
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "model-cache"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("side")
    (folder / "faces").mkdir()
    cv2.imwrite(
        str(folder / "faces" / "cameraman.png"),
        cv2.cvtColor(two_people(astronaut=False), cv2.COLOR_RGB2BGR),
    )
    return folder


def swapped_frames(store: Path, images: Path, tmp_path: Path) -> np.ndarray:
    processor = build_processor(
        "swap", {**MODELS, "source": ["faces/cameraman.png"]}, ctx_for(store, images, tmp_path)
    )
    return run(processor, [two_people(), two_people()]).frames


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    store = build_face_store(tmp_path_factory.mktemp("plain"))
    return swapped_frames(store, images, tmp_path_factory.mktemp("run"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_variant_swapper_swaps_like_the_reference_layout(
    variant: str, images: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    store = build_face_store(tmp_path / "models", swapper=VARIANTS[variant])
    frames = swapped_frames(store, images, tmp_path)
    assert not np.array_equal(frames[0], two_people())  # the swap happened
    diff = np.abs(frames.astype(int) - reference.astype(int)).max()
    # fp16: inputs, emap and output rounded to half precision, a few levels of 255 at most.
    assert diff <= (3 if VARIANTS[variant].get("fp16") else 0), diff


def test_inputs_are_found_by_shape_and_fp16_gets_fp16_inputs(tmp_path: Path) -> None:
    swapper = Swapper(
        build_swapper(tmp_path / "a.onnx", **VARIANTS["renamed_reordered"]), PROVIDERS
    )
    assert (swapper.target_name, swapper.source_name, swapper.size) == ("img", "latent_id", 128)
    half = Swapper(build_swapper(tmp_path / "h.onnx", fp16=True), PROVIDERS)
    crop = two_people()[84:212, 40:168]
    out = half.swap(crop, half.latent(np.ones(512, np.float32)))
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8


def test_a_model_that_is_not_a_swapper_is_refused_with_its_shapes(tmp_path: Path) -> None:
    path = build_recognizer(tmp_path / "arcface.onnx")
    with pytest.raises(SwapperUnusable) as err:
        Swapper(path, PROVIDERS)
    assert "arcface.onnx" in str(err.value)
    assert "input.1[1,3,112,112]" in str(err.value) and "source [1,512]" in str(err.value)


def test_a_wrong_swapper_file_fails_the_step_as_model_incompatible(
    images: Path, tmp_path: Path
) -> None:
    store = build_face_store(tmp_path / "models")
    # The catalog entry now points at a file of the wrong kind, pinned like the real one.
    build_recognizer(store / "test_swapper.onnx")
    data = yaml.safe_load((store / "catalog.yaml").read_text())
    entry = data["models"]["test_swapper"]
    entry["sha256"]["test_swapper.onnx"] = hashlib.sha256(
        (store / "test_swapper.onnx").read_bytes()
    ).hexdigest()
    entry["size"]["test_swapper.onnx"] = (store / "test_swapper.onnx").stat().st_size
    (store / "catalog.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ChainSetupError) as err:
        build_processor(
            "swap", {**MODELS, "source": ["faces/cameraman.png"]}, ctx_for(store, images, tmp_path)
        )
    assert err.value.code == "MODEL_INCOMPATIBLE"
    assert "test_swapper.onnx" in str(err.value)
