"""How much ranking do ties among the greedy scores cost?

    python benchmarks/score_ties.py multirun/heldout_fresh_long \
        --report sft/synthetic --report grpo_stage2/synthetic

Per job of a sweep, report and task (`<job>/<report>/predictions.csv`, read with
`analysis.load_predictions`; records without a parsed score are left out): the greedy SRCC,
the number of distinct scores, the largest block of records that share one score (its share
of the records, the score, and the mean and sd of its MOS), and the SRCC the same scores
would reach if every tie were broken in the order of the MOS. That last figure bounds what
separating tied records could add without reordering any two records the model already
separates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from omniquality_r.analysis import find_jobs, load_predictions


def tie_summary(score: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    """SRCC of `score`, and of `score` with its ties broken by `mos` (lexicographic rank)."""
    score, mos = np.asarray(score, float), np.asarray(mos, float)
    values, counts = np.unique(score, return_counts=True)
    top = values[np.argmax(counts)]
    block = score == top
    ranks = np.empty(len(score))
    ranks[np.lexsort((mos, score))] = np.arange(len(score))
    return {"srcc": float(spearmanr(score, mos)[0]), "distinct": len(values),
            "block share": float(block.mean()), "block score": float(top),
            "block mos mean": float(mos[block].mean()), "block mos sd": float(mos[block].std()),
            "srcc ties broken": float(spearmanr(ranks, mos)[0])}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--report", action="append", help="report folder(s) of each job")
    args = parser.parse_args()
    reports = args.report or ["eval_sft", "eval_grpo_stage2"]
    jobs = [j for j in find_jobs(args.sweep) if (j / reports[0] / "predictions.csv").is_file()]
    print("| job | report | task | records | SRCC | distinct scores | largest tie (share, "
          "score, MOS mean ± sd) | SRCC, ties broken by MOS |")
    print("|---|---|---|---|---|---|---|---|")
    for job in jobs:
        for report in reports:
            preds = load_predictions(job, report).dropna(subset=["score_greedy"])
            for task, rows in preds.groupby("task"):
                s = tie_summary(rows.score_greedy.to_numpy(), rows.mos.to_numpy())
                print(f"| {job.name} | {report} | {task} | {len(rows)} | {s['srcc']:.3f} | "
                      f"{s['distinct']} | {s['block share']:.0%}, {s['block score']:.2f}, "
                      f"{s['block mos mean']:.2f} ± {s['block mos sd']:.2f} | "
                      f"{s['srcc ties broken']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
