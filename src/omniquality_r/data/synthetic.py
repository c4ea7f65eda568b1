"""Synthetic quality data with known ground truth: the default dataset.

Every sample is drawn from its own numpy Generator seeded by (seed, task, index),
so it depends on nothing else. Images are square, `size` px (default 112); pixel
lengths below are given at 112 px and scale with the size. The MOS rules:

technical
    A procedural landscape (sky gradient with clouds and maybe a sun, 1-3 ridges
    of fractal noise, textured ground, 0-5 trees/rocks/houses, random palette)
    gets 0 (20 %), 1 (45 %) or 2 (35 %) distinct distortions, never under- and
    over-exposure together, each at a level 1-4 drawn uniformly (0 = absent),
    applied in the order of DISTORTIONS:

        underexposure  gain            0.70  0.50  0.35  0.22
        overexposure   gain            1.35  1.75  2.30  3.00  (clipped)
        contrast       scale to mean   0.70  0.50  0.33  0.20
        desaturation   chroma scale    0.60  0.38  0.18  0.00
        blur           gaussian sigma  0.7   1.2   2.0   3.2   px
        motion_blur    line length     3     5     9     13    px, random angle
        noise          gaussian sd     0.025 0.05  0.085 0.13  (pixels in [0, 1])
        jpeg           PIL quality     40    20    10    5

    MOS = 5 * prod_d (1 - TECHNICAL_WEIGHTS[d] * level_d / 4).

aesthetic
    One subject shape on a background, plus small distractor shapes. Five
    factors, each with levels worst -> best (AESTHETIC_LEVELS) and score
    index / (n_levels - 1) in [0, 1]:

        placement   subject cut off at an edge (centre 0.3 r outside to 0.4 r inside the
                    border) | at the image centre | at a rule-of-thirds power point
        harmony     clashing (subject hue 60-108 deg from the background's, background
                    saturation 0.8-1, distractors in random hues) | harmonious (background
                    saturation 0.15-0.45; PALETTES analogous: all hues within 36 deg, or
                    complementary: subject at 180 +- 11 deg, distractors near either hue)
        clutter     6 .. 0 distractor shapes
        exposure    |stops| 2, 1, 0 (random sign; = technical under/overexposure level 2|stops| - 1)
        background  texture level 3 .. 0 (multiplicative fractal noise of amplitude 0.15 * level)

    MOS = 5 * sum_k AESTHETIC_WEIGHTS[k] * score_k. A latent q ~ U(0, 1) per
    image pulls all factor levels towards the same end (level index =
    round((n - 1) * clip(q + N(0, 0.35), 0, 1))) so the MOS spans [0, 5].

alignment
    A prompt names 1-3 object groups at distinct POSITIONS, each with a shape,
    a colour and a count 1-3, e.g. "two red circles on the left and one blue
    square at the top". Each group contributes four elements (ELEMENTS: shape,
    colour, count, position). With latent q ~ U(0, 1), a group is missing from
    the image with probability (1 - q) / 4 (all four elements fail), otherwise
    each element is satisfied with probability q; an unsatisfied element is
    rendered with another value drawn uniformly (another shape, colour or count;
    a region that no correctly placed group holds, preferably one the prompt
    does not name). Objects are drawn in the exact COLOUR_RGB colours, radius
    0.06 * size, on a dark neutral textured background, at POSITION_SLOTS of
    their region (left/right third of the width; top, centre or bottom cell of
    the middle column).

    MOS = 5 * satisfied elements / (4 * groups).

`Sample.factors` holds these latent labels (JSON-serialisable) for perception
pretraining; `generate_synthetic` writes a cached dataset of Records.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from omniquality_r.data.records import (
    MOS_MAX,
    TASKS,
    DataError,
    Record,
    read_manifest,
    write_manifest,
)

GENERATOR_VERSION = 1  # bump whenever a rule or renderer changes: it invalidates caches
REFERENCE_SIZE = 112  # pixel lengths in the rules are given at this size

DISTORTIONS = (
    "underexposure", "overexposure", "contrast", "desaturation",
    "blur", "motion_blur", "noise", "jpeg",
)  # fmt: skip
MAX_LEVEL = 4
DISTORTION_PARAMS = {
    "underexposure": (0.70, 0.50, 0.35, 0.22),
    "overexposure": (1.35, 1.75, 2.30, 3.00),
    "contrast": (0.70, 0.50, 0.33, 0.20),
    "desaturation": (0.60, 0.38, 0.18, 0.0),
    "blur": (0.7, 1.2, 2.0, 3.2),
    "motion_blur": (3, 5, 9, 13),
    "noise": (0.025, 0.05, 0.085, 0.13),
    "jpeg": (40, 20, 10, 5),
}
TECHNICAL_WEIGHTS = {
    "underexposure": 0.7, "overexposure": 0.7, "contrast": 0.6, "desaturation": 0.5,
    "blur": 0.8, "motion_blur": 0.8, "noise": 0.75, "jpeg": 0.7,
}  # fmt: skip
N_DISTORTIONS_P = (0.2, 0.45, 0.35)  # probability of 0, 1, 2 distortions
# The distortion sets an image with n = 0, 1, 2 distortions is drawn from, uniformly.
_DISTORTION_SETS = (
    [()],
    [(d,) for d in DISTORTIONS],
    [p for p in combinations(DISTORTIONS, 2) if set(p) != {"underexposure", "overexposure"}],
)
SCENE_OBJECTS = ("tree", "rock", "house")

SHAPES = ("circle", "square", "triangle", "star", "ring")
COLOUR_RGB = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 30),
    "purple": (150, 50, 200),
    "orange": (245, 135, 20),
    "white": (245, 245, 245),
}
COLOURS = tuple(COLOUR_RGB)
POSITIONS = ("left", "right", "top", "bottom", "centre")
ELEMENTS = ("shape", "colour", "count", "position")
MAX_COUNT = 3
OBJECT_RADIUS = 0.06  # alignment objects, fraction of the image size
# Object centres (x, y as fractions of the size) per region; a group of n uses n of them.
POSITION_SLOTS = {
    "left": ((1 / 6, 0.2), (1 / 6, 0.5), (1 / 6, 0.8)),
    "right": ((5 / 6, 0.2), (5 / 6, 0.5), (5 / 6, 0.8)),
    "top": ((0.4, 0.11), (0.6, 0.11), (0.5, 0.25)),
    "bottom": ((0.4, 0.89), (0.6, 0.89), (0.5, 0.75)),
    "centre": ((0.41, 0.42), (0.59, 0.42), (0.5, 0.59)),
}
_POSITION_PHRASE = {
    "left": "on the left", "right": "on the right", "top": "at the top",
    "bottom": "at the bottom", "centre": "in the centre",
}  # fmt: skip
_COUNT_WORD = ("one", "two", "three")

AESTHETIC_LEVELS = {
    "placement": ("edge", "centre", "thirds"),
    "harmony": ("clashing", "harmonious"),
    "clutter": (6, 5, 4, 3, 2, 1, 0),
    "exposure": (2, 1, 0),
    "background": (3, 2, 1, 0),
}
AESTHETIC_WEIGHTS = {
    "placement": 0.25, "harmony": 0.25, "clutter": 0.2, "exposure": 0.15, "background": 0.15,
}  # fmt: skip
PALETTES = ("clashing", "analogous", "complementary")
_LATENT_SD = 0.35
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class Sample:
    """An image, its ground-truth MOS, its prompt ("" unless alignment) and its latent labels."""

    image: Image.Image
    mos: float
    prompt: str
    factors: dict


# ---------------------------------------------------------------- helpers


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _to_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8))


def _to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32) / 255.0


def _rgb255(colour: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.round(np.clip(colour, 0, 1) * 255))


def _fractal(
    rng: np.random.Generator, shape: tuple[int, int], cells: int, octaves: int
) -> np.ndarray:
    """Fractal value noise in [0, 1]: octave o is a random grid of cells * 2^o cells,
    bicubic-upsampled, with amplitude 2^-o."""
    h, w = shape
    total = np.zeros(shape, np.float32)
    for o in range(octaves):
        n = cells * 2**o
        grid = rng.random((min(n, h) + 1 if h > 1 else 1, min(n, w) + 1), dtype=np.float32)
        up = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)
        total += np.asarray(up) * 0.5**o
    return (total - total.min()) / (np.ptp(total) + 1e-6)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill):
    """One of SHAPES centred at (cx, cy) with circumradius r (squares: half side 0.8 r)."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, round(0.35 * r)))
    elif shape == "square":
        draw.rectangle((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), fill=fill)
    else:
        points = 3 if shape == "triangle" else 10
        radii = [r] if shape == "triangle" else [r, 0.45 * r]
        draw.polygon(
            [
                (cx + radii[k % len(radii)] * math.cos(a), cy + radii[k % len(radii)] * math.sin(a))
                for k, a in enumerate(np.linspace(-np.pi / 2, 1.5 * np.pi, points, endpoint=False))
            ],
            fill=fill,
        )


