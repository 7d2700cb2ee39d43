"""The virtual camera: where the crop window sits in each frame, from the person detections.

Every quantity at frame i is a function of a bounded window of frames around i, never of
state carried from the start of the video. A task that decodes `lookbehind` frames before
its chunk and `lookahead` after it therefore computes, for every frame it keeps, exactly the
path a single task over the whole video computes: chunk seams are invisible. The stages,
each over frames of the same scene only (a scene cut bounds every window):

1. subject (detection frames, ±vote_radius): each box is linked by IoU to the boxes of the
   other detection frames in the window (an IoU tracker run forwards and backwards from
   this frame), and the box whose linked track scores best over the whole window (area for
   `largest`, closeness to the centre for `center`) is the subject. A person who is larger
   in one stray frame does not take the camera; `all` is the union of the boxes.
2. target (every frame, ±hold): the subject box interpolated between the detection frames
   either side (detection runs every k-th frame); with a person on one side only, that box
   is held; with none within `hold` frames, the target is the frame's centre at full size.
   The box becomes a target: its centre (aimed a little above the middle: heads belong in
   the upper part of the frame) and the window height that frames it with `padding`.
3. smooth (±smooth_radius): a two-sided exponential moving average (an EMA run forwards and
   backwards, truncated where its weight has fallen to e^-3) gives the responsive path p;
   the plain mean over the same window is where the camera rests, a. The dead zone ignores
   the part of p - a smaller than `dead_zone` (a soft threshold): jitter and small shifts of
   the subject around where it has been do not move the camera, larger moves do.
4. speed (±speed_radius): the path is made v-Lipschitz (it moves at most v px per frame) by
   averaging its lower and upper v-Lipschitz envelopes, min_j(c_j + v|i-j|) and
   max_j(c_j - v|i-j|). Where the path is already slow enough both equal it; a jump becomes
   a ramp centred on it. A term with |i-j| > range/v can never be the min or max, so a
   window of range/v frames gives the exact envelope: the speed limit, too, is a bounded
   window function — unlike a rate limiter that carries its state along the video.

Between 3 and 4, the camera mode (`camera`: auto, still, track). A shot is cut into pieces on
a global grid of `shot` frames (and at scene cuts), so every task sees the same pieces. Over
a piece, the raw targets decide: `still` when every centre stays within `still_tolerance` of
their mean (the window sits at the mean and does not move), `pan` (auto only) when a
straight line through them stays within that tolerance (a constant-velocity move), `track`
otherwise (the smoothed path of stage 3). Neighbouring pieces meet through stage 4's ramp.

`subject: speaker` scores each box by how much its mouth moves while there is voice (the
processor's speech evidence, fed with the boxes): the person who spoke most over ±vote_radius
wins; when nobody spoke there, the last one who did within `speaker_back` frames is held;
with nobody at all, the largest person.

`fit: blur`: a target may be wider than the aspect (the subjects' union does not fit): the
window keeps that width, and the processor shows it whole on a blurred copy of the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from processors.crop.boxes import Box
from processors.geometry import iou

LINK_IOU = 0.3  # two boxes in nearby detection frames are the same person above this
SILENT = 1e-4  # a speech score at or below this is nobody speaking
AIM = 0.4  # the window centre sits this far down the subject box (headroom above)
Target = tuple[float, float, float, float]  # centre x, centre y, window height, width


class Window(NamedTuple):
    x: int
    y: int
    width: int
    height: int


def window_size(width: int, height: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """The largest window of the target aspect inside the frame, even in both dimensions."""
    aw, ah = aspect
    if width * ah >= height * aw:  # frame is wider than the target: full height
        h = height
        w = height * aw / ah
    else:
        w = width
        h = width * ah / aw
    even = lambda v, limit: max(2, min(limit - limit % 2, math.floor(v / 2) * 2))  # noqa: E731
    return even(w, width), even(h, height)


@dataclass(frozen=True)
class PathSettings:
    frame: tuple[int, int]  # frame width, height
    window: tuple[int, int]  # the largest window of the aspect: the output size
    min_crop_ratio: float = 1.0  # the smallest window, as a fraction of `window`
    padding: float = 0.15  # margin around the subject, as a fraction of its size
    subject: str = "largest"
    detect_every: int = 1
    vote_radius: int = 0
    hold: int = 0
    smooth_radius: int = 0
    dead_zone: float = 0.0  # fraction of the window's size
    speed: float = math.inf  # px per frame
    speed_radius: int = 0
    camera: str = "track"  # auto | still | track
    shot: int = 0  # frames of a camera-mode piece (0: no mode stage)
    still_tolerance: float = 0.05  # fraction of the window's size
    fit: str = "crop"  # crop | blur
    speaker_back: int = 0  # frames a silent stretch holds the last speaker
    switch_cut: bool = False  # a change of subject (another person) cuts like a scene cut

    @property
    def lookahead(self) -> int:
        return self.vote_radius + self.hold + self.smooth_radius + self.shot + self.speed_radius

    @property
    def lookbehind(self) -> int:
        # +1: a frame's scene-cut flag compares it with the frame before (and its mouth
        # movement with that frame's); a silent stretch looks further back for its speaker.
        # A change of subject at a detection frame compares it with the one before.
        switch = self.detect_every if self.switch_cut else 0
        return self.lookahead + 1 + self.speaker_back + switch


def radii(
    rate: Fraction, *, detect_every: int, smoothing_seconds: float, hold_seconds: float
) -> dict[str, int]:
    """Window radii in frames of the first three stages (the speed stage's depends on the
    frame size: see `speed_radius`)."""
    fps = float(rate)
    smooth = max(0, round(smoothing_seconds * fps))
    return {
        "vote_radius": smooth,
        # Interpolating between detections needs at least the detection spacing.
        "hold": max(detect_every, round(hold_seconds * fps)),
        "smooth_radius": smooth,
    }


def speed_radius(
    frame: tuple[int, int], window: tuple[int, int], min_crop_ratio: float, speed: float
) -> int:
    """Frames of the speed stage's window: the path's largest possible range over v.

    Every centre and size the path holds lies in a known interval (a centre keeps a window
    of at least the smallest size inside the frame; a size lies between the smallest and
    the largest window), so no envelope term further away than range / v can win."""
    fw, fh = frame
    ww, wh = window
    min_h = max(2.0, min_crop_ratio * wh)
    min_w = min_h * ww / wh
    span = max(fw - min_w, fh - min_h, wh - min_h, 0.0)
    return math.ceil(span / speed) if span > 0 else 0


def _metric(box: Box, mode: str, frame: tuple[int, int]) -> float:
    fw, fh = frame
    if mode == "center":
        dx = (box[0] + box[2]) / 2 - fw / 2
        dy = (box[1] + box[3]) / 2 - fh / 2
        return 1.0 - math.hypot(dx, dy) / math.hypot(fw / 2, fh / 2)
    return (box[2] - box[0]) * (box[3] - box[1]) / (fw * fh)


def _lerp(a: Box, b: Box, t: float) -> Box:
    return tuple(x + (y - x) * t for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _soft_threshold(x: float, dz: float) -> float:
    return math.copysign(max(abs(x) - dz, 0.0), x)


class CameraPath:
    """Frames go in (in index order, with their cut flag and, on detection frames, boxes);
    windows come out once every frame within the lookahead of theirs has gone in."""

    def __init__(self, settings: PathSettings) -> None:
        self.s = settings
        ww, wh = settings.window
        self._ratio = ww / wh
        self._min_h = max(2.0, settings.min_crop_ratio * wh)
        dz, tol = settings.dead_zone, settings.still_tolerance
        self._dead = (dz * ww, dz * wh, dz * wh, dz * ww)
        self._tolerance = (tol * ww, tol * wh, tol * wh, tol * ww)
        self._cut: dict[int, bool] = {}
        self._scene: dict[int, int] = {}  # index of the frame that starts i's scene
        # After the subject stage: cuts and changes of subject (switch_cut) both break a span.
        self._break: dict[int, bool] = {}
        self._segment: dict[int, int] = {}  # index of the frame that starts i's segment
        self._boxes: dict[int, list[Box]] = {}  # detection frames only
        self._speech: dict[int, dict[Box, float]] = {}  # speaking score of each box
        self._subject: dict[int, Box | None] = {}
        self._links: dict[tuple[int, Box], Box | None] = {}
        self._target: dict[int, Target] = {}
        self._smooth: dict[int, Target] = {}
        self._moded: dict[int, Target] = {}
        self._pieces: dict[tuple[int, int], tuple[str, list[tuple[float, float]]]] = {}
        self.modes: dict[int, str] = {}  # the camera mode of each emitted frame, for callers
        self._final: dict[int, Target] = {}
        self._first: int | None = None
        self._last = -1
        self._ended = False
        self._next = [0] * 6  # next frame each stage computes; the last: emitted

    # -- input ---------------------------------------------------------------------------

    def feed(
        self,
        index: int,
        cut: bool,
        boxes: list[Box] | None,
        speech: list[float] | None = None,
    ) -> None:
        """Frame `index` (the next one); `boxes` is None on frames where detection did not run.
        `speech` (subject speaker): how much each box is speaking here, 0 for silent."""
        if self._first is None:
            self._first = index
            self._next = [index] * 6
            cut = True  # nothing before it in this stream: it starts a scene here
        elif index != self._last + 1:
            raise ValueError(f"frame {index} after {self._last}: frames must arrive in order")
        self._last = index
        self._cut[index] = cut
        self._scene[index] = index if cut else self._scene[index - 1]
        if boxes is not None:
            found: list[Box] = [tuple(map(float, b)) for b in boxes]  # type: ignore[misc]
            self._boxes[index] = found
            if speech is not None:
                self._speech[index] = dict(zip(found, speech, strict=True))

    def finish(self) -> None:
        """No more frames: the windows near the end use what there is."""
        self._ended = True

    def ready(self) -> list[tuple[int, Window]]:
        """Windows of the frames that can be placed now, in index order (each once)."""
        if self._first is None:
            return []
        s = self.s
        stages = (
            (s.vote_radius, self._stage_subject),
            (s.hold, self._stage_target),
            (s.smooth_radius, self._stage_smooth),
            (s.shot, self._stage_shot),
            (s.speed_radius, self._stage_speed),
        )
        known = self._last  # frames whose input is complete
        for n, (radius, compute) in enumerate(stages):
            upto = known if self._ended else known - radius
            while self._next[n] <= upto:
                compute(self._next[n])
                self._next[n] += 1
            known = self._next[n] - 1
        out = []
        while self._next[5] <= known:
            i = self._next[5]
            out.append((i, self._window(self._final[i])))
            self._next[5] += 1
        self._forget(self._next[5] - s.lookbehind - 1)
        return out

    # -- stages --------------------------------------------------------------------------

    def _span(self, i: int, radius: int, scene_only: bool = False) -> range:
        """Frames within `radius` of i in i's segment (its scene, cut where the subject
        changes person under switch_cut; `scene_only`: its scene) and in this stream."""
        start, breaks = (self._scene, self._cut) if scene_only else (self._segment, self._break)
        lo = max(start[i], i - radius)
        hi = i
        end = min(i + radius, self._last)
        while hi < end and not breaks[hi + 1]:
            hi += 1
        return range(lo, hi + 1)

    def _stage_subject(self, d: int) -> None:
        self._choose_subject(d)
        cut = self._cut[d] or self._switched(d)
        self._break[d] = cut
        self._segment[d] = d if cut else self._segment[d - 1]

    def _switched(self, d: int) -> bool:
        """switch_cut: the subject at detection frame d is another person than at the one
        before (no IoU link between them)."""
        now = self._subject.get(d)
        if not self.s.switch_cut or now is None:
            return False
        for j in range(d - 1, max(self._scene[d], d - self.s.detect_every) - 1, -1):
            if j in self._boxes:
                before = self._subject.get(j)
                return before is not None and iou(before, now) < LINK_IOU
        return False

    def _choose_subject(self, d: int) -> None:
        boxes = self._boxes.get(d)
        if boxes is None:
            return
        if not boxes:
            self._subject[d] = None
            return
        if self.s.subject == "all":
            self._subject[d] = (
                min(b[0] for b in boxes), min(b[1] for b in boxes),
                max(b[2] for b in boxes), max(b[3] for b in boxes),
            )  # fmt: skip
            return
        span = self._span(d, self.s.vote_radius, scene_only=True)
        frames = [j for j in span if j in self._boxes]
        if self.s.subject == "speaker":
            self._subject[d] = self._speaker(d, frames)
            return
        here = frames.index(d)
        # Tracks start from this frame's boxes and from those of the nearest detection frames
        # with anyone in them on either side: if the person the window is about was missed
        # here, their track does not pass through d and d gets no subject (its neighbours are
        # interpolated across) rather than whoever else happens to be in the frame.
        starts = [d]
        for side in (frames[here - 1 :: -1] if here else [], frames[here + 1 :]):
            nearest = next((j for j in side if self._boxes[j]), None)
            if nearest is not None:
                starts.append(nearest)
        self._subject[d] = self._best_track(starts, frames, d)[0]

    def _track(self, start: int, box: Box, frames: list[int], d: int) -> tuple[float, Box | None]:
        """IoU-link `box` at frame `start` through the window's detection frames, forwards and
        backwards; its score over the window, and its box at frame d (None: not seen there)."""
        score = self._metric(start, box)
        at_d = box if start == d else None
        k = frames.index(start)
        for side in (frames[k + 1 :], frames[k - 1 :: -1] if k else []):
            current = box
            for j in side:
                match = self._link(current, j)
                if match is not None:
                    current = match
                    score += self._metric(j, match)
                    if j == d:
                        at_d = match
        return score, at_d

    def _link(self, box: Box, j: int) -> Box | None:
        """The box of frame j that continues `box` (best IoU, at least LINK_IOU), if any.
        Tracks from neighbouring frames walk the same links: they are worked out once."""
        key = (j, box)
        if key not in self._links:
            best, best_iou = None, -1.0
            for other in self._boxes[j]:
                overlap = iou(box, other)
                if overlap > best_iou:
                    best, best_iou = other, overlap
            self._links[key] = best if best_iou >= LINK_IOU else None
        return self._links[key]

    def _metric(self, j: int, box: Box) -> float:
        if self.s.subject == "speaker":
            return self._speech.get(j, {}).get(box, 0.0)
        return _metric(box, self.s.subject, self.s.frame)

    def _best_track(self, starts: list[int], frames: list[int], d: int) -> tuple[Box | None, float]:
        best, best_score = None, -math.inf
        for start in starts:
            for box in self._boxes[start]:
                score, at_d = self._track(start, box, frames, d)
                if score > best_score:
                    best, best_score = at_d, score
        return best, best_score

    def _speaker(self, d: int, frames: list[int]) -> Box | None:
        """Who speaks most over the vote window; else the last who spoke within
        `speaker_back`; else the largest person."""
        boxes = self._boxes[d]
        best, score = self._best_track([d], frames, d)
        if score > SILENT and best is not None:
            return best
        for j in range(d - 1, max(self._scene[d], d - self.s.speaker_back) - 1, -1):
            heard = self._speech.get(j)
            if heard and max(heard.values()) > SILENT:
                spoke = max(heard, key=heard.__getitem__)
                cx, cy = (spoke[0] + spoke[2]) / 2, (spoke[1] + spoke[3]) / 2
                return min(
                    boxes, key=lambda b: math.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy)
                )
        return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))

    def _stage_target(self, i: int) -> None:
        span = self._span(i, self.s.hold)
        before = after = None
        for j in range(i, span.start - 1, -1):
            if self._subject.get(j) is not None:
                before = j
                break
        for j in range(i, span.stop):
            if self._subject.get(j) is not None:
                after = j
                break
        if before is not None and after is not None:
            a, b = self._subject[before], self._subject[after]
            assert a is not None and b is not None
            box = a if after == before else _lerp(a, b, (i - before) / (after - before))
        elif before is not None or after is not None:
            box = self._subject[before if before is not None else after]  # type: ignore[index]
        else:
            box = None
        self._target[i] = self._aim(box)

    def _aim(self, box: Box | None) -> Target:
        """Where the window wants to be for this subject box (the centre when there is none)."""
        fw, fh = self.s.frame
        wh = self.s.window[1]
        if box is None:
            cx, cy, h = fw / 2, fh / 2, float(wh)
            w = h * self._ratio
        else:
            x0, y0, x1, y1 = box
            grow = 1 + 2 * self.s.padding
            needed = max((y1 - y0) * grow, (x1 - x0) * grow / self._ratio)
            h = min(float(wh), max(self._min_h, needed))
            cx, cy = (x0 + x1) / 2, y0 + (y1 - y0) * AIM
            w = h * self._ratio
            if self.s.fit == "blur":
                # Wider than the aspect allows: keep everyone (and a little margin) in view;
                # the processor pads the rest with a blurred copy of the frame.
                w = max(w, min(float(fw), (x1 - x0) * grow))
        cx = min(max(cx, w / 2), fw - w / 2)
        cy = min(max(cy, h / 2), fh - h / 2)
        return cx, cy, h, w

    def _stage_smooth(self, i: int) -> None:
        radius = self.s.smooth_radius
        span = self._span(i, radius)
        rate = 3.0 / radius if radius else 0.0
        ema = [0.0] * 4
        mean = [0.0] * 4
        total = 0.0
        for j in span:
            t = self._target[j]
            w = math.exp(-rate * abs(j - i))
            total += w
            for k in range(4):
                ema[k] += w * t[k]
                mean[k] += t[k]
        n = len(span)
        out = []
        for k in range(4):
            p, a = ema[k] / total, mean[k] / n
            out.append(a + _soft_threshold(p - a, self._dead[k]))
        self._smooth[i] = (out[0], out[1], out[2], out[3])

    def _piece(self, i: int) -> range:
        """i's piece of its scene: the grid cell of `shot` frames it falls in, cut at scene
        cuts (the grid is global, so every task cuts a shot into the same pieces)."""
        first = i - i % self.s.shot
        lo = max(first, self._segment[i])
        hi = i
        end = min(first + self.s.shot - 1, self._last)
        while hi < end and not self._break[hi + 1]:
            hi += 1
        return range(lo, hi + 1)

    def _stage_shot(self, i: int) -> None:
        if self.s.camera == "track" or not self.s.shot:
            self._moded[i] = self._smooth[i]
            self.modes[i] = "track"
            return
        piece = self._piece(i)
        key = (piece.start, piece.stop)
        if key not in self._pieces:
            self._pieces[key] = self._decide(piece)
        mode, lines = self._pieces[key]
        self.modes[i] = mode
        if mode == "track":
            self._moded[i] = self._smooth[i]
        else:
            t = i - (piece.start + piece.stop - 1) / 2
            a, b, c, d = (mean + slope * t for mean, slope in lines)
            self._moded[i] = (a, b, c, d)

    def _decide(self, piece: range) -> tuple[str, list[tuple[float, float]]]:
        """The piece's camera mode from its raw targets: still (every value within the
        tolerance of its mean), pan (of a straight line), else track; with the still or pan
        path's (mean, slope per frame) of each target component."""
        # Plain Python: the planner imports this module and has no numpy to spare.
        ts = [self._target[j] for j in piece]
        n = len(ts)
        xs = [j - (n - 1) / 2 for j in range(n)]
        means = [sum(t[k] for t in ts) / n for k in range(4)]
        tol = self._tolerance
        within = all(abs(t[k] - means[k]) <= tol[k] for t in ts for k in range(4))
        if self.s.camera == "still" or within:
            return "still", [(m, 0.0) for m in means]
        denominator = sum(x * x for x in xs)
        slopes = [sum(x * (t[k] - means[k]) for x, t in zip(xs, ts, strict=True)) / denominator
                  for k in range(4)]  # fmt: skip
        if all(
            abs(t[k] - means[k] - slopes[k] * x) <= tol[k]
            for x, t in zip(xs, ts, strict=True)
            for k in range(4)
        ):
            return "pan", list(zip(means, slopes, strict=True))
        return "track", []

    def _stage_speed(self, i: int) -> None:
        v = self.s.speed
        if math.isinf(v):
            self._final[i] = self._moded[i]
            return
        lower = [math.inf] * 4
        upper = [-math.inf] * 4
        for j in self._span(i, self.s.speed_radius):
            c = self._moded[j]
            reach = v * abs(i - j)
            for k in range(4):
                lower[k] = min(lower[k], c[k] + reach)
                upper[k] = max(upper[k], c[k] - reach)
        self._final[i] = tuple((lo + up) / 2 for lo, up in zip(lower, upper, strict=True))  # type: ignore[assignment]

    # -- output --------------------------------------------------------------------------

    def _window(self, target: Target) -> Window:
        fw, fh = self.s.frame
        ww, wh = self.s.window
        cx, cy, h, w = target
        if w > h * self._ratio + 1:  # fit blur: wider than the aspect, shown whole
            height = min(fh, max(2, round(h)))
            width = min(fw, max(2, round(w)))
        elif h >= wh - 0.5:
            width, height = ww, wh
        else:
            height = min(fh, max(2, round(h)))
            width = min(fw, max(2, round(height * self._ratio)))
        x = min(max(0, round(cx - width / 2)), fw - width)
        y = min(max(0, round(cy - height / 2)), fh - height)
        return Window(int(x), int(y), width, height)

    def _forget(self, before: int) -> None:
        for table in (
            self._cut, self._scene, self._break, self._segment, self._boxes, self._speech,
            self._subject,
            self._target, self._smooth, self._moded, self._final, self.modes,
        ):  # fmt: skip
            for key in [k for k in table if k < before]:
                del table[key]
        for link in [k for k in self._links if k[0] < before]:
            del self._links[link]
        for piece in [k for k in self._pieces if k[1] <= before]:
            del self._pieces[piece]
