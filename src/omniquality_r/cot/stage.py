"""Write the chain-of-thought dataset by rejection sampling (METHOD.md, pipeline step 1).

For every record: k teacher trajectories, accepted and selected by rejection.py. Output in
`out_dir`:
  cot.jsonl        one row per record that kept a trajectory: the Record fields, plan,
                   reasoning, score, response (the accepted teacher text), teacher, k,
                   n_accepted (stage=sft reads it);
  cot_stats.json   settings, counts (records, written, dropped: no accepted trajectory,
                   skipped: unreadable image), the acceptance rows of rejection.py (with
                   the teacher's own SRCC) and the analyst's fitted weights per task.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..console import progress
from ..data.records import Record, load_readable
from .analyst import AnalystTeacher
from .rejection import AcceptanceStats, accept, format_table, parse_all, select
from .teachers import HFTeacher, OpenAITeacher, Teacher, TeacherItem

TEACHERS = ("analyst", "hf", "openai")


def fit_analyst(teacher: AnalystTeacher, train: Sequence[Record], batch_size: int = 64) -> dict:
    """Fit the analyst's rubrics on the training records' measurements and MOS (analyst.py);
    returns each task's fitted weights, for cot_stats.json."""
    items, mos = [], []
    for start in range(0, len(train), batch_size):
        batch, images, _ = load_readable(train[start : start + batch_size])
        items += [TeacherItem(im, r.task, r.prompt, r.id) for r, im in zip(batch, images)]
        mos += [r.mos for r in batch]
    rubrics = teacher.fit(items, mos)
    return {task: dict(zip(r.criteria, r.weights)) for task, r in rubrics.items()}


def make_teacher(name: str, options: dict, *, system_prompt: str,
                 instructions: dict[str, str]) -> Teacher:  # fmt: skip
    """The teacher `name` built from its options (the `teacher` group minus `name`; for
    `hf` also `model` and `processor`); the prompt texts go to the VLM teachers. The
    analyst still needs `fit_analyst`."""
    if name == "analyst":
        return AnalystTeacher(**options)
    if name == "hf":
        return HFTeacher(system_prompt=system_prompt, instructions=instructions, **options)
    if name == "openai":
        return OpenAITeacher(system_prompt=system_prompt, instructions=instructions, **options)
    raise ValueError(f"unknown teacher {name!r}; expected one of {TEACHERS}")


def write_cot(
    records: Sequence[Record],
    teacher: Teacher,
    out_dir: str | Path,
    *,
    k: int,
    epsilon: float,
    rule: str,
    batch_size: int,
    seed: int,
    teacher_fit: dict | None = None,
) -> dict:
    """Sample, accept, select and write cot.jsonl and cot_stats.json (module docstring;
    `teacher_fit`, the analyst's fitted weights, goes into the stats); returns the stats and
    prints the acceptance table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats, skipped, written = AcceptanceStats(), [], 0
    start_time = time.perf_counter()
    with (out / "cot.jsonl").open("w") as f:
        for start in progress(range(0, len(records), batch_size), desc="cot", unit="batch"):
            batch, images, unreadable = load_readable(records[start : start + batch_size])
            skipped.extend(unreadable)
            if not batch:
                continue
            items = [TeacherItem(im, r.task, r.prompt, r.id) for r, im in zip(batch, images)]
            for rec, texts in zip(batch, teacher.sample(items, k, seed)):
                valid = parse_all(texts)
                accepted = accept(valid, rec.mos, epsilon)
                stats.add(rec.split, rec.task, rec.dataset, len(texts), valid, len(accepted),
                          rec.mos)  # fmt: skip
                kept = select(accepted, rec.mos, rule)
                if kept is None:
                    continue
                row = {**asdict(rec), "plan": kept.plan, "reasoning": kept.reasoning,
                       "score": kept.score, "response": kept.text, "teacher": teacher.name,
                       "k": k, "n_accepted": len(accepted)}  # fmt: skip
                f.write(json.dumps(row) + "\n")
                written += 1
    rows = stats.rows()
    n_judged = len(records) - len(skipped)
    summary = {
        "teacher": teacher.name, "k": k, "epsilon": epsilon, "selection": rule,
        "records": len(records), "written": written, "dropped": n_judged - written,
        "skipped": len(skipped), "skipped_records": skipped,
        "wall_s": round(time.perf_counter() - start_time, 2), "acceptance": rows,
        **({"teacher_fit": teacher_fit} if teacher_fit else {}),
    }  # fmt: skip
    (out / "cot_stats.json").write_text(json.dumps(summary, indent=2))
    print(format_table(rows))
    print(f"teacher {teacher.name}: {written} of {len(records)} records written, "
          f"{summary['dropped']} dropped (no accepted trajectory), {len(skipped)} skipped "
          f"(unreadable image), {summary['wall_s']:.1f} s")  # fmt: skip
    return summary
