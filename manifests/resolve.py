"""Match a manifest's inputs against what is in its folder: paths, globs, side files."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from core.domain import JobError
from core.globs import Glob, GlobError, is_glob, parse_glob
from core.strict import Strict
from manifests.model import InputItem, Manifest
from manifests.steps import checked_steps
from processors import registry

MANIFEST_SUFFIXES = (".yaml", ".yml")
NOT_INPUTS = (".status.json", ".yaml", ".yml", ".json", ".txt", ".md")


def video_pattern(video: str) -> str | Glob:
    """The one name `video` stands for (a plain path, or a glob of escapes only such as
    `Interview [[]final].mp4`), or the Glob to match names with. Raises GlobError for a
    malformed glob, which the loader has already refused in a manifest it loaded."""
    if not is_glob(video):
        return video
    glob = parse_glob(video)
    return glob.literal if glob.literal is not None else glob


def _literal_hint(video: str, present: set[str]) -> str:
    """A user who names `Interview [final].mp4` meant the file, not a glob: say how."""
    if video in present:
        escaped = re.sub(r"([*?\[])", r"[\1]", video)
        return f"; to name the file {video} itself, write {escaped}"
    return ""


@dataclass
class ResolvedItem:
    index: int  # position in manifest.inputs
    video: str  # relative to the manifest's folder
    audio: str | None
    output_name: str | None
    overrides: dict[str, dict] = field(default_factory=dict)


@dataclass
class Resolution:
    items: list[ResolvedItem]
    missing: list[JobError]  # inputs not (yet) in the folder
    errors: list[JobError]  # problems no upload can fix

    @property
    def complete(self) -> bool:
        return not self.missing and not self.errors


def _files_of(base: str, step: str, options: Strict) -> list[tuple[str, str]]:
    return [tuple(f) for f in registry.step_spec(step).side_files(options, base)]


def side_files(manifest: Manifest) -> list[tuple[str, str]]:
    """(field path, relative path) of every non-video file the chain needs, including the
    files an input's overrides name (a per-item voice-over, another source face)."""
    found: list[tuple[str, str]] = []
    for run in checked_steps(manifest):
        for where, path in _files_of(run.field, run.name, run.options):
            # An override: only what it names itself; the chain's own files are listed too.
            option = re.split(r"[.\[]", where[len(run.field) + 1 :])[0]
            if run.changed is None or option in run.changed:
                found.append((where, path))
    return found


def resolve_inputs(
    manifest: Manifest, present: set[str], output_prefix: str, max_items: int
) -> Resolution:
    """`present`: object names relative to the manifest's folder."""
    candidates = sorted(
        name
        for name in present
        if not name.startswith(output_prefix)
        and not name.endswith(NOT_INPUTS)
        and not posixpath.basename(name).startswith(".")
    )
    items: list[ResolvedItem] = []
    missing: list[JobError] = []
    errors: list[JobError] = []
    for i, item in enumerate(manifest.inputs):
        _resolve_input(i, item, present, candidates, items, missing, errors)
    for where, rel in side_files(manifest):
        if rel not in present:
            missing.append(_not_there_yet(rel, where))
    if len(items) > max_items:
        errors.append(
            JobError(
                code="TOO_MANY_INPUTS",
                message=f"inputs expand to {len(items)} videos; the limit is {max_items}",
                field="inputs",
            )
        )
    errors += _output_name_clashes(items, output_prefix)
    return Resolution(items, missing, errors)


def _not_there_yet(rel: str, where: str) -> JobError:
    return JobError(
        code="INPUT_MISSING", message=f"{rel} is not in the manifest's folder yet", field=where
    )


def _resolve_input(
    i: int,
    item: InputItem,
    present: set[str],
    candidates: list[str],
    items: list[ResolvedItem],
    missing: list[JobError],
    errors: list[JobError],
) -> None:
    """inputs[i]: its videos appended to `items`, what is not there yet to `missing`, what is
    wrong with it to `errors`."""
    overrides = item.overrides.model_dump(exclude_none=True)
    try:
        video = video_pattern(item.video)
    except GlobError as exc:
        errors.append(
            JobError(code="MANIFEST_FIELD", message=f"bad glob: {exc}", field=f"inputs[{i}].video")
        )
        return
    if isinstance(video, str):
        if video in present:
            items.append(ResolvedItem(i, video, item.audio, item.output_name, overrides))
        else:
            missing.append(_not_there_yet(video, f"inputs[{i}].video"))
    else:
        matches = [n for n in candidates if video.match(n)]
        if not matches:
            missing.append(
                JobError(
                    code="INPUT_MISSING",
                    message=f"no file matches the glob {item.video} yet"
                    + _literal_hint(item.video, present),
                    field=f"inputs[{i}].video",
                )
            )
        if item.output_name and len(matches) > 1:
            errors.append(
                JobError(
                    code="OUTPUT_NAME_CLASH",
                    message="output_name cannot be used with a glob matching several files",
                    field=f"inputs[{i}].output_name",
                )
            )
        for name in matches:
            items.append(ResolvedItem(i, name, item.audio, item.output_name, overrides))
    if item.audio and item.audio not in present:
        missing.append(_not_there_yet(item.audio, f"inputs[{i}].audio"))


def _output_name_clashes(items: list[ResolvedItem], output_prefix: str) -> list[JobError]:
    """Two items that would write the same output."""
    errors = []
    seen: dict[str, int] = {}
    for item in items:
        out = item.output_name or posixpath.splitext(posixpath.basename(item.video))[0] + ".mp4"
        if out in seen:
            errors.append(
                JobError(
                    code="OUTPUT_NAME_CLASH",
                    message=f"two inputs would both write {output_prefix}{out}; "
                    "set output_name on one",
                    field=f"inputs[{item.index}]",
                )
            )
        seen[out] = item.index
    return errors
