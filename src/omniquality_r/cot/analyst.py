"""The `analyst` teacher: plans, reasons and scores from measured image properties.

It reads only the pixels and the prompt text (never factors or MOS). Per task it measures
a fixed set of criteria (measure.py, align.py), each with evidence in words:

  technical   sharpness, noise, compression, exposure (two-sided), contrast, colour
  aesthetic   placement, harmony, clutter, exposure (two-sided), background
  alignment   colour, shape, count, position: the share of the prompt's groups whose
              element the image satisfies

How much each measurement is worth is not the analyst's to assume: `fit` fits the task's
rubric (rubric.py: a monotone grade per criterion, non-negative weights, a monotone
calibration) on the training split's measurements and MOS, so the same code serves any
dataset. One trajectory = every grade perturbed by N(0, temperature * judgement_sd[task])
and clipped to [0, 1] (alignment: every element's 0/1 verdict, before the shares), the
analyst's judgement noise that gives rejection sampling work to do; the verbal verdicts
and the score follow from the perturbed grades.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import align, measure
from .rubric import Rubric, fit_rubric
from .teachers import TeacherItem

# A task's criteria in rubric order, and whether each is two-sided (rubric.py).
CRITERIA = {
    "technical": ("sharpness", "noise", "compression", "exposure", "contrast", "colour"),
    "aesthetic": ("placement", "harmony", "clutter", "exposure", "background"),
    "alignment": align.ELEMENTS,
}
TWO_SIDED = {"exposure"}
# Placement as an ordinal measurement (the photographer's order; the fit sets the spacing).
PLACEMENT = {"cut off": 0.0, "none": 1.0, "centre": 2.0, "thirds": 3.0}
VERDICTS = ("very poor", "poor", "fair", "decent", "good", "excellent")
ELEMENT_LABELS = ("not satisfied", "satisfied")


@dataclass(frozen=True)
class Criterion:
    """One judged aspect: `text` holds the evidence and one `{}` for the verbal verdict,
    chosen from `labels` (worst to best) by the trajectory's grade (`low_labels` instead
    when the measurement lies below a two-sided criterion's centre: too dark, not too
    bright); `brief` is the same sentence without the measured evidence ("Sharpness: {}.").
    `value` is the measurement (alignment: the element's 0/1 verdict) and `feature` the
    rubric criterion it feeds."""

    name: str
    text: str
    value: float
    labels: tuple[str, ...]
    brief: str = ""
    low_labels: tuple[str, ...] = ()
    feature: int = 0

    def say(self, g: float, evidence: bool = True, low: bool = False) -> str:
        labels = self.low_labels if low and self.low_labels else self.labels
        template = self.text if evidence or not self.brief else self.brief
        return template.format(labels[min(int(g * len(labels)), len(labels) - 1)])


@dataclass(frozen=True)
class Assessment:
    task: str
    plan: str
    criteria: tuple[Criterion, ...]
    topic: str  # what the score rates, for the closing sentence

    def features(self, values: np.ndarray | None = None) -> np.ndarray:
        """The rubric's measurements: each criterion's value, or for alignment the mean of
        its elements' (perturbed) verdicts per element; NaN where none."""
        values = np.array([c.value for c in self.criteria]) if values is None else values
        feature = np.array([c.feature for c in self.criteria])
        return np.array([values[feature == i].mean() if (feature == i).any() else math.nan
                         for i in range(len(CRITERIA[self.task]))])  # fmt: skip


def _defect(name: str, evidence: str, value: float, labels: tuple[str, ...],
            low_labels: tuple[str, ...] = ()) -> Criterion:  # fmt: skip
    return Criterion(name, f"{name.capitalize()}: {evidence}, so the image is {{}}.", value,
                     labels, f"{name.capitalize()}: {{}}.", low_labels,
                     CRITERIA["technical"].index(name))  # fmt: skip


def assess_technical(x: np.ndarray) -> Assessment:
    sharp, sd, blocks = measure.sharpness(x), measure.noise_sd(x), measure.blockiness(x)
    exp = measure.exposure(x)
    cv, colour = (v / max(exp.mean, 1e-3) for v in (measure.contrast(x), measure.colourfulness(x)))
    if math.isnan(sharp):
        sharp_text = "I find no distinct edge to judge it by"
    else:
        sharp_text = f"the sharpest edges cross {sharp:.0%} of their step within one pixel"
    criteria = (
        _defect("sharpness", sharp_text, sharp,
                ("very blurry", "clearly blurred", "slightly soft", "sharp")),
        _defect("noise", f"flat areas keep a residual of sd {255 * sd:.1f} grey levels", sd,
                ("very noisy", "clearly noisy", "slightly grainy", "clean")),
        _defect("compression", f"steps across 8x8 block borders are {blocks:.2f}x the others",
                blocks,
                ("heavily blocky", "clearly blocky", "faintly blocky", "free of blocking")),
        _defect("exposure", f"mean brightness is {exp.mean:.2f} with {exp.highlights:.0%} "
                f"clipped highlights and {exp.shadows:.0%} crushed shadows", exp.mean,
                ("blown out", "too bright", "a little bright", "well exposed"),
                ("far too dark", "too dark", "a little dark", "well exposed")),
        _defect("contrast", f"brightness varies by {cv:.0%} of its mean", cv,
                ("very flat", "flat", "slightly flat", "well contrasted")),
        _defect("colour", f"colourfulness is {colour:.0f} relative to brightness", colour,
                ("colourless", "washed out", "slightly muted", "colourful")),
    )  # fmt: skip
    plan = ("Check sharpness at the strongest edges, noise in flat areas, 8x8 compression "
            "blocking, exposure (mean brightness, clipped highlights and shadows), contrast "
            "and colourfulness, then let every defect lower the score.")  # fmt: skip
    return Assessment("technical", plan, criteria, "technical quality")


def _nearest(point: tuple[float, float], targets) -> float:
    return min(math.dist(point, t) for t in targets)


def _aesthetic(name: str, text: str, value: float, labels: tuple[str, ...], brief: str,
               low_labels: tuple[str, ...] = ()) -> Criterion:  # fmt: skip
    return Criterion(name, text, value, labels, brief, low_labels,
                     CRITERIA["aesthetic"].index(name))  # fmt: skip


def assess_aesthetic(x: np.ndarray) -> Assessment:
    comp = measure.composition(x)
    subject = comp.subject()
    if subject is None:
        place_text, place = "I find no distinct subject", "none"
    elif subject.touches_border:
        place_text, place = "the main subject is cut off by the frame", "cut off"
    elif _nearest(subject.centroid, measure.THIRDS) < math.dist(subject.centroid, (0.5, 0.5)):
        place_text, place = "the main subject sits near a rule-of-thirds point", "thirds"
    else:
        place_text, place = "the main subject sits in the middle of the frame", "centre"
    hue_gap = 0.0 if subject is None else abs((subject.hue - comp.background_hue + 0.5) % 1 - 0.5)
    n_clutter = max(len(comp.blobs) - 1, 0)
    criteria = (
        _aesthetic("placement", f"Placement: {place_text}, which is {{}}.", PLACEMENT[place],
                   ("poor composition", "plain composition", "good composition"),
                   "Placement: {}."),
        _aesthetic("harmony", f"Colour: the background has saturation "
                   f"{comp.background_saturation:.2f} and the subject's hue is "
                   f"{360 * hue_gap:.0f} degrees from it, so the palette is {{}}.",
                   comp.background_saturation, ("clashing", "somewhat harsh", "harmonious"),
                   "Colour: {}."),
        _aesthetic("clutter", f"Clutter: {n_clutter} distracting shape(s) besides the subject, "
                   "so the frame is {}.", n_clutter,
                   ("cluttered", "busy", "a little busy", "clean"), "Clutter: {}."),
        _aesthetic("exposure", f"Exposure: the background's brightness is "
                   f"{comp.background_value:.2f}, so it is {{}}.", comp.background_value,
                   ("too bright", "a little bright", "well exposed"), "Exposure: {}.",
                   ("too dark", "a little dark", "well exposed")),
        _aesthetic("background", f"Background: its texture varies by "
                   f"{comp.background_texture:.3f} in log brightness, so it is {{}}.",
                   comp.background_texture, ("busy", "somewhat busy", "calm", "smooth"),
                   "Background: {}."),
    )  # fmt: skip
    plan = ("Find the main subject and judge its placement, the colour harmony of subject "
            "and background, clutter from other shapes, exposure, and how busy the "
            "background is; weigh them into an aesthetic score.")  # fmt: skip
    return Assessment("aesthetic", plan, criteria, "aesthetic quality")


def assess_alignment(x: np.ndarray, prompt: str) -> Assessment:
    wanted = align.parse_prompt(prompt)
    if not wanted:
        plan = ("Read the prompt's elements and look for each in the image. I cannot find "
                "checkable object groups in the prompt, so the match is uncertain.")  # fmt: skip
        return Assessment("alignment", plan, (), "alignment")
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
                                      f"{short}{element} {{}}{end}", feature=i))  # fmt: skip
    groups = "; ".join(w.phrase() for w in wanted)
    plan = (f"The prompt names {len(wanted)} object group(s): {groups}. For each, look for "
            "objects of that colour, check their shape, count them and check their region; "
            "weigh the elements the image satisfies.")  # fmt: skip
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
    a: Assessment, rubric: Rubric, rng: np.random.Generator, spread: float,
    evidence: bool = True,
) -> str:
    """One sampled `<plan>..</plan><think>..</think><answer>s.ss</answer>` (module docstring);
    without `evidence` each criterion is only named with its verdict."""
    values = np.array([c.value for c in a.criteria])
    if a.task == "alignment":  # perturb each element's verdict, then grade the shares
        said = np.clip(values + rng.normal(0.0, spread, values.shape), 0.0, 1.0)
        grades = rubric.grades(a.features(said))[0]
    else:  # perturb the grades
        grades = rubric.grades(a.features())[0]
        grades = np.clip(grades + rng.normal(0.0, spread, grades.shape), 0.0, 1.0)
        said = grades
    score = float(rubric.score(grades)[0])
    low = [rubric.centres[c.feature] is not None and c.value < rubric.centres[c.feature]
           for c in a.criteria]  # fmt: skip
    sentences = [c.say(g, evidence, lo) for c, g, lo in zip(a.criteria, said, low)]
    sentences.append(f"Weighing this, the {a.topic} is {VERDICTS[min(int(score), 5)]}.")
    return f"<plan>{a.plan}</plan><think>{' '.join(sentences)}</think><answer>{score:.2f}</answer>"


