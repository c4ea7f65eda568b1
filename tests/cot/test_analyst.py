"""The analyst teacher: fitted on training MOS, valid, reproducible, noisy trajectories that
track quality, on the generator's data and on a dataset whose MOS rule is not the
generator's."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from scipy.stats import spearmanr

from omniquality_r.cot.analyst import AnalystTeacher
from omniquality_r.cot.teachers import TeacherItem
from omniquality_r.data.synthetic import SAMPLERS, sample_rng
from omniquality_r.prompts import parse_trajectory

SD = {"technical": 0.15, "aesthetic": 0.3, "alignment": 0.35}
N_FIT = 150  # training records per task for the rubric's fit


def synthetic_items(task: str, n: int, start: int = 0) -> tuple[list[TeacherItem], list[float]]:
    samples = [SAMPLERS[task](sample_rng(1, task, i), 112) for i in range(start, start + n)]
    items = [TeacherItem(s.image, task, s.prompt, f"{task}/{i}")
             for i, s in zip(range(start, start + n), samples)]  # fmt: skip
    return items, [s.mos for s in samples]


@pytest.fixture(scope="module")
def fit_data() -> tuple[list[TeacherItem], list[float]]:
    pairs = [synthetic_items(task, N_FIT, start=1000) for task in SAMPLERS]
    return [i for items, _ in pairs for i in items], [m for _, mos in pairs for m in mos]


def teacher(fit_data, temperature: float = 1.0, evidence=tuple(SAMPLERS)) -> AnalystTeacher:
    t = AnalystTeacher(temperature=temperature, judgement_sd=SD, evidence=evidence)
    t.fit(*fit_data)
    return t


def scores(texts: list[str]) -> list[float]:
    return [parse_trajectory(t)[2] for t in texts]


@pytest.mark.parametrize("task", list(SAMPLERS))
def test_trajectories_are_valid_reproducible_and_varied(task, fit_data):
    items, _ = synthetic_items(task, 3)
    first = teacher(fit_data).sample(items, k=5, seed=0)
    assert len(first) == 3 and all(len(texts) == 5 for texts in first)
    parsed = [parse_trajectory(t) for texts in first for t in texts]
    assert all(p is not None and p[0] and p[1] and 0 <= p[2] <= 5 for p in parsed)
    assert teacher(fit_data).sample(items[::-1], k=5, seed=0) == first[::-1]  # per item
    assert teacher(fit_data).sample(items, k=5, seed=1) != first
    assert all(len(set(scores(texts))) > 1 for texts in first)
    assert all(len(set(texts)) == 1 for texts in teacher(fit_data, 0.0).sample(items, k=3, seed=0))


@pytest.mark.parametrize("task", list(SAMPLERS))
def test_brief_reasoning_drops_the_evidence_but_keeps_verdicts_and_scores(task, fit_data):
    items, _ = synthetic_items(task, 2)
    short = teacher(fit_data, evidence=()).sample(items, k=3, seed=0)
    full = teacher(fit_data).sample(items, k=3, seed=0)
    for s_texts, f_texts in zip(short, full):
        assert scores(s_texts) == scores(f_texts)  # same judgements, fewer words
        for s_text, f_text in zip(s_texts, f_texts):
            reasoning = parse_trajectory(s_text)[1]
            assert len(reasoning) < len(parse_trajectory(f_text)[1])
            assert reasoning.split(". ")[-1] == parse_trajectory(f_text)[1].split(". ")[-1]
    if task == "technical":
        assert parse_trajectory(short[0][0])[1].startswith("Sharpness: ")


@pytest.mark.parametrize("task", list(SAMPLERS))
def test_mean_proposal_tracks_held_out_mos(task, fit_data):
    items, mos = synthetic_items(task, 40)  # not among the fitted records
    means = [np.mean(scores(texts)) for texts in teacher(fit_data).sample(items, k=4, seed=0)]
    assert spearmanr(means, mos).statistic > 0.7


def test_an_unfitted_analyst_refuses_to_judge():
    items, _ = synthetic_items("technical", 1)
    with pytest.raises(ValueError, match="no fitted rubric for task 'technical'"):
        AnalystTeacher(temperature=1.0, judgement_sd=SD).sample(items, k=1, seed=0)


def test_blur_lowers_the_technical_score(fit_data):
    image = Image.new("RGB", (112, 112), (120, 140, 160))
    draw = ImageDraw.Draw(image)
    for i in range(6):  # edges off the 8x8 grid, which would read as JPEG blocking
        box = (5 + 17 * i, 19 + 5 * i, 18 + 17 * i, 91 - 5 * i)
        draw.rectangle(box, fill=(220, 80 + 25 * i, 40))
    blurred = [image.filter(ImageFilter.GaussianBlur(r)) for r in (0, 1.5, 3)]
    items = [TeacherItem(im, "technical", "", "x") for im in blurred]
    s = [scores(texts)[0] for texts in teacher(fit_data, 0.0).sample(items, k=1, seed=0)]
    assert s[0] > s[1] > s[2]


def test_alignment_score_rises_with_the_satisfied_elements(fit_data):
    image = Image.new("RGB", (112, 112), (90, 92, 95))
    ImageDraw.Draw(image).ellipse((12, 49, 26, 63), fill=(220, 30, 30))  # a red circle, left
    prompts = ("one red circle on the left", "one blue circle on the left",  # 4, 3 of 4
               "one yellow star at the top", "a red cat")  # 0 of 4; nothing checkable
    items = [TeacherItem(image, "alignment", p, "x") for p in prompts]
    full, three, none, unknown = (scores(t)[0] for t in
                                  teacher(fit_data, 0.0).sample(items, k=1, seed=0))  # fmt: skip
    assert full > three > unknown > none and full >= 4.5 and none <= 0.5


# A dataset whose MOS rule is not the generator's: scenes blurred or noised by this test (one
# defect per image, as in KADID-10k), scored by a rule that weighs one defect far more.
def distorted_scenes(n: int, seed: int) -> tuple[list[Image.Image], np.ndarray, np.ndarray]:
    """Images and their blur and noise levels in [0, 1] (one of the two is 0)."""
    rng = np.random.default_rng(seed)
    level, noised = rng.uniform(0, 1, n), rng.uniform(size=n) < 0.5
    blur, noise = np.where(noised, 0.0, level), np.where(noised, level, 0.0)
    images = []
    for i in range(n):
        scene = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(60, 200, 3)))
        draw = ImageDraw.Draw(scene)
        for _ in range(5):
            x0, y0 = (int(v) for v in rng.integers(0, 70, 2))
            draw.rectangle((x0, y0, x0 + int(rng.integers(10, 26)), y0 + int(rng.integers(10, 26))),
                           fill=tuple(int(v) for v in rng.integers(0, 256, 3)))  # fmt: skip
        x = np.asarray(scene.filter(ImageFilter.GaussianBlur(float(2.5 * blur[i]))), np.float32)
        x = x + rng.normal(0, 30 * noise[i], x.shape)
        images.append(Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)))
    return images, blur, noise


@pytest.mark.parametrize("heavy", ["noise", "sharpness"])
def test_rubric_fitted_on_another_mos_rule_learns_that_rule(heavy):
    """Fitted on 160 records, then judged on 60 new ones of the same rule: the analyst
    tracks that rule (not the generator's) and its weights put the heavy defect first."""
    images, blur, noise = distorted_scenes(220, seed=0)
    light, strong = (blur, noise) if heavy == "noise" else (noise, blur)
    mos = 5.0 - 3.5 * strong - 0.7 * light
    items = [TeacherItem(im, "technical", "", f"scene/{i}") for i, im in enumerate(images)]
    t = AnalystTeacher(temperature=1.0, judgement_sd=SD, evidence=())
    rubric = t.fit(items[:160], mos[:160])["technical"]
    weights = dict(zip(rubric.criteria, rubric.weights))
    other = "sharpness" if heavy == "noise" else "noise"
    assert weights[heavy] > 2 * weights[other]
    means = [np.mean(scores(texts)) for texts in t.sample(items[160:], k=4, seed=0)]
    assert spearmanr(means, mos[160:]).statistic > 0.8


def test_evidence_is_chosen_per_task(fit_data):
    (tech,), _ = synthetic_items("technical", 1)
    (aligned,), _ = synthetic_items("alignment", 1)
    t = teacher(fit_data, evidence=["alignment"])
    (tech_text,), (align_text,) = t.sample([tech, aligned], k=1, seed=0)
    assert parse_trajectory(tech_text)[1].startswith("Sharpness: ")  # brief
    assert " I find " in parse_trajectory(align_text)[1]  # what the analyst saw, per group
    with pytest.raises(ValueError, match="unknown task"):
        AnalystTeacher(temperature=1.0, judgement_sd=SD, evidence=["colour"])
