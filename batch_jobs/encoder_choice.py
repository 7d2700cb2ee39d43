"""One encoder per item, decided by the first part written and recorded beside the parts.

The stitch joins parts by stream copy, which needs every part of an item encoded alike. All
VMs of a job run the same image on the same machine type, so they would probe alike, but a
VM whose GPU or driver misbehaves must not slip an x264 part between NVENC ones: the first
worker to encode a part of the item writes its encoder to the parts folder (create-only, so
two first workers agree on one), and every later part uses what it says. The stitch removes
the record with the parts.
"""

from __future__ import annotations

import contextlib

from batch_jobs.workspace import WorkArea
from core.storage.base import ObjectStore, PreconditionFailed
from processors.media.encoders import ENCODERS, NVENC, best_encoder, nvenc_available


class EncoderUnavailable(RuntimeError):
    """The item's parts were started with NVENC and this machine cannot run it: another
    attempt (on another VM) can, and mixing encoders would break the stream-copy stitch."""


def encoder_record(work: WorkArea, job_id: str, item: int) -> str:
    return f"{work.parts_folder(job_id, item)}encoder.txt"


def item_encoder(store: ObjectStore, work: WorkArea, job_id: str, item: int) -> str:
    """The encoder every part of this item uses: the recorded one, or this machine's best,
    recorded now if no part recorded one first (in the item's parts folder, which the stitch
    empties)."""
    bucket, name = work.bucket, encoder_record(work, job_id, item)
    with contextlib.suppress(PreconditionFailed):  # an earlier part decided: use its choice
        store.write_bytes(
            bucket, name, best_encoder().encode(), content_type="text/plain", if_generation_match=0
        )
    chosen = store.read_bytes(bucket, name).decode().strip()
    if chosen not in ENCODERS:
        raise RuntimeError(f"{store.uri(bucket, name)} names an unknown encoder {chosen!r}")
    if chosen == NVENC and not nvenc_available():
        raise EncoderUnavailable(
            f"this item's parts are encoded with {NVENC} ({store.uri(bucket, name)}) and this "
            "machine cannot encode with it (no GPU, or its driver lacks the video libraries)"
        )
    return chosen