def item_rng(seed: int, key: str) -> np.random.Generator:
    """A Generator per (seed, item key), independent of batching and order."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


class AnalystTeacher:
    """Fitted on training records (`fit`), then measures each image once and samples k
    judgements of it (module docstring)."""

    name = "analyst"

    def __init__(self, *, temperature: float, judgement_sd: dict[str, float],
                 evidence: Sequence[str] = tuple(CRITERIA)):  # fmt: skip
        """`evidence`: the tasks whose reasoning states the measured evidence (the others
        only name each criterion with its verdict)."""
        unknown = sorted(set(evidence) - set(CRITERIA))
        if unknown:
            raise ValueError(f"evidence names unknown task(s) {unknown}; tasks: {list(CRITERIA)}")
        self.spread = {task: temperature * sd for task, sd in judgement_sd.items()}
        self.evidence = frozenset(evidence)
        self.rubrics: dict[str, Rubric] = {}

    def fit(self, items: Sequence[TeacherItem], mos: Sequence[float]) -> dict[str, Rubric]:
        """Each task's rubric from its items' measurements and MOS (a training split)."""
        by_task: dict[str, tuple[list, list]] = {}
        for item, m in zip(items, mos, strict=True):
            feats, targets = by_task.setdefault(item.task, ([], []))
            feats.append(assess(item).features())
            targets.append(m)
        for task, (feats, targets) in by_task.items():
            sided = [c in TWO_SIDED for c in CRITERIA[task]]
            self.rubrics[task] = fit_rubric(CRITERIA[task], np.array(feats), np.array(targets),
                                            sided)  # fmt: skip
        return self.rubrics

    def sample(self, items: list[TeacherItem], k: int, seed: int) -> list[list[str]]:
        out = []
        for item in items:
            if item.task not in self.rubrics:
                raise ValueError(f"the analyst has no fitted rubric for task {item.task!r} "
                                 f"(fitted: {sorted(self.rubrics)}); call fit on training "
                                 "records first")  # fmt: skip
            a, rng = assess(item), item_rng(seed, item.key)
            out.append([trajectory(a, self.rubrics[item.task], rng, self.spread[item.task],
                                   item.task in self.evidence) for _ in range(k)])  # fmt: skip
        return out
