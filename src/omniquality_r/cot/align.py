"""Prompt elements and their detection in pixels, for the analyst's alignment judgement.

The analyst reads prompts made of object groups "<count> <colour> <shape>[s] <position>"
joined by ", " and " and ", e.g. "two red circles on the left and one blue square at the
top", in its own vocabulary (COLOURS, SHAPES, COUNT_WORDS, POSITION_PHRASES; a group with a
word outside it is not checkable). Each group has four elements: shape, colour, count and
position.

Detection: a pixel is named by its HSV colour: chromatic colours by hue range (COLOURS,
degrees) when saturation >= MIN_SATURATION and value >= MIN_VALUE, white when saturation
<= WHITE_SATURATION and value >= WHITE_VALUE. Each connected blob of one colour of at least
`MIN_BLOB_AREA` px is one object. Its shape follows from three ratios: holes (filled area
/ area >= 1.5: ring), solidity (area / convex-hull area < 0.8: star) and extent (area /
bounding-box area: >= 0.9 square, >= 0.65 circle, else triangle). Its position is the
region of its centroid: left / right third of the width, else top / centre / bottom third
of the height. Objects of one colour in one region form a cluster (count = its size, shape
= its most common shape). Each prompt group is matched to at most one cluster, choosing
the assignment that satisfies the most elements; a group without a cluster, or whose
cluster agrees on nothing but the count, satisfies none.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import permutations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

# Colour names by hue range in degrees, [start, end) (red wraps around 0).
COLOURS = {"red": (345.0, 15.0), "orange": (15.0, 40.0), "yellow": (40.0, 75.0),
           "green": (75.0, 170.0), "blue": (170.0, 255.0), "purple": (255.0, 345.0),
           "white": None}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "star", "ring")
MIN_SATURATION, MIN_VALUE = 0.5, 0.5
WHITE_SATURATION, WHITE_VALUE = 0.15, 0.85
ELEMENTS = ("colour", "shape", "count", "position")
POSITION_PHRASES = {
    "on the left": "left", "on the right": "right", "at the top": "top",
    "at the bottom": "bottom", "in the centre": "centre",
}  # fmt: skip
COUNT_WORDS = ("one", "two", "three", "four", "five", "six")
MIN_BLOB_AREA = 8

_GROUP_RE = re.compile(
    rf"\b({'|'.join(COUNT_WORDS)})\s+({'|'.join(COLOURS)})\s+({'|'.join(SHAPES)})s?\s+"
    rf"({'|'.join(POSITION_PHRASES)})"
)


@dataclass(frozen=True)
class Group:
    """One object group named by the prompt (or one cluster found in the image)."""

    colour: str
    shape: str
    count: int
    position: str

    def phrase(self) -> str:
        noun = self.shape + ("s" if self.count > 1 else "")
        where = next(k for k, v in POSITION_PHRASES.items() if v == self.position)
        return f"{COUNT_WORDS[self.count - 1]} {self.colour} {noun} {where}"


def parse_prompt(prompt: str) -> list[Group]:
    """The object groups of a prompt in the analyst's grammar; [] when none is found."""
    return [
        Group(colour, shape, COUNT_WORDS.index(count) + 1, POSITION_PHRASES[where])
        for count, colour, shape, where in _GROUP_RE.findall(prompt.lower())
    ]


def region(x: float, y: float) -> str:
    """Region of a point given as fractions of width and height (module docstring)."""
    if x < 1 / 3:
        return "left"
    if x > 2 / 3:
        return "right"
    return "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "centre"


def classify_shape(mask: np.ndarray) -> str:
    """The shape of one blob from its hole, solidity and extent ratios (module docstring)."""
    area = mask.sum()
    if ndimage.binary_fill_holes(mask).sum() >= 1.5 * area:
        return "ring"
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    try:
        solidity = area / ConvexHull(corners).volume
    except QhullError:  # a degenerate (line-like) blob
        solidity = 1.0
    if solidity < 0.8:
        return "star"
    extent = area / mask.size
    return "square" if extent >= 0.9 else "circle" if extent >= 0.65 else "triangle"


@dataclass(frozen=True)
class Detected:
    colour: str
    shape: str
    position: str


def hsv(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in [0, 1] of RGB pixels in [0, 1]."""
    value, low = x.max(axis=-1), x.min(axis=-1)
    delta = value - low
    safe = np.where(delta > 0, delta, 1.0)
    r, g, b = (x[..., i] for i in range(3))
    hue = np.where(value == r, (g - b) / safe % 6, np.where(value == g, (b - r) / safe + 2,
                                                            (r - g) / safe + 4))  # fmt: skip
    saturation = np.where(value > 0, delta / np.where(value > 0, value, 1.0), 0.0)
    return np.where(delta > 0, 60.0 * hue, 0.0) % 360.0, saturation, value


def colour_mask(hue: np.ndarray, sat: np.ndarray, val: np.ndarray, colour: str) -> np.ndarray:
    """Pixels named `colour` (module docstring)."""
    span = COLOURS[colour]
    if span is None:
        return (sat <= WHITE_SATURATION) & (val >= WHITE_VALUE)
    start, end = span
    in_hue = (hue >= start) & (hue < end) if start < end else (hue >= start) | (hue < end)
    return in_hue & (sat >= MIN_SATURATION) & (val >= MIN_VALUE)


def detect_objects(x: np.ndarray) -> list[Detected]:
    """Objects in the named colours (module docstring); x is RGB in [0, 1]."""
    h, w, _ = x.shape
    hue, sat, val = hsv(x)
    found = []
    for colour in COLOURS:
        mask = colour_mask(hue, sat, val, colour)
        labels, _ = ndimage.label(mask)
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            blob = labels[sl] == i
            if blob.sum() < MIN_BLOB_AREA:
                continue
            cy, cx = ndimage.center_of_mass(blob)
            centre = ((sl[1].start + cx + 0.5) / w, (sl[0].start + cy + 0.5) / h)
            found.append(Detected(colour, classify_shape(blob), region(*centre)))
    return found


def clusters(objects: list[Detected]) -> list[Group]:
    """Objects of one colour in one region, as groups (count, most common shape)."""
    by_key: dict[tuple[str, str], list[Detected]] = {}
    for o in objects:
        by_key.setdefault((o.colour, o.position), []).append(o)
    return [
        Group(colour, Counter(o.shape for o in objs).most_common(1)[0][0], len(objs), position)
        for (colour, position), objs in by_key.items()
    ]


def _matches(want: Group, got: Group | None) -> dict[str, bool]:
    """Elements of `want` that `got` satisfies; none when `got` shares no more than the count
    (it is some other group)."""
    same = {e: got is not None and getattr(want, e) == getattr(got, e) for e in ELEMENTS}
    other_group = not any(same[e] for e in ELEMENTS if e != "count")
    return dict.fromkeys(ELEMENTS, False) if other_group else same


def match_groups(wanted: list[Group], found: list[Group]) -> list[tuple[Group | None, dict]]:
    """Per prompt group: the cluster assigned to it (or None) and which elements it satisfies,
    from the one-to-one assignment satisfying the most elements (module docstring)."""
    slots: list[Group | None] = [*found, *([None] * len(wanted))]
    best, best_total = None, -1
    for chosen in permutations(range(len(slots)), len(wanted)):
        picks = [slots[i] for i in chosen]
        total = sum(sum(_matches(w, g).values()) for w, g in zip(wanted, picks))
        if total > best_total:
            best, best_total = picks, total
    return [(g, _matches(w, g)) for w, g in zip(wanted, best)]
