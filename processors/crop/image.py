"""Which task image crop's detector needs.

`detector: yolo` runs on ultralytics (torch), which only Dockerfile.gpu's `ultralytics` target
has; the default `slim` image has onnxruntime only. A deployment says which image it runs in
the `image_variant` setting, so the trigger can refuse such a manifest before any VM starts
instead of every task failing at setup. No variant (a local run on this machine's packages):
nothing to check.
"""

from __future__ import annotations

from core.domain import JobError

NEEDS_ULTRALYTICS = "yolo"


def image_problems(detector: str, base: str, image_variant: str) -> list[JobError]:
    """`base`: the step's field path, e.g. `chain[0].crop`."""
    if detector != NEEDS_ULTRALYTICS or image_variant != "slim":
        return []
    return [
        JobError(
            code="DETECTOR_NOT_IN_IMAGE",
            message=(
                "detector yolo needs ultralytics, which this deployment's task image (the "
                "slim target) does not have: use detector yolo-onnx (the same YOLO on "
                "onnxruntime, with an .onnx export in the model store), or deploy the "
                "ultralytics image (Dockerfile.gpu --target ultralytics, image_variant = "
                '"ultralytics")'
            ),
            field=f"{base}.detector",
        )
    ]
