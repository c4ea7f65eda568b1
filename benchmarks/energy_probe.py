"""Why the perception tower starts with an energy block: a linear probe before any training.

Fresh technical images from the pretraining stream (seed 7) go through the tiny model's
tower as perception pretraining initialises it (init_dct_stem, init_energy_block); the
per-image mean of (a) the patch embedding (DCT coefficients) and (b) the first block's
output (coefficients + Q (a^2 - 1), the band energies) is read out by ridge regression
onto each distortion's level (fit on the first 2/3, SRCC on the rest, where present).
No weights are trained: this measures what each start makes linearly readable.

.venv/bin/python benchmarks/energy_probe.py [--n 3000]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from omniquality_r.data.synthetic import DISTORTIONS
from omniquality_r.eval.metrics import srcc
from omniquality_r.models.loading import load_model, resolve_model_path
from omniquality_r.perception.labels import LABELS
from omniquality_r.perception.stream import PerceptionStream
from omniquality_r.perception.tower import init_dct_stem, init_energy_block

ROOT = Path(__file__).resolve().parents[1]


def ridge_srcc(features: np.ndarray, levels: np.ndarray, alpha: float = 1.0) -> list[float]:
    """Per distortion: SRCC of a ridge fit (first 2/3 of rows) on the held-out third."""
    cut = 2 * len(features) // 3
    mu, sd = features[:cut].mean(0), features[:cut].std(0) + 1e-6
    x = np.c_[(features - mu) / sd, np.ones(len(features))]
    gram = x[:cut].T @ x[:cut] + alpha * np.eye(x.shape[1])
    out = []
    for j in range(levels.shape[1]):
        pred = x[cut:] @ np.linalg.solve(gram, x[:cut].T @ levels[:cut, j])
        has = levels[cut:, j] > 0
        out.append(srcc(pred[has], levels[cut:, j][has]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="images")
    parser.add_argument("--cache", default=str(ROOT / ".cache"))
    args = parser.parse_args()
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/tiny.yaml"))
    base = resolve_model_path("tiny", None, f"{args.cache}/models", cfg["spec"])
    model, processor = load_model(base)
    visual = copy.deepcopy(model.model.visual).eval()
    size, batch = cfg["spec"]["image_size"], 50
    stream = PerceptionStream(processor.image_processor, size, batch, {"technical": 1}, seed=7)
    torch.manual_seed(0)
    init_dct_stem(visual, stream.batch(0)["pixel_values"])
    block = visual.blocks[0]
    init_energy_block(block)
    coefficients, energies, levels = [], [], []
    with torch.no_grad():
        for b in range(args.n // batch):
            data = stream.batch(b)
            x = visual.patch_embed(data["pixel_values"]).view(batch, -1, block.norm2.weight.numel())
            coefficients.append(x.mean(1))
            energies.append((x + block.mlp(block.norm2(x))).mean(1))  # attention output is 0
            levels.append(data["labels"][:, [list(LABELS).index(f"distortion/{d}")
                                             for d in DISTORTIONS]])  # fmt: skip
    levels = torch.cat(levels).numpy()
    print(f"{len(levels)} images; held-out level SRCC of a linear read-out of the image mean")
    print(f"{'start':28s}" + "".join(f"{d[:7]:>8s}" for d in DISTORTIONS) + "    mean")
    for name, feats in (("DCT stem (coefficients)", coefficients),
                        ("+ energy block", energies)):  # fmt: skip
        scores = ridge_srcc(torch.cat(feats).numpy(), levels)
        print(f"{name:28s}" + "".join(f"{s:8.2f}" for s in scores) + f"{np.mean(scores):8.2f}")


if __name__ == "__main__":
    main()
