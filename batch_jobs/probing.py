"""Probing a manifest's inputs at trigger time: each video's headers and end, and the audio
each lipsync item follows. Up to 500 inputs must be probed inside an event-driven function's
540 s, and each probe mostly waits on Cloud Storage reads, so inputs are probed
`probe_concurrency` at a time; results and errors come back in input order, exactly as one
input after another would give them."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from batch_jobs.plan import resolved_steps, speaker_files, speech_file, speech_step
from core.domain import JobError, VideoInfo
from core.storage.base import NotFound, ObjectStore
from manifests.model import Manifest
from manifests.resolve import ResolvedItem
from processors.media.ffmpeg import MediaError, ProbeTimeout
from processors.media.probe import PROBE_SECONDS, TruncatedVideo, check_tail, probe
from processors.media.speech import AudioInfo, probe_audio

T = TypeVar("T")
R = TypeVar("R")

PROBE_CACHE_SIZE = 1024  # object versions; a VideoInfo is a few hundred bytes
PLANNING_TIMEOUT = "PLANNING_TIMEOUT"  # the code of an input not probed before the deadline
Version = tuple[str, str, int, int]  # bucket, name, generation, size


class ProbeCache:
    """What probe + check_tail learnt of an object version (bucket, name, generation, size):
    a version never changes, so its entry never goes stale; the oldest go first when full.
    Concurrent askers for one version wait for the first one's probe instead of repeating it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Version, VideoInfo] = OrderedDict()
        self._lock = threading.Lock()
        # One gate per version being probed, with the number of threads holding or awaiting it.
        self._gates: dict[Version, tuple[threading.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, version: Version) -> VideoInfo | None:
        with self._lock:
            return self._entries.get(version)

    def put(self, version: Version, info: VideoInfo) -> None:
        with self._lock:
            self._entries[version] = info
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def get_or_probe(self, version: Version, probe_version: Callable[[], VideoInfo]) -> VideoInfo:
        """The cached answer, else `probe_version()`'s, cached. A failed probe is not cached:
        the next asker probes again, as it would have one after another."""
        with self._lock:
            gate, users = self._gates.get(version, (threading.Lock(), 0))
            self._gates[version] = (gate, users + 1)
        try:
            with gate:
                info = self.get(version)
                if info is None:
                    info = probe_version()
                    self.put(version, info)
                return info
        finally:
            with self._lock:
                gate, users = self._gates[version]
                if users == 1:
                    del self._gates[version]
                else:
                    self._gates[version] = (gate, users - 1)


def in_order(work: Callable[[T], R], items: Sequence[T], bound: int) -> list[R]:
    """`work` on each item, at most `bound` at a time; results in the items' order. An
    exception `work` raises is raised here (the first in item order), and items not yet
    started are not started."""
    if bound <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(bound, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()  # after a failure: what has not started never does


@dataclass
class InputProber:
    """Probes one manifest's inputs in one folder of one bucket."""

    store: ObjectStore
    cache: ProbeCache
    bucket: str
    folder: str
    concurrency: int
    timeout: float = PROBE_SECONDS  # each ffprobe run's own limit
    until: float | None = None  # the trigger's deadline (time.monotonic()); no probe runs past

    def _out_of_time(self, where: str, name: str) -> JobError:
        return JobError(
            code=PLANNING_TIMEOUT,
            message="not probed: planning reached the trigger's deadline first",
            field=where,
            uri=self.store.uri(self.bucket, name),
        )

    def _late(self) -> bool:
        return self.until is not None and time.monotonic() >= self.until

    def videos(
        self, items: Sequence[ResolvedItem], listing: dict[str, tuple[int, int]]
    ) -> tuple[list[tuple[ResolvedItem, VideoInfo]], list[JobError]]:
        """Each input video's VideoInfo (headers, and an end that is really there), or the
        error that names it; `listing` gives each name's (generation, size)."""

        def one(item: ResolvedItem) -> VideoInfo | JobError:
            name = self.folder + item.video
            # The size too: a local file copied in with its old mtime kept (`cp -p`) has the
            # generation of another version.
            version = (self.bucket, name, *listing[item.video])
            where = f"inputs[{item.index}].video"
            if self._late():  # not started before the deadline: not started at all
                return self._out_of_time(where, name)
            try:
                return self.cache.get_or_probe(version, lambda: self._probe_video(name))
            except ProbeTimeout as exc:
                if exc.deadline:
                    return self._out_of_time(where, name)
                return JobError(
                    code="INPUT_PROBE_TIMEOUT",
                    message=str(exc),
                    field=where,
                    uri=self.store.uri(self.bucket, name),
                )
            except (MediaError, NotFound) as exc:
                return JobError(
                    code="INPUT_TRUNCATED"
                    if isinstance(exc, TruncatedVideo)
                    else "INPUT_UNREADABLE",
                    message=str(exc),
                    field=where,
                    uri=self.store.uri(self.bucket, name),
                )

        found = in_order(one, items, self.concurrency)
        probed = [(i, f) for i, f in zip(items, found, strict=True) if isinstance(f, VideoInfo)]
        return probed, [f for f in found if isinstance(f, JobError)]

    def _probe_video(self, name: str) -> VideoInfo:
        with self.store.media_source(self.bucket, name) as source:
            info = probe(source, self.timeout, self.until)
            # A truncated upload: refused before any task.
            check_tail(source, info, self.timeout, self.until)
        return info

    def speech(
        self, manifest: Manifest, probed: Sequence[tuple[ResolvedItem, VideoInfo]]
    ) -> tuple[list[AudioInfo | None], list[JobError]]:
        """The audio each lipsync item follows (its length decides the output's); None for an
        item without lipsync, or whose audio is unreadable (then an error names it)."""

        def one(entry: tuple[ResolvedItem, VideoInfo]) -> AudioInfo | JobError | None:
            item = entry[0]
            steps = resolved_steps(manifest, item.overrides)
            follows = speech_step(steps)
            if follows is None:
                return None
            step = follows.spec.name
            name, where = speech_file(item, steps)
            speakers = speaker_files(steps)
            if not speakers:
                return self._speech_of(step, name or item.video, where, own=name is None)
            # Several speakers: the output lasts as long as the longest track (by the length
            # policy); a given audio is only the soundtrack, but it must be readable too.
            soundtrack = self._speech_of(step, name, where, own=False) if name else None
            if isinstance(soundtrack, JobError):
                return soundtrack
            tracks = [self._speech_of(step, n, w, own=False) for n, w in speakers]
            bad = next((t for t in tracks if isinstance(t, JobError)), None)
            if bad is not None:
                return bad
            longest = max(tracks, key=lambda t: t.duration)  # type: ignore[union-attr]
            return AudioInfo(duration=longest.duration, start_time=0.0)  # type: ignore[union-attr]

        found = in_order(one, probed, self.concurrency)
        return (
            [None if isinstance(f, JobError) else f for f in found],
            [f for f in found if isinstance(f, JobError)],
        )

    def _speech_of(
        self, step: str, relative: str, where: str, *, own: bool
    ) -> AudioInfo | JobError:
        """The probed audio of one file in the folder, or the error naming its field."""
        name = self.folder + relative
        if self._late():
            return self._out_of_time(where, name)
        try:
            with self.store.media_source(self.bucket, name) as source:
                return probe_audio(source, self.timeout, self.until)
        except ProbeTimeout as exc:
            if exc.deadline:
                return self._out_of_time(where, name)
            return JobError(
                code="INPUT_PROBE_TIMEOUT",
                message=f"{step} audio: {exc}",
                field=where,
                uri=self.store.uri(self.bucket, name),
            )
        except (MediaError, NotFound) as exc:
            return JobError(
                code="AUDIO_MISSING" if own else "INPUT_UNREADABLE",
                message=(
                    f"{step} needs speech: the video has no audio track; "
                    f"set {step}.audio or the input's audio"
                    if own
                    else f"{step} audio: {exc}"
                ),
                field=where,
                uri=self.store.uri(self.bucket, name),
            )
