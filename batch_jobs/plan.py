"""Turn a validated manifest and its probed videos into a Plan: items × frame-exact chunks."""

from __future__ import annotations

import math
import posixpath
from fractions import Fraction

from dropbatch.status.model import Chunk, Plan, PlannedItem, VideoInfo
from manifests.model import STEP_MODELS, Manifest
from manifests.resolve import ResolvedItem


def context_frames(
    step: str, options: dict, rate: Fraction, frame: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Frames of context (before, after) a step needs around the frames it emits."""
    if step == "crop":
        from processors.crop.processor import context_frames as crop_context

        return crop_context(options, rate, frame)
    return 0, 0


def resolved_steps(manifest: Manifest, overrides: dict[str, dict]) -> list[dict]:
    """The chain with an item's overrides merged in and re-validated, as plain dicts."""
    steps = []
    for step in manifest.chain:
        options = step.options.model_dump(mode="json")
        if step.name in overrides:
            options.update(overrides[step.name])
            options = STEP_MODELS[step.name].model_validate(options).model_dump(mode="json")
        steps.append({"name": step.name, "options": options})
    return steps


def chunk_frames(info: VideoInfo, chunk_seconds: float, before: int, after: int) -> list[Chunk]:
    rate = Fraction(info.fps_num, info.fps_den)
    size = max(1, round(chunk_seconds * rate))
    count = max(1, math.ceil(info.frame_count / size))
    chunks = []
    for i in range(count):
        start = i * size
        end = min(info.frame_count, start + size)
        chunks.append(
            Chunk(
                index=i,
                start_frame=start,
                end_frame=end,
                preroll=min(before, start),
                postroll=min(after, info.frame_count - end),
            )
        )
    return chunks


def output_names(folder: str, prefix: str, item: ResolvedItem) -> tuple[str, str]:
    stem = posixpath.splitext(posixpath.basename(item.video))[0]
    name = item.output_name or f"{stem}.mp4"
    out_stem = posixpath.splitext(name)[0]
    return f"{folder}{prefix}{name}", f"{folder}{prefix}{out_stem}.preview.jpg"


def build_plan(
    manifest: Manifest, folder: str, items: list[tuple[ResolvedItem, VideoInfo]]
) -> Plan:
    planned = []
    for n, (item, info) in enumerate(items):
        steps = resolved_steps(manifest, item.overrides)
        rate = Fraction(info.fps_num, info.fps_den)
        before = after = 0
        for step in steps:
            b, a = context_frames(step["name"], step["options"], rate, (info.width, info.height))
            before, after = before + b, after + a
        output, preview = output_names(folder, manifest.output.prefix, item)
        planned.append(
            PlannedItem(
                index=n,
                video=folder + item.video,
                audio=folder + item.audio if item.audio else None,
                output=output,
                preview=preview,
                info=info,
                chain=steps,
                encode=manifest.output.model_dump(mode="json"),
                chunks=chunk_frames(info, manifest.compute.chunk_seconds, before, after),
            )
        )
    compute = manifest.compute
    return Plan(
        items=planned,
        max_parallel_tasks=compute.max_parallel_tasks,
        max_retries=compute.max_retries,
        gpu=compute.gpu,
        spot=compute.spot,
        chunk_seconds=compute.chunk_seconds,
    )
