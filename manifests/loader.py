"""Load a manifest from bytes: safe YAML, bounded size and expansion, every error at once."""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError

from dropbatch.status.model import JobError
from manifests.model import Manifest

MAX_MANIFEST_BYTES = 1 << 20  # 1 MiB: a manifest with hundreds of inputs is ~50 kB
MAX_NODES = 200_000  # after alias expansion: stops "billion laughs" documents
MAX_DEPTH = 64


# YAML 1.1 reads `9:16` as the base-60 integer 556, so `aspect: 9:16` — the obvious way to
# write an aspect — would fail as "not a string". YAML 1.2 dropped base-60; so do we.
_BASE_60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")


class ManifestYamlLoader(yaml.SafeLoader):
    """SafeLoader that keeps `H:M`-looking scalars as text."""


ManifestYamlLoader.yaml_implicit_resolvers = {
    first: [("tag:yaml.org,2002:str", _BASE_60), *resolvers]
    if first in "-+0123456789"
    else list(resolvers)
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class ManifestInvalid(Exception):
    """The manifest cannot run; `errors` says every reason, each with its field path."""

    def __init__(self, errors: list[JobError]) -> None:
        super().__init__("; ".join(e.line() for e in errors))
        self.errors = errors


def format_loc(loc: tuple[Any, ...]) -> str:
    """('chain', 0, 'crop', 'aspect') → 'chain[0].crop.aspect'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "tagged-union")) or part in ("str", "dict"):
            continue  # pydantic's names for union branches mean nothing to a user
        else:
            out += f".{part}" if out else str(part)
    return out or "(manifest)"


def _reason(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message


def _expanded_size(node: yaml.Node, memo: dict[int, int], depth: int = 0) -> int:
    if depth > MAX_DEPTH:
        raise ManifestInvalid(
            [JobError(code="MANIFEST_TOO_DEEP", message=f"nesting deeper than {MAX_DEPTH}")]
        )
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # guards against recursive aliases while we descend
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, memo, depth + 1) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, memo, depth + 1) + _expanded_size(v, memo, depth + 1)
    memo[key] = total
    return total


def parse_yaml(data: bytes) -> Any:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestInvalid(
            [
                JobError(
                    code="MANIFEST_TOO_LARGE",
                    message=f"manifest is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}",
                )
            ]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestInvalid(
            [JobError(code="MANIFEST_ENCODING", message=f"not UTF-8 text ({exc.reason})")]
        ) from None
    loader = ManifestYamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ManifestInvalid([JobError(code="MANIFEST_EMPTY", message="manifest is empty")])
        size = _expanded_size(node, {})
        if size > MAX_NODES:
            raise ManifestInvalid(
                [
                    JobError(
                        code="MANIFEST_TOO_LARGE",
                        message=f"expands to more than {MAX_NODES} YAML nodes "
                        "(anchors/aliases used to inflate it?)",
                    )
                ]
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = exc.problem or str(exc)
        raise ManifestInvalid(
            [JobError(code="MANIFEST_YAML", message=f"YAML syntax error: {problem}", field=where)]
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestInvalid(
            [JobError(code="MANIFEST_YAML", message=f"YAML error: {exc}")]
        ) from None
    finally:
        loader.dispose()


def load_manifest(data: bytes) -> Manifest:
    """Bytes → Manifest, or ManifestInvalid listing every problem with its field path."""
    document = parse_yaml(data)
    if document is None:  # `---` alone, or `~`: a document with nothing in it
        raise ManifestInvalid([JobError(code="MANIFEST_EMPTY", message="manifest is empty")])
    if not isinstance(document, dict):
        raise ManifestInvalid(
            [
                JobError(
                    code="MANIFEST_SHAPE",
                    message="the manifest must be a mapping with `version`, `inputs`, `chain`",
                )
            ]
        )
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        errors = [
            JobError(code="MANIFEST_FIELD", message=_reason(err), field=format_loc(err["loc"]))
            for err in exc.errors()
        ]
        raise ManifestInvalid(errors) from None
    errors = override_errors(manifest)
    if errors:
        raise ManifestInvalid(errors)
    return manifest


def override_errors(manifest: Manifest) -> list[JobError]:
    """Each input's overrides merged over its step's options must be valid options of that
    step, and the step must be in the chain — checked now, not when a task builds it."""
    chain = {step.name: step for step in manifest.chain}
    errors = []
    for j, item in enumerate(manifest.inputs):
        for step, changes in item.overrides.model_dump(exclude_none=True).items():
            where = ("inputs", j, "overrides", step)
            if step not in chain:
                errors.append(
                    JobError(
                        code="MANIFEST_FIELD",
                        message=f"the chain has no {step} step to override",
                        field=format_loc(where),
                    )
                )
                continue
            try:
                chain[step].with_overrides(changes)
            except ValidationError as exc:
                errors += [
                    JobError(
                        code="MANIFEST_FIELD",
                        message=_reason(err),
                        field=format_loc((*where, *err["loc"])),
                    )
                    for err in exc.errors()
                ]
    return errors
