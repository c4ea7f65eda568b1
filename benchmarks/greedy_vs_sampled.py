"""Where can GRPO's training reward come from without moving greedy SRCC?

    python benchmarks/greedy_vs_sampled.py <run>/sft <run>/grpo_stage1
    python benchmarks/greedy_vs_sampled.py <run>/sft --split test --overrides experiment=<name>

Per model folder (a checkpoint, or a pipeline step folder holding `checkpoint/`) and task, on
a seeded sample of `--per-task` records of `--split` (the project's config; `--overrides`
for another data config): the greedy answer (the eval read-out) and `--samples` answers
sampled as GRPO stage 1 samples its rollouts (the pipeline's `stage.algo1.generation`,
temperature 1.0), each scored by the configured reward (conf/reward). It prints the greedy
SRCC, the SRCC of the samples' mean, the number of distinct greedy scores (ties cap SRCC),
the spread of the samples around their mean, and the accuracy reward of the greedy answer
and of the samples. Where the samples' reward lies below the greedy answer's, GRPO can raise
its training reward up to the greedy level by narrowing the sampling alone, with no change
in the greedy answers (or their SRCC).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from omniquality_r.data.records import TASKS, from_row, load_readable  # noqa: E402
from omniquality_r.eval.metrics import srcc  # noqa: E402
from omniquality_r.rewards import REWARDS  # noqa: E402
from omniquality_r.scoring import QualityScorer  # noqa: E402
from omniquality_r.stages.common import (  # noqa: E402
    configured_model,
    data_splits,
    instructions_of,
    sample_per_task,
)

COLUMNS = ("n", "greedy SRCC", "mean-of-samples SRCC", "distinct greedy", "sample sd",
           "reward greedy", "reward samples")  # fmt: skip


def headroom(mos: Sequence[float], greedy: Sequence[float], samples: np.ndarray,
             reward_greedy: Sequence[float], reward_samples: np.ndarray) -> dict[str, float]:
    """One task's row. `samples` [n, K] scores (NaN: unparsable), `reward_samples` [n, K]
    their accuracy rewards; sample sd = mean over records of the samples' std (ddof 0)."""
    greedy, samples = np.asarray(greedy, float), np.asarray(samples, float)
    mean = np.nanmean(samples, axis=1)
    finite = greedy[np.isfinite(greedy)]
    return {
        "n": len(greedy),
        "greedy SRCC": srcc(greedy, mos),
        "mean-of-samples SRCC": srcc(mean, mos),
        "distinct greedy": len(np.unique(np.round(finite, 2))),
        "sample sd": float(np.nanmean(np.nanstd(samples, axis=1))),
        "reward greedy": float(np.mean(reward_greedy)),
        "reward samples": float(np.mean(reward_samples)),
    }


def accuracy(cfg, responses: Sequence[str], mos: Sequence[float], datasets: Sequence[str]):
    """The configured reward's accuracy part of each response."""
    reward = REWARDS[cfg.reward.name]
    params = OmegaConf.to_container(cfg.reward.params, resolve=True)
    parts = reward(list(responses), torch.tensor(mos, dtype=torch.float32),
                   torch.arange(len(responses)), list(datasets), **params)  # fmt: skip
    return parts.accuracy.numpy()


def model_rows(cfg, folder: str, records, images, k: int) -> dict[str, dict]:
    model, processor = configured_model(cfg, folder)  # a step folder stands for its checkpoint

    def scorer(generation) -> QualityScorer:
        return QualityScorer(model, processor, instructions=instructions_of(cfg),
                             system_prompt=cfg.system_prompt,
                             generation=OmegaConf.to_container(generation, resolve=True))

    greedy, sampler = scorer(cfg.decoding), scorer(cfg.stage.algo1.generation)  # GRPO stage 1's
    rows = {}
    for task in TASKS:
        sel = [(r, im) for r, im in zip(records, images) if r.task == task]
        if not sel:
            continue
        recs, ims = [r for r, _ in sel], [im for _, im in sel]
        prompts, mos = [r.prompt for r in recs], [r.mos for r in recs]
        g = greedy.score(ims, task, prompts, batch_size=16)
        s = sampler.score(ims, task, prompts, samples=k, batch_size=8 * k)
        names = [r.dataset for r in recs]
        acc_g = accuracy(cfg, [x.responses[0] for x in g], mos, names)
        acc_s = accuracy(cfg, [t for x in s for t in x.responses],
                         [m for m in mos for _ in range(k)], [d for d in names for _ in range(k)])
        rows[task] = headroom(mos, [x.samples[0] for x in g],
                              np.array([x.samples for x in s]), acc_g, acc_s.reshape(-1, k))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoint or pipeline step folders")
    parser.add_argument("--split", default="train")
    parser.add_argument("--per-task", type=int, default=60)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides")
    args = parser.parse_args()
    torch.manual_seed(0)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["stage=pipeline", *args.overrides])
    records = sample_per_task([from_row(r) for r in data_splits(cfg)[args.split]], args.per_task)
    records, images, _ = load_readable(records)
    print(f"split {args.split}, {args.samples} samples per record "
          f"(temperature {cfg.stage.algo1.generation.temperature}), reward {cfg.reward.name}")
    print("| model | task | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for folder in args.models:
        for task, row in model_rows(cfg, folder, records, images, args.samples).items():
            cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()]
            print(f"| {folder} | {task} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
