"""Match a manifest's inputs against what is in its folder: paths, globs, side files."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from dropbatch.status.model import JobError
from manifests.model import Manifest
from manifests.paths import is_glob

MANIFEST_SUFFIXES = (".yaml", ".yml")
NOT_INPUTS = (".status.json", ".yaml", ".yml", ".json", ".txt", ".md")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` and `?` stay within one folder, `**/` spans folders."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
            else:
                out += "[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]"
                i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


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


def _files_of(base: str, opts: object) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for j, src in enumerate(getattr(opts, "source", []) or []):
        found.append((f"{base}.source[{j}]", src))
    if getattr(opts, "reference", None):
        found.append((f"{base}.reference", opts.reference))  # type: ignore[attr-defined]
    for j, entry in enumerate(getattr(opts, "face_map", []) or []):
        found.append((f"{base}.face_map[{j}].reference", entry.reference))
        found.append((f"{base}.face_map[{j}].source", entry.source))
    if getattr(opts, "audio", None):
        found.append((f"{base}.audio", opts.audio))  # type: ignore[attr-defined]
    return found


def side_files(manifest: Manifest) -> list[tuple[str, str]]:
    """(field path, relative path) of every non-video file the chain needs, including the
    files an input's overrides name (a per-item voice-over, another source face)."""
    found: list[tuple[str, str]] = []
    chain = {step.name: step for step in manifest.chain}
    for i, step in enumerate(manifest.chain):
        found += _files_of(f"chain[{i}].{step.name}", step.options)
    for j, item in enumerate(manifest.inputs):
        for name, changes in item.overrides.model_dump(exclude_none=True).items():
            if name not in chain:
                continue  # the loader reports it
            merged = chain[name].with_overrides(changes)
            base = f"inputs[{j}].overrides.{name}"
            # Only what the override itself names; the chain's own files are listed above.
            for where, path in _files_of(base, merged):
                option = re.split(r"[.\[]", where[len(base) + 1 :])[0]
                if option in changes:
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
        overrides = item.overrides.model_dump(exclude_none=True)
        if is_glob(item.video):
            regex = glob_regex(item.video)
            matches = [n for n in candidates if regex.match(n)]
            if not matches:
                missing.append(
                    JobError(
                        code="INPUT_MISSING",
                        message=f"no file matches {item.video!r} yet",
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
        elif item.video in present:
            items.append(ResolvedItem(i, item.video, item.audio, item.output_name, overrides))
        else:
            missing.append(
                JobError(
                    code="INPUT_MISSING",
                    message=f"{item.video} is not in the manifest's folder yet",
                    field=f"inputs[{i}].video",
                )
            )
        if item.audio and item.audio not in present:
            missing.append(
                JobError(
                    code="INPUT_MISSING",
                    message=f"{item.audio} is not in the manifest's folder yet",
                    field=f"inputs[{i}].audio",
                )
            )
    for where, rel in side_files(manifest):
        if rel not in present:
            missing.append(
                JobError(
                    code="INPUT_MISSING",
                    message=f"{rel} is not in the manifest's folder yet",
                    field=where,
                )
            )
    if len(items) > max_items:
        errors.append(
            JobError(
                code="TOO_MANY_INPUTS",
                message=f"inputs expand to {len(items)} videos; the limit is {max_items}",
                field="inputs",
            )
        )
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
    return Resolution(items, missing, errors)
