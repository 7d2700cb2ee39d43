"""Crop's reframing on detections directly: the camera mode per shot piece (still, pan,
track), `fit: blur` for subjects wider than the aspect, `subject: speaker` from speech
scores, and chunks that equal one task with each of them."""

from __future__ import annotations

import itertools
import math

import numpy as np

from processors.crop.path import CameraPath, PathSettings, Window
from tests.test_crop_path import FPS, MINUTE, inside, person, run_chunked, settings

Speech = list[float] | None


def run(
    s: PathSettings,
    boxes: list[list[tuple[float, float, float, float]]],
    speech: list[Speech] | None = None,
    cuts: list[bool] | None = None,
    first: int = 0,
    stop: int | None = None,
) -> tuple[dict[int, Window], dict[int, str]]:
    """One stream [first, stop) through a fresh path; its windows and camera modes."""
    stop = len(boxes) if stop is None else stop
    cuts = cuts or [False] * len(boxes)
    path = CameraPath(s)
    out: dict[int, Window] = {}
    modes: dict[int, str] = {}
    for i in range(first, stop):
        path.feed(i, cuts[i], boxes[i], speech[i] if speech else None)
        for j, win in path.ready():
            out[j], modes[j] = win, path.modes[j]
    path.finish()
    for j, win in path.ready():
        out[j], modes[j] = win, path.modes[j]
    assert sorted(out) == list(range(first, stop))
    return out, modes


def line_residual(values: list[float]) -> float:
    x = np.arange(len(values))
    fit = np.polyval(np.polyfit(x, values, 1), x)
    return float(np.abs(np.asarray(values) - fit).max())


def test_camera_auto_holds_a_still_subject_without_moving_the_window() -> None:
    rng = np.random.default_rng(11)
    n = 8 * FPS
    # Swaying ±30 px (more than the 5 % dead zone, 20 px; within a 10 % tolerance, 40 px)
    # plus detector noise: someone seated, talking.
    boxes = [
        [person(640 + 30 * math.sin(2 * math.pi * i / (1.5 * FPS)) + rng.normal(0, 3), 360)]
        for i in range(n)
    ]
    still, modes = run(settings(camera="auto", still_tolerance=0.1), boxes)
    assert set(modes.values()) == {"still"}
    # Two shot pieces of 4 s: not one pixel of motion in either; where they meet, a step of
    # the few pixels between their means (ramped by the speed limit).
    piece = 4 * FPS
    for start in (0, piece):
        assert len({still[i] for i in range(start + 10, start + piece - 10)}) == 1
    xs = [w.x for w in still.values()]
    assert max(xs) - min(xs) <= 4
    assert all(inside(b[0], still[i], slack=2) for i, b in enumerate(boxes))
    # Tracking the same subject moves the camera: the still mode is what holds it.
    tracked, modes = run(settings(camera="track"), boxes)
    assert set(modes.values()) == {"track"}
    xs = [w.x for w in tracked.values()]
    assert max(xs) - min(xs) >= 10


def test_camera_auto_pans_a_steadily_moving_subject_on_a_straight_line() -> None:
    rng = np.random.default_rng(12)
    n = 4 * FPS  # one shot piece (shot_seconds 4)
    # Walking 150 px/s across, detections noisy (σ = 8 px).
    boxes = [[person(300 + 5 * i + rng.normal(0, 8), 360 + rng.normal(0, 4))] for i in range(n)]
    panned, modes = run(settings(camera="auto", still_tolerance=0.1), boxes)
    assert set(modes.values()) == {"pan"}
    xs = [panned[i].x for i in range(n)]
    assert line_residual(xs) <= 1.0  # a constant-velocity move (to the pixel grid)
    assert 4 <= np.median(np.diff(xs)) <= 6  # at the subject's speed
    assert all(inside(b[0], panned[i], slack=2) for i, b in enumerate(boxes))
    # Tracking the same detections wobbles with their noise.
    tracked, _ = run(settings(camera="track"), boxes)
    assert line_residual([tracked[i].x for i in range(n)]) > 2.0


def test_camera_auto_tracks_an_erratic_subject() -> None:
    n = 4 * FPS
    boxes = [[person(640 + 300 * math.sin(2 * math.pi * i / FPS), 360)] for i in range(n)]
    _, modes = run(settings(camera="auto"), boxes)
    assert set(modes.values()) == {"track"}


def test_camera_still_holds_each_piece_even_when_the_subject_moves() -> None:
    n = 8 * FPS
    boxes = [[person(300 + 2 * i, 360)] for i in range(n)]
    path, modes = run(settings(camera="still", max_speed=10), boxes)
    assert set(modes.values()) == {"still"}
    piece = 4 * FPS
    # Inside each piece (away from the ramp between them) the window does not move.
    for start in (0, piece):
        xs = {path[i].x for i in range(start + 20, start + piece - 20)}
        assert len(xs) == 1, xs


