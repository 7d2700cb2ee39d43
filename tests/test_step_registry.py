"""The step registry is the one place the pipeline learns which steps exist.

Each registered step provides every part of its spec (checked here against real frames and
real model-store entries), and a step added only to the registry is validated by the manifest
loader, resolved, planned with its context frames and built by the chain — with nothing else
edited.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import Field

from batch_jobs.plan import build_plan
from core.domain import VideoInfo
from core.strict import RelPath, Strict
from manifests.loader import ManifestInvalid, load_manifest
from manifests.resolve import resolve_inputs
from processors import registry
from processors.base import PassThrough, ProcessorContext
from processors.chain import Chain
from processors.media.frames import FrameBatch
from processors.models.store import catalog, open_model_store
from processors.spec import CheckInputs, ModelNeed, SideFile, StepSetupError, StepSpec
from tests.enhance_models import build_enhance_store
from tests.face_models import build_face_store, two_people
from tests.lipsync_fixtures import make_model_store, speech_wav

WIDTH, HEIGHT, FRAMES = 640, 360, 6  # the footage's own size: the test face models expect it
RATE = Fraction(25)
SPECS = [*registry.STEPS, *registry.INTERNAL]


@pytest.fixture(scope="module")
def real_frames(real_asset) -> np.ndarray:
    """A few frames of real footage (a person talking)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(real_asset("pexels.mp4")), "-frames:v", str(FRAMES),
         "-vf", f"scale={WIDTH}:{HEIGHT}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(FRAMES, HEIGHT, WIDTH, 3)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Per step, a model store with the test models its defaults (or example) need, and the
    folder of its side files."""
    faces = build_face_store(tmp_path_factory.mktemp("faces"))
    side = tmp_path_factory.mktemp("side")
    cv2.imwrite(
        str(side / "face.png"), cv2.cvtColor(two_people(astronaut=False), cv2.COLOR_RGB2BGR)
    )
    speech_wav(side / "speech.wav")
    return {
        "swap": faces,
        "enhance": build_enhance_store(faces),  # the restorers beside the analyser pack
        "lipsync": make_model_store(tmp_path_factory.mktemp("wav2lip")),
        "side": side,
    }


# What each step's options cannot default (a step whose defaults validate needs nothing),
# and, to run here, the test models' names.
REQUIRED = {"swap": {"source": "face.png"}}
RUNNABLE = {
    "swap": {**REQUIRED["swap"], "analyser": "test_faces", "model": "test_swapper"},
    "enhance": {"analyser": "test_faces"},
}


def context_for(step: str, stores: dict[str, Path]) -> ProcessorContext:
    info = VideoInfo(
        duration=FRAMES / 25, fps_num=25, fps_den=1, frame_count=FRAMES, width=WIDTH, height=HEIGHT
    )
    return ProcessorContext(
        info=info, rate=RATE, width=WIDTH, height=HEIGHT, folder=stores["side"],
        model_store=str(stores.get(step, "")), audio_path=stores["side"] / "speech.wav",
    )  # fmt: skip


def test_the_registry_lists_the_chain_steps_in_order() -> None:
    assert registry.step_names() == ("crop", "swap", "enhance", "lipsync")
    assert registry.step_spec("noop").name == "noop"  # internal: plans may carry it
    with pytest.raises(KeyError, match="crop, swap, enhance, lipsync"):
        registry.step_spec("blur")


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_each_step_provides_every_part_of_its_spec(
    spec: StepSpec, stores: dict[str, Path], real_frames: np.ndarray
) -> None:
    assert issubclass(spec.options, Strict)
    # Options: the defaults (plus what the step cannot default) validate, and survive the
    # plan's JSON as the task parses it back.
    options = spec.parse(RUNNABLE.get(spec.name, {}))
    assert spec.parse(options.model_dump(mode="json")) == options
    # Models: with the defaults, names the step's own catalog lists, each with a role; an
    # analyser pack (face detection, shared by the face steps) is swap's.
    defaults = spec.parse(REQUIRED.get(spec.name, {}))
    for need in spec.models(defaults):
        assert isinstance(need, ModelNeed) and need.role
        owner = "swap" if need.role == "analyser" else spec.name
        assert catalog()[need.name]["step"] == owner
    # Context: frames each side, never fewer without a frame size (a bound for any size).
    before, after = spec.context(options, RATE, (WIDTH, HEIGHT))
    unsized = spec.context(options, RATE, None)
    assert 0 <= before <= unsized[0] and 0 <= after <= unsized[1]
    # Side files: each named with its manifest field under the step's.
    base = f"chain[0].{spec.name}"
    files = spec.side_files(options, base)
    assert all(isinstance(f, SideFile) and f.field.startswith(base + ".") for f in files)
    # Checks: the images it names are read from the folder and pass (swap: one face each,
    # found by the store's detector).
    inputs = CheckInputs(
        models=open_model_store(stores[spec.name]) if spec.name in stores else None,
        read=lambda name: (stores["side"] / name).read_bytes(),
        uri=lambda name: f"file://{stores['side'] / name}",
    )
    assert spec.checks(options, base, inputs) == []
    # Build: a Processor that takes real frames and gives every one back, at its size.
    processor = spec.build(options, context_for(spec.name, stores))
    assert (processor.lookbehind, processor.lookahead) == (before, after)
    batch = FrameBatch(real_frames.copy(), np.arange(FRAMES, dtype=np.int64))
    out = [processor.push(batch), processor.flush()]
    indices = np.concatenate([b.indices for b in out])
    assert indices.tolist() == list(range(FRAMES))
    width, height = processor.output_size()
    assert all(b.frames.shape[1:] == (height, width, 3) for b in out if len(b))


def test_a_step_builder_refuses_a_store_without_its_models(tmp_path: Path) -> None:
    for spec in registry.STEPS:
        options = spec.parse(RUNNABLE.get(spec.name, {}))
        if not spec.models(options):
            continue
        ctx = context_for(spec.name, {"side": tmp_path, spec.name: tmp_path})
        with pytest.raises(StepSetupError) as err:
            spec.build(options, ctx)
        assert err.value.code == "MODEL_MISSING", spec.name


def test_a_chain_names_the_manifest_field_of_the_step_that_cannot_start(tmp_path: Path) -> None:
    """Whatever a step's own message says (its option, or the store's words), the task's error
    starts with the step's field in the manifest, as the trigger's errors do."""
    from processors.chain import Chain

    for spec in registry.STEPS:
        options = spec.parse(RUNNABLE.get(spec.name, {}))
        if not spec.models(options):
            continue
        ctx = context_for(spec.name, {"side": tmp_path, spec.name: tmp_path})
        steps = [{"name": "noop", "options": {}}, {"name": spec.name, "options": options}]
        with pytest.raises(StepSetupError) as err:
            Chain(steps, ctx)
        assert str(err.value).startswith(f"chain[1].{spec.name}"), str(err.value)
        assert err.value.code == "MODEL_MISSING", spec.name


# -- a step added only to the registry -----------------------------------------------------


class BlurOptions(Strict):
    """A test step: a box blur of `radius`, reading an optional mask image."""

    radius: int = Field(default=2, ge=0, le=50)
    mask: RelPath | None = None


class Blur(PassThrough):
    name = "blur"

    def __init__(self, options: BlurOptions, ctx: ProcessorContext) -> None:
        super().__init__(ctx)
        self.lookbehind = self.lookahead = options.radius
        self.radius = options.radius

    def push(self, batch: FrameBatch) -> FrameBatch:
        size = 2 * self.radius + 1
        return FrameBatch(
            np.stack([cv2.blur(f, (size, size)) for f in batch.frames]), batch.indices
        )


def build_blur(options: BlurOptions, ctx: ProcessorContext) -> Blur:
    return Blur(options, ctx)


BLUR = StepSpec(
    name="blur",
    options=BlurOptions,
    processor=f"{__name__}:build_blur",
    context=lambda options, rate, frame: (options.radius, options.radius),
    side_files=lambda options, base: (
        [SideFile(f"{base}.mask", options.mask)] if options.mask else []
    ),
)


@pytest.fixture
def with_blur(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one line a real step adds to processors/registry.py.
    monkeypatch.setattr(registry, "STEPS", (*registry.STEPS, BLUR))


def test_a_step_added_only_to_the_registry_is_loaded_planned_and_built(
    with_blur: None, real_frames: np.ndarray
) -> None:
    text = b"""
