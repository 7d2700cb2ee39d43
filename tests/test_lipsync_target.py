"""`lipsync.target: reference` for one audio: the face matching a reference image (ArcFace of
the analyser pack, on real detections) speaks, the others are left byte for byte.

Material: tests/speaker_fixtures.py's two real people side by side (the Pexels host, the
single_face.mp4 guest), their reference images taken from other moments of their clips.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.domain import PlannedItem
from manifests.loader import ManifestInvalid, load_manifest
from processors.chain import concat_batches
from tests.media_fixtures import decode_all, run_in_chunks
from tests.real_chain import ANALYSER, run_task, task_context
from tests.test_lipsync_speakers import LEFT, RIGHT, material, plan_text, planned, run_whole

__all__ = ["material"]  # the module's fixture, used here
SAY = "length_policy: pad, batch_size: 8, det_size: 320"


def planned_one(material: dict, options: str) -> PlannedItem:
    text = (
        "version: 1\ninputs: [two.mp4]\nchain:\n"
        f"  - lipsync: {{analyser: {ANALYSER}, audio: guest.wav, {SAY}{options}}}\n"
        "output: {preset: ultrafast, crf: 18}\n"
        "compute: {gpu: none, chunk_seconds: 1.0, max_parallel_tasks: 2, max_retries: 0}\n"
    )
    return plan_text(material, text)


def test_the_face_matching_the_reference_speaks_and_the_other_is_left_alone(
    material: dict,
) -> None:
    item = planned_one(material, ", target: reference, reference: guest.png")
    out = run_whole(material, item)
    source = decode_all(material["files"]["two.mp4"], item.info)
    every = slice(None)
    assert np.array_equal(out.frames[(every, *LEFT)], source[(every, *LEFT)])
    assert (out.frames[(every, *RIGHT)] != source[(every, *RIGHT)]).any(-1).sum() > 5000
    # The same as the guest as the one speaker of `speakers` with the same speech.
    speaker = run_whole(
        material, planned(material, [("guest.png", "guest.wav")], ", length_policy: pad")
    )
    assert np.array_equal(out.frames, speaker.frames)
    # The host as the reference: her face speaks, the guest's is left.
    host = run_whole(material, planned_one(material, ", target: reference, reference: host.png"))
    assert np.array_equal(host.frames[(every, *RIGHT)], source[(every, *RIGHT)])
    assert (host.frames[(every, *LEFT)] != source[(every, *LEFT)]).any(-1).sum() > 5000
    # Chunked as the tasks run it: the same frames.
    ctx = task_context(item, material["folder"], material["folder"], material["store"])
    pieces = run_in_chunks(
        item, lambda *task: run_task(item, material["files"]["two.mp4"], ctx, *task)
    )
    chunked = concat_batches([piece for _, piece in pieces])
    assert len(pieces) == 2 and np.array_equal(chunked.frames, out.frames)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (", target: reference", "needs a `reference` image"),
        (", target: reference, reference: g.png, speakers: [{reference: a.png, audio: a.wav}]",
         "either `target: reference` or `speakers`"),
    ],
)  # fmt: skip
def test_target_options_that_cannot_work_are_refused(options: str, says: str) -> None:
    text = f"version: 1\ninputs: [v.mp4]\nchain: [{{lipsync: {{audio: a.wav{options}}}}}]\n"
    with pytest.raises(ManifestInvalid) as err:
        load_manifest(text.encode())
    assert any(says in e.message for e in err.value.errors), err.value.errors
