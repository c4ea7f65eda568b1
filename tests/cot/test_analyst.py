"""The analyst teacher: valid, reproducible, noisy trajectories that track quality."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from scipy.stats import spearmanr

from omniquality_r.cot.analyst import AnalystTeacher
from omniquality_r.cot.teachers import TeacherItem
from omniquality_r.data.synthetic import COLOUR_RGB, SAMPLERS, sample_rng
from omniquality_r.prompts import parse_trajectory

SD = {"technical": 0.15, "aesthetic": 0.3, "alignment": 0.35}


def teacher(temperature: float = 1.0) -> AnalystTeacher:
    return AnalystTeacher(temperature=temperature, judgement_sd=SD)


def synthetic_items(task: str, n: int) -> tuple[list[TeacherItem], list[float]]:
    samples = [SAMPLERS[task](sample_rng(1, task, i), 112) for i in range(n)]
    items = [TeacherItem(s.image, task, s.prompt, f"{task}/{i}") for i, s in enumerate(samples)]
    return items, [s.mos for s in samples]


def scores(texts: list[str]) -> list[float]:
    return [parse_trajectory(t)[2] for t in texts]


@pytest.mark.parametrize("task", list(SAMPLERS))
def test_trajectories_are_valid_reproducible_and_varied(task):
    items, _ = synthetic_items(task, 3)
    first = teacher().sample(items, k=5, seed=0)
    assert len(first) == 3 and all(len(texts) == 5 for texts in first)
    parsed = [parse_trajectory(t) for texts in first for t in texts]
    assert all(p is not None and p[0] and p[1] and 0 <= p[2] <= 5 for p in parsed)
    assert teacher().sample(items[::-1], k=5, seed=0) == first[::-1]  # per item, not per batch
    assert teacher().sample(items, k=5, seed=1) != first
    assert all(len(set(scores(texts))) > 1 for texts in first)
    assert all(len(set(texts)) == 1 for texts in teacher(0.0).sample(items, k=3, seed=0))


@pytest.mark.parametrize("task", list(SAMPLERS))
def test_brief_reasoning_drops_the_evidence_but_keeps_verdicts_and_scores(task):
    items, _ = synthetic_items(task, 2)
    brief = AnalystTeacher(temperature=1.0, judgement_sd=SD, evidence=False)
    short, full = brief.sample(items, k=3, seed=0), teacher().sample(items, k=3, seed=0)
    for s_texts, f_texts in zip(short, full):
        assert scores(s_texts) == scores(f_texts)  # same judgements, fewer words
        for s_text, f_text in zip(s_texts, f_texts):
            reasoning = parse_trajectory(s_text)[1]
            assert len(reasoning) < len(parse_trajectory(f_text)[1])
            assert reasoning.split(". ")[-1] == parse_trajectory(f_text)[1].split(". ")[-1]
    if task == "technical":
        assert parse_trajectory(short[0][0])[1].startswith("Sharpness: ")


@pytest.mark.parametrize("task", list(SAMPLERS))
def test_mean_proposal_tracks_mos(task):
    items, mos = synthetic_items(task, 40)
    means = [np.mean(scores(texts)) for texts in teacher().sample(items, k=4, seed=0)]
    assert spearmanr(means, mos).statistic > 0.7


def test_blur_lowers_the_technical_score():
    image = Image.new("RGB", (112, 112), (120, 140, 160))
    draw = ImageDraw.Draw(image)
    for i in range(6):  # edges off the 8x8 grid, which would read as JPEG blocking
        box = (5 + 17 * i, 19 + 5 * i, 18 + 17 * i, 91 - 5 * i)
        draw.rectangle(box, fill=(220, 80 + 25 * i, 40))
    blurred = [image.filter(ImageFilter.GaussianBlur(r)) for r in (0, 1.5, 3)]
    items = [TeacherItem(im, "technical", "", "x") for im in blurred]
    s = [scores(texts)[0] for texts in teacher(0.0).sample(items, k=1, seed=0)]
    assert s[0] > s[1] > s[2]


@pytest.mark.parametrize(
    ("prompt", "score"),
    [("one red circle on the left", 5.0), ("one blue circle on the left", 3.75),
     ("one yellow star at the top", 0.0), ("a red cat", 2.5)],
)  # fmt: skip
def test_alignment_score_counts_satisfied_elements(prompt, score):
    image = Image.new("RGB", (112, 112), (90, 92, 95))
    ImageDraw.Draw(image).ellipse((12, 49, 26, 63), fill=COLOUR_RGB["red"])
    (texts,) = teacher(0.0).sample([TeacherItem(image, "alignment", prompt, "x")], k=1, seed=0)
    assert scores(texts) == [score]
