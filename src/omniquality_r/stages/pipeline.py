"""stage=pipeline: every stage in one run folder, resumable step by step."""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning import seed_everything
from omegaconf import DictConfig, OmegaConf

from ..eval.evaluate import json_safe
from ..settings import ConfigError
from .common import (
    CHECKPOINT,
    output_dir,
    perception_settings,
    run_name,
)
from .cot import cot_stage
from .eval import eval_stage
from .grpo import grpo_stage
from .pretrain import pretrain_stage
from .sft import sft_stage

log = logging.getLogger(__name__)


# name, stage config key under stage=pipeline, algo key (grpo), step whose checkpoint it starts from
PIPELINE = (
    ("pretrain", "pretrain", None, None),
    ("eval_untrained", "eval_untrained", None, None),
    ("cot", "cot", None, None),
    ("sft", "sft", None, None),
    ("eval_sft", "eval", None, "sft"),
    ("grpo_stage1", "grpo1", "algo1", "sft"),
    ("eval_grpo_stage1", "eval", None, "grpo_stage1"),
    ("grpo_stage2", "grpo2", "algo2", "grpo_stage1"),
    ("eval_grpo_stage2", "eval", None, "grpo_stage2"),
)
DONE = "done.json"
STEP_CONFIG = "pipeline_config.yaml"  # the pipeline config a finished step ran under
# the steps that train a checkpoint (those the others start from): sft, grpo_stage1, grpo_stage2
TRAINED_STEPS = tuple(dict.fromkeys(start for *_, start in PIPELINE if start))
# The step whose output each step builds on (its checkpoint, or the cot data for sft); every
# step builds on pretrain at last. A step is reusable when the one it builds on is.
BUILDS_ON = {"eval_untrained": "pretrain", "cot": "pretrain", "sft": "cot",
             **{name: start for name, *_, start in PIPELINE if start}}  # fmt: skip
EVAL_STEPS = tuple(name for name, key, *_ in PIPELINE if key == "eval")
# The steps that read each config key (longest prefix wins). A key that differs from a base
# run's (stage.reuse_from) invalidates those steps and every step built on them; a key not
# listed here invalidates every step. Keys that never change a result are not compared at all.
READERS = {
    "stage.eval_untrained": ("eval_untrained",),
    "teacher": ("cot",), "stage.cot": ("cot",),
    "stage.sft": ("sft",),
    "stage.eval": EVAL_STEPS,
    "reward": ("grpo_stage1",), "stage.grpo1": ("grpo_stage1",), "stage.algo1": ("grpo_stage1",),
    "stage.grpo2": ("grpo_stage2",), "stage.algo2": ("grpo_stage2",),
}  # fmt: skip
NOT_COMPARED = ("paths", "run", "logger", "debug", "stage.run_dir", "stage.redo",
                "stage.reuse_from")  # fmt: skip
STEP_STAGES: dict[str, Callable[[DictConfig], dict]] = {
    "pretrain": pretrain_stage, "eval": eval_stage, "cot": cot_stage, "sft": sft_stage,
    "grpo": grpo_stage,
}  # fmt: skip


def _step_config(
    cfg: DictConfig, folder: Path, key: str, algo: str | None, start: Path | None
) -> DictConfig:
    sub = copy.deepcopy(cfg)
    OmegaConf.set_struct(sub, False)
    sub.stage = cfg.stage[key]
    sub.paths.output_dir = str(folder)
    sub.run.name = run_name(folder.name)  # the step's own run: <experiment>/eval_sft, ...
    if algo:  # a GRPO step: KL to the SFT model in both stages (algo.kl.reference=sft)
        sub.algo = cfg.stage[algo]
        sub.stage.sft_checkpoint = str(folder.parent / "sft" / CHECKPOINT)
    if start:
        sub.init_from = str(start / CHECKPOINT)
    return sub


def refuse_ignored_overrides(overrides: list[str]) -> None:
    """The pipeline's GRPO steps read stage.algo1 / stage.algo2, never the top-level `algo`
    group: an `algo` override would be silently ignored, so it is an error that says what to
    override instead."""
    ignored = [o for o in overrides
               if o.lstrip("+~").split("=")[0].split(".")[0] == "algo"]  # fmt: skip
    if ignored:
        raise ConfigError(
            f"stage=pipeline ignores the top-level algo group ({', '.join(ignored)}): its GRPO "
            "steps read stage.algo1 (stage 1) and stage.algo2 (stage 2); override e.g. "
            "stage.algo2.filter.enabled=true, or stage.algo1=<algo file> to pick a file")


def pipeline_steps(cfg: DictConfig) -> tuple[tuple, ...]:
    """PIPELINE minus pretrain for the random tower (model.perception=null: nothing to
    pretrain)."""
    return tuple(step for step in PIPELINE if step[0] != "pretrain" or perception_settings(cfg))


