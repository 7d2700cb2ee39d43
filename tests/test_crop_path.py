"""The camera path on detections directly: seams, smoothness, cuts, dead zone, a stable
subject, no person — fast enough to run a minute of video in six chunks many times over."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from processors.crop.context import context_frames, path_settings
from processors.crop.options import CropOptions
from processors.crop.path import CameraPath, PathSettings, Window

FPS = 30
FRAME = (1280, 720)
Box = tuple[float, float, float, float]


def settings(**options) -> PathSettings:
    return path_settings(CropOptions(**options), FRAME, Fraction(FPS))


def run_path(
    s: PathSettings,
    cuts: list[bool],
    boxes: list[list[Box]],
    first: int = 0,
    stop: int | None = None,
) -> dict[int, Window]:
    """One stream [first, stop) through a fresh path, as a task would feed it."""
    stop = len(cuts) if stop is None else stop
    path = CameraPath(s)
    out: dict[int, Window] = {}
    for i in range(first, stop):
        detect = i % s.detect_every == 0 or cuts[i]
        path.feed(i, cuts[i], boxes[i] if detect else None)
        if i % 7 == 0:  # collect as it goes, in uneven steps, as push() does
            out.update(path.ready())
    path.finish()
    out.update(path.ready())
    assert sorted(out) == list(range(first, stop))
    return out


def run_chunked(
    s: PathSettings, cuts: list[bool], boxes: list[list[Box]], chunks: int
) -> dict[int, Window]:
    n = len(cuts)
    size = math.ceil(n / chunks)
    out: dict[int, Window] = {}
    for start in range(0, n, size):
        end = min(n, start + size)
        piece = run_path(s, cuts, boxes, max(0, start - s.lookbehind), min(n, end + s.lookahead))
        out.update({i: piece[i] for i in range(start, end)})
    return out


def person(cx: float, cy: float, w: float = 150, h: float = 400) -> Box:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def inside(box: Box, win: Window, slack: float = 0.0) -> bool:
    return (
        win.x - slack <= box[0]
        and box[2] <= win.x + win.width + slack
        and win.y - slack <= box[1]
        and box[3] <= win.y + win.height + slack
    )


def a_minute() -> tuple[list[bool], list[list[Box]], list[Box | None]]:
    """60 s at 30 fps: a person wandering (noisy detections, a few misses), a second smaller
    person for a while, 2 s with nobody, and a hard cut at 30 s to a new shot."""
    rng = np.random.default_rng(7)
    n = 60 * FPS
    cuts = [False] * n
    boxes: list[list[Box]] = []
    truth: list[Box | None] = []
    for i in range(n):
        t = i / FPS
        scene = 0 if t < 30 else 1
        cuts[i] = i == 30 * FPS
        base = 400 if scene == 0 else 850
        cx = base + 180 * math.sin(2 * math.pi * t / 11) + 60 * math.sin(2 * math.pi * t / 4.3)
        cy = 380 + 20 * math.sin(2 * math.pi * t / 7)
        gt = person(cx, cy)
        if 20 <= t < 22:
            truth.append(None)
            boxes.append([])
            continue
        truth.append(gt)
        seen = [] if rng.random() < 0.05 else [tuple(v + rng.normal(0, 2) for v in gt)]
        if 40 <= t < 50:
            seen.append(person(150, 400, 80, 200))
        boxes.append(seen)  # type: ignore[arg-type]
    return cuts, boxes, truth


MINUTE = a_minute()


@pytest.mark.parametrize(
    "options",
    [{}, {"detect_every": 3}, {"detect_every": 5, "min_crop_ratio": 0.5, "subject": "center"}],
    ids=["every-frame", "every-3rd", "every-5th-zoom"],
)
def test_six_chunks_give_the_single_task_path_over_a_minute(options: dict) -> None:
    s = settings(**options)
    cuts, boxes, _ = MINUTE
    single = run_path(s, cuts, boxes)
    chunked = run_chunked(s, cuts, boxes, chunks=6)
    diff = max(max(abs(a - b) for a, b in zip(single[i], chunked[i], strict=True)) for i in single)
    assert diff <= 1, f"chunked path differs from the single path by {diff} px"
    # Not by accident: the camera moved a lot over the minute.
    xs = [single[i].x for i in single]
    assert max(xs) - min(xs) > 500


def test_planner_context_is_the_paths_own() -> None:
    s = settings(detect_every=3, smoothing_seconds=0.7, hold_seconds=1.0, max_speed=0.5)
    options = {"detect_every": 3, "smoothing_seconds": 0.7, "hold_seconds": 1.0, "max_speed": 0.5}
    crop = CropOptions(**options)
    assert context_frames(crop, Fraction(FPS), FRAME) == (s.lookbehind, s.lookahead)
    # Without a frame size, a bound that covers every size.
    before, after = context_frames(crop, Fraction(FPS))
    assert before >= s.lookbehind and after >= s.lookahead
    # Too little pre-roll really breaks the seam: the windows are needed in full.
    cuts, boxes, _ = MINUTE
    single = run_path(s, cuts, boxes)
    short = run_path(s, cuts, boxes, first=900 - s.lookbehind // 2, stop=1000)
    assert any(short[i] != single[i] for i in range(900, 1000))


def test_subject_stays_inside_the_window_and_the_camera_moves_smoothly() -> None:
    s = settings(detect_every=3, max_speed=0.5)
    cuts, boxes, truth = MINUTE
    path = run_path(s, cuts, boxes)
    for i, gt in enumerate(truth):
        if gt is not None:
            assert inside(gt, path[i], slack=4), f"frame {i}: {gt} outside {path[i]}"
    steps = [abs(path[i].x - path[i - 1].x) for i in range(1, len(truth)) if not cuts[i]]
    assert max(steps) <= s.speed + 1
    # Noisy detections (σ = 2 px) do not make the camera shake: small second differences,
    # except where the camera starts or ends a glide to the centre (nobody in 20-22 s) and at
    # the cut (30 s).
    xs = np.array([path[i].x for i in range(len(truth))], float)
    jerk = np.abs(np.diff(xs, 2))
    calm = [f for f in range(len(jerk)) if not (18 * FPS <= f < 24 * FPS or f in (898, 899))]
    assert np.median(jerk) <= 1 and jerk[calm].max() <= 4


def test_a_hard_cut_resets_the_path() -> None:
    n = 4 * FPS
    c = 2 * FPS
    cuts = [i == c for i in range(n)]
    left, right = person(250, 360), person(1000, 360)
    boxes = [[left] if i < c else [right] for i in range(n)]
    path = run_path(settings(), cuts, boxes)
    assert inside(left, path[c - 1]) and inside(right, path[c])
    assert path[c - 1].x == path[c - 20].x and path[c].x == path[c + 20].x  # no slide at all
    # Without the cut the camera slides across over many frames: the cut is what resets it.
    slid = run_path(settings(), [False] * n, boxes)
    assert not inside(right, slid[c]) and not inside(left, slid[c + 5])


def test_the_dead_zone_ignores_a_swaying_speaker() -> None:
    rng = np.random.default_rng(3)
    n = 6 * FPS
    # Rocking ±14 px once a second (under the 5 % dead zone of the 404 px window, 20 px),
    # plus detector noise.
    boxes = [
        [person(640 + 14 * math.sin(2 * math.pi * i / FPS) + rng.uniform(-2, 2), 360)]
        for i in range(n)
    ]
    cuts = [False] * n

    def spread(**options) -> int:
        path = run_path(settings(**options), cuts, boxes)
        xs = [path[i].x for i in range(FPS, n - FPS)]
        assert max(abs(a - b) for a, b in itertools.pairwise(xs)) <= 2
        return max(xs) - min(xs)

    assert spread() <= 3
    assert spread(dead_zone=0) >= 10  # the same sway, no dead zone: the camera rocks along


def test_the_camera_stays_with_one_of_two_similar_people() -> None:
    rng = np.random.default_rng(5)
    n = 8 * FPS
    a_centre, b_centre = 300.0, 1000.0
    boxes, a_largest = [], 0
    for _ in range(n):
        # A is larger on average, but the detector's noise makes B larger in many frames.
        a = person(a_centre, 360, 150 * rng.normal(1.04, 0.04), 400)
        b = person(b_centre, 360, 150 * rng.normal(1.0, 0.04), 400)
        a_largest += (a[2] - a[0]) > (b[2] - b[0])
        boxes.append([b, a])
    assert 0.6 * n < a_largest < 0.9 * n  # a per-frame choice would jump many times
    path = run_path(settings(), [False] * n, boxes)
    assert all(path[i].x < a_centre < path[i].x + path[i].width for i in range(n))


def test_no_person_holds_then_centres_and_never_fails() -> None:
    n = 6 * FPS
    s = settings(hold_seconds=0.5)
    centred = Window((FRAME[0] - s.window[0]) // 2, 0, *s.window)
    nobody = run_path(s, [False] * n, [[] for _ in range(n)])
    assert set(nobody.values()) == {centred}
    # Someone at the left for 2 s, then nobody: the window holds, then glides to the centre.
    boxes = [[person(200, 360)] if i < 2 * FPS else [] for i in range(n)]
    path = run_path(s, [False] * n, boxes)
    gone = 2 * FPS
    assert path[gone - 1].x == 0 and path[gone + s.hold - 1].x < centred.x
    assert path[n - 1] == centred
    assert all(path[i].x <= path[i + 1].x for i in range(n - 1))  # one glide, no wobble
    assert all(0 <= w.x <= FRAME[0] - w.width for w in path.values())
    steps = [abs(path[i].x - path[i - 1].x) for i in range(1, n)]
    assert max(steps) <= s.speed + 1


def test_zoom_frames_the_subject_with_padding_and_stays_in_the_frame() -> None:
    n = 4 * FPS
    s = settings(min_crop_ratio=0.3, padding=0.2)
    small = person(900, 500, 60, 160)
    path = run_path(s, [False] * n, [[small]] * n)
    win = path[n // 2]
    assert win.height == pytest.approx(160 * 1.4, abs=2)  # 20 % padding above and below
    assert abs(win.width / win.height - 9 / 16) < 0.01
    assert inside(small, win)
    # At the frame's edge the window slides in rather than leaving the frame.
    edge = run_path(s, [False] * n, [[person(20, 700, 40, 100)]] * n)
    assert all(w.x >= 0 and w.y + w.height <= FRAME[1] for w in edge.values())


def test_detecting_every_third_frame_follows_per_frame_detection() -> None:
    cuts, boxes, _ = MINUTE
    every = run_path(settings(), cuts, boxes)
    third = run_path(settings(detect_every=3), cuts, boxes)
    error = np.mean([abs(every[i].x - third[i].x) for i in every])
    assert error <= 0.01 * FRAME[0], error
