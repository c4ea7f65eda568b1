"""How much of a GRPO-over-SFT gain's seed spread is the eval records' own noise?

    python benchmarks/gain_noise.py multirun/fresh_g16 [--base eval_sft] [--report eval_grpo_stage2]

Per job of a sweep and per task: the greedy SRCC gain of `report` over `base` on the same
records (predictions.csv of each), and the standard deviation of that gain over bootstrap
resamples of the records (the same resample for both models). Records that either model
answered without a score are left out. Where that sd is as large as
the spread of the gains over seeds, the spread says more about the records than about
training. "scores changed" is the share of records whose greedy score differs between the
two models. Reports of a benchmark job are `<checkpoint>/<data>`, e.g. --base sft/synthetic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from omniquality_r.analysis import find_jobs, load_predictions


def paired_bootstrap(mos: np.ndarray, base: np.ndarray, other: np.ndarray, n: int = 1000,
                     seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """SRCC(other) - SRCC(base) on all records, and its sd over `n` record resamples."""
    def gain(i):
        return spearmanr(other[i], mos[i])[0] - spearmanr(base[i], mos[i])[0]

    rng = np.random.default_rng(seed)
    draws = [gain(rng.integers(0, len(mos), len(mos))) for _ in range(n)]
    return float(gain(np.arange(len(mos)))), float(np.nanstd(draws))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--base", default="eval_sft")
    parser.add_argument("--report", default="eval_grpo_stage2")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    jobs = [j for j in find_jobs(args.sweep) if (j / args.base / "predictions.csv").is_file()]
    print(f"| job | task | records | gain of {args.report} | bootstrap sd | scores changed |")
    print("|---|---|---|---|---|---|")
    gains: dict[str, list[float]] = {}
    for job in jobs:
        base = load_predictions(job, args.base).set_index("id")
        other = load_predictions(job, args.report).set_index("id")
        base["other"] = other.loc[base.index, "score_greedy"]
        for task, rows in base.dropna(subset=["score_greedy", "other"]).groupby("task"):
            gain, sd = paired_bootstrap(rows.mos.to_numpy(), rows.score_greedy.to_numpy(),
                                        rows.other.to_numpy(), n=args.resamples)  # fmt: skip
            gains.setdefault(task, []).append(gain)
            changed = (rows.score_greedy != rows.other).mean()
            print(f"| {job.name} | {task} | {len(rows)} | {gain:+.3f} | {sd:.3f} | {changed:.0%} |")
    for task, values in gains.items():
        spread = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
        print(f"{task}: gain {np.mean(values):+.3f}{spread} over {len(values)} jobs")


if __name__ == "__main__":
    main()
