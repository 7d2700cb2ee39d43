"""The manifest's JSON Schema, for editors and for people who validate before they upload.

Generated from the pydantic model, so it cannot drift from what the loader accepts; the
checked-in `manifest.schema.json` is this module's output (a test keeps it current). Run
`python -m manifests.schema` to rewrite it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from manifests.model import Manifest
from processors.registry import step_names

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:dropbatch:manifest:v1"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")


def _allow_shorthands(schema: dict[str, Any]) -> None:
    """Accept in the schema the short forms the model's `before` validators expand.

    pydantic describes only the expanded shape; without this an editor would flag
    `inputs: talk.mp4` and `chain: [crop]`, which the loader accepts (a step's options describe
    their own short forms, e.g. swap's `source: alex.jpg`).
    """
    defs = schema["$defs"]
    defs["InputItem"] = {"anyOf": [{"type": "string", "minLength": 1}, defs["InputItem"]]}
    defs["ChainStep"] = {"anyOf": [{"enum": list(step_names())}, defs["ChainStep"]]}
    inputs = schema["properties"]["inputs"]
    schema["properties"]["inputs"] = {
        "anyOf": [{"$ref": "#/$defs/InputItem"}, {k: v for k, v in inputs.items() if k != "title"}],
        "title": inputs.get("title", "Inputs"),
        "description": "One input, or a list of them: a path (or glob), or a mapping.",
    }


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version-1 manifest."""
    schema = copy.deepcopy(Manifest.model_json_schema())
    _allow_shorthands(schema)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        **schema,
        "title": "dropbatch manifest (version 1)",
    }


def schema_text() -> str:
    """The schema exactly as `manifest.schema.json` holds it."""
    return json.dumps(manifest_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
