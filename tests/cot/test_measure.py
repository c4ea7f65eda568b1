"""The analyst's pixel measurements on images with known properties (cot/measure.py)."""

import io
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from omniquality_r.cot import measure


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """Mid-grey gradient with random flat rectangles (step edges), no pixel near 0 or 1."""
    rng = np.random.default_rng(0)
    pil = Image.new("RGB", (112, 112))
    draw = ImageDraw.Draw(pil)
    for x in range(112):
        draw.line([(x, 0), (x, 111)], fill=(int(90 + x * 0.6),) * 3)
    for _ in range(12):
        x0, y0 = rng.integers(3, 90, 2)
        w, h = rng.integers(8, 30, 2)
        colour = tuple(int(c) for c in rng.integers(50, 200, 3))
        draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
    return measure.as_array(pil)


def quantise(x: np.ndarray) -> np.ndarray:
    """Round-trip through 8-bit, as a saved image would be."""
    return measure.as_array(Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)))


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return measure.as_array(Image.open(buf))


def test_sharpness_drops_monotonically_with_blur(scene):
    sigmas = (0.7, 1.2, 2.0, 3.2)
    values = [measure.sharpness(scene)] + [
        measure.sharpness(quantise(ndimage.gaussian_filter(scene, (s, s, 0)))) for s in sigmas
    ]
    assert values[0] > 0.9
    assert all(a > b for a, b in pairwise(values)), values


@pytest.mark.parametrize("sd", [0.01, 0.025, 0.05, 0.1])
def test_noise_estimate_tracks_added_noise(scene, sd):
    noisy = quantise(scene + np.random.default_rng(1).normal(0, sd, scene.shape))
    assert measure.noise_sd(noisy) == pytest.approx(sd, rel=0.2)


def test_clean_image_has_no_noise(scene):
    assert measure.noise_sd(scene) < 0.003


@pytest.mark.parametrize("gain", [0.25, 0.5, 1.0, 1.2])
def test_exposure_mean_follows_gain(scene, gain):
    assert measure.exposure(quantise(scene * gain)).mean == pytest.approx(
        gain * measure.exposure(scene).mean, rel=0.02
    )


def test_clipped_highlights_and_crushed_shadows(scene):
    normal, bright = measure.exposure(scene), measure.exposure(quantise(scene * 3.0))
    assert normal.highlights == 0.0 and bright.highlights > 0.5
    assert measure.exposure(quantise(scene * 0.02)).shadows > 0.5


def test_blockiness_rises_with_jpeg_compression(scene):
    lossless, q90, q10 = (measure.blockiness(x) for x in (scene, jpeg(scene, 90), jpeg(scene, 10)))
    assert 0.7 < lossless < 1.3 and q90 < 1.5 and q10 > 1.5 and q10 > q90


@pytest.mark.parametrize("scale", [0.75, 0.5, 0.25])
def test_contrast_scales_with_distance_to_mean(scene, scale):
    flat = quantise(scene.mean() + (scene - scene.mean()) * scale)
    assert measure.contrast(flat) == pytest.approx(scale * measure.contrast(scene), rel=0.05)


def test_colourfulness_zero_for_grey_and_falls_with_saturation(scene):
    grey = np.repeat(measure.luminance(scene)[..., None], 3, axis=-1)
    half = quantise(grey + 0.5 * (scene - grey))
    assert measure.colourfulness(grey) == pytest.approx(0.0, abs=1e-6)
    assert measure.colourfulness(scene) > measure.colourfulness(half) > 0


def composed(subject_xy: tuple[float, float], n_distractors: int) -> np.ndarray:
    """Pale background with a red disc (radius 16 px) at subject_xy and small blue squares."""
    pil = Image.new("RGB", (112, 112), (200, 185, 170))
    draw = ImageDraw.Draw(pil)
    cx, cy = (112 * v for v in subject_xy)
    draw.ellipse((cx - 16, cy - 16, cx + 16, cy + 16), fill=(210, 40, 40))
    for i in range(n_distractors):
        x = 10 + 30 * i
        draw.rectangle((x, 100, x + 5, 105), fill=(40, 60, 220))
    return measure.as_array(pil)


@pytest.mark.parametrize("n_distractors", [0, 2, 3])
def test_composition_finds_subject_and_counts_clutter(n_distractors):
    comp = measure.composition(composed((1 / 3, 1 / 3), n_distractors))
    subject = comp.subject()
    assert len(comp.blobs) == 1 + n_distractors
    assert subject.centroid == pytest.approx((1 / 3, 1 / 3), abs=0.02)
    assert not subject.touches_border and subject.hue == pytest.approx(0.0, abs=0.02)
    assert comp.background_saturation == pytest.approx(0.15, abs=0.01)
    assert comp.background_texture < 0.01


def test_composition_sees_a_subject_cut_by_the_frame():
    assert measure.composition(composed((0.98, 0.5), 0)).subject().touches_border
