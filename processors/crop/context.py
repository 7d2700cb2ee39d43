"""How much context the crop needs around a chunk, from its options alone.

Pure arithmetic over the camera path's settings (no OpenCV, no detector), so the planner —
which runs in the Cloud Function — can size a chunk's pre- and post-roll.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

from processors.crop.options import CropOptions
from processors.crop.path import PathSettings, radii, speed_radius, window_size


def path_settings(options: CropOptions, frame: tuple[int, int], rate: Fraction) -> PathSettings:
    aw, ah = (int(v) for v in options.aspect.split(":"))
    window = window_size(frame[0], frame[1], (aw, ah))
    # `max_speed` is in frame lengths (the longer side) per second.
    speed = options.max_speed * max(frame) / float(rate)
    return PathSettings(
        frame=frame,
        window=window,
        min_crop_ratio=options.min_crop_ratio,
        padding=options.padding,
        subject=options.subject,
        detect_every=options.detect_every,
        dead_zone=options.dead_zone,
        speed=speed,
        speed_radius=speed_radius(frame, window, options.min_crop_ratio, speed),
        camera=options.camera,
        shot=0 if options.camera == "track" else max(1, round(options.shot_seconds * rate)),
        still_tolerance=options.still_tolerance,
        fit=options.fit,
        switch_cut=options.subject == "speaker" and options.speaker_switch == "cut",
        speaker_back=(
            round(options.speaker_hold_seconds * rate) if options.subject == "speaker" else 0
        ),
        **radii(
            rate,
            detect_every=options.detect_every,
            smoothing_seconds=options.smoothing_seconds,
            hold_seconds=options.hold_seconds,
        ),
    )


def context_frames(
    options: CropOptions, rate: Fraction, frame: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Frames of context (before, after) the crop needs: what the planner decodes around a
    chunk — the processor's own lookbehind/lookahead for this frame size. Without a size,
    a bound that holds for any: no centre or size travels more than a frame length."""
    settings = path_settings(options, frame or (2, 2), rate)
    if frame is None:
        settings = replace(settings, speed_radius=math.ceil(float(rate) / options.max_speed))
    return settings.lookbehind, settings.lookahead
