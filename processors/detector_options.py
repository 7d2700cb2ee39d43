"""The face detector's input size, as every face step (swap, enhance, lipsync) validates it.

Cheap to import: the steps' option models use it, and the Cloud Function imports those.
"""

from __future__ import annotations

LARGEST_STRIDE = 32  # SCRFD's: a detector input side must be a whole number of its cells


def multiple_of_largest_stride(cls: type, value: int) -> int:
    """A `det_size` field validator (`field_validator("det_size")(…)` in an options model)."""
    if value % LARGEST_STRIDE:
        raise ValueError(f"must be a multiple of {LARGEST_STRIDE} (the detector's largest stride)")
    return value
