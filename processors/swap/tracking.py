"""Which face gets which identity, decided over a bounded window of frames so it never flickers
and chunked output equals single-task output.

Detections of neighbouring frames are linked by box overlap (a face missed for up to `max_gap`
frames is linked across the gap). A face's decision at frame t (is it the largest? is it the
reference person? which face-map entry?) averages its linked detections within t ± `window`.
Everything at frame t is a function of the detections in t ± (window + max_gap + 1), which is
the step's declared look-behind and look-ahead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from processors.faces import Face
from processors.geometry import iou

MIN_IOU = 0.3


def context(window: int, max_gap: int) -> int:
    """Frames of context on each side that a decision at one frame depends on."""
    return window + max_gap + 1


def _greedy_pairs(src: list[Face], dst: list[Face], skip: set[int]) -> list[tuple[int, int]]:
    """Pairs (i, j) by decreasing overlap; each face used once; dst indices in `skip` unused."""
    scored = [
        (iou(a.box, b.box), i, j)
        for i, a in enumerate(src)
        for j, b in enumerate(dst)
        if j not in skip
    ]
    pairs, used_i, used_j = [], set(), set()
    for score, i, j in sorted(scored, key=lambda x: (-x[0], x[1], x[2])):
        if score < MIN_IOU or i in used_i or j in used_j:
            continue
        pairs.append((i, j))
        used_i.add(i)
        used_j.add(j)
    return pairs


Node = tuple[int, int]  # (frame index, face index in that frame)


@dataclass
class FaceTracks:
    """Detections by frame, and the links between them, computed lazily and cached."""

    max_gap: int
    window: int

    def __post_init__(self) -> None:
        self.faces: dict[int, list[Face]] = {}
        self._gap1: dict[int, list[tuple[int, int]]] = {}
        self._forward: dict[int, dict[int, Node]] = {}

    def add(self, index: int, faces: list[Face]) -> None:
        self.faces[index] = faces

    def drop_before(self, index: int) -> None:
        for store in (self.faces, self._gap1, self._forward):
            for k in [k for k in store if k < index]:
                del store[k]

    def _pairs1(self, t: int) -> list[tuple[int, int]]:
        """Matches between frame t and frame t+1 (a function of those two frames only)."""
        if t not in self._gap1:
            a, b = self.faces.get(t, []), self.faces.get(t + 1, [])
            self._gap1[t] = _greedy_pairs(a, b, set())
        return self._gap1[t]

    def forward(self, t: int) -> dict[int, Node]:
        """Face i of frame t -> its next observation, at most max_gap frames missed between."""
        if t in self._forward:
            return self._forward[t]
        links: dict[int, Node] = {i: (t + 1, j) for i, j in self._pairs1(t)}
        for d in range(2, self.max_gap + 2):
            u = t + d
            if u not in self.faces:
                continue
            open_i = [i for i in range(len(self.faces.get(t, []))) if i not in links]
            if not open_i:
                break
            # A face at u that continues a face of u-1 is not the one that went missing.
            continued = {j for _, j in self._pairs1(u - 1)}
            src = [self.faces[t][i] for i in open_i]
            for k, j in _greedy_pairs(src, self.faces[u], continued):
                links[open_i[k]] = (u, j)
        self._forward[t] = links
        return links

    def backward(self, u: int, j: int) -> Node | None:
        """The nearest earlier observation linked forward to face j of frame u."""
        for t in range(u - 1, u - self.max_gap - 2, -1):
            for i, target in self.forward(t).items():
                if target == (u, j):
                    return (t, i)
        return None

    def chain(self, start: Node, centre: int) -> list[Node]:
        """The linked observations of a face within centre ± window."""
        nodes = [start]
        node: Node | None = start
        while node is not None:
            node = self.backward(*node)
            if node is None or node[0] < centre - self.window:
                break
            nodes.append(node)
        node = start
        while True:
            node = self.forward(node[0]).get(node[1])
            if node is None or node[0] > centre + self.window:
                break
            nodes.append(node)
        return nodes

    def faces_at(self, t: int) -> list[tuple[Node, Face]]:
        """Detected faces of frame t, plus faces missed here that are seen again within the gap
        (they keep the landmarks of their last detection)."""
        found = [((t, i), f) for i, f in enumerate(self.faces.get(t, []))]
        for s in range(t - 1, t - self.max_gap - 1, -1):
            for i, (u, _) in self.forward(s).items():
                if u > t:
                    face = self.faces[s][i]
                    found.append(((s, i), face.with_(carried=True, score=0.0)))
        return found


@dataclass(frozen=True)
class Targeting:
    """How faces are chosen: `largest`, `all`, or by distance to reference embeddings."""

    mode: str  # largest | all | reference | face_map
    references: list[np.ndarray]  # one per identity (reference / face_map modes)
    threshold: float

    @property
    def needs_embeddings(self) -> bool:
        return self.mode in ("reference", "face_map")


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance of two normalised embeddings: 0 same direction, 2 opposite."""
    return float(1.0 - np.dot(a, b))


def decide(tracks: FaceTracks, t: int, targeting: Targeting) -> list[tuple[Node, Face, int | None]]:
    """(node, face, identity index or None) for every face at frame t."""
    faces = tracks.faces_at(t)
    if not faces:
        return []
    chains = [tracks.chain(node, t) for node, _ in faces]

    def mean_of(nodes: list[Node], value: Callable[[Face], float]) -> float:
        return float(np.mean([value(tracks.faces[s][i]) for s, i in nodes]))

    if targeting.mode == "all":
        return [(node, face, 0) for node, face in faces]
    if targeting.mode == "largest":
        sizes = [mean_of(c, lambda f: f.area) for c in chains]
        best = int(np.argmax(sizes))  # first on ties: faces come largest first
        return [(node, face, 0 if k == best else None) for k, (node, face) in enumerate(faces)]
    decided = []
    for (node, face), nodes in zip(faces, chains, strict=True):
        dists = [
            mean_of(nodes, lambda f, r=ref: distance(f.embedding, r))
            for ref in targeting.references
        ]
        best = int(np.argmin(dists))
        decided.append((node, face, best if dists[best] <= targeting.threshold else None))
    return decided