def _graded(rng: np.random.Generator, q: float, n: int) -> int:
    """Level index 0..n-1 (0 worst) near q: round((n - 1) * clip(q + N(0, 0.35), 0, 1))."""
    return round((n - 1) * float(np.clip(q + rng.normal(0.0, _LATENT_SD), 0.0, 1.0)))


def _pick(rng: np.random.Generator, options: Sequence):
    """A uniform choice from `options`, as the element itself (not a numpy scalar)."""
    return options[int(rng.integers(len(options)))]


# ---------------------------------------------------------------- technical


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    """A clean procedural landscape as float RGB in [0, 1], and its scene factors."""
    y = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :]
    horizon = rng.uniform(0.3, 0.65)
    sky_hue = rng.uniform(0.5, 0.75) if rng.random() < 0.8 else rng.random()
    top = _hsv(sky_hue, rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.95))
    haze = _hsv(sky_hue + rng.uniform(-0.5, 0.5), rng.uniform(0.05, 0.6), rng.uniform(0.7, 1.0))
    t = np.clip(y / horizon, 0.0, 1.0)[..., None]
    img = np.broadcast_to(top * (1 - t) + haze * t, (size, size, 3)).copy()

    cover = rng.uniform(0.0, 0.8)
    clouds = _fractal(rng, (size, size), 2, 4)
    alpha = 0.9 * np.clip((clouds - (1 - cover)) / 0.25, 0.0, 1.0)[..., None]
    img = img * (1 - alpha) + (0.75 + 0.25 * clouds[..., None]) * alpha
    sun = bool(rng.random() < 0.4)
    if sun:
        sx, sy, sr = rng.uniform(0.1, 0.9), rng.uniform(0.05, horizon), rng.uniform(0.03, 0.07)
        d2 = (xx - sx) ** 2 + (y - sy) ** 2
        glow = np.maximum(np.exp(-d2 / (2 * (3 * sr) ** 2)) * 0.5, (d2 < sr**2) * 1.0)
        img = img + glow[..., None] * _hsv(rng.uniform(0.05, 0.17), 0.3, 1.0)

    n_hills = int(rng.integers(1, 4))
    ground_hue = rng.uniform(0.05, 0.4) if rng.random() < 0.8 else rng.random()
    ground_sat = rng.uniform(0.2, 0.8)
    for k in range(n_hills):  # far to near; the nearest ridge is the ground
        depth = (k + 1) / n_hills
        ridge = horizon - (1 - depth) * rng.uniform(0.05, 0.2)
        ridge = ridge - rng.uniform(0.02, 0.2) * _fractal(rng, (1, size), 2, 4)
        colour = _hsv(ground_hue + rng.uniform(-0.05, 0.05), ground_sat, rng.uniform(0.3, 0.8))
        colour = colour * depth + haze * (1 - depth) * 0.8
        texture = _fractal(rng, (size, size), 4 * (k + 1), 4)[..., None]
        img = np.where((y > ridge)[..., None], colour * (0.6 + 0.8 * texture), img)

    pil = _to_pil(img)
    draw = ImageDraw.Draw(pil)
    kinds = [_pick(rng, SCENE_OBJECTS) for _ in range(rng.integers(6))]
    bases = np.sort(rng.uniform(horizon + 0.03, 1.0, len(kinds)))  # far objects first
    for kind, base in zip(kinds, bases):
        cx, by, s = rng.uniform(0, 1) * size, base * size, size * 0.06 * (0.4 + base)
        if kind == "tree":
            draw.rectangle((cx - s * 0.12, by - s * 0.7, cx + s * 0.12, by), fill=(90, 60, 35))
            leaf = _hsv(rng.uniform(0.2, 0.45), rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.6))
            crown = [(cx, by - 2.4 * s), (cx - 0.7 * s, by - 0.5 * s), (cx + 0.7 * s, by - 0.5 * s)]
            draw.polygon(crown, fill=_rgb255(leaf))
        elif kind == "rock":
            grey = rng.uniform(0.3, 0.7)
            draw.ellipse((cx - s, by - s * 0.8, cx + s, by), fill=_rgb255(np.full(3, grey)))
        else:
            wall = _hsv(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.6, 1.0))
            roof = _hsv(rng.uniform(-0.05, 0.1), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.7))
            draw.rectangle((cx - s, by - 1.2 * s, cx + s, by), fill=_rgb255(wall))
            eaves = by - 1.2 * s
            draw.polygon(
                [(cx - 1.2 * s, eaves), (cx + 1.2 * s, eaves), (cx, by - 2.1 * s)],
                fill=_rgb255(roof),
            )
    factors = {
        "horizon": round(horizon, 4), "hills": n_hills, "objects": kinds, "sun": sun,
        "clouds": round(cover, 4), "sky_hue": round(sky_hue, 4), "ground_hue": round(ground_hue, 4),
    }  # fmt: skip
    return _to_array(pil), factors


