"""How much of the MOS do the frozen vision features hold? Probes on the tiny tower's tokens.

    python benchmarks/feature_ceiling.py multirun/fresh_g16/0/sft/checkpoint \
        --overrides experiment=tiny_rl_fresh [--heldout experiment=heldout_synthetic]

The tiny model's tower and merger stay frozen through SFT and GRPO, so every checkpoint of a
run reads the same merged image tokens; only the language model learns to read them. This
fits probes from those tokens straight to the MOS, per task, on the run's training split
(the data of `--overrides`, composed as run.py would), picks each probe's setting on its
val split, and reports SRCC on its test split and, with `--heldout`, on every record of
that experiment's benchmark dataset:
  ridge: least squares on the flattened tokens, L2 weight from a grid;
  mlp:   one hidden layer of 256 on the same inputs (AdamW, full batch), stopped at the
         epoch of best val SRCC.
Technical and aesthetic only: the alignment MOS depends on the prompt, which the image
tokens alone cannot know. A probe well above the models' greedy SRCC would say the language
model leaves information in the features unused; a probe at their level says the features
are the ceiling. Prints the CPU capability and wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omniquality_r.data.records import from_row, load_image  # noqa: E402
from omniquality_r.models.loading import load_model  # noqa: E402
from omniquality_r.models.shared_prefix import image_features  # noqa: E402
from omniquality_r.stages.common import data_splits  # noqa: E402

TASKS = ("technical", "aesthetic")
ALPHAS = 10.0 ** np.arange(-2, 5)


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


@torch.no_grad()
def features_of(model, processor, records, batch: int = 32) -> np.ndarray:
    """(records, tokens x features) flattened merged vision tokens."""
    out = []
    for i in range(0, len(records), batch):
        images = [load_image(r.image) for r in records[i : i + batch]]
        inputs = processor.image_processor(images=images, return_tensors="pt")
        out += [f.float().flatten().numpy() for f in image_features(model, dict(inputs))]
    return np.stack(out)


def srcc(pred: np.ndarray, mos: np.ndarray) -> float:
    return float(spearmanr(pred, mos)[0])


def ridge_probe(x: dict, y: dict) -> Callable:
    """Ridge on standardised features; the L2 weight of best val SRCC. Returns predict(x)."""
    mean, std = x["train"].mean(0), x["train"].std(0) + 1e-6
    z = {k: (v - mean) / std for k, v in x.items()}
    a = np.c_[z["train"], np.ones(len(z["train"]))]
    best = None
    for alpha in ALPHAS:
        reg = alpha * np.eye(a.shape[1])
        reg[-1, -1] = 0.0
        w = np.linalg.solve(a.T @ a + reg, a.T @ y["train"])
        score = srcc(np.c_[z["val"], np.ones(len(z["val"]))] @ w, y["val"])
        if best is None or score > best[0]:
            best = (score, w)
    w = best[1]
    return lambda v: np.c_[(v - mean) / std, np.ones(len(v))] @ w


def mlp_probe(x: dict, y: dict, epochs: int = 400, seed: int = 0) -> Callable:
    """One hidden layer of 256 (GELU, dropout 0.2), AdamW lr 1e-3, weight decay 1e-2, full
    batch; the weights of the epoch of best val SRCC. Returns predict(x)."""
    torch.manual_seed(seed)
    mean, std = x["train"].mean(0), x["train"].std(0) + 1e-6
    t = {k: torch.tensor((v - mean) / std, dtype=torch.float32) for k, v in x.items()}
    target = torch.tensor(y["train"], dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(t["train"].shape[1], 256),
                              torch.nn.GELU(), torch.nn.Linear(256, 1))  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    best = (-2.0, None)
    for _ in range(epochs):
        net.train()
        loss = torch.nn.functional.mse_loss(net(t["train"]).squeeze(1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        net.eval()
        with torch.no_grad():
            score = srcc(net(t["val"]).squeeze(1).numpy(), y["val"])
        if score > best[0]:
            best = (score, {k: v.clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[1])
    net.eval()

    def predict(v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.tensor((v - mean) / std, dtype=torch.float32)).squeeze(1).numpy()

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a tiny model folder (any checkpoint of the run)")
    parser.add_argument("--overrides", nargs="*", default=[], help="the run's data overrides")
    parser.add_argument("--heldout", nargs="*", default=None,
                        help="overrides of a stage=benchmark experiment whose datasets.synthetic "
                             "is scored whole")  # fmt: skip
    args = parser.parse_args()
    start = time.perf_counter()
    cfg = composed(args.overrides)
    splits = {k: [from_row(r) for r in v] for k, v in data_splits(cfg).items()}
    if args.heldout is not None:
        bench = composed(args.heldout).stage.datasets.synthetic
        splits["heldout"] = [from_row(r) for r in data_splits(cfg, bench)["test"]]
    model, processor = load_model(args.model)
    model.eval()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch threads "
          f"{torch.get_num_threads()}; model {args.model}")  # fmt: skip
    scored = [k for k in ("test", "heldout") if k in splits]
    print("| task | probe | train | val | " + " | ".join(scored) + " |")
    print("|---|---|---|---|" + "---|" * len(scored))
    for task in TASKS:
        recs = {k: [r for r in v if r.task == task] for k, v in splits.items()}
        x = {k: features_of(model, processor, v) for k, v in recs.items()}
        y = {k: np.array([r.mos for r in v]) for k, v in recs.items()}
        for name, fit in (("ridge", ridge_probe), ("mlp", mlp_probe)):
            predict = fit(x, y)
            cells = [f"{srcc(predict(x[k]), y[k]):.3f} (n={len(y[k])})" for k in scored]
            print(f"| {task} | {name} | {srcc(predict(x['train']), y['train']):.3f} | "
                  f"{srcc(predict(x['val']), y['val']):.3f} | " + " | ".join(cells) + " |")
    print(f"wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
