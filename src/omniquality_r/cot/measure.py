"""Pixel measurements the analyst teacher reasons from (no labels, only the image).

Every function takes a float RGB array in [0, 1] of shape (H, W, 3) (`as_array`).

  sharpness      edge sharpness: at the local maxima of the pixel-step magnitude |dI| of the
                 3x3-median-filtered luminance, where the 9x9 local range R is at least 30 % of
                 the image's 1-99 % luminance range, the 98th percentile of |dI| / R. A step
                 edge crosses its whole range in one pixel (1.0); a gaussian blur of sigma s
                 spreads it (about 0.52 at s = 0.7 px, 0.2 at s = 2 px). Contrast-invariant.
  noise_sd       Immerkaer's estimator on flat areas: the residual of the 3x3 kernel
                 [[1,-2,1],[-2,4,-2],[1,-2,1]] (sd 6 sigma for white noise of sd sigma), taken
                 as a robust sd (median |r| / 0.6745 / 6) over the 30 % of pixels with the
                 lowest gaussian (1.5 px) gradient, per channel; the median over channels.
  blockiness     mean |step| across 8x8 block boundaries / mean |step| elsewhere (1 = none).
  exposure       mean luminance, fractions of pixels at or above 0.98 and at or below 0.02.
  contrast       luminance sd.
  colourfulness  Hasler & Suesstrunk (2003) on a 0-255 scale:
                 sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2),
                 rg = R - G, yb = (R + G) / 2 - B.
  composition    the background's colour (median chromaticity), a foreground mask (pixels
                 whose chromaticity differs from it), its connected blobs, and the background's
                 texture (sd of log luminance about its row means).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
THIRDS = tuple((x, y) for x in (1 / 3, 2 / 3) for y in (1 / 3, 2 / 3))
BLOCK = 8


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), np.float32) / 255.0


def luminance(x: np.ndarray) -> np.ndarray:
    return x @ LUMA


def sharpness(x: np.ndarray) -> float:
    """Edge sharpness in (0, 1] (module docstring); NaN when the image has no edges."""
    y = ndimage.median_filter(luminance(x), 3)
    step = np.maximum(np.abs(np.diff(y, axis=1, append=y[:, -1:])),
                      np.abs(np.diff(y, axis=0, append=y[-1:])))  # fmt: skip
    local = ndimage.maximum_filter(y, 9) - ndimage.minimum_filter(y, 9)
    spread = float(np.percentile(y, 99) - np.percentile(y, 1))
    edges = (local > max(0.02, 0.3 * spread)) & (step == ndimage.maximum_filter(step, 3))
    if edges.sum() < 5:
        return float("nan")
    return float(np.percentile(step[edges] / local[edges], 98))


def noise_sd(x: np.ndarray) -> float:
    """Noise sd on the [0, 1] pixel scale (module docstring)."""
    flat = ndimage.gaussian_gradient_magnitude(luminance(x), 1.5)
    flat = flat <= np.percentile(flat, 30)
    sds = [np.median(np.abs(ndimage.convolve(x[..., c], IMMERKAER))[flat]) / (0.6745 * 6)
           for c in range(3)]  # fmt: skip
    return float(np.median(sds))


def blockiness(x: np.ndarray) -> float:
    """Mean luminance step across 8x8 block boundaries over the mean step elsewhere."""
    y = luminance(x)
    steps = [np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T]
    at = sum(s[:, BLOCK - 1 :: BLOCK].mean() for s in steps)
    off = sum(np.delete(s, np.s_[BLOCK - 1 :: BLOCK], axis=1).mean() for s in steps)
    return float(at / (off + 1e-6))


@dataclass(frozen=True)
class Exposure:
    mean: float
    highlights: float  # fraction clipped at the top
    shadows: float  # fraction crushed at the bottom


def exposure(x: np.ndarray) -> Exposure:
    y = luminance(x)
    return Exposure(float(y.mean()), float((y >= 0.98).mean()), float((y <= 0.02).mean()))


def contrast(x: np.ndarray) -> float:
    return float(luminance(x).std())


def colourfulness(x: np.ndarray) -> float:
    """Hasler-Suesstrunk colourfulness (module docstring); 0 for a grey image."""
    r, g, b = (255.0 * x[..., c] for c in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


@dataclass(frozen=True)
class Blob:
    """A connected region; coordinates as fractions of the image width/height."""

    area: float  # fraction of the image
    centroid: tuple[float, float]  # (x, y)
    touches_border: bool
    hue: float  # HSV hue of the blob's median colour, in [0, 1)


@dataclass(frozen=True)
class Composition:
    background_hue: float
    background_saturation: float
    background_value: float  # HSV value (max channel) of the median background colour
    background_texture: float  # sd of log luminance about the row means, background only
    blobs: tuple[Blob, ...]  # largest first

    def subject(self) -> Blob | None:
        return self.blobs[0] if self.blobs else None


def _hsv(rgb: np.ndarray) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(float(v) for v in rgb))


def composition(x: np.ndarray, *, chroma_threshold: float = 0.04, min_area: int = 6) -> Composition:
    """Background colour, foreground blobs (chromaticity further than `chroma_threshold` from
    the background's, at least `min_area` px) and background texture (module docstring)."""
    h, w, _ = x.shape
    chroma = x / (x.sum(axis=-1, keepdims=True) + 1e-3)
    reference = np.median(chroma.reshape(-1, 3), axis=0)
    foreground = np.linalg.norm(chroma - reference, axis=-1) > chroma_threshold
    foreground = ndimage.binary_opening(foreground)
    background = ~ndimage.binary_dilation(foreground, iterations=2)
    labels, _ = ndimage.label(foreground)
    blobs = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels[sl] == i
        area = int(mask.sum())
        if area < min_area:
            continue
        cy, cx = ndimage.center_of_mass(mask)
        touches = sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w
        colour = np.median(x[sl][mask], axis=0)
        blobs.append(Blob(area / (h * w), ((sl[1].start + cx + 0.5) / w,
                                           (sl[0].start + cy + 0.5) / h),
                          bool(touches), _hsv(colour)[0]))  # fmt: skip
    blobs.sort(key=lambda b: -b.area)
    bg_pixels = x[background] if background.any() else x.reshape(-1, 3)
    hue, sat, val = _hsv(np.median(bg_pixels, axis=0))
    log_y = np.log(luminance(x) + 1e-2)
    counts = np.maximum(background.sum(axis=1, keepdims=True), 1)
    row_means = np.where(background, log_y, 0.0).sum(axis=1, keepdims=True) / counts
    residual = (log_y - row_means)[background]
    texture = float(residual.std()) if residual.size else 0.0
    return Composition(hue, sat, val, texture, tuple(blobs))
