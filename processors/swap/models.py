"""The catalog names a swap step needs for its options: the analyser pack and the swapper
always, the occluder with `occlusion`, the face parser with `regions`.

One place answers this for the trigger (a missing file is MODEL_MISSING before any task
starts), `dropbatch models check --manifest` and the task's fetch.
"""

from __future__ import annotations


def swap_models(options: dict) -> dict[str, str]:
    """The option that names each model -> its catalog name, in the order a task loads them."""
    names = {
        "analyser": options.get("analyser", "buffalo_l"),
        "model": options.get("model", "inswapper_128"),
    }
    if options.get("occlusion"):
        names["occluder"] = options.get("occluder", "xseg_1")
    if options.get("regions"):
        names["parser"] = options.get("parser", "bisenet_resnet_34")
    return names