def _scale(x: np.ndarray, p: float) -> float:
    return p * x.shape[0] / REFERENCE_SIZE


def _towards(x: np.ndarray, target, p: float) -> np.ndarray:
    return target + (x - target) * p


def _motion_kernel(length: int, angle: float) -> np.ndarray:
    c = (length - 1) / 2
    t = np.linspace(-c, c, 4 * length)
    k = np.zeros((length, length), np.float32)
    rows, cols = np.round(c + t * math.sin(angle)), np.round(c + t * math.cos(angle))
    k[rows.astype(int), cols.astype(int)] = 1
    return k / k.sum()


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    _to_pil(x).save(buf, format="JPEG", quality=int(quality))
    return _to_array(Image.open(buf).convert("RGB"))


def _gain(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return x * p


_DISTORT: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "underexposure": _gain,
    "overexposure": _gain,
    "contrast": lambda x, p, rng: _towards(x, x.mean(), p),
    "desaturation": lambda x, p, rng: _towards(x, (x @ _LUMA)[..., None], p),
    "blur": lambda x, p, rng: ndimage.gaussian_filter(x, sigma=(_scale(x, p),) * 2 + (0,)),
    "motion_blur": lambda x, p, rng: ndimage.convolve(
        x, _motion_kernel(round(_scale(x, p)) | 1, rng.uniform(0, np.pi))[..., None], mode="reflect"
    ),
    "noise": lambda x, p, rng: x + rng.normal(0.0, p, x.shape).astype(np.float32),
    "jpeg": lambda x, p, rng: _jpeg(x, p),
}


