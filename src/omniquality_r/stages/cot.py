"""stage=cot: rejection-sampled chain-of-thought data from the `teacher` group."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ..cot.stage import fit_analyst, make_teacher, write_cot
from ..data.records import from_row
from .common import (
    configured_model,
    data_splits,
    instructions_of,
    log_metrics,
    output_dir,
    sample_per_task,
    scalars,
)


def cot_stage(cfg: DictConfig) -> dict:
    """Rejection-sampled CoT data from the `teacher` group (cot/stage.py): cot.jsonl and
    cot_stats.json in the run dir, for the splits `stage.splits`."""
    s = cfg.stage
    splits = data_splits(cfg)
    records = [
        rec
        for name in s.splits
        for rec in sample_per_task([from_row(r) for r in splits[name]], s.max_per_task)
    ]
    options = OmegaConf.to_container(cfg.teacher, resolve=True)
    name = options.pop("name")
    if name == "hf":
        options["model"], options["processor"] = configured_model(cfg, options.pop("model_path"))
    teacher = make_teacher(name, options, system_prompt=s.teacher_prompt,
                           instructions=instructions_of(cfg))  # fmt: skip
    # The analyst's rubric is fitted on the whole training split, never on val or test.
    train = [from_row(r) for r in splits["train"]]
    fit = fit_analyst(teacher, train) if name == "analyst" else None
    stats = write_cot(records, teacher, output_dir(cfg), k=s.k, epsilon=s.epsilon,
                      rule=s.selection, batch_size=s.batch_size, seed=cfg.seed,
                      teacher_fit=fit)  # fmt: skip
    log_metrics(cfg, scalars(stats, "cot"))
    return stats
