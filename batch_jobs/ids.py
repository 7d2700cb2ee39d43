"""Deterministic job ids: the same manifest version always maps to the same id."""

from __future__ import annotations

import hashlib
import posixpath
import re

JOB_ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")  # Cloud Batch's rule


def job_id_for(bucket: str, manifest: str, generation: int) -> str:
    digest = hashlib.sha256(f"{bucket}\n{manifest}\n{generation}".encode()).hexdigest()[:12]
    stem = posixpath.splitext(manifest)[0].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[-40:].strip("-")
    job_id = f"db-{slug}-{digest}" if slug else f"db-{digest}"
    assert JOB_ID_RE.match(job_id), job_id
    return job_id