def apply_distortions(
    image: np.ndarray, levels: dict[str, int], rng: np.random.Generator
) -> Image.Image:
    """Apply each distortion at its level (0 = skip) in DISTORTIONS order, clipping to [0, 1]."""
    bad = {d: v for d, v in levels.items() if d not in DISTORTIONS or not 0 <= v <= MAX_LEVEL}
    if bad:
        raise ValueError(f"bad distortion levels {bad}; expected {DISTORTIONS} at 0..{MAX_LEVEL}")
    x = image.astype(np.float32)
    for d in DISTORTIONS:
        level = levels.get(d, 0)
        if level:
            x = np.clip(_DISTORT[d](x, DISTORTION_PARAMS[d][level - 1], rng), 0.0, 1.0)
    return _to_pil(x)


def technical_mos(levels: dict[str, int]) -> float:
    """MOS = 5 * prod_d (1 - TECHNICAL_WEIGHTS[d] * level_d / 4)."""
    return MOS_MAX * math.prod(1 - TECHNICAL_WEIGHTS[d] * v / MAX_LEVEL for d, v in levels.items())


def sample_technical(rng: np.random.Generator, size: int = REFERENCE_SIZE) -> Sample:
    """A fresh scene with 0-2 distortions at levels 1-4; MOS by `technical_mos`."""
    scene, scene_factors = render_scene(rng, size)
    sets = _DISTORTION_SETS[int(rng.choice(len(N_DISTORTIONS_P), p=N_DISTORTIONS_P))]
    types = _pick(rng, sets)
    levels = {d: int(rng.integers(1, MAX_LEVEL + 1)) for d in types}
    factors = {
        "levels": {d: levels.get(d, 0) for d in DISTORTIONS},
        "distortions": [d for d in DISTORTIONS if d in levels],
        "scene": scene_factors,
    }
    return Sample(apply_distortions(scene, levels, rng), technical_mos(levels), "", factors)


