"""Prompt parsing and object detection for the analyst's alignment check (cot/align.py)."""

import colorsys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from omniquality_r.cot import align, measure
from omniquality_r.data.synthetic import COLOUR_RGB, describe, sample_alignment, sample_rng


def red_circle_left() -> np.ndarray:
    pil = Image.new("RGB", (112, 112), (90, 92, 95))
    ImageDraw.Draw(pil).ellipse((12, 49, 26, 63), fill=COLOUR_RGB["red"])
    return measure.as_array(pil)


@pytest.mark.parametrize(
    "groups",
    [
        [("two", "red", "circle", "left")],
        [("one", "blue", "square", "top"), ("three", "white", "star", "centre")],
        [("one", "green", "ring", "right"), ("two", "orange", "triangle", "bottom"),
         ("three", "purple", "circle", "left")],
    ],
)  # fmt: skip
def test_parse_prompt_reads_the_synthetic_grammar(groups):
    dicts = [{"count": align.COUNT_WORDS.index(n) + 1, "colour": c, "shape": s, "position": p}
             for n, c, s, p in groups]  # fmt: skip
    parsed = align.parse_prompt(describe(dicts))
    assert parsed == [align.Group(**d) for d in dicts]
    assert [g.phrase() for g in parsed] == [describe([d]) for d in dicts]


def test_parse_prompt_without_groups():
    assert align.parse_prompt("a cat sitting on a mat") == []


@pytest.mark.parametrize(
    ("xy", "region"),
    [((0.1, 0.5), "left"), ((0.9, 0.1), "right"), ((0.5, 0.1), "top"), ((0.5, 0.9), "bottom"),
     ((0.5, 0.5), "centre")],
)  # fmt: skip
def test_region(xy, region):
    assert align.region(*xy) == region


def test_red_circle_on_the_left_is_detected():
    (obj,) = align.detect_objects(red_circle_left())
    assert (obj.colour, obj.shape, obj.position) == ("red", "circle", "left")


@pytest.mark.parametrize(
    ("prompt", "unsatisfied"),
    [
        ("one red circle on the left", set()),
        ("one blue circle on the left", {"colour"}),
        ("one red square on the left", {"shape"}),
        ("two red circles on the left", {"count"}),
        ("one red circle on the right", {"position"}),
    ],
)
def test_each_prompt_element_is_checked(prompt, unsatisfied):
    found = align.clusters(align.detect_objects(red_circle_left()))
    ((_, satisfied),) = align.match_groups(align.parse_prompt(prompt), found)
    assert {e for e, ok in satisfied.items() if not ok} == unsatisfied


def test_a_missing_group_satisfies_nothing():
    found = align.clusters(align.detect_objects(red_circle_left()))
    wanted = align.parse_prompt("one red circle on the left and one yellow star at the top")
    (got_a, ok_a), (got_b, ok_b) = align.match_groups(wanted, found)
    assert got_a is not None and all(ok_a.values())
    assert got_b is None and not any(ok_b.values())


@pytest.mark.parametrize("index", range(12))
def test_detection_recovers_what_the_generator_rendered(index):
    sample = sample_alignment(sample_rng(0, "alignment", index))
    rendered = {
        (r["colour"], r["shape"], r["count"], r["position"])
        for o in sample.factors["objects"] if (r := o["rendered"])
    }  # fmt: skip
    found = align.clusters(align.detect_objects(measure.as_array(sample.image)))
    assert {(g.colour, g.shape, g.count, g.position) for g in found} == rendered


def test_hsv_matches_colorsys_and_names_colours_by_hue():
    rgb = np.random.default_rng(0).uniform(0, 1, (200, 3))
    hue, sat, val = align.hsv(rgb)
    peer = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    assert np.allclose(hue, 360 * peer[:, 0]) and np.allclose(sat, peer[:, 1])
    assert np.allclose(val, peer[:, 2])
    named = np.array([[0.9, 0.1, 0.12], [0.1, 0.2, 0.9], [0.97, 0.96, 0.95], [0.4, 0.4, 0.42]])
    masks = {c: align.colour_mask(*align.hsv(named), c) for c in ("red", "blue", "white", "green")}
    assert masks["red"].tolist() == [True, False, False, False]  # hue 359: red wraps at 0
    assert masks["blue"].tolist() == [False, True, False, False]
    assert masks["white"].tolist() == [False, False, True, False]  # grey is no colour
    assert not masks["green"].any()
