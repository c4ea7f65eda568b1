"""Rejection sampling of teacher trajectories (METHOD.md, pipeline step 1). Pure logic.

A trajectory is accepted when `prompts.parse_trajectory` reads it (one optional plan,
then exactly one think and one answer holding a bare float) and |score - MOS| <= epsilon.
One accepted trajectory per record is kept, by `rule`:
  closest  the score nearest the MOS; ties go to the longer reasoning (more informative),
           then to the earlier sample;
  longest  the longest reasoning; ties go to the score nearest the MOS, then the earlier sample;
  first    the first accepted sample: plain rejection sampling (sample until one is accepted),
           so the kept score is any score within epsilon of the MOS, not the nearest of k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..eval.metrics import POOLED, srcc
from ..prompts import parse_trajectory

RULES = ("closest", "longest", "first")


@dataclass(frozen=True)
class Trajectory:
    text: str
    plan: str
    reasoning: str
    score: float


def parse_all(texts: Sequence[str]) -> list[Trajectory]:
    """The trajectories whose format is valid, in sample order."""
    return [Trajectory(t, *parsed) for t in texts if (parsed := parse_trajectory(t)) is not None]


def accept(trajectories: Sequence[Trajectory], mos: float, epsilon: float) -> list[Trajectory]:
    return [t for t in trajectories if abs(t.score - mos) <= epsilon]


def select(accepted: Sequence[Trajectory], mos: float, rule: str = "closest") -> Trajectory | None:
    """The kept trajectory by `rule` (module docstring); None when nothing was accepted."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; expected one of {RULES}")
    if not accepted:
        return None
    if rule == "first":
        return accepted[0]
    if rule == "closest":
        return min(accepted, key=lambda t: (abs(t.score - mos), -len(t.reasoning)))
    return min(accepted, key=lambda t: (-len(t.reasoning), abs(t.score - mos)))


@dataclass
class Tally:
    """Counts for one (split, task, dataset)."""

    records: int = 0
    trajectories: int = 0
    valid: int = 0
    accepted: int = 0
    kept: int = 0  # records with at least one accepted trajectory
    proposals: list[float] = field(default_factory=list)  # mean valid score per record
    mos: list[float] = field(default_factory=list)

    def add(self, n_samples: int, valid: Sequence[Trajectory], n_accepted: int,
            mos: float) -> None:  # fmt: skip
        self.records += 1
        self.trajectories += n_samples
        self.valid += len(valid)
        self.accepted += n_accepted
        self.kept += n_accepted > 0
        if valid:
            self.proposals.append(sum(t.score for t in valid) / len(valid))
            self.mos.append(mos)

    def row(self) -> dict:
        """Counts, rates and teacher_srcc: SRCC of the mean proposal with MOS (the teacher's
        own accuracy on these records; None below 3 records or for constant values)."""
        n = max(self.trajectories, 1)
        rho = srcc(self.proposals, self.mos)
        return {"records": self.records, "trajectories": self.trajectories,
                "valid": self.valid, "accepted": self.accepted,
                "valid_rate": self.valid / n, "acceptance_rate": self.accepted / n,
                "kept": self.kept, "dropped": self.records - self.kept,
                "teacher_srcc": None if math.isnan(rho) else rho}  # fmt: skip


class AcceptanceStats:
    """Acceptance per (split, task, dataset), with a pooled row per split and task."""

    def __init__(self):
        self.tallies: dict[tuple[str, str, str], Tally] = {}

    def add(self, split: str, task: str, dataset: str, n_samples: int,
            valid: Sequence[Trajectory], n_accepted: int, mos: float) -> None:  # fmt: skip
        for ds in dict.fromkeys((dataset, POOLED)):
            tally = self.tallies.setdefault((split, task, ds), Tally())
            tally.add(n_samples, valid, n_accepted, mos)

    def rows(self) -> list[dict]:
        return [{"split": s, "task": t, "dataset": d, **tally.row()}
                for (s, t, d), tally in sorted(self.tallies.items())]  # fmt: skip


_COLUMNS = ("split", "task", "dataset", "records", "trajectories", "valid_rate",
            "acceptance_rate", "kept", "dropped", "teacher_srcc")  # fmt: skip


def format_table(rows: Sequence[dict]) -> str:
    """Fixed-width text table of AcceptanceStats rows; rates in percent."""
    body = [["-" if r[c] is None else f"{r[c]:.3f}" if c == "teacher_srcc" else
             f"{r[c]:.1%}" if isinstance(r[c], float) else str(r[c]) for c in _COLUMNS]
            for r in rows]  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(_COLUMNS, *body)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))  # fmt: skip

    return "\n".join(line(cells) for cells in [_COLUMNS, ["-" * w for w in widths], *body])