# ---------------------------------------------------------------- aesthetic


def aesthetic_mos(scores: dict[str, float]) -> float:
    """MOS = 5 * sum_k AESTHETIC_WEIGHTS[k] * score_k, scores in [0, 1]."""
    return MOS_MAX * sum(AESTHETIC_WEIGHTS[k] * scores[k] for k in AESTHETIC_WEIGHTS)


def _palette(rng: np.random.Generator, harmonious: bool) -> tuple[str, float, float, list[float]]:
    """(palette, background hue, subject hue, distractor hues) for the harmony rule."""
    h0 = rng.random()
    side = rng.choice((-1.0, 1.0))
    if not harmonious:
        return "clashing", h0, h0 + side * rng.uniform(1 / 6, 0.3), list(rng.random(6))
    if rng.random() < 0.5:
        subject = h0 + side * rng.uniform(0.04, 0.1)
        return "analogous", h0, subject, list(h0 + rng.uniform(-0.1, 0.1, 6))
    subject = h0 + 0.5 + rng.uniform(-0.03, 0.03)
    hues = rng.choice((h0, subject), 6) + rng.uniform(-0.03, 0.03, 6)
    return "complementary", h0, subject, list(hues)


def _subject_centre(rng: np.random.Generator, placement: str, r: float) -> tuple[float, float]:
    """Subject centre as fractions: a thirds point, the centre, or cut off at an edge."""
    if placement == "thirds":
        return tuple(rng.choice((1 / 3, 2 / 3), 2) + rng.normal(0, 0.015, 2))
    if placement == "centre":
        return tuple(0.5 + rng.normal(0, 0.015, 2))
    inset = rng.uniform(-0.3, 0.4) * r  # beyond or just inside the edge: the shape is cut
    across, along = rng.choice((inset, 1 - inset)), rng.uniform(0.2, 0.8)
    return (across, along) if rng.random() < 0.5 else (along, across)


def sample_aesthetic(rng: np.random.Generator, size: int = REFERENCE_SIZE) -> Sample:
    """A composition whose five factor levels (see module docstring) set the MOS."""
    q = rng.random()
    index = {k: _graded(rng, q, len(v)) for k, v in AESTHETIC_LEVELS.items()}
    level = {k: AESTHETIC_LEVELS[k][i] for k, i in index.items()}
    scores = {k: i / (len(AESTHETIC_LEVELS[k]) - 1) for k, i in index.items()}
    harmonious = level["harmony"] == "harmonious"
    palette, bg_hue, subject_hue, clutter_hues = _palette(rng, harmonious)

    bg_sat = rng.uniform(0.15, 0.45) if harmonious else rng.uniform(0.8, 1.0)
    bg = _hsv(bg_hue, bg_sat, rng.uniform(0.55, 0.9))
    y = np.linspace(-0.5, 0.5, size, dtype=np.float32)[:, None, None]
    texture = _fractal(rng, (size, size), 4, 4)[..., None]
    img = bg * (1 - rng.uniform(0.0, 0.3) * y) * (1 + 0.3 * level["background"] * (texture - 0.5))

    pil = _to_pil(img)
    draw = ImageDraw.Draw(pil)
    r = rng.uniform(0.13, 0.19)
    cx, cy = _subject_centre(rng, level["placement"], r)
    shape = _pick(rng, SHAPES)
    for hue in clutter_hues[: level["clutter"]]:
        rd = rng.uniform(0.03, 0.06)
        for _ in range(20):  # keep distractors off the subject
            dx, dy = rng.uniform(0.05, 0.95, 2)
            if math.hypot(dx - cx, dy - cy) > r + rd:
                break
        colour = _rgb255(_hsv(hue, rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.0)))
        _draw_shape(draw, _pick(rng, SHAPES), dx * size, dy * size, rd * size, colour)
    subject = _hsv(subject_hue, rng.uniform(0.6, 0.95), rng.uniform(0.45, 0.85))
    _draw_shape(draw, shape, cx * size, cy * size, r * size, _rgb255(subject))

    stops = level["exposure"] * int(rng.choice((-1, 1)))
    direction = "overexposure" if stops > 0 else "underexposure"
    exposure = {direction: 2 * abs(stops) - 1} if stops else {}
    image = apply_distortions(_to_array(pil), exposure, rng)
    factors = {
        **level, "exposure": stops, "palette": palette, "subject_shape": shape,
        "subject_xy": [round(float(cx), 4), round(float(cy), 4)], "subject_radius": round(r, 4),
        "hues": {"background": round(bg_hue, 4), "subject": round(float(subject_hue % 1.0), 4)},
        "background_saturation": round(bg_sat, 4), "scores": scores,
    }  # fmt: skip
    return Sample(image, aesthetic_mos(scores), "", factors)


