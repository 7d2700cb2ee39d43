"""The model catalog and the model store: which files a step needs, where they live, and a
per-VM cache that fetches each file once and verifies it against its published sha256.

The catalog is every registered step's `processors/<step>/models.yaml`: per model its `files`,
their published `sha256` and `size` (a task verifies every file against them before it loads
it; null means "not pinned": the file is used as found), `role`, `modules` (analyser packs:
which file does what, so a step loads only what it needs), `licence` and `source`. A store may
carry its own catalog.yaml that adds models (and pins unpinned files); it can never change a
hash pinned in the packaged catalog.

A store is a local folder or a `gs://bucket/prefix/` (read through the ObjectStore protocol).
The trigger only checks presence (and size, which is free); the task fetches and hashes, so a
swapped or truncated file is caught before an ONNX session ever sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import yaml

from core.storage.local import file_lock
from processors.models.cache import default_cache as default_cache
from processors.models.errors import HELP as HELP
from processors.models.errors import CatalogError as CatalogError
from processors.models.errors import ModelCorrupt as ModelCorrupt
from processors.models.errors import ModelIncompatible as ModelIncompatible
from processors.models.errors import ModelMissing as ModelMissing
from processors.models.errors import ModelStoreError as ModelStoreError
from processors.spec import StepSetupError

if TYPE_CHECKING:
    from core.config import Settings
    from core.storage.base import ObjectStore
    from core.strict import Strict
    from processors.base import ProcessorContext
    from processors.spec import ModelNeed, StepSpec

STORE_CATALOG = "catalog.yaml"  # a store's own additions to the packaged catalog


# -- catalog -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    step: str
    files: tuple[ModelFile, ...]
    role: str = ""
    modules: dict[str, str] = field(default_factory=dict)  # file name -> what it does
    licence: str = ""
    source: str = ""

    def file(self, name: str) -> ModelFile:
        return next(f for f in self.files if f.name == name)

    def file_for(self, module: str) -> str:
        """The file that implements a module of a pack (e.g. `detection`)."""
        for name, kind in self.modules.items():
            if kind == module:
                return name
        raise CatalogError(f"model {self.name} has no {module} module in the catalog")

    @classmethod
    def from_dict(cls, name: str, raw: dict) -> ModelEntry:
        files = [str(f) for f in raw.get("files") or []]
        if not files:
            raise CatalogError(f"catalog entry {name}: `files` is empty")
        hashes = raw.get("sha256") or {}
        sizes = raw.get("size") or {}
        return cls(
            name=name,
            step=str(raw.get("step", "")),
            files=tuple(
                ModelFile(
                    f,
                    str(hashes[f]).lower() if hashes.get(f) else None,
                    int(sizes[f]) if sizes.get(f) else None,
                )
                for f in files
            ),
            role=str(raw.get("role", "")),
            modules={str(k): str(v) for k, v in (raw.get("modules") or {}).items()},
            licence=str(raw.get("licence", "")),
            source=str(raw.get("source", "")),
        )


def catalog() -> dict[str, dict]:
    """The packaged catalog: every registered step's `models.yaml` (name -> raw entry, with
    `step` set to the step that brings it)."""
    from processors import registry

    return _catalog_of((*registry.steps(), *registry.INTERNAL))


@cache
def _catalog_of(specs: tuple[StepSpec, ...]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for spec in specs:
        if spec.catalog is None:
            continue
        entries = (yaml.safe_load(spec.catalog.read_text()) or {}).get("models") or {}
        for name, raw in entries.items():
            if name in merged:
                raise CatalogError(
                    f"model {name} is in the catalog of both {merged[name]['step']} and {spec.name}"
                )
            merged[name] = {**raw, "step": spec.name}
    return merged


def merge_catalog(extra: dict[str, dict] | None, where: str = "") -> dict[str, ModelEntry]:
    """The packaged catalog plus a store's additions.

    A store may add models and pin the hash of a packaged file that has none; it may never
    change a pinned hash or size, so a store cannot talk a task into loading a different file
    under a well-known name.
    """
    merged = {name: ModelEntry.from_dict(name, raw) for name, raw in catalog().items()}
    for name, raw in (extra or {}).items():
        added = ModelEntry.from_dict(name, raw or {})
        known = merged.get(name)
        if known is None:
            merged[name] = added
            continue
        if [f.name for f in known.files] != [f.name for f in added.files]:
            raise CatalogError(f"{where}: model {name} lists other files than the catalog's")
        files = []
        for old, new in zip(known.files, added.files, strict=True):
            for attr in ("sha256", "size"):
                pinned, offered = getattr(old, attr), getattr(new, attr)
                if pinned is not None and offered is not None and pinned != offered:
                    raise CatalogError(
                        f"{where}: model {name} file {old.name}: {attr} differs from the "
                        f"pinned value; a store cannot re-pin a catalogued model"
                    )
            files.append(ModelFile(old.name, old.sha256 or new.sha256, old.size or new.size))
        merged[name] = ModelEntry(
            name, known.step, tuple(files), known.role, known.modules, known.licence, known.source
        )
    return merged


def step_needs(
    step: str, options: Strict | Mapping[str, Any], faces_given: bool = False
) -> list[ModelNeed]:
    """What the step's spec says it needs with these options (typed, or a plan's JSON);
    `faces_given`: an earlier step of its chain hands faces on (registry.faces_handed_on), so
    the step's own face detector is not needed."""
    from processors.registry import step_spec

    spec = step_spec(step)
    needs = spec.models(spec.parse(options))
    return [n for n in needs if not (faces_given and n.without_faces_only)]


