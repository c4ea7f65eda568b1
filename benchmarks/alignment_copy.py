"""Does the model's alignment reasoning quote the prompt's object groups, and are its verdicts
right? Per eval step, on synthetic alignment records.

    python benchmarks/alignment_copy.py multirun/base_seeds/0 multirun/align_long/0
    python benchmarks/alignment_copy.py multirun/base_seeds      # every job of a sweep

The analyst's alignment reasoning walks the prompt's groups, each quoted before its verdicts
('"two red circles on the left": colour satisfied, ...'). A verdict is only about the prompt
when the quote is the prompt's group. For the alignment rows of each `eval_*/predictions.csv`
this prints: records, the share of the prompt's groups quoted verbatim at their place
(`group copy`), the share of records whose quotes are exactly the prompt's groups (`all
groups`), the share of element verdicts ("colour satisfied", ...) that the generator's truth
confirms, the k-th verdicts read as the prompt's k-th group whatever the quote says (`verdicts`,
with in brackets the share a constant verdict per element would get), and the greedy SRCC from
the step's metrics.json. The truth is the generator's (`data/synthetic.read_factors` of the
synthetic folder, `--synthetic`, default `$OMNIQUALITY_CACHE/synthetic`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omniquality_r.analysis import find_jobs  # noqa: E402
from omniquality_r.cot.align import ELEMENTS, parse_prompt  # noqa: E402
from omniquality_r.data.synthetic import read_factors  # noqa: E402
from omniquality_r.eval.metrics import POOLED  # noqa: E402

QUOTE = re.compile(r'"([^"]*)"')
SAID = re.compile(r'"[^"]*": ' + ", ".join(rf"{e} (not satisfied|satisfied)" for e in ELEMENTS))


def copy_scores(rows: list[dict]) -> tuple[float, float]:
    """(share of groups quoted verbatim at their place, share of rows quoting exactly their
    prompt's groups) over alignment prediction rows (prompt, response)."""
    groups = exact = copied = 0
    for row in rows:
        wanted = [g.phrase() for g in parse_prompt(row["prompt"])]
        quoted = QUOTE.findall(row["response"])
        groups += len(wanted)
        copied += sum(w == q for w, q in zip(wanted, quoted))
        exact += quoted == wanted
    return copied / max(groups, 1), exact / max(len(rows), 1)


def verdict_scores(rows: list[dict], factors: dict[str, dict]) -> tuple[float, float]:
    """(share of element verdicts the truth confirms, share a constant verdict per element
    would get) over alignment prediction rows; the k-th verdict group is the prompt's k-th."""
    right, total, said_true = 0, 0, dict.fromkeys(ELEMENTS, 0)
    for row in rows:
        truth = [o["satisfied"] for o in factors[row["id"]]["objects"]]
        for verdicts, satisfied in zip(SAID.findall(row["response"]), truth):
            for element, verdict in zip(ELEMENTS, verdicts):
                right += (verdict == "satisfied") == satisfied[element]
                said_true[element] += satisfied[element]
            total += 1
    constant = sum(max(n, total - n) for n in said_true.values()) / max(len(ELEMENTS) * total, 1)
    return right / max(len(ELEMENTS) * total, 1), constant


def greedy_srcc(step: Path, task: str = "alignment") -> float | None:
    """The task's pooled greedy SRCC in the step's metrics.json."""
    metrics = json.loads((step / "metrics.json").read_text())["metrics"]["greedy"]
    return next(m["srcc"] for m in metrics if m["task"] == task and m["dataset"] == POOLED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="pipeline runs or sweep folders")
    parser.add_argument("--synthetic", type=Path,
                        default=Path(os.environ.get("OMNIQUALITY_CACHE", ".cache")) / "synthetic")
    args = parser.parse_args()
    factors = read_factors(args.synthetic)
    print("| run | step | records | group copy | all groups | verdicts (constant) | greedy SRCC |")
    print("|---|---|---|---|---|---|---|")
    for run in (p / r.relative_to(p.resolve()) for p in args.paths for r in find_jobs(p)):
        for step in sorted(run.glob("eval_*")):
            if not (step / "predictions.csv").is_file() or step.name == "eval_untrained":
                continue
            with open(step / "predictions.csv", newline="") as f:
                rows = [r for r in csv.DictReader(f) if r["task"] == "alignment"]
            if not rows:
                continue
            group, exact = copy_scores(rows)
            right, constant = verdict_scores(rows, factors)
            srcc = greedy_srcc(step)
            print(f"| {run} | {step.name} | {len(rows)} | {group:.2f} | {exact:.2f} | "
                  f"{right:.2f} ({constant:.2f}) | "
                  f"{'-' if srcc is None else f'{srcc:.3f}'} |")  # fmt: skip


if __name__ == "__main__":
    main()