# ---------------------------------------------------------------- alignment


def describe(groups: Sequence[dict]) -> str:
    """The prompt, e.g. "two red circles on the left and one blue square at the top"."""
    phrases = [
        f"{_COUNT_WORD[g['count'] - 1]} {g['colour']} {g['shape']}{'s' if g['count'] > 1 else ''} "
        f"{_POSITION_PHRASE[g['position']]}"
        for g in groups
    ]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def sample_alignment(rng: np.random.Generator, size: int = REFERENCE_SIZE) -> Sample:
    """Objects on a background vs a prompt; MOS = 5 * satisfied elements / all elements."""
    q = rng.random()
    n_groups = int(rng.integers(1, MAX_COUNT + 1))
    positions = [POSITIONS[int(i)] for i in rng.choice(len(POSITIONS), n_groups, replace=False)]
    groups = [
        {"shape": _pick(rng, SHAPES), "colour": _pick(rng, COLOURS),
         "count": int(rng.integers(1, MAX_COUNT + 1)), "position": p}
        for p in positions
    ]  # fmt: skip
    options = {"shape": SHAPES, "colour": COLOURS, "count": range(1, MAX_COUNT + 1)}
    background = _hsv(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.25, 0.45))
    img = background * (0.9 + 0.2 * _fractal(rng, (size, size), 4, 3)[..., None])
    pil = _to_pil(img)
    draw = ImageDraw.Draw(pil)
    missing = [bool(rng.random() < (1 - q) / 4) for _ in groups]
    oks = [
        dict.fromkeys(ELEMENTS, False) if gone else {e: bool(rng.random() < q) for e in ELEMENTS}
        for gone in missing
    ]
    taken = {g["position"] for g, gone, ok in zip(groups, missing, oks) if ok["position"]}
    objects = []
    for g, gone, ok in zip(groups, missing, oks):
        if gone:
            objects.append({"prompt": g, "rendered": None, "satisfied": ok})
            continue
        shown = {
            e: g[e] if ok[e] else _pick(rng, [o for o in options[e] if o != g[e]]) for e in options
        }
        if ok["position"]:
            shown["position"] = g["position"]
        else:  # elsewhere, preferably in a region no prompt group names
            candidates = [p for p in POSITIONS if p not in taken and p != g["position"]]
            pool = [p for p in candidates if p not in positions] or candidates
            shown["position"] = _pick(rng, pool)
            taken.add(shown["position"])
        slots = POSITION_SLOTS[shown["position"]]
        for s in rng.choice(len(slots), shown["count"], replace=False):
            x, y = (np.array(slots[s]) + rng.uniform(-0.01, 0.01, 2)) * size
            _draw_shape(
                draw, shown["shape"], x, y, OBJECT_RADIUS * size, COLOUR_RGB[shown["colour"]]
            )
        objects.append({"prompt": g, "rendered": shown, "satisfied": ok})
    n_sat = sum(sum(o["satisfied"].values()) for o in objects)
    n_elements = len(ELEMENTS) * n_groups
    factors = {"objects": objects, "n_elements": n_elements, "n_satisfied": n_sat}
    return Sample(pil, MOS_MAX * n_sat / n_elements, describe(groups), factors)


