"""The synthetic generator: determinism, caching, and the MOS rules checked in the pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from omniquality_r.data import synthetic as syn
from omniquality_r.data.records import TASKS, DataError

SIZE = 112


def draw(task: str, index: int, seed: int = 0, size: int = SIZE) -> syn.Sample:
    return syn.SAMPLERS[task](syn.sample_rng(seed, task, index), size)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float64) / 255.0


@pytest.fixture(scope="module")
def samples() -> dict[str, list[syn.Sample]]:
    return {task: [draw(task, i) for i in range(200)] for task in TASKS}


# ---------------------------------------------------------------- every task


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_sample_other_seed_or_index_differs(task):
    a, b = draw(task, 3), draw(task, 3)
    assert np.array_equal(pixels(a.image), pixels(b.image))
    assert (a.mos, a.prompt, a.factors) == (b.mos, b.prompt, b.factors)
    for other in (draw(task, 3, seed=1), draw(task, 4)):
        assert not np.array_equal(pixels(a.image), pixels(other.image))


@pytest.mark.parametrize("task", TASKS)
def test_image_size_is_configurable(task):
    assert draw(task, 0, size=64).image.size == (64, 64)
    assert draw(task, 0).image.mode == "RGB"


def test_factors_are_plain_json(samples):
    def plain(x) -> bool:
        if isinstance(x, dict):
            return all(type(k) is str and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or type(x) in (str, int, float, bool)

    for task, ss in samples.items():
        for s in ss:
            assert plain(s.factors), (task, s.factors)
            assert json.loads(json.dumps(s.factors)) == s.factors


@pytest.mark.parametrize("task", TASKS)
def test_mos_within_range_and_spans_it(samples, task):
    mos = np.array([s.mos for s in samples[task]])
    assert mos.min() >= 0.0 and mos.max() <= 5.0
    assert mos.min() <= 1.0 and mos.max() >= 4.5 and mos.std() >= 1.0
    assert np.histogram(mos, bins=5, range=(0, 5))[0].min() >= 0.08 * len(mos)


# ---------------------------------------------------------------- technical


def test_technical_mos_follows_the_product_rule(samples):
    n_clean = 0
    for s in samples["technical"]:
        levels = s.factors["levels"]
        assert set(levels) == set(syn.DISTORTIONS)
        present = [d for d in syn.DISTORTIONS if levels[d]]
        assert present == s.factors["distortions"] and len(present) <= 2
        assert not {"underexposure", "overexposure"} <= set(present)
        assert all(1 <= levels[d] <= 4 for d in present)
        expected = 5 * math.prod(1 - syn.TECHNICAL_WEIGHTS[d] * levels[d] / 4 for d in present)
        assert s.mos == pytest.approx(expected)
        n_clean += not present
    assert 0.1 <= n_clean / len(samples["technical"]) <= 0.3  # clean images: MOS 5


def laplacian_var(x: np.ndarray) -> float:
    return float(ndimage.laplace(x.mean(axis=-1)).var())


# distortion -> (measure of the distorted image x given the clean one, expected trend with level)
MEASURES = {
    "blur": (lambda x, clean: laplacian_var(x), -1),
    "motion_blur": (lambda x, clean: laplacian_var(x), -1),
    "noise": (lambda x, clean: np.abs(x - clean).mean(), +1),
    "jpeg": (lambda x, clean: np.abs(x - clean).mean(), +1),
    "contrast": (lambda x, clean: x.mean(axis=-1).std(), -1),
    "desaturation": (lambda x, clean: np.ptp(x, axis=-1).mean(), -1),
    "underexposure": (lambda x, clean: x.mean(), -1),
    "overexposure": (lambda x, clean: x.mean(), +1),
}


@pytest.mark.parametrize("distortion", syn.DISTORTIONS)
def test_stronger_distortion_of_the_same_scene_is_visibly_worse(distortion):
    assert set(MEASURES) == set(syn.DISTORTIONS)
    measure, trend = MEASURES[distortion]
    for scene_seed in range(3):
        scene, _ = syn.render_scene(np.random.default_rng(scene_seed), SIZE)
        clean = pixels(syn.apply_distortions(scene, {}, np.random.default_rng(0)))
        values, mos = [], []
        for level in range(syn.MAX_LEVEL + 1):
            image = syn.apply_distortions(scene, {distortion: level}, np.random.default_rng(0))
            values.append(measure(pixels(image), clean))
            mos.append(syn.technical_mos({distortion: level}))
        assert np.all(trend * np.diff(values) > 0), (distortion, scene_seed, values)
        assert mos[0] == 5.0 and np.all(np.diff(mos) < 0)


# ---------------------------------------------------------------- aesthetic


def test_aesthetic_mos_is_the_weighted_factor_sum(samples):
    assert sum(syn.AESTHETIC_WEIGHTS.values()) == pytest.approx(1.0)
    for s in samples["aesthetic"]:
        f = s.factors
        level = {**f, "exposure": abs(f["exposure"])}
        for k, levels in syn.AESTHETIC_LEVELS.items():
            assert f["scores"][k] == levels.index(level[k]) / (len(levels) - 1)
        assert s.mos == pytest.approx(5 * sum(syn.AESTHETIC_WEIGHTS[k] * f["scores"][k]
                                              for k in syn.AESTHETIC_LEVELS))  # fmt: skip
        assert f["palette"] in syn.PALETTES
        assert (f["harmony"] == "clashing") == (f["palette"] == "clashing")


def test_aesthetic_placement_matches_its_rule(samples):
    for s in samples["aesthetic"]:
        x, y = s.factors["subject_xy"]
        r = s.factors["subject_radius"]
        if s.factors["placement"] == "thirds":
            assert min(abs(x - 1 / 3), abs(x - 2 / 3)) < 0.06
            assert min(abs(y - 1 / 3), abs(y - 2 / 3)) < 0.06
        elif s.factors["placement"] == "centre":
            assert abs(x - 0.5) < 0.06 and abs(y - 0.5) < 0.06
        else:  # the subject's disc crosses the image border: it is cut off
            assert min(x, y, 1 - x, 1 - y) < r


def test_aesthetic_exposure_and_harmony_show_in_the_pixels(samples):
    def mean_of(key, pick, stat):
        return np.mean(
            [stat(pixels(s.image)) for s in samples["aesthetic"] if pick(s.factors[key])]
        )

    def brightness(x):
        return x.mean()

    def saturation(x):
        return (np.ptp(x, axis=-1) / (x.max(axis=-1) + 1e-6)).mean()

    assert mean_of("exposure", lambda e: e > 0, brightness) > mean_of(
        "exposure", lambda e: e == 0, brightness
    ) > mean_of("exposure", lambda e: e < 0, brightness)  # fmt: skip
    assert mean_of("harmony", lambda h: h == "clashing", saturation) > 1.5 * mean_of(
        "harmony", lambda h: h == "harmonious", saturation
    )


# ---------------------------------------------------------------- alignment


SLOTS = [(region, np.array(xy)) for region, xys in syn.POSITION_SLOTS.items() for xy in xys]


def shape_of(component: np.ndarray) -> str:
    """Classify a cropped object mask by its holes and the share of its bounding box it fills."""
    if ndimage.binary_fill_holes(component).sum() > 1.5 * component.sum():
        return "ring"
    fill = component.mean()
    return (
        "square"
        if fill > 0.9
        else "circle"
        if fill > 0.65
        else "triangle"
        if fill > 0.5
        else "star"
    )


def objects_seen(image: Image.Image) -> list[tuple[str, str, str]]:
    """(region, colour, shape) of every connected blob drawn in an exact prompt colour."""
    x = np.asarray(image)
    seen = []
    for colour, rgb in syn.COLOUR_RGB.items():
        labels, _ = ndimage.label(np.all(x == rgb, axis=-1), structure=np.ones((3, 3)))
        for k, box in enumerate(ndimage.find_objects(labels), start=1):
            cy, cx = ndimage.center_of_mass(labels == k)
            region = min(SLOTS, key=lambda s: np.hypot(*(s[1] * x.shape[0] - (cx, cy))))[0]
            seen.append((region, colour, shape_of(labels[box] == k)))
    return sorted(seen)


def test_alignment_mos_is_the_satisfied_share(samples):
    n_full = 0
    for s in samples["alignment"]:
        objs = s.factors["objects"]
        sat = sum(v for o in objs for v in o["satisfied"].values())
        assert s.factors["n_satisfied"] == sat
        assert s.factors["n_elements"] == 4 * len(objs)
        assert s.mos == pytest.approx(5 * sat / s.factors["n_elements"])
        assert s.prompt == syn.describe([o["prompt"] for o in objs])
        for o in objs:
            if o["rendered"] is None:
                assert not any(o["satisfied"].values())
            else:
                assert o["satisfied"] == {
                    e: o["rendered"][e] == o["prompt"][e] for e in syn.ELEMENTS
                }
        if sat == s.factors["n_elements"]:
            n_full += 1
            assert s.mos == 5.0
    assert n_full >= 10


def test_alignment_image_shows_exactly_the_rendered_objects(samples):
    """Every rendered object appears in its colour, shape and region; nothing else does."""
    for s in samples["alignment"]:
        expected = sorted(
            (o["rendered"]["position"], o["rendered"]["colour"], o["rendered"]["shape"])
            for o in s.factors["objects"] if o["rendered"] is not None
            for _ in range(o["rendered"]["count"])
        )  # fmt: skip
        assert objects_seen(s.image) == expected, s.prompt


def test_describe_reads_naturally():
    groups = [
        {"shape": "circle", "colour": "red", "count": 2, "position": "left"},
        {"shape": "square", "colour": "blue", "count": 1, "position": "top"},
        {"shape": "star", "colour": "white", "count": 3, "position": "centre"},
    ]
    assert syn.describe(groups[:1]) == "two red circles on the left"
    assert syn.describe(groups) == (
        "two red circles on the left, one blue square at the top"
        " and three white stars in the centre"
    )


# ---------------------------------------------------------------- generate_synthetic


def mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_generate_writes_records_images_and_factors(tmp_path):
    root = tmp_path / "syn"
    records = syn.generate_synthetic(root, n_per_task=3, seed=5)
    assert [r.task for r in records] == [t for t in TASKS for _ in range(3)]
    assert len({r.id for r in records}) == len(records)
    factors = syn.read_factors(root)
    assert set(factors) == {r.id for r in records}
    for r in records:
        index = int(r.id.rsplit("/", 1)[1])
        sample = draw(r.task, index, seed=5)
        assert (r.dataset, r.split, r.group) == ("synthetic", "", r.id)
        assert (r.mos, r.mos_raw, r.prompt) == (sample.mos, sample.mos, sample.prompt)
        assert Path(r.image).is_file() and Path(r.image).is_relative_to(root)
        with Image.open(r.image) as im:
            assert np.array_equal(pixels(im.convert("RGB")), pixels(sample.image))
        assert factors[r.id] == json.loads(json.dumps(sample.factors))
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]  # no temporary folders left


def test_records_do_not_depend_on_n_or_other_tasks(tmp_path):
    small = syn.generate_synthetic(tmp_path / "a", n_per_task=2, tasks=("alignment",))
    large = syn.generate_synthetic(tmp_path / "b", n_per_task=4)
    by_id = {r.id: r for r in large}
    for r in small:
        assert r.mos == by_id[r.id].mos and r.prompt == by_id[r.id].prompt
        assert Path(r.image).read_bytes() == Path(by_id[r.id].image).read_bytes()


def test_cache_is_reused_and_invalidated(tmp_path):
    root = tmp_path / "syn"
    first = syn.generate_synthetic(root, n_per_task=2)
    before = mtimes(root)
    assert syn.generate_synthetic(root, n_per_task=2) == first
    assert mtimes(root) == before  # nothing rewritten

    other = syn.generate_synthetic(root, n_per_task=2, seed=1)  # new parameters: regenerate
    assert [r.mos for r in other] != [r.mos for r in first]
    Path(other[0].image).unlink()  # an incomplete cache is regenerated, not trusted
    assert syn.generate_synthetic(root, n_per_task=2, seed=1) == other
    assert Path(other[0].image).is_file()


def test_interrupted_generation_leaves_no_cache(tmp_path, monkeypatch):
    def boom(rng, size):
        raise RuntimeError("interrupted")

    monkeypatch.setitem(syn.SAMPLERS, "alignment", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        syn.generate_synthetic(tmp_path / "syn", n_per_task=2)
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_folder_and_unknown_task(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not replacing"):
        syn.generate_synthetic(tmp_path, n_per_task=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="unknown synthetic task"):
        syn.generate_synthetic(tmp_path / "x", n_per_task=1, tasks=("beauty",))


def test_apply_distortions_rejects_bad_levels():
    scene, _ = syn.render_scene(np.random.default_rng(0), 32)
    for levels in ({"blur": 5}, {"blur": -1}, {"vignette": 1}):
        with pytest.raises(ValueError, match="bad distortion levels"):
            syn.apply_distortions(scene, levels, np.random.default_rng(0))
