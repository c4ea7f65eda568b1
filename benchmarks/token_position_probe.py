"""Do a tiny model's merged vision tokens say where in the image they are?

    python benchmarks/token_position_probe.py .cache/models/tiny-<hash>-perception-<hash> [...]

The language model reads the image tokens by attention; from a text token at a varying
distance, rotary angles do not single out one grid cell, so "on the left" can only find the
left tokens if their content says so. Per model folder: the merger tokens of freshly generated
synthetic images (all three tasks, a seed of their own), a least-squares linear probe from one
token's features to its index in the token grid, fitted on the first 3/4 of the images, and
its accuracy on the rest (chance 1 / number of tokens).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omniquality_r.data.records import TASKS  # noqa: E402
from omniquality_r.data.synthetic import SAMPLERS, sample_rng  # noqa: E402
from omniquality_r.models.loading import load_model  # noqa: E402
from omniquality_r.models.shared_prefix import image_features  # noqa: E402

SEED = 77  # apart from the dataset's (0) and the perception streams' seeds


@torch.no_grad()
def tokens_of(path: str, images_per_task: int, size: int) -> np.ndarray:
    """(images, tokens, features) merger outputs of generated images."""
    model, processor = load_model(path)
    model.eval()
    images = [SAMPLERS[t](sample_rng(SEED, t, i), size).image
              for t in TASKS for i in range(images_per_task)]  # fmt: skip
    out = []
    for i in range(0, len(images), 16):
        inputs = processor.image_processor(images=images[i:i + 16], return_tensors="pt")
        out += [f.float().numpy() for f in image_features(model, dict(inputs))]
    return np.stack(out)


def probe_accuracy(tokens: np.ndarray, train_share: float = 0.75) -> float:
    """Held-out accuracy of a least-squares probe from a token's features to its grid index."""
    n, t, d = tokens.shape
    order = np.random.default_rng(0).permutation(n)
    x = np.concatenate([tokens[order].reshape(n * t, d), np.ones((n * t, 1))], 1)
    index = np.tile(np.arange(t), n)
    train = np.arange(n * t) < int(train_share * n) * t
    w = np.linalg.lstsq(x[train], np.eye(t)[index[train]], rcond=None)[0]
    return float(((x[~train] @ w).argmax(1) == index[~train]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="tiny model folders")
    parser.add_argument("--images-per-task", type=int, default=100)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()
    print("| model | images | tokens | probe accuracy | chance |")
    print("|---|---|---|---|---|")
    for path in args.models:
        tokens = tokens_of(path, args.images_per_task, args.size)
        print(f"| {Path(path).name} | {len(tokens)} | {tokens.shape[1]} | "
              f"{probe_accuracy(tokens):.3f} | {1 / tokens.shape[1]:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