version: 1
inputs:
  - talk.mp4
  - {video: other.mp4, overrides: {blur: {radius: 5}}}
chain:
  - crop: {aspect: "1:1", smoothing_seconds: 0.2}
  - blur: {radius: 3, mask: masks/face.png}
compute: {chunk_seconds: 2}
"""
    manifest = load_manifest(text)
    assert [s.name for s in manifest.chain] == ["crop", "blur"]
    assert manifest.step("blur") == BlurOptions(radius=3, mask="masks/face.png")
    # Input resolution waits for the step's side file, naming its field.
    waiting = resolve_inputs(manifest, {"talk.mp4", "other.mp4"}, "out/", 10)
    assert [(m.field, m.code) for m in waiting.missing] == [("chain[1].blur.mask", "INPUT_MISSING")]
    resolved = resolve_inputs(manifest, {"talk.mp4", "other.mp4", "masks/face.png"}, "out/", 10)
    assert resolved.complete
    # Planning: each chunk's pre/post-roll holds the crop's context plus the blur's radius.
    info = VideoInfo(
        duration=10.0, fps_num=25, fps_den=1, frame_count=250, width=WIDTH, height=HEIGHT
    )
    plan = build_plan(manifest, "", [(item, info) for item in resolved.items])
    crop = registry.step_spec("crop")
    crop_before, _ = crop.context(manifest.chain[0].options, RATE, (WIDTH, HEIGHT))
    first, second = plan.items
    assert first.chain[1] == {"name": "blur", "options": {"radius": 3, "mask": "masks/face.png"}}
    assert first.chunks[1].preroll == crop_before + 3
    assert second.chunks[1].preroll == crop_before + 5  # the item's override
    # The task's chain builds it from the plan's JSON and runs it on real frames.
    ctx = context_for("blur", {"side": Path(".")})
    chain = Chain(first.chain, ctx)
    assert chain.lookbehind == crop_before + 3
    out: list[FrameBatch] = []
    chain.run([FrameBatch(real_frames.copy(), np.arange(FRAMES))], out.append, (0, FRAMES))
    assert sum(len(b) for b in out) == FRAMES


def test_an_added_steps_option_errors_keep_their_field_paths(with_blur: None) -> None:
    text = b"""
version: 1
inputs:
  - {video: a.mp4, overrides: {blur: {radius: 99}}}
chain:
  - blur: {radius: -1, colour: red}
"""
    with pytest.raises(ManifestInvalid) as err:
        load_manifest(text)
    fields = sorted(e.field for e in err.value.errors)
    assert fields == ["chain[0].blur.colour", "chain[0].blur.radius"]
    fixed = text.replace(b"radius: -1, colour: red", b"radius: 1")
    with pytest.raises(ManifestInvalid) as err:
        load_manifest(fixed)
    assert [e.field for e in err.value.errors] == ["inputs[0].overrides.blur.radius"]


def test_without_the_registry_line_the_step_is_unknown() -> None:
    with pytest.raises(ManifestInvalid) as err:
        load_manifest(b"version: 1\ninputs: [a.mp4]\nchain: [{blur: {radius: 1}}]\n")
    assert any((e.field or "").startswith("chain[0]") for e in err.value.errors)