def _flat(tree, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _compared(cfg: DictConfig) -> dict[str, object]:
    """The flattened, resolved config minus NOT_COMPARED, with the run folder in any value
    (e.g. callbacks.checkpoint.dirpath) written as <run>."""
    flat = _flat(OmegaConf.to_container(cfg, resolve=True))
    run = str(flat.get("paths.output_dir"))
    return {k: v.replace(run, "<run>") if isinstance(v, str) else v for k, v in flat.items()
            if not any(k == n or k.startswith(n + ".") for n in NOT_COMPARED)}  # fmt: skip


def _readers(key: str) -> tuple[str, ...]:
    owners = [p for p in READERS if key == p or key.startswith(p + ".")]
    return READERS[max(owners, key=len)] if owners else (PIPELINE[0][0],)


def _builds_on(name: str, steps: set[str]) -> bool:
    """The step `name` builds on (BUILDS_ON) is one of `steps`, or it builds on none."""
    return BUILDS_ON.get(name) in steps | {None}


def reusable_steps(base_config: dict[str, object], config: dict[str, object]) -> tuple[str, ...]:
    """The pipeline steps whose inputs are equal in both (flattened, compared) configs: no
    differing key is read by the step (READERS) or by a step it builds on (BUILDS_ON)."""
    differing = {k for k in base_config.keys() | config.keys()
                 if base_config.get(k, "<unset>") != config.get(k, "<unset>")}  # fmt: skip
    changed = {step for k in differing for step in _readers(k)}
    reusable: set[str] = set()
    for name, *_ in PIPELINE:
        if name not in changed and _builds_on(name, reusable):
            reusable.add(name)
    return tuple(name for name, *_ in PIPELINE if name in reusable)


def reuse_base_steps(cfg: DictConfig, run: Path, base: Path) -> list[str]:
    """Copy into `run` each step of the finished pipeline run `base` whose inputs are
    unchanged (reusable_steps, against the config that step ran under) and whose BUILDS_ON
    step is this run's too; returns the names of the steps copied.
    The copies make `run` self-contained, and the loop then skips them as done."""
    if not base.is_dir():
        raise ConfigError(f"stage.reuse_from={base}: no such run folder")
    config = _compared(cfg)
    steps = [name for name, *_ in pipeline_steps(cfg)]
    reused, present = [], {name for name, *_ in PIPELINE} - set(steps)  # e.g. no pretrain
    for name in steps:
        source = base / name
        if (run / name / DONE).is_file():  # this run's own finished step (a resume)
            present.add(name)
            continue
        if not (source / DONE).is_file() or not (source / STEP_CONFIG).is_file():
            continue
        base_config = _compared(OmegaConf.load(source / STEP_CONFIG))
        if name not in reusable_steps(base_config, config) or not _builds_on(name, present):
            continue
        if (run / name).exists():  # an unfinished step of this run: the base's replaces it
            shutil.rmtree(run / name)
        shutil.copytree(source, run / name, ignore=shutil.ignore_patterns("*.ckpt"))
        reused.append(name)
        present.add(name)
    log.info("pipeline: reused from %s: %s", base, ", ".join(reused) or "no step")
    return reused


def pipeline_stage(cfg: DictConfig) -> dict:
    """Every stage in one run folder, each step in <run>/<step>/; finished steps (done.json)
    are skipped unless listed in stage.redo, an interrupted one resumes from its last
    Lightning checkpoint; stage.reuse_from first copies in a base run's steps whose inputs are
    unchanged. Ends with the SRCC/PLCC table per model."""
    if HydraConfig.initialized():
        refuse_ignored_overrides(list(HydraConfig.get().overrides.task))
    run = Path(cfg.stage.run_dir) if cfg.stage.run_dir else output_dir(cfg)
    redo = set(cfg.stage.redo or ())
    if cfg.stage.reuse_from:
        reuse_base_steps(cfg, run, Path(cfg.stage.reuse_from))
    summary: dict[str, dict] = {}
    for name, key, algo, start in pipeline_steps(cfg):
        folder = run / name
        done = folder / DONE
        if done.is_file() and not ({name, "all"} & redo):
            log.info("pipeline: %s already done, skipped (stage.redo=[%s] reruns it)", name, name)
            summary[name] = json.loads(done.read_text())
            continue
        if done.is_file():  # redo: start the step afresh (an unfinished one resumes instead)
            shutil.rmtree(folder)
        sub = _step_config(cfg, folder, key, algo, start and run / start)
        if name == "sft":
            sub.stage.cot_path = str(run / "cot" / "cot.jsonl")
        log.info("pipeline: %s (stage=%s%s)", name, sub.stage.name,
                 f", init_from={sub.init_from}" if start else "")  # fmt: skip
        t0 = time.time()
        seed_everything(cfg.seed, workers=True)
        result = STEP_STAGES[sub.stage.name](sub)
        summary[name] = {"wall_s": time.time() - t0, "result": json_safe(result)}
        OmegaConf.save(cfg, folder / STEP_CONFIG, resolve=True)
        done.write_text(json.dumps(summary[name], indent=2))
    table = pipeline_table(summary)
    print(table)
    (run / "summary.md").write_text(table + "\n")
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def pipeline_table(summary: dict[str, dict]) -> str:
    """Per task SRCC / PLCC (greedy and expectation read-outs) of each evaluated model."""
    lines = ["| model | task | SRCC | PLCC | SRCC (exp.) | PLCC (exp.) | parse | wall s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, step in summary.items():
        if not name.startswith("eval_"):
            continue
        metrics = step["result"]
        pooled = {r: {row["task"]: row for row in rows if row["dataset"] == "all"}
                  for r, rows in metrics.items()}  # fmt: skip
        trained = name.removeprefix("eval_")
        wall = summary.get(trained, {}).get("wall_s")
        for task, g in pooled.get("greedy", {}).items():
            e = pooled.get("expectation", {}).get(task, {})
            lines.append(
                f"| {trained} | {task} | {_f(g['srcc'])} | {_f(g['plcc'])} | {_f(e.get('srcc'))} "
                f"| {_f(e.get('plcc'))} | {_f(g['parse_rate'])} | "
                f"{'' if wall is None else f'{wall:.0f}'} |"
            )
    return "\n".join(lines)


def _f(value) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "-" if missing else f"{value:.3f}"
