"""Turn a validated manifest and its probed videos into a Plan: items × frame-exact chunks."""

from __future__ import annotations

import math
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from batch_jobs.chunk_size import auto_chunk_seconds
from batch_jobs.worker_count import LOCAL, Throughput, auto_workers, job_throughput
from core.domain import Chunk, Plan, PlannedItem, VideoInfo
from core.strict import Strict
from manifests.model import ComputeOptions, Manifest
from manifests.resolve import ResolvedItem
from manifests.steps import input_steps
from processors.media.speech import AudioInfo, own_audio_skip
from processors.registry import step_spec
from processors.spec import Speech, StepSpec


def context_frames(
    step: str, options: Strict | dict, rate: Fraction, frame: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Frames of context (before, after) a step needs around the frames it emits."""
    spec = step_spec(step)
    return spec.context(spec.parse(options), rate, frame)


@dataclass(frozen=True)
class SpeechStep:
    """The step of a chain that follows speech (lipsync), its typed options and its index."""

    index: int
    spec: StepSpec
    options: Strict
    speech: Speech


def speech_step(steps: list[dict]) -> SpeechStep | None:
    """The chain's step that follows speech, if any (a planned chain: name + options)."""
    for i, step in enumerate(steps):
        spec = step_spec(step["name"])
        if spec.speech is not None:
            return SpeechStep(i, spec, spec.parse(step["options"]), spec.speech)
    return None


def speech_file(item: ResolvedItem, steps: list[dict]) -> tuple[str | None, str]:
    """For a chain with a step that follows speech: the side audio file it follows (None: the
    video's own track) and the manifest field that names it. An input's own `audio` wins
    over the step's."""
    if item.audio:
        return item.audio, f"inputs[{item.index}].audio"
    step = speech_step(steps)
    if step is not None:
        own = step.speech.file(step.options, f"chain[{step.index}].{step.spec.name}")
        if own is not None:
            return own.path, own.field
    return None, f"inputs[{item.index}].video"


def speaker_files(steps: list[dict]) -> list[tuple[str, str]]:
    """For a chain whose speech step follows several speakers: each speaker's own track and
    the manifest field that names it (empty otherwise). Each track starts at output frame 0."""
    step = speech_step(steps)
    if step is None:
        return []
    tracks = step.speech.tracks(step.options, f"chain[{step.index}].{step.spec.name}")
    return [(track.path, track.field) for track in tracks]


def resolved_steps(manifest: Manifest, overrides: dict[str, dict]) -> list[dict]:
    """The chain an item runs (manifests/steps.py: its overrides merged in and re-validated),
    as plain dicts (the plan's JSON; the task parses each step's options again)."""
    return [run.planned() for run in input_steps(manifest, overrides)]


def chunk_frames(
    info: VideoInfo, chunk_seconds: float, before: int, after: int, total: int | None = None
) -> list[Chunk]:
    """`total`: the output's frame count when a step changes it (default: the video's)."""
    rate = Fraction(info.fps_num, info.fps_den)
    frames = info.frame_count if total is None else total
    size = max(1, round(chunk_seconds * rate))
    count = max(1, math.ceil(frames / size))
    chunks = []
    for i in range(count):
        start = i * size
        end = min(frames, start + size)
        chunks.append(
            Chunk(
                index=i,
                start_frame=start,
                end_frame=end,
                preroll=min(before, start),
                postroll=min(after, frames - end),
            )
        )
    return chunks


def output_names(folder: str, prefix: str, item: ResolvedItem) -> tuple[str, str]:
    stem = posixpath.splitext(posixpath.basename(item.video))[0]
    name = item.output_name or f"{stem}.mp4"
    out_stem = posixpath.splitext(name)[0]
    return f"{folder}{prefix}{name}", f"{folder}{prefix}{out_stem}.preview.jpg"


@dataclass
class _Draft:
    """An item planned but for its chunks, which wait for the job's worker count."""

    item: PlannedItem
    before: int
    after: int

    @property
    def frames(self) -> int:
        """The output's frame count (what its chunks cover)."""
        return self.item.info.frame_count if self.item.frames is None else self.item.frames

    def chunks(self, seconds: float) -> list[Chunk]:
        return chunk_frames(self.item.info, seconds, self.before, self.after, self.frames)


def build_plan(
    manifest: Manifest,
    folder: str,
    items: list[tuple[ResolvedItem, VideoInfo]],
    speech: list[AudioInfo | None] | None = None,
    speed: Throughput = LOCAL,
) -> Plan:
    """`speech[n]`: the probed audio item n follows (chains with a step that follows speech,
    such as lipsync, only; with several speakers, the longest of their tracks). `speed`: the
    deployment's chain speed and worker start-up, which size `compute.workers: auto`."""
    compute = manifest.compute
    drafts = [
        _draft(manifest, folder, n, item, info, speech[n] if speech else None)
        for n, (item, info) in enumerate(items)
    ]
    # What the workers share: every item's seconds (auto chunks balance the whole job).
    job_seconds = sum(info.frame_count / info.fps for _, info in items if info.fps > 0)

    def chunk_seconds(draft: _Draft, workers: int) -> float:
        if compute.chunk_seconds != "auto":
            return compute.chunk_seconds
        info = draft.item.info
        return auto_chunk_seconds(job_seconds, info.fps, workers, draft.before, draft.after)

    def cut(workers: int) -> list[list[Chunk]]:
        return [d.chunks(chunk_seconds(d, workers)) for d in drafts]

    frames = sum(d.frames for d in drafts)
    speed = job_throughput(speed, compute.gpu, [d.item for d in drafts])
    workers = job_workers(compute, cut, frames, len(drafts), job_seconds, speed)
    for draft, chunks in zip(drafts, cut(workers), strict=True):
        draft.item.chunks = chunks
    return Plan(
        items=[d.item for d in drafts],
        max_parallel_tasks=compute.max_parallel_tasks,
        max_retries=compute.max_retries,
        gpu=compute.gpu,
        spot=compute.spot,
        chunk_seconds=max((chunk_seconds(d, workers) for d in drafts), default=10.0),
        workers=workers,
    )


def _draft(
    manifest: Manifest,
    folder: str,
    n: int,
    item: ResolvedItem,
    info: VideoInfo,
    heard: AudioInfo | None,
) -> _Draft:
    """Item n planned but not yet cut into chunks: its chain, outputs, soundtrack and length,
    and the context frames its chain reads around each chunk."""
    steps = resolved_steps(manifest, item.overrides)
    rate = Fraction(info.fps_num, info.fps_den)
    before = after = 0
    for step in steps:
        b, a = context_frames(step["name"], step["options"], rate, (info.width, info.height))
        before, after = before + b, after + a
    output, preview = output_names(folder, manifest.output.prefix, item)
    audio = item.audio
    frames, skip, mix = None, 0.0, []
    follows = speech_step(steps)
    if follows is not None and heard is not None:
        audio, _ = speech_file(item, steps)
        speakers = speaker_files(steps)
        if speakers:
            # The soundtrack is the given audio, else the speakers' tracks mixed.
            mix = [] if audio else [folder + name for name, _ in speakers]
        elif audio is None:  # the video's own track: frame 0 is partway into it
            skip = own_audio_skip(info.start_time, heard.start_time, rate)
        frames = follows.speech.frames(
            follows.options, info.frame_count, heard.duration - skip, rate
        )
    planned = PlannedItem(
        index=n,
        video=folder + item.video,
        audio=folder + audio if audio else None,
        output=output,
        preview=preview,
        info=info,
        chain=steps,
        encode=manifest.output.model_dump(mode="json"),
        frames=frames,
        audio_skip=skip,
        mix=mix,
    )
    return _Draft(planned, before, after)


def job_workers(
    compute: ComputeOptions,
    cut: Callable[[int], list[list[Chunk]]],
    frames: int,
    items: int,
    job_seconds: float,
    speed: Throughput,
) -> int:
    """`compute.workers`: the number asked for, else what the work pays for. `cut(n)`: the
    items' chunks for n workers (auto chunks follow the worker count), so what each choice
    costs beyond its `frames` (a fixed cost per chunk, the pre/post-roll decoded around each)
    is the plan's own; `items` stitches take time by `job_seconds`, the items' length."""
    if compute.workers != "auto":
        return compute.workers
    # Each item's stitch: the same whatever the worker count, so it only shrinks the budget.
    stitches = items * speed.stitch_seconds + job_seconds * speed.stitch_seconds_per_video_second

    def beyond_frames(n: int) -> float:
        chunks = [c for item in cut(n) for c in item]
        rolls = sum(c.preroll + c.postroll for c in chunks)
        fixed = len(chunks) * speed.chunk_overhead_seconds
        return stitches + fixed + rolls / speed.frames_per_second

    floor = frames / speed.frames_per_second
    return auto_workers(floor, compute.max_parallel_tasks, speed, beyond_frames)
