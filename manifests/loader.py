"""Load a manifest from bytes: bounded, strict YAML, then the typed model, every error at once.

Whatever the bytes are, `load_manifest` returns a Manifest or raises ManifestInvalid, whose
errors each carry a field path (or the line and column when there is no field yet). Limits
and the YAML rules are in `manifests.yaml_reader`.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import ValidationError

from core.domain import JobError
from manifests.errors import ManifestInvalid, format_path
from manifests.model import Manifest, manifest_model
from manifests.yaml_reader import (
    LOAD_BUDGET_SECONDS,
    MAX_MANIFEST_BYTES,
    read_document,
    read_yaml,
)

__all__ = ["MAX_MANIFEST_BYTES", "ManifestInvalid", "format_loc", "load_manifest", "parse_yaml"]

# pydantic names the branch of a union or a function validator in an error's location
# (`function-after[_check(), str]`); such names mean nothing to a user. The model has no such
# branch today; this keeps a future union from leaking one into a field path.
_PYDANTIC_STEP = re.compile(
    r"(?:function-(?:after|before|wrap|plain)|tagged-union|json-or-python|nullable|lax-or-strict"
    r"|chain|union)\[.*\]\Z"
)
_CLASS_NAMES = re.compile(r"a valid dictionary( or instance of \w+)?")


def format_loc(loc: tuple[Any, ...]) -> str:
    """pydantic's ('chain', 0, 'crop', 'aspect') → 'chain[0].crop.aspect'."""
    return format_path(
        part for part in loc if isinstance(part, int) or not _PYDANTIC_STEP.match(str(part))
    )


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
    # "a valid dictionary or instance of InputItem": our class names mean nothing to a user.
    return _CLASS_NAMES.sub("a mapping", message)


def _field_errors(exc: ValidationError, where: tuple[Any, ...] = ()) -> list[JobError]:
    return [
        JobError(
            code="MANIFEST_FIELD", message=_reason(err), field=format_loc((*where, *err["loc"]))
        )
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _not_covered(errors: list[JobError], found: list[JobError]) -> list[JobError]:
    """The model's errors, less those at or under a field the reader already refused (a
    refused value reads as None, and "should be a valid string" would only repeat it)."""
    refused = [e.field for e in found if e.field]
    return [
        e
        for e in errors
        if not any(e.field == f or (e.field or "").startswith((f + ".", f + "[")) for f in refused)
    ]


def parse_yaml(data: bytes) -> Any:
    """Manifest bytes → plain data, or ManifestInvalid (see `manifests.yaml_reader`)."""
    return read_yaml(data)


def load_manifest(data: bytes, budget: float = LOAD_BUDGET_SECONDS) -> Manifest:
    """Bytes → Manifest, or ManifestInvalid listing every problem with its field path."""
    started = time.thread_time()
    document, found = read_document(data, budget)
    if document is None:  # `---` alone, or `~`: a document with nothing in it
        raise ManifestInvalid(
            found or [JobError(code="MANIFEST_EMPTY", message="manifest is empty")]
        )
    if not isinstance(document, dict):
        shape = JobError(
            code="MANIFEST_SHAPE",
            message="the manifest must be a mapping with `version`, `inputs`, `chain`",
        )
        raise ManifestInvalid([*found, shape])
    try:
        # The model of the steps registered now (a step is one registry line).
        manifest = manifest_model().model_validate(document)
    except ValidationError as exc:
        raise ManifestInvalid([*found, *_not_covered(_field_errors(exc), found)]) from None
    errors = [*found, *_not_covered(override_errors(manifest), found)]
    if errors:
        raise ManifestInvalid(errors)
    if time.thread_time() - started > budget:
        # Within the limits this cannot happen; if it does, refuse rather than let one
        # manifest hold the trigger (the next step, planning, would be as slow).
        raise ManifestInvalid(
            [
                JobError(
                    code="MANIFEST_TOO_LARGE",
                    message=f"checking the manifest took over {budget:g} s of CPU; make it smaller",
                )
            ]
        )
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
                errors += _field_errors(exc, where)
    return errors
