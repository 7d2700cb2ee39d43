"""How far a lipsync step reaches into neighbouring frames. Pure arithmetic on the options,
kept apart from the face code so the planner (and the Cloud Function that plans) needs no
OpenCV."""

from __future__ import annotations

from processors.lipsync.options import LipsyncOptions

# With `speakers`, a face's speaker is decided over its track within ± TRACK_WINDOW frames,
# a detector miss of up to MAX_GAP frames bridged (swap's tracking, processors/swap/tracking.py).
TRACK_WINDOW = 5
MAX_GAP = 2


def speaker_reach() -> int:
    """Frames each side one frame's speaker decision depends on (swap's `context`)."""
    return TRACK_WINDOW + MAX_GAP + 1


def context_reach(options: LipsyncOptions) -> int:
    """Frames of context each side a lipsync step needs: the smoothing window, plus, when only
    every k-th frame is detected, the gap to the next keyframe and the keyframe after it (a
    keyframe is checked against its neighbours), or, with several speakers, the window their
    assignment to faces is decided over."""
    if options.speakers:
        return options.smoothing_frames + speaker_reach()
    every = options.detect_every
    return options.smoothing_frames + (2 * every - 1 if every > 1 else 0)
