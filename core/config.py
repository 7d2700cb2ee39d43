"""Runtime configuration, read from the environment.

Cloud Functions and Cloud Batch tasks both receive their configuration as environment
variables, so the local tools use the same mechanism: one `Settings` model, one set of
`DROPBATCH_*` names, passed on unchanged from the trigger to every task it launches.
The `dropbatch` commands that talk to a deployment (submit, status, jobs, doctor) also read an
optional TOML file with the same names in lower case (`status = "firestore"`); the
environment wins over the file. Functions and tasks read the environment only.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field

ENV_PREFIX = "DROPBATCH_"


class Settings(BaseModel):
    """Which backend serves each interface, and where the local ones keep their files."""

    storage: Literal["local", "gcs"] = "local"
    # Local storage: <local_root>/<bucket>/<object name>. Ignored for gcs.
    local_root: Path = Path(".dropbatch-data")
    # Where the local store keeps its own files (status.sqlite, the work bucket `work/`,
    # object metadata, locks): a folder inside local_root. Empty: `<local_root>/.dropbatch`.
    # The command line sets it to a local inbox's own `<inbox>/.dropbatch` (one store per
    # inbox, found from anywhere in it: README, "Using it on one machine").
    local_state: Path | None = None
    # Where internal objects go (chunk parts, preview tiles, output-name claims): a bucket the
    # inbox trigger does not watch, so our own intermediate writes never invoke it. Empty: a
    # local store keeps them in `<local_root>/.dropbatch/work/`; a Cloud Storage one under
    # `_dropbatch/` in the inbox bucket itself (one-bucket setups; each such write then costs
    # an invocation that returns at once). The deployment (infra/) always sets it.
    work_bucket: str = ""
    status: Literal["sqlite", "firestore"] = "sqlite"
    sqlite_path: Path | None = None  # default: <local_state>/status.sqlite
    firestore_database: str = "(default)"
    firestore_collection: str = "dropbatch_jobs"
    launcher: Literal["local", "batch"] = "local"
    # A folder, or a gs://bucket/prefix/ of the model files the catalog lists (each step's
    # processors/<step>/models.yaml).
    model_store: str = ""
    # Where a VM keeps verified copies of store models (default: ~/.cache/dropbatch/models).
    # On Cloud Batch, a host folder shared by the VM's tasks, so each file is fetched once.
    model_cache: str = ""
    # The trigger counts the faces in swap's source/reference images (needs onnxruntime where
    # it runs; without it, it logs and leaves the check to the task).
    check_faces: bool = True
    # A face image (swap's source and reference, lipsync's speaker references) with more
    # pixels than this, by its header, is INVALID before it is decoded (a decoded image takes
    # 3 bytes a pixel, and a 2 MB PNG may hold 625 million of them). 40 million: an 8K photo.
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    # A video whose frame has more pixels than this is INVALID at the trigger (by its probed
    # size, before any frame is decoded): a worker holds many frames at once (about 350 MB
    # a million pixels with crop, bench/RESULTS.md "Worker memory"). Default: DCI 4K.
    max_video_pixels: int = Field(default=4096 * 2160, ge=1)
    # The trigger probes this many of a manifest's inputs at a time: up to 500 inputs must be
    # planned inside an event-driven function's 540 s, and each probe mostly waits on storage.
    probe_concurrency: int = Field(default=16, ge=1)
    # Planning one event's manifests (listing, checks, probing every input) must end before
    # the trigger function is stopped (its timeout: 540 s, infra/functions.tf); past this, the
    # job ends FAILED PLANNING_TIMEOUT naming the inputs not yet probed.
    trigger_deadline_seconds: float = Field(default=480.0, gt=0)
    # Each ffprobe run on an input stops after this long (the pass that reads every packet
    # of a variable-frame-rate video gets 2.5 times it); the input is then INVALID, named.
    probe_timeout_seconds: float = Field(default=120.0, gt=0)
    # A job the engine has not started after this long (no quota, no GPU capacity in the
    # allowed zones, an image that cannot be pulled) is deleted there and ends FAILED
    # NO_CAPACITY with the engine's reason; the sweep looks it up meanwhile.
    queued_timeout_minutes: float = Field(default=60.0, gt=0)
    # A manifest whose inputs are still missing after this long ends INVALID.
    input_wait_seconds: float = Field(default=3600.0, ge=0)
    # Lease a stitcher holds; a crashed stitcher is replaced once it expires.
    stitch_lease_seconds: float = Field(default=300.0, gt=0)
    # Lease on a chunk a worker processes (renewed every third of it while it works): a worker
    # stopped or silently gone loses its chunk to another once it runs out.
    claim_lease_seconds: float = Field(default=60.0, gt=0)
    # The warm pool (docs/decisions/0119-warm-pool-of-workers.md): a Cloud Batch worker (and
    # `dropbatch serve`'s) whose job has no chunk left stays up this long, models loaded,
    # taking chunks of any job on the same image and machine kind; the trigger launches VMs
    # only for what the free workers do not cover. 0: every job runs on its own workers.
    warm_minutes: float = Field(default=5.0, ge=0)
    # At most this many pool workers live at once in the deployment (capacity launched past
    # it waits for the live ones to take the job).
    pool_max_workers: int = Field(default=20, ge=1)
    # Local executor: at most this many tasks at a time on this machine; auto: the job's, at
    # most what this machine's cores and available memory hold (batch_jobs/worker_memory.py).
    local_workers: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    # The command a task runs (Cloud Batch runs the image's entrypoint; locally, this).
    task_command: str = ""
    # Threads a task gives its decoder, encoder and OpenCV (0: their own choice). Bounding it
    # lets several local tasks share a machine without oversubscribing its cores.
    task_threads: int = Field(default=0, ge=0)
    # Batch settings (used by the Cloud Batch launcher).
    project: str = ""
    region: str = "us-central1"
    image: str = ""
    # Which target of Dockerfile.gpu `image` was built from: `slim` (onnxruntime only) or
    # `ultralytics` (adds torch and ultralytics, which crop's `yolo` detector needs); the
    # trigger refuses `detector: yolo` on a slim deployment. Empty: no image (local runs use
    # this machine's packages), nothing to check.
    image_variant: Literal["", "slim", "ultralytics"] = ""
    # The Batch VMs' boot image: `batch-debian` (Batch installs the pinned NVIDIA driver at
    # every VM start), or an image with the driver already on it
    # (docs/decisions/0089-boot-image-with-driver-optional.md), named with
    # gpu_driver_preinstalled = true so no VM installs it again.
    boot_image: str = "batch-debian"
    gpu_driver_preinstalled: bool = False
    # The task image (by digest) `boot_image` was built with (infra/boot-image/ pulls it onto
    # the image): while it is `image`, no VM pulls the image at start. Empty: none.
    boot_image_task_image: str = ""
    # What the planner sizes a job's workers with (`compute.workers: auto`,
    # batch_jobs/worker_count.py) and `dropbatch cost` prices with: the chain's speed on one
    # GPU in frames per second (0: each job's own, from its chain and frame size in the
    # per-step cost table processors/step_costs.yaml; the task logs each chunk's `fps`: set
    # it to override the table with your chain's measured speed), and
    # a VM's start-up before its worker starts (0: from the boot image, 250 s on batch-debian,
    # 100 s with gpu_driver_preinstalled, 40 s when boot_image_task_image is also `image`;
    # measure yours from a job's task timestamps).
    chain_fps: float = Field(default=0.0, ge=0)
    vm_startup_seconds: float = Field(default=0.0, ge=0)  # 0: from the boot image
    job_service_account: str = ""
    notification_topic: str = ""  # projects/P/topics/T (or T, in `project`)
    # Where a Batch job may place its VMs (comma-separated `regions/…` or `zones/…`);
    # empty: anywhere in `region`.
    allowed_locations: str = ""
    # A regional or private Cloud Batch endpoint (`batch.us-central1.rep.googleapis.com`, a
    # Private Service Connect name), reached over TLS with Google credentials; empty: Google's.
    batch_api_endpoint: str = ""
    # host:port of a local Batch API stand-in (the tests'), reached over plaintext gRPC without
    # credentials, like STORAGE_EMULATOR_HOST; never a real endpoint.
    batch_emulator_host: str = ""
    # host:port of a local stand-in for the IAM policy reads `dropbatch doctor --canary` makes
    # (Pub/Sub topic, service account and project getIamPolicy; the tests'), plaintext without
    # credentials; never a real endpoint. Bucket policies follow STORAGE_EMULATOR_HOST.
    iam_emulator_host: str = ""

    @property
    def local_state_dir(self) -> Path:
        return self.local_state or (self.local_root / ".dropbatch")

    @property
    def sqlite_file(self) -> Path:
        return self.sqlite_path or (self.local_state_dir / "status.sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment a task needs to see the same backends as its launcher."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            env[ENV_PREFIX + name.upper()] = str(value)
        env[ENV_PREFIX + "SQLITE_PATH"] = str(self.sqlite_file)
        env[ENV_PREFIX + "LOCAL_STATE"] = str(self.local_state_dir)  # as sqlite_path: resolved
        return env


CONFIG_ENV = ENV_PREFIX + "CONFIG"


class ConfigFileError(ValueError):
    """The config file is unreadable or names a setting that does not exist."""


def config_file_candidates(environ: Mapping[str, str] | None = None) -> list[Path]:
    """$DROPBATCH_CONFIG, else ./dropbatch.toml, else ~/.config/dropbatch/config.toml."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return [Path(env[CONFIG_ENV]).expanduser()]
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [Path("dropbatch.toml"), config_home / "dropbatch" / "config.toml"]


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the first config file that exists, overridden by DROPBATCH_* variables."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for path in config_file_candidates(env):
        if not path.is_file():
            if env.get(CONFIG_ENV):
                raise ConfigFileError(f"{path}: no such config file ({CONFIG_ENV})")
            continue
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigFileError(f"{path}: {exc}") from None
        unknown = sorted(set(values) - set(Settings.model_fields))
        if unknown:
            raise ConfigFileError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        break
    from_env = Settings.from_env(env).model_dump(exclude_unset=True)
    return Settings(**{**values, **from_env})