SAMPLERS: dict[str, Callable[[np.random.Generator, int], Sample]] = {
    "technical": sample_technical,
    "aesthetic": sample_aesthetic,
    "alignment": sample_alignment,
}


# ---------------------------------------------------------------- dataset


def sample_rng(seed: int, task: str, index: int) -> np.random.Generator:
    """The Generator of record `index` of `task`: SeedSequence([seed, TASKS.index(task), index])."""
    return np.random.default_rng(np.random.SeedSequence([seed, TASKS.index(task), index]))


def _load(root: Path, meta: dict) -> list[Record] | None:
    """The cached records when root holds a complete generation with these params, else None."""
    try:
        if json.loads((root / "meta.json").read_text()) != meta:
            return None
        records = read_manifest(root / "records.jsonl")
    except (OSError, ValueError):  # missing/corrupt files; DataError is a ValueError
        return None
    return records if len(records) == meta["count"] else None


def _check_replaceable(root: Path) -> None:
    """Refuse to replace a non-empty root that is not a synthetic generation."""
    if root.exists() and any(root.iterdir()) and not (root / "meta.json").is_file():
        raise DataError(f"{root} is not empty and holds no synthetic generation; not replacing it")


def _publish(tmp: Path, root: Path) -> None:
    """Move the finished tmp folder to root, moving any older generation aside first."""
    old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
    try:
        if root.exists():
            root.rename(old / "data")
        tmp.rename(root)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def generate_synthetic(
    root: str | Path,
    *,
    n_per_task: int,
    image_size: int = REFERENCE_SIZE,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
) -> list[Record]:
    """Write n_per_task PNGs per task under root/<task>/, records.jsonl, factors.jsonl, meta.json.

    Reuses root when its meta.json matches these parameters; otherwise generates
    into a temporary sibling folder and renames it to root when complete.
    """
    if n_per_task < 1:
        raise DataError(f"n_per_task must be at least 1, got {n_per_task}")
    unknown = [t for t in tasks if t not in SAMPLERS]
    if unknown:
        raise DataError(f"unknown synthetic task(s) {unknown}; expected some of {TASKS}")
    root = Path(root).resolve()
    meta = {
        "generator": "omniquality_r.synthetic", "version": GENERATOR_VERSION,
        "n_per_task": n_per_task, "image_size": image_size, "seed": seed,
        "tasks": list(tasks), "count": n_per_task * len(tasks),
    }  # fmt: skip
    cached = _load(root, meta)
    if cached is not None:
        return cached
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        records = []
        with (tmp / "factors.jsonl").open("w") as factors_file:
            for task in tasks:
                (tmp / task).mkdir()
                for i in range(n_per_task):
                    sample = SAMPLERS[task](sample_rng(seed, task, i), image_size)
                    name = f"{task}/{i:06d}.png"
                    sample.image.save(tmp / name, compress_level=1)
                    rid = f"synthetic/{task}/{i:06d}"
                    records.append(Record(
                        id=rid, image=name, task=task, mos=sample.mos, mos_raw=sample.mos,
                        dataset="synthetic", prompt=sample.prompt, group=rid,
                    ))  # fmt: skip
                    factors_file.write(json.dumps({"id": rid, "factors": sample.factors}) + "\n")
        write_manifest(records, tmp / "records.jsonl")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # last: marks completeness
        if _load(root, meta) is None:  # else a concurrent run published the same data first
            _publish(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    loaded = _load(root, meta)
    if loaded is None:
        raise DataError(f"{root}: generation did not read back complete")
    return loaded


def read_factors(root: str | Path) -> dict[str, dict]:
    """Record id -> factors, from root/factors.jsonl."""
    with (Path(root) / "factors.jsonl").open() as f:
        return {row["id"]: row["factors"] for row in map(json.loads, f)}