def models_for_step(
    step: str, options: Strict | Mapping[str, Any], faces_given: bool = False
) -> list[str]:
    """The catalog names a step with these options needs (`faces_given`: see `step_needs`)."""
    return [need.name for need in step_needs(step, options, faces_given)]


# -- where the files are -----------------------------------------------------------------------
@dataclass(frozen=True)
class FileVersion:
    size: int
    version: str  # changes when the file is replaced (mtime or generation)


class ModelLocation(Protocol):
    uri: str

    def stat(self, name: str) -> FileVersion | None: ...

    def in_place(self, name: str) -> Path | None:
        """A readable local path for the file, if no copy is needed."""
        ...

    def download(self, name: str, target: Path) -> None: ...

    def read_text(self, name: str) -> str | None: ...


class FolderLocation:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def stat(self, name: str) -> FileVersion | None:
        try:
            st = (self.root / name).stat()
        except OSError:
            return None
        return FileVersion(st.st_size, f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")

    def in_place(self, name: str) -> Path | None:
        return self.root / name

    def download(self, name: str, target: Path) -> None:  # pragma: no cover - in place
        raise NotImplementedError

    def read_text(self, name: str) -> str | None:
        path = self.root / name
        return path.read_text() if path.is_file() else None


class ObjectStoreLocation:
    """`gs://bucket/prefix/` through whichever ObjectStore backend the settings choose."""

    def __init__(self, store: ObjectStore, bucket: str, prefix: str, uri: str) -> None:
        self.store, self.bucket, self.prefix, self.uri = store, bucket, prefix, uri

    def stat(self, name: str) -> FileVersion | None:
        from core.storage.base import NotFound

        try:
            info = self.store.stat(self.bucket, self.prefix + name)
        except NotFound:
            return None
        return FileVersion(info.size, str(info.generation))

    def in_place(self, name: str) -> Path | None:
        return None  # a bucket is remote by design: always a verified copy in the VM's cache

    def download(self, name: str, target: Path) -> None:
        self.store.download_file(self.bucket, self.prefix + name, target)

    def read_text(self, name: str) -> str | None:
        from core.storage.base import NotFound

        try:
            return self.store.read_bytes(self.bucket, self.prefix + name).decode()
        except NotFound:
            return None


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """A gs:// model store's (bucket, prefix/)."""
    from core.storage.base import split_gs_uri

    try:
        bucket, prefix = split_gs_uri(uri)
    except ValueError:
        raise CatalogError(f"model store {uri!r}: no bucket") from None
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


# -- the store ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FetchedModel:
    """A model's files, local and verified."""

    entry: ModelEntry
    paths: dict[str, Path]

    def module(self, kind: str) -> Path:
        return self.paths[self.entry.file_for(kind)]

    @property
    def path(self) -> Path:
        """The file of a single-file model."""
        return self.paths[self.entry.files[0].name]


@dataclass(frozen=True)
class FileReport:
    model: str
    file: str
    state: str  # present | unpinned | missing | corrupt
    detail: str = ""


class ModelStore:
    def __init__(self, location: ModelLocation, cache_dir: Path | None = None) -> None:
        self.location = location
        self.uri = location.uri
        self.cache_dir = cache_dir or default_cache()
        self._entries: dict[str, ModelEntry] | None = None

    def entries(self) -> dict[str, ModelEntry]:
        if self._entries is None:
            where = f"{self.uri.rstrip('/')}/{STORE_CATALOG}"
            text = self.location.read_text(STORE_CATALOG)
            extra = None
            if text is not None:
                try:
                    extra = (yaml.safe_load(text) or {}).get("models") or {}
                except yaml.YAMLError as exc:
                    raise CatalogError(f"{where}: not valid YAML ({exc})") from None
            self._entries = merge_catalog(extra, where)
        return self._entries

    def entry(self, name: str) -> ModelEntry:
        entry = self.entries().get(name)
        if entry is None:
            raise ModelMissing(name, self.uri, [f"{name}.onnx (not in the catalog)"])
        return entry

    # Cheap: for the trigger. Presence and, where it is pinned, the size.
    def require(self, name: str) -> ModelEntry:
        entry = self.entry(name)
        missing = [f.name for f in entry.files if self.location.stat(f.name) is None]
        if missing:
            raise ModelMissing(name, self.uri, missing)
        for f in entry.files:
            found = self.location.stat(f.name)
            if found is not None and f.size is not None and found.size != f.size:
                raise ModelCorrupt(name, self.uri, f.name, f"{found.size} bytes, not {f.size}")
        return entry

    # Thorough: for a task, and for `dropbatch models check`.
    def fetch(self, name: str) -> FetchedModel:
        entry = self.require(name)
        return FetchedModel(entry, {f.name: self._verified(entry, f) for f in entry.files})

    def check(self, names: list[str]) -> list[FileReport]:
        reports = []
        for name in names:
            entry = self.entries().get(name)
            if entry is None:
                reports.append(FileReport(name, "-", "missing", "not in the catalog"))
                continue
            for f in entry.files:
                try:
                    self._verified(entry, f)
                except ModelMissing:
                    reports.append(FileReport(name, f.name, "missing"))
                except ModelCorrupt as exc:
                    reports.append(FileReport(name, f.name, "corrupt", str(exc)))
                else:
                    state = "present" if f.sha256 else "unpinned"
                    detail = "sha256 verified" if f.sha256 else "no sha256 in the catalog"
                    reports.append(FileReport(name, f.name, state, detail))
        return reports

    def _verified(self, entry: ModelEntry, f: ModelFile) -> Path:
        """A local copy of the file whose hash matched, fetched at most once per cache."""
        folder = self.cache_dir / hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        stamp = folder / f"{f.name}.verified"
        # A task killed mid-download never leaves the lock held (core.storage.local).
        with file_lock(folder / f"{f.name}.lock"):
            found = self.location.stat(f.name)
            if found is None:
                raise ModelMissing(entry.name, self.uri, [f.name])
            if f.size is not None and found.size != f.size:
                raise ModelCorrupt(
                    entry.name, self.uri, f.name, f"{found.size} bytes, not {f.size}"
                )
            direct = self.location.in_place(f.name)
            path = direct if direct is not None else folder / f.name
            wanted = {"version": found.version, "sha256": f.sha256}
            if _read_stamp(stamp) == wanted and path.is_file():
                return path
            stamp.unlink(missing_ok=True)
            if direct is None:
                tmp = folder / f".{f.name}.{uuid.uuid4().hex}.part"
                try:
                    self.location.download(f.name, tmp)
                    _check_hash(entry, f, tmp, self.uri)
                    os.replace(tmp, path)  # atomic: readers see the old or the whole file
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                _check_hash(entry, f, path, self.uri)
            stamp.write_text(json.dumps(wanted))
            return path


def _check_hash(entry: ModelEntry, f: ModelFile, path: Path, uri: str) -> None:
    if f.sha256 is None:
        return
    actual = sha256_of(path)
    if actual != f.sha256:
        raise ModelCorrupt(entry.name, uri, f.name, f"sha256 {actual[:12]}…, not {f.sha256[:12]}…")


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_model_store(
    location: ModelStore | Path | str | None,
    settings: Settings | None = None,
    cache_dir: Path | None = None,
) -> ModelStore | None:
    """A ModelStore for a folder or `gs://` location (None when nothing is configured)."""
    if isinstance(location, ModelStore) or location is None:
        return location
    text = str(location)
    if not text:
        return None
    if text.startswith("gs://"):
        from core.config import Settings
        from core.storage.factory import open_store

        settings = settings or Settings.from_env()
        bucket, prefix = parse_gs_uri(text)
        try:
            objects = open_store(settings.model_copy(update={"storage": "gcs"}))
        except NotImplementedError as exc:
            raise CatalogError(f"model store {text}: {exc}") from None
        where = ObjectStoreLocation(objects, bucket, prefix, f"gs://{bucket}/{prefix}")
        return ModelStore(where, cache_dir or default_cache(settings))
    return ModelStore(FolderLocation(Path(text)), cache_dir or default_cache(settings))


def require_models(
    step: str,
    options: Strict | Mapping[str, Any],
    store: ModelStore | Path | str | None,
    settings: Settings | None = None,
    faces_given: bool = False,
) -> None:
    """Raise ModelMissing (or ModelCorrupt, on a wrong size) for the step's first bad model
    (`faces_given`: see `step_needs`)."""
    opened = open_model_store(store, settings)
    for need in step_needs(step, options, faces_given):
        if need.any_weights:
            _require_any_weights(need.name, opened)
            continue
        if opened is None:
            raise _no_store(need.name)
        opened.require(need.name)


def _no_store(name: str) -> ModelMissing:
    raw = catalog().get(name)
    return ModelMissing(name, "", list(raw["files"]) if raw else [f"{name}.onnx"])


def _weights_candidates(name: str) -> list[str]:
    """A loader such as ultralytics takes a TensorRT engine, a .pt or an .onnx: best first."""
    raw = catalog().get(name) or {}
    return list(raw.get("weights") or raw.get("files") or [f"{name}.onnx"])


def _require_any_weights(name: str, opened: ModelStore | None) -> None:
    # Presence only (the trigger must not download weights); the task verifies what it loads.
    candidates = _weights_candidates(name)
    if opened is None or not any(opened.location.stat(f) for f in candidates):
        raise ModelMissing(name, opened.uri if opened else "", candidates, any_of=True)


def weights_path(
    need: ModelNeed, store: ModelStore | Path | str | None, settings: Settings | None = None
) -> Path:
    """The one file a single-weights model loads (a step's detector).

    Without `any_weights`: the model's file, fetched and verified like every model. With it
    (ultralytics): the first of the catalog's `weights` the store holds — a TensorRT engine
    beats .pt beats .onnx. Engines and .pt files are built per GPU or per training run, so
    they are not pinned: they are used in place from a folder store; from a gs:// store the
    verified .onnx is what is loaded.
    """
    opened = open_model_store(store, settings)
    if not need.any_weights:
        if opened is None:
            raise _no_store(need.name)
        return opened.fetch(need.name).path
    candidates = _weights_candidates(need.name)
    if opened is not None:
        pinned = {f.name for f in opened.entry(need.name).files}
        for file in candidates:
            if opened.location.stat(file) is None:
                continue
            if file in pinned:
                return opened.fetch(need.name).paths[file]
            local = opened.location.in_place(file)
            if local is not None:
                return local
    raise ModelMissing(need.name, opened.uri if opened else "", candidates, any_of=True)


def fetch_models(
    step: str,
    options: Strict | Mapping[str, Any],
    store: ModelStore | Path | str | None,
    settings: Settings | None = None,
) -> dict[str, FetchedModel]:
    """Every model the step needs, local and verified (name -> files)."""
    require_models(step, options, store, settings)
    opened = open_model_store(store, settings)
    assert opened is not None
    return {name: opened.fetch(name) for name in models_for_step(step, options)}


P = TypeVar("P")


def build_after_models(
    step: str,
    options: Strict,
    ctx: ProcessorContext,
    construct: Callable[[Any, ProcessorContext], P],
) -> P:
    """Build a step whose processor loads store models: the models are required first, so a
    missing one ends the job with the store's code rather than failing inside a loader. (Not
    part of StepSpec.build: a step that loads a model only sometimes, such as enhance's
    detector, must not require it up front.) The processor raises StepSetupError itself."""
    try:
        require_models(step, options, ctx.model_store)
    except ModelStoreError as exc:
        raise StepSetupError(str(exc), exc.code) from None
    return construct(options, ctx)
