"""The `analyst` teacher: plans, reasons and scores from measured image properties.

It reads only the pixels and the prompt text (never factors or MOS). Per task it turns
measurements (measure.py, align.py) into criteria, each with evidence in words and a grade
in [0, 1] (1 = best), read off the calibration knots below (piecewise linear). One
trajectory = every grade perturbed by N(0, temperature * judgement_sd[task]) and clipped
to [0, 1] (the analyst's judgement noise, so rejection sampling has work to do); the
verbal verdicts and the score follow from the perturbed grades:

  technical   5 * prod_i (1 - w_i (1 - g_i))   sharpness, noise, compression, exposure,
                                                contrast, colour
  aesthetic   5 * sum_i w_i g_i / sum_i w_i     placement, harmony, clutter, exposure,
                                                background
  alignment   5 * mean_i g_i                    colour, shape, count, position per group

The weights are the analyst's own rubric (hand-set priors).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from . import align, measure
from .teachers import TeacherItem

DEFECT_WEIGHTS = {"sharpness": 0.8, "noise": 0.75, "compression": 0.7, "exposure": 0.7,
                  "contrast": 0.6, "colour": 0.5}  # fmt: skip
AESTHETIC_WEIGHTS = {"placement": 0.25, "harmony": 0.25, "clutter": 0.2, "exposure": 0.15,
                     "background": 0.15}  # fmt: skip
# Calibration knots (measurement -> grade), from the measurements' spread on images with
# known distortions; grades of 1, 0.75, 0.5, 0.25, 0 read as none, mild ... severe.
DEFECT_SCALE = (1.0, 0.75, 0.5, 0.25, 0.0)
SHARPNESS_KNOTS = (0.9, 0.6, 0.36, 0.24, 0.18)  # edge sharpness, falling
NOISE_KNOTS = (0.01, 0.025, 0.05, 0.08, 0.12)  # noise sd, rising
BLOCK_KNOTS = (1.2, 1.6, 2.3, 3.7, 7.0)  # blockiness ratio, rising
DARK_KNOTS = (0.38, 0.31, 0.25, 0.18, 0.11)  # mean luminance, falling
BRIGHT_KNOTS = (0.7, 0.75, 0.85, 0.92, 0.97)  # mean luminance, rising
CONTRAST_KNOTS = (0.2, 0.15, 0.1, 0.06, 0.03)  # luminance sd / mean, falling
COLOUR_KNOTS = (55.0, 40.0, 28.0, 14.0, 0.0)  # colourfulness / mean luminance, falling
STOPS_KNOTS = ((0.25, 0.5, 0.72, 0.95, 1.0), (-2.0, -1.0, 0.0, 1.0, 2.0))  # background value
TEXTURE_KNOTS = ((0.01, 0.05, 0.093, 0.134), (1.0, 2 / 3, 1 / 3, 0.0))  # background log-lum sd
HARMONY_KNOTS = ((0.5, 0.75), (1.0, 0.0))  # background saturation
MAX_CLUTTER = 6
VERDICTS = ("very poor", "poor", "fair", "decent", "good", "excellent")
ELEMENT_LABELS = ("not satisfied", "satisfied")


def grade(value: float, knots: tuple[float, ...], grades=DEFECT_SCALE) -> float:
    """Piecewise-linear grade of `value` at `knots` (rising or falling), clamped at the ends."""
    xs, ys = (knots, grades) if knots[0] < knots[-1] else (knots[::-1], grades[::-1])
    return float(np.interp(value, xs, ys))


@dataclass(frozen=True)
class Criterion:
    """One judged aspect: `text` holds the evidence and one `{}` for the verbal verdict,
    chosen from `labels` (worst to best) by the trajectory's grade; `brief` is the same
    sentence without the measured evidence ("Sharpness: {}.")."""

    name: str
    text: str
    grade: float
    labels: tuple[str, ...]
    weight: float = 1.0
    brief: str = ""

    def say(self, g: float, evidence: bool = True) -> str:
        template = self.text if evidence or not self.brief else self.brief
        return template.format(self.labels[min(int(g * len(self.labels)), len(self.labels) - 1)])


@dataclass(frozen=True)
class Assessment:
    task: str
    plan: str
    criteria: tuple[Criterion, ...]
    topic: str  # what the score rates, for the closing sentence

    def score(self, grades: np.ndarray) -> float:
        w = np.array([c.weight for c in self.criteria])
        if self.task == "technical":
            return 5.0 * float(np.prod(1.0 - w * (1.0 - grades)))
        return 5.0 * float((w * grades).sum() / w.sum())


def _defect(name: str, evidence: str, g: float, labels: tuple[str, ...]) -> Criterion:
    return Criterion(name, f"{name.capitalize()}: {evidence}, so the image is {{}}.", g, labels,
                     DEFECT_WEIGHTS[name], f"{name.capitalize()}: {{}}.")  # fmt: skip


def assess_technical(x: np.ndarray) -> Assessment:
    sharp, sd, blocks = measure.sharpness(x), measure.noise_sd(x), measure.blockiness(x)
    exp = measure.exposure(x)
    cv, colour = (v / max(exp.mean, 1e-3) for v in (measure.contrast(x), measure.colourfulness(x)))
    dark, bright = grade(exp.mean, DARK_KNOTS), grade(exp.mean, BRIGHT_KNOTS)
    exposure_labels = (("far too dark", "too dark", "a little dark", "well exposed")
                       if dark < bright else
                       ("blown out", "too bright", "a little bright", "well exposed"))  # fmt: skip
    if math.isnan(sharp):
        sharp_text, sharp_grade = "I find no distinct edge to judge it by", 0.5
    else:
        sharp_text = f"the sharpest edges cross {sharp:.0%} of their step within one pixel"
        sharp_grade = grade(sharp, SHARPNESS_KNOTS)
    criteria = (
        _defect("sharpness", sharp_text, sharp_grade,
                ("very blurry", "clearly blurred", "slightly soft", "sharp")),
        _defect("noise", f"flat areas keep a residual of sd {255 * sd:.1f} grey levels",
                grade(sd, NOISE_KNOTS),
                ("very noisy", "clearly noisy", "slightly grainy", "clean")),
        _defect("compression", f"steps across 8x8 block borders are {blocks:.2f}x the others",
                grade(blocks, BLOCK_KNOTS),
                ("heavily blocky", "clearly blocky", "faintly blocky", "free of blocking")),
        _defect("exposure", f"mean brightness is {exp.mean:.2f} with {exp.highlights:.0%} "
                f"clipped highlights and {exp.shadows:.0%} crushed shadows", min(dark, bright),
                exposure_labels),
        _defect("contrast", f"brightness varies by {cv:.0%} of its mean",
                grade(cv, CONTRAST_KNOTS),
                ("very flat", "flat", "slightly flat", "well contrasted")),
        _defect("colour", f"colourfulness is {colour:.0f} relative to brightness",
                grade(colour, COLOUR_KNOTS),
                ("colourless", "washed out", "slightly muted", "colourful")),
    )  # fmt: skip
    plan = ("Check sharpness at the strongest edges, noise in flat areas, 8x8 compression "
            "blocking, exposure (mean brightness, clipped highlights and shadows), contrast "
            "and colourfulness, then let every defect lower the score.")  # fmt: skip
    return Assessment("technical", plan, criteria, "technical quality")


def _nearest(point: tuple[float, float], targets) -> float:
    return min(math.dist(point, t) for t in targets)


def assess_aesthetic(x: np.ndarray) -> Assessment:
    comp = measure.composition(x)
    subject = comp.subject()
    if subject is None:
        place_text, place_grade = "I find no distinct subject", 0.25
    elif subject.touches_border:
        place_text, place_grade = "the main subject is cut off by the frame", 0.0
    elif _nearest(subject.centroid, measure.THIRDS) < math.dist(subject.centroid, (0.5, 0.5)):
        place_text, place_grade = "the main subject sits near a rule-of-thirds point", 1.0
    else:
        place_text, place_grade = "the main subject sits in the middle of the frame", 0.5
    hue_gap = 0.0 if subject is None else abs((subject.hue - comp.background_hue + 0.5) % 1 - 0.5)
    n_clutter = max(len(comp.blobs) - 1, 0)
    stops = float(np.interp(comp.background_value, *STOPS_KNOTS))
    w = AESTHETIC_WEIGHTS
    criteria = (
        Criterion("placement", f"Placement: {place_text}, which is {{}}.", place_grade,
                  ("poor composition", "plain composition", "good composition"), w["placement"],
                  "Placement: {}."),
        Criterion("harmony", f"Colour: the background has saturation "
                  f"{comp.background_saturation:.2f} and the subject's hue is "
                  f"{360 * hue_gap:.0f} degrees from it, so the palette is {{}}.",
                  grade(comp.background_saturation, *HARMONY_KNOTS),
                  ("clashing", "somewhat harsh", "harmonious"), w["harmony"], "Colour: {}."),
        Criterion("clutter", f"Clutter: {n_clutter} distracting shape(s) besides the subject, "
                  "so the frame is {}.", max(0.0, 1 - n_clutter / MAX_CLUTTER),
                  ("cluttered", "busy", "a little busy", "clean"), w["clutter"], "Clutter: {}."),
        Criterion("exposure", f"Exposure: the background's brightness is "
                  f"{comp.background_value:.2f}, about {stops:+.1f} stops from normal, so it "
                  "is {}.", 1 - min(abs(stops), 2.0) / 2,
                  ("badly exposed", "somewhat off", "well exposed"), w["exposure"],
                  "Exposure: {}."),
        Criterion("background", f"Background: its texture varies by "
                  f"{comp.background_texture:.3f} in log brightness, so it is {{}}.",
                  grade(comp.background_texture, *TEXTURE_KNOTS),
                  ("busy", "somewhat busy", "calm", "smooth"), w["background"],
                  "Background: {}."),
    )  # fmt: skip
    plan = ("Find the main subject and judge its placement, the colour harmony of subject "
            "and background, clutter from other shapes, exposure, and how busy the "
            "background is; weigh them into an aesthetic score.")  # fmt: skip
    return Assessment("aesthetic", plan, criteria, "aesthetic quality")


def assess_alignment(x: np.ndarray, prompt: str) -> Assessment:
    wanted = align.parse_prompt(prompt)
    if not wanted:
        unknown = Criterion("prompt", "I cannot find checkable object groups in the prompt, "
                            "so the match is {}.", 0.5, ("uncertain",))  # fmt: skip
        plan = "Read the prompt's elements and look for each in the image."
        return Assessment("alignment", plan, (unknown,), "alignment")
    criteria = []
    found = align.clusters(align.detect_objects(x))
    for want, (got, satisfied) in zip(wanted, align.match_groups(wanted, found)):
        seen = f"I find {got.phrase()}" if got else "I find nothing that fits"
        for i, element in enumerate(align.ELEMENTS):
            lead = f'For "{want.phrase()}" {seen}: ' if i == 0 else ""
            short = f'"{want.phrase()}": ' if i == 0 else ""
            end = "." if i == len(align.ELEMENTS) - 1 else ","
            criteria.append(Criterion(element, f"{lead}{element} {{}}{end}",
                                      float(satisfied[element]), ELEMENT_LABELS,
                                      brief=f"{short}{element} {{}}{end}"))  # fmt: skip
    groups = "; ".join(w.phrase() for w in wanted)
    plan = (f"The prompt names {len(wanted)} object group(s): {groups}. For each, look for "
            "objects of that colour, check their shape, count them and check their region; "
            "score the share of elements the image satisfies.")  # fmt: skip
    return Assessment("alignment", plan, tuple(criteria), "alignment with the prompt")


def assess(item: TeacherItem) -> Assessment:
    x = measure.as_array(item.image)
    if item.task == "technical":
        return assess_technical(x)
    if item.task == "aesthetic":
        return assess_aesthetic(x)
    if item.task == "alignment":
        return assess_alignment(x, item.prompt)
    raise ValueError(f"the analyst has no rubric for task {item.task!r}")


def trajectory(
    a: Assessment, rng: np.random.Generator, spread: float, evidence: bool = True
) -> str:
    """One sampled `<plan>..</plan><think>..</think><answer>s.ss</answer>` (module docstring);
    without `evidence` each criterion is only named with its verdict."""
    base = np.array([c.grade for c in a.criteria])
    grades = np.clip(base + rng.normal(0.0, spread, base.shape), 0.0, 1.0)
    score = min(max(a.score(grades), 0.0), 5.0)
    sentences = [c.say(g, evidence) for c, g in zip(a.criteria, grades)]
    sentences.append(f"Weighing this, the {a.topic} is {VERDICTS[min(int(score), 5)]}.")
    return f"<plan>{a.plan}</plan><think>{' '.join(sentences)}</think><answer>{score:.2f}</answer>"


def item_rng(seed: int, key: str) -> np.random.Generator:
    """A Generator per (seed, item key), independent of batching and order."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


class AnalystTeacher:
    """Measures each image once, then samples k judgements of it (module docstring)."""

    name = "analyst"

    def __init__(
        self, *, temperature: float, judgement_sd: dict[str, float], evidence: bool = True
    ):
        self.spread = {task: temperature * sd for task, sd in judgement_sd.items()}
        self.evidence = evidence

    def sample(self, items: list[TeacherItem], k: int, seed: int) -> list[list[str]]:
        out = []
        for item in items:
            a, rng = assess(item), item_rng(seed, item.key)
            out.append([trajectory(a, rng, self.spread[item.task], self.evidence)
                        for _ in range(k)])
        return out
