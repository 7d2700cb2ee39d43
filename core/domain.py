"""The job's domain: what a manifest becomes once planned (videos, items, chunks) and the
user-facing error. These types belong to no store: the planner makes them, the task reads them,
and the status record only carries them.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class JobError(BaseModel):
    """A user-facing error: a stable code, what is wrong, and where (field path or URI)."""

    code: str
    message: str
    field: str | None = None
    uri: str | None = None

    def line(self) -> str:
        where = self.field or self.uri
        return f"{where}: {self.message}" if where else self.message


class VideoInfo(BaseModel):
    """What the planner learns from a video's headers."""

    duration: float
    fps_num: int
    fps_den: int
    frame_count: int
    width: int  # display width, after rotation
    height: int
    rotation: int = 0
    has_audio: bool = False
    variable_frame_rate: bool = False
    start_time: float = 0.0  # the video stream's first timestamp
    format_start_time: float = 0.0  # the file's, which ffmpeg treats as time zero
    codec: str = ""

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den


class Chunk(BaseModel):
    index: int
    start_frame: int  # first frame this chunk emits
    end_frame: int  # one past the last frame it emits
    preroll: int = 0  # frames decoded before start_frame for processors' context
    postroll: int = 0  # frames decoded after end_frame


class PlannedItem(BaseModel):
    """One input video of the job, with where its output goes and how it is chunked."""

    index: int
    video: str  # object name in the bucket
    audio: str | None = None
    output: str  # object name of the stitched MP4
    preview: str  # object name of the preview image
    info: VideoInfo
    chain: list[dict] = Field(default_factory=list)  # processor settings, resolved per item
    encode: dict = Field(default_factory=dict)
    chunks: list[Chunk] = Field(default_factory=list)
    # Set by lipsync: the output's frame count under its length policy (None: the video's),
    # and where output frame 0 sits in the speech audio (seconds; 0 for a separate file).
    frames: int | None = None
    audio_skip: float = 0.0
    # Lipsync with several speakers and no given audio: the object names of their tracks,
    # which the stitch mixes into the output's soundtrack (`audio` is None then).
    mix: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    items: list[PlannedItem] = Field(default_factory=list)
    max_parallel_tasks: int = 2
    max_retries: int = 2
    gpu: str = "none"
    spot: bool = False
    chunk_seconds: float = 10.0  # the longest chunk's length (auto chooses one per item)
    # Workers the planner chose (`compute.workers`); 0: one per chunk, up to max_parallel_tasks.
    workers: int = 0

    def tasks(self) -> list[tuple[int, int]]:
        """Every chunk as (item index, chunk index), in the order workers claim them."""
        return [(item.index, chunk.index) for item in self.items for chunk in item.chunks]

    @property
    def parallelism(self) -> int:
        """How many workers (Batch tasks) run the job: the planner's choice, one per chunk at
        most."""
        cap = min(self.max_parallel_tasks, self.workers or self.max_parallel_tasks)
        return max(1, min(cap, len(self.tasks())))
