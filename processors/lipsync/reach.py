"""How far a lipsync step reaches into neighbouring frames. Pure arithmetic on the options,
kept apart from the face code so the planner (and the Cloud Function that plans) needs no
OpenCV."""

from __future__ import annotations

from processors.lipsync.options import LipsyncOptions


def context_reach(options: LipsyncOptions) -> int:
    """Frames of context each side a lipsync step needs: the smoothing window, plus, when only
    every k-th frame is detected, the gap to the next keyframe and the keyframe after it (a
    keyframe is checked against its neighbours)."""
    every = options.detect_every
    return options.smoothing_frames + (2 * every - 1 if every > 1 else 0)