def test_fit_blur_keeps_two_people_far_apart_whole() -> None:
    n = 2 * FPS
    left, right = person(150, 400, 160, 420), person(1130, 400, 160, 420)
    boxes = [[left, right]] * n
    blurred, _ = run(settings(subject="all", fit="blur"), boxes)
    for win in blurred.values():
        assert inside(left, win) and inside(right, win), win
        assert win.width / win.height > 9 / 16 + 0.1  # wider than the aspect: padded
    # Cropped to the aspect, one of them is cut off.
    cropped, _ = run(settings(subject="all"), boxes)
    assert not any(inside(left, w) and inside(right, w) for w in cropped.values())


def test_fit_blur_keeps_the_aspect_when_the_subject_fits() -> None:
    n = 2 * FPS
    boxes = [[person(640, 400)]] * n
    path, _ = run(settings(fit="blur"), boxes)
    assert {(w.width, w.height) for w in path.values()} == {settings().window}


def turns(
    n: int, turn: int, talk: float = 0.7
) -> tuple[list[list], list[Speech], list[int | None]]:
    """Two people, who take turns of `turn` frames; each turn speech for its first `talk`,
    then a pause. Speech scores are noisy and the other person's mouth twitches now and then."""
    rng = np.random.default_rng(13)
    a, b = person(300, 360, 200, 420), person(980, 360, 200, 420)
    boxes, speech, truth = [], [], []
    for i in range(n):
        who, k = (i // turn) % 2, i % turn
        talking = k < talk * turn
        score = float(rng.uniform(0.005, 0.04)) if talking and rng.random() < 0.7 else 0.0
        twitch = float(rng.uniform(0, 0.01)) if talking and rng.random() < 0.1 else 0.0
        scores = [score, twitch] if who == 0 else [twitch, score]
        boxes.append([a, b])
        speech.append(scores)
        truth.append(who if talking else None)
    return boxes, speech, truth


def test_speaker_frames_whoever_speaks_and_holds_through_pauses() -> None:
    n, turn = 20 * FPS, 3 * FPS
    boxes, speech, truth = turns(n, turn)
    path, _ = run(settings(subject="speaker"), boxes, speech)
    people = boxes[0]
    held = [inside(people[who], path[i]) for i, who in enumerate(truth) if who is not None]
    assert np.mean(held) >= 0.9, np.mean(held)
    # In the pause after each turn the camera stays with the last speaker.
    for start in range(0, n - turn, turn):
        who = (start // turn) % 2
        pause = range(start + math.ceil(0.7 * turn) + 5, start + turn - FPS)
        assert all(inside(people[who], path[i]) for i in pause)
    # The largest person (the same size: the first) is no answer: the speech moves the camera.
    largest, _ = run(settings(), boxes)
    held = [inside(people[w], largest[i]) for i, w in enumerate(truth) if w is not None]
    assert np.mean(held) < 0.6


def test_speaker_changes_are_clean_cuts_or_glides() -> None:
    n, turn = 12 * FPS, 3 * FPS
    boxes, speech, _ = turns(n, turn)
    a, b = boxes[0]

    def positions(switch: str) -> list[str]:
        path, _ = run(settings(subject="speaker", speaker_switch=switch), boxes, speech)
        return ["a" if inside(a, w) else "b" if inside(b, w) else "-" for w in path.values()]

    cut = positions("cut")
    assert "-" not in cut  # never a frame between the two: a clean cut
    assert sum(x != y for x, y in itertools.pairwise(cut)) == 3  # at each new turn
    glide = positions("glide")
    assert glide.count("-") >= 10  # the camera travels across the gap


def test_chunks_equal_one_task_with_camera_auto_fit_blur_and_speaker() -> None:
    cuts, boxes, _ = MINUTE
    for options in (
        {"camera": "auto", "still_tolerance": 0.1},
        {"camera": "still", "detect_every": 3},
        {"camera": "auto", "subject": "all", "fit": "blur"},
    ):
        s = settings(**options)
        single = run_chunked(s, cuts, boxes, chunks=1)
        chunked = run_chunked(s, cuts, boxes, chunks=6)
        assert single == chunked, options
    # Pauses of 3 s, as long as the speaker is held: the held speaker comes from further back
    # than the rest of the path looks, and the context covers it.
    people, speech, _ = turns(40 * FPS, 5 * FPS, talk=0.4)
    for s in (settings(subject="speaker"), settings(subject="speaker", speaker_switch="glide")):
        single, _ = run(s, people, speech)
        size = 4 * FPS + 5
        for start in range(0, len(people), size):
            end = min(len(people), start + size)
            piece, _ = run(
                s,
                people,
                speech,
                first=max(0, start - s.lookbehind),
                stop=min(len(people), end + s.lookahead),
            )
            assert all(piece[i] == single[i] for i in range(start, end)), start
