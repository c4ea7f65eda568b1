"""Best-of-N selection: score N candidate images per prompt and keep the best.

Candidates come from a folder holding one sub-folder per prompt (`prompt.txt` and the
images; the sub-folder's name is the group) or a JSONL manifest of `{"group", "prompt",
"image"}` rows. A candidate's combined score is the weighted mean of its task scores over
the tasks of positive weight (the paper's "select" averages aesthetic and technical);
candidates missing any of those scores rank last and never win.
"""

from __future__ import annotations

import csv
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .data.records import DataError
from .scoring import IMAGE_SUFFIXES, QualityScorer, read_image_manifest

DEFAULT_WEIGHTS = {"aesthetic": 0.5, "technical": 0.5, "alignment": 0.0}


@dataclass(frozen=True)
class Candidate:
    group: str
    prompt: str
    image: str


def collect_candidates(source: str | Path) -> list[Candidate]:
    """Candidates from a folder of prompt folders or a JSONL manifest (group defaults to prompt)."""
    source = Path(source)
    if source.suffix == ".jsonl":
        return [Candidate(r["group"] or r["prompt"], r["prompt"], r["image"])
                for r in read_image_manifest(source)]  # fmt: skip
    if not source.is_dir():
        raise DataError(f"candidates not found: {source} (expected a folder or a .jsonl)")
    candidates = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        prompt_file = folder / "prompt.txt"
        prompt = prompt_file.read_text().strip() if prompt_file.is_file() else ""
        candidates += [Candidate(folder.name, prompt, str(p)) for p in sorted(folder.iterdir())
                       if p.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
    if not candidates:
        raise DataError(f"{source}: no images in its sub-folders")
    return candidates


def active_tasks(weights: Mapping[str, float]) -> list[str]:
    """Tasks of positive weight; ValueError on a negative weight or when none is positive."""
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"task weights must be >= 0, got {dict(weights)}")
    tasks = [t for t, w in weights.items() if w > 0]
    if not tasks:
        raise ValueError(f"at least one task weight must be positive, got {dict(weights)}")
    return tasks


def combine(scores: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """sum_t w_t s_t / sum_t w_t over tasks with w_t > 0; NaN if any of those scores is
    missing or NaN."""
    tasks = active_tasks(weights)
    values = [scores.get(t, math.nan) for t in tasks]
    if not all(math.isfinite(v) for v in values):
        return math.nan
    return sum(weights[t] * v for t, v in zip(tasks, values)) / sum(weights[t] for t in tasks)


def rank(
    candidates: Sequence[Candidate], scores: Sequence[Mapping[str, float]],
    weights: Mapping[str, float],
) -> list[dict]:  # fmt: skip
    """Ranking rows (group, prompt, image, combined, rank, winner) in input order; rank 1 is
    the best of its group, ties keep input order, NaN combined scores rank last."""
    rows = [{"group": c.group, "prompt": c.prompt, "image": c.image,
             "combined": combine(s, weights)} for c, s in zip(candidates, scores)]  # fmt: skip
    for group in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == group]
        ordered = sorted(members, key=lambda r: -r["combined"] if math.isfinite(r["combined"])
                         else math.inf)  # fmt: skip
        for i, r in enumerate(ordered, start=1):
            r["rank"], r["winner"] = i, i == 1 and math.isfinite(r["combined"])
    return rows


def select(
    scorer: QualityScorer, candidates: Sequence[Candidate], weights: Mapping[str, float], *,
    samples: int = 1, batch_size: int = 8, progress: bool = False,
) -> list[dict]:  # fmt: skip
    """Score every candidate on the weighted tasks and rank them; rows also carry
    `score_<task>` per task and `error` (the tasks' errors joined)."""
    tasks = active_tasks(weights)
    results = scorer.score([c.image for c in candidates], task=tasks,
                           prompts=[c.prompt for c in candidates], samples=samples,
                           batch_size=batch_size, progress=progress)  # fmt: skip
    rows = rank(candidates, [{t: r[t].score for t in tasks} for r in results], weights)
    for row, res in zip(rows, results):
        row.update({f"score_{t}": res[t].score for t in tasks})
        row["error"] = "; ".join(dict.fromkeys(res[t].error for t in tasks if res[t].error))
    return rows


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "group"


def write_selection(rows: Sequence[dict], out_dir: str | Path, link: str = "copy") -> Path:
    """Write ranking.csv (by group, then rank) and put each group's winner in
    `out_dir/best/<group><suffix>` as a copy or a symlink (`link`)."""
    if link not in ("copy", "symlink"):
        raise ValueError(f"link must be 'copy' or 'symlink', got {link!r}")
    out = Path(out_dir)
    best = out / "best"
    best.mkdir(parents=True, exist_ok=True)
    with (out / "ranking.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        order = {g: i for i, g in enumerate(dict.fromkeys(r["group"] for r in rows))}
        writer.writerows(sorted(rows, key=lambda r: (order[r["group"]], r["rank"])))
    for row in rows:
        if not row["winner"]:
            continue
        target = best / f"{_safe(row['group'])}{Path(row['image']).suffix}"
        target.unlink(missing_ok=True)
        if link == "copy":
            shutil.copyfile(row["image"], target)
        else:
            target.symlink_to(Path(row["image"]).resolve())
    return out / "ranking.csv"


def selection_summary(rows: Sequence[dict]) -> dict[str, float]:
    """Groups, winners, and the mean combined score of winners vs all scored candidates."""
    scored = [r["combined"] for r in rows if math.isfinite(r["combined"])]
    winners = [r["combined"] for r in rows if r["winner"]]
    return {
        "groups": len({r["group"] for r in rows}),
        "candidates": len(rows),
        "winners": len(winners),
        "errors": sum(bool(r.get("error")) for r in rows),
        "mean_all": sum(scored) / len(scored) if scored else math.nan,
        "mean_winners": sum(winners) / len(winners) if winners else math.nan,
    }
