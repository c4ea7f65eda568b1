"""One function per stage, chosen by `stage.name`. Config objects stop here:
below this module every function takes plain arguments."""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from transformers.utils import logging as hf_logging

from .best_of_n import active_tasks, collect_candidates, select, selection_summary, write_selection
from .console import ProgressLines, interactive, single_log_lines
from .cot.stage import make_teacher, write_cot
from .data.build import build_splits
from .data.collate import collate_sft
from .data.records import Record, from_row
from .eval.evaluate import flat_metrics, json_safe, predict, print_tables, write_report
from .models.loading import (
    apply_lora,
    count_parameters,
    load_model,
    resolve_model_path,
    save_checkpoint,
    set_vision_trainable,
)
from .models.perception import REPORT as PERCEPTION_REPORT
from .models.perception import format_perception_report
from .modules.grpo import GRPOModule, GRPOSettings
from .modules.sft import SFTModule, accumulation_steps, read_cot, train_sft
from .precision import describe_device, resolve_precision, trainer_device, uses_cuda
from .rewards import REWARDS
from .scoring import (
    QualityScorer,
    collect_images,
    flatten,
    format_summary,
    score_summary,
    write_scores_csv,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"  # every training stage saves its Hugging Face folder as <run>/checkpoint


def output_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_of(trainer: DictConfig) -> torch.device:
    return torch.device("cuda" if uses_cuda(trainer.accelerator) else "cpu")


def instructions_of(cfg: DictConfig) -> dict[str, str]:
    """Task name -> instruction, for the tasks selected by `task=[...]`."""
    return {name: task.instruction for name, task in cfg.task.items()}


def data_splits(cfg: DictConfig):
    return build_splits(
        OmegaConf.to_container(cfg.data.sources, resolve=True),
        list(cfg.task),
        seed=cfg.data.split.seed,
        val=cfg.data.split.val,
        test=cfg.data.split.test,
    )


def configured_model(cfg: DictConfig, path: str | None = None):
    """The configured model (or the checkpoint at `path`) and its processor. A stage's run
    folder stands for its checkpoint (`init_from=<run>/sft` = `<run>/sft/checkpoint`)."""
    m = cfg.model
    spec = OmegaConf.to_container(m.spec, resolve=True) if m.spec else None
    path = path or cfg.init_from or m.path
    if path and (Path(path) / CHECKPOINT / "config.json").is_file():
        path = str(Path(path) / CHECKPOINT)
    resolved = resolve_model_path(m.name, path,
                                  str(Path(cfg.paths.cache) / "models"), spec,
                                  perception_settings(cfg))  # fmt: skip
    model, processor = load_model(
        resolved, dtype=m.dtype, attn_implementation=m.attn_implementation,
        gradient_checkpointing=m.gradient_checkpointing, min_pixels=m.min_pixels,
        max_pixels=m.max_pixels,
    )  # fmt: skip
    return model.to(device_of(cfg.trainer)), processor


def trainable(cfg: DictConfig, model):
    """Apply the training-time model choices: frozen vision tower, LoRA adapter."""
    set_vision_trainable(model, not cfg.model.freeze_vision)
    if cfg.lora.enabled:
        model = apply_lora(model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                           target_modules=cfg.lora.target_modules)  # fmt: skip
    log.info("parameters: %s", count_parameters(model))
    return model


def lightning_trainer(cfg: DictConfig, **kwargs) -> L.Trainer:
    """A Lightning Trainer from the `trainer` group, the `logger` group and stage kwargs. It
    saves <run dir>/checkpoints/last.ckpt (overwritten, never last-v1.ckpt) every
    `trainer.checkpoint_every_n_steps` optimiser steps and on an interrupt (SIGTERM, SLURM
    preemption or timeout)."""
    t = cfg.trainer
    checkpoint = ModelCheckpoint(dirpath=output_dir(cfg) / "checkpoints", save_top_k=0,
                                 save_last=True, save_on_exception=True,
                                 every_n_train_steps=t.checkpoint_every_n_steps,
                                 enable_version_counter=False)  # fmt: skip
    precision = resolve_precision(t.precision, t.accelerator)
    log.info("%s: precision %s (trainer.precision=%s; %s)", cfg.stage.name, precision,
             t.precision, describe_device(t.accelerator))  # fmt: skip
    lines = [] if interactive() else [ProgressLines(cfg.stage.name)]
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        precision=precision, num_nodes=t.num_nodes, logger=instantiate(cfg.logger),
        default_root_dir=str(output_dir(cfg)), callbacks=[checkpoint, *lines],
        enable_progress_bar=interactive(), **kwargs,
    )  # fmt: skip


def resume_path(trainer: L.Trainer) -> str | None:
    """The last.ckpt an earlier run left in this run dir (a requeued SLURM job, a rerun with
    more steps) for `fit(ckpt_path=...)`; None starts afresh."""
    last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
    return str(last) if last.exists() else None  # a folder under DeepSpeed


def finish_logging(trainer: L.Trainer) -> None:
    """Close wandb's run so the next job of a multirun logs into its own."""
    if type(trainer.logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()


def first_per_task(records: list[Record], limit: int | None) -> list[Record]:
    if limit is None:
        return records
    seen: dict[str, int] = {}
    kept = []
    for r in records:
        seen[r.task] = seen.get(r.task, 0) + 1
        if seen[r.task] <= limit:
            kept.append(r)
    return kept


def log_metrics(cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Send metrics to the configured Lightning logger and close it (wandb: one run per job)."""
    logger = instantiate(cfg.logger)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    logger.log_metrics(metrics)
    logger.finalize("success")
    if type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()


def eval_stage(cfg: DictConfig) -> dict:
    """Generate on the evaluation split and report SRCC/PLCC/KRCC/RMSE per task and dataset."""
    out = output_dir(cfg)
    records = [from_row(r) for r in data_splits(cfg)[cfg.stage.split]]
    records = first_per_task(records, cfg.stage.max_per_task)
    model, processor = configured_model(cfg)
    readouts = list(cfg.stage.readouts)
    rows, skipped = predict(
        model, processor, records,
        instructions=instructions_of(cfg), system_prompt=cfg.system_prompt,
        generation=OmegaConf.to_container(cfg.decoding, resolve=True),
        readouts=readouts, batch_size=cfg.stage.batch_size,
    )  # fmt: skip
    metrics = write_report(rows, skipped, out, readouts)
    print_tables(metrics)
    if skipped:
        log.warning("%d records skipped (unreadable images); see metrics.json", len(skipped))
    log_metrics(cfg, flat_metrics(metrics, prefix=cfg.stage.split))
    log.info("eval report written to %s", out)
    return metrics


def grpo_settings(cfg: DictConfig, total_steps: int) -> GRPOSettings:
    a = cfg.algo
    return GRPOSettings(
        group_size=a.group_size, micro_batch_prompts=a.micro_batch_prompts,
        num_iterations=a.num_iterations, lr=a.lr, betas=tuple(a.betas),
        weight_decay=a.weight_decay, warmup_ratio=a.warmup_ratio, min_lr_ratio=a.min_lr_ratio,
        grad_clip=a.grad_clip, eps_low=a.eps_low, eps_high=a.eps_high, ratio_max=a.ratio_max,
        aggregation=a.aggregation, advantage_std=a.advantage_std, kl_type=a.kl.type,
        kl_beta=a.kl.beta, filter_enabled=a.filter.enabled, filter_min_std=a.filter.min_std,
        filter_refill=a.filter.refill, filter_max_tries=a.filter.max_tries,
        gate_enabled=a.gate.enabled, gate_rho=a.gate.rho, gate_mode=a.gate.mode,
        generation=OmegaConf.to_container(a.generation, resolve=True),
        val_generation=OmegaConf.to_container(cfg.decoding, resolve=True),
        total_steps=total_steps, sample_log_every=cfg.stage.sample_log_every,
    )  # fmt: skip


def _as_list(batch: list) -> list:
    return batch


def grpo_stage(cfg: DictConfig) -> dict:
    """GRPO from `init_from` (or the configured model); saves a checkpoint to <run>/checkpoint."""
    out = output_dir(cfg)
    splits = data_splits(cfg)
    train = [from_row(r) for r in splits["train"]]
    val = first_per_task([from_row(r) for r in splits["val"]], cfg.stage.val_per_task)
    policy, processor = configured_model(cfg)
    policy = trainable(cfg, policy)
    ref = None
    if cfg.algo.kl.type != "none" and cfg.algo.kl.beta > 0 and not cfg.lora.enabled:
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
    reward = REWARDS[cfg.reward.name]
    params = OmegaConf.to_container(cfg.reward.params, resolve=True)
    prompts = cfg.algo.prompts_per_step
    trainer = lightning_trainer(cfg, max_epochs=cfg.stage.episodes, num_sanity_val_steps=0,
                                log_every_n_steps=1)  # fmt: skip
    # Each rank takes `prompts` prompts per step, so the schedule counts steps per rank;
    # the world size is known once the Trainer exists (set before `fit` reads them).
    steps_per_episode = math.ceil(len(train) / (prompts * trainer.world_size))
    total = steps_per_episode * cfg.stage.episodes
    if cfg.stage.max_steps > 0:
        total = min(total, cfg.stage.max_steps)
    trainer.fit_loop.epoch_loop.max_steps = total
    trainer.val_check_interval = min(cfg.stage.val_check_interval, steps_per_episode)
    trainer.check_val_every_n_epoch = None
    samples = out / "grpo_samples.jsonl"

    def sink(rows: list[dict]) -> None:
        with samples.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    module = GRPOModule(
        policy, processor, reward_fn=functools.partial(reward, **params),
        instructions=instructions_of(cfg), system_prompt=cfg.system_prompt,
        settings=grpo_settings(cfg, total), ref_model=ref, refill_records=train,
        samples_sink=sink,
    )  # fmt: skip
    loader = DataLoader(train, batch_size=prompts, shuffle=True, collate_fn=_as_list,
                        drop_last=len(train) >= prompts,
                        generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
    val_loader = DataLoader(val, batch_size=16, collate_fn=_as_list)
    start = time.time()
    trainer.fit(module, loader, val_loader, ckpt_path=resume_path(trainer))
    wall = time.time() - start
    save_checkpoint(module.model, processor, out / CHECKPOINT)
    summary = {
        "steps": trainer.global_step, "wall_s": wall, "skipped_images": module.skipped_images,
        "completions": trainer.global_step * prompts * cfg.algo.group_size * trainer.world_size,
        "device": trainer_device(trainer),
        **{k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    (out / CHECKPOINT / "train_summary.json").write_text(json.dumps(summary, indent=2))
    finish_logging(trainer)
    log.info("GRPO: %d steps in %.0f s; checkpoint %s", trainer.global_step, wall, out / CHECKPOINT)
    return summary


def sft_stage(cfg: DictConfig) -> dict:
    """SFT on the CoT rows of `stage.cot_path` (train; val for loss and SRCC/PLCC);
    saves a checkpoint and train_summary.json to <run>/checkpoint."""
    s = cfg.stage
    rows = read_cot(s.cot_path)
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    if not train:
        raise ValueError(f"{s.cot_path}: no rows of split 'train'")
    model, processor = configured_model(cfg)
    collate = functools.partial(collate_sft, processor, instructions=instructions_of(cfg),
                                system_prompt=cfg.system_prompt, keep_plan=s.keep_plan,
                                max_length=s.max_length, cache={})  # fmt: skip
    loader = DataLoader(train, batch_size=s.micro_batch, shuffle=True, collate_fn=collate,
                        num_workers=s.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
    val_loader = DataLoader(val, batch_size=s.micro_batch, collate_fn=collate,
                            num_workers=s.num_workers) if val else None  # fmt: skip
    module = SFTModule(
        trainable(cfg, model), processor, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay,
        warmup_ratio=s.warmup_ratio, min_lr_ratio=s.min_lr_ratio,
        val_records=first_per_task([from_row(r) for r in val], s.val.max_per_task),
        instructions=instructions_of(cfg), system_prompt=cfg.system_prompt,
        generation=OmegaConf.to_container(cfg.decoding, resolve=True),
        readouts=list(s.val.readouts), val_batch_size=s.val.batch_size,
    )  # fmt: skip
    trainer = lightning_trainer(cfg, max_epochs=s.epochs, max_steps=s.max_steps,
                                gradient_clip_val=s.grad_clip, num_sanity_val_steps=0,
                                log_every_n_steps=s.log_every_n_steps)  # fmt: skip
    # Accumulation needs the world size, which only the Trainer resolves (devices "auto",
    # nodes); both attributes are read when `fit` starts.
    trainer.accumulate_grad_batches = accumulation_steps(s.global_batch, s.micro_batch,
                                                         trainer.world_size)  # fmt: skip
    if s.val.every_n_steps:
        trainer.val_check_interval = s.val.every_n_steps * trainer.accumulate_grad_batches
        trainer.check_val_every_n_epoch = None
    trainer.logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    summary = train_sft(module, trainer, loader, val_loader, output_dir(cfg) / CHECKPOINT,
                        ckpt_path=resume_path(trainer))  # fmt: skip
    finish_logging(trainer)
    final = {k: v for k, v in summary["final"].items() if k == "val/loss" or k.endswith("all/srcc")}
    log.info("SFT: %d steps, %.1f samples/s; final %s", summary["steps"],
             summary["samples_per_s"], final)  # fmt: skip
    return summary


def scorer_of(cfg: DictConfig) -> QualityScorer:
    """A scorer over `stage.checkpoint` (or the configured model), prompts and decoding."""
    model, processor = configured_model(cfg, cfg.stage.checkpoint)
    return QualityScorer(model, processor, instructions=instructions_of(cfg),
                         system_prompt=cfg.system_prompt,
                         generation=OmegaConf.to_container(cfg.decoding, resolve=True),
                         readout=cfg.stage.readout)  # fmt: skip


def score_stage(cfg: DictConfig) -> dict:
    """Score `stage.images` for `stage.tasks`: scores.csv and a per-task summary."""
    s = cfg.stage
    images, prompts = collect_images(s.images, prompt=s.prompt or "")
    results = flatten(scorer_of(cfg).score(
        images, task=list(s.tasks or cfg.task), prompts=prompts, samples=s.samples,
        batch_size=s.batch_size, progress=True,
    ))  # fmt: skip
    path = write_scores_csv(results, output_dir(cfg) / "scores.csv")
    summary = score_summary(results)
    print(format_summary(summary))
    log.info("%d scores written to %s", len(results), path)
    return summary


def select_stage(cfg: DictConfig) -> dict:
    """Best-of-N over `stage.candidates`: ranking.csv and the winners in <run>/best/."""
    s = cfg.stage
    candidates = collect_candidates(s.candidates)
    weights = OmegaConf.to_container(s.weights, resolve=True)
    active_tasks(weights)  # bad weights fail before the model loads
    rows = select(scorer_of(cfg), candidates, weights, samples=s.samples,
                  batch_size=s.batch_size, progress=True)  # fmt: skip
    path = write_selection(rows, output_dir(cfg), link=s.link)
    summary = selection_summary(rows)
    print(f"select: {summary['winners']}/{summary['groups']} groups have a winner; mean "
          f"combined score {summary['mean_winners']:.3f} (winners) vs {summary['mean_all']:.3f} "
          f"(all); {summary['errors']} candidates with errors")  # fmt: skip
    log.info("ranking written to %s", path)
    return summary


def cot_stage(cfg: DictConfig) -> dict:
    """Rejection-sampled CoT data from the `teacher` group (cot/stage.py): cot.jsonl and
    cot_stats.json in the run dir, for the splits `stage.splits`."""
    s = cfg.stage
    splits = data_splits(cfg)
    records = [rec for name in s.splits
               for rec in first_per_task([from_row(r) for r in splits[name]], s.max_per_task)]
    options = OmegaConf.to_container(cfg.teacher, resolve=True)
    name = options.pop("name")
    if name == "hf":
        options["model"], options["processor"] = configured_model(cfg, options.pop("model_path"))
    teacher = make_teacher(name, options, system_prompt=s.teacher_prompt,
                           instructions=instructions_of(cfg))  # fmt: skip
    return write_cot(records, teacher, output_dir(cfg), k=s.k, epsilon=s.epsilon,
                     rule=s.selection, batch_size=s.batch_size, seed=cfg.seed)  # fmt: skip


def perception_settings(cfg: DictConfig) -> dict | None:
    """The tiny model's perception-pretraining settings (model.perception), None if unset."""
    p = cfg.model.get("perception")
    return OmegaConf.to_container(p, resolve=True) if p else None


def pretrain_stage(cfg: DictConfig) -> dict:
    """Perception pretraining of the tiny model's vision tower (models/perception.py): build
    its cache or reuse it, then write and print its held-out report in the run dir."""
    m = cfg.model
    if m.spec is None or not m.get("perception"):
        raise ValueError("stage=pretrain needs the tiny model with model.perception set")
    path = resolve_model_path(m.name, None, str(Path(cfg.paths.cache) / "models"),
                              OmegaConf.to_container(m.spec, resolve=True),
                              perception_settings(cfg))  # fmt: skip
    report = json.loads((Path(path) / PERCEPTION_REPORT).read_text())
    (output_dir(cfg) / PERCEPTION_REPORT).write_text(json.dumps(report, indent=2))
    print(format_perception_report(report))
    log.info("perception-pretrained model: %s", path)
    return report


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


def _step_config(
    cfg: DictConfig, folder: Path, key: str, algo: str | None, start: Path | None
) -> DictConfig:
    sub = copy.deepcopy(cfg)
    OmegaConf.set_struct(sub, False)
    sub.stage = cfg.stage[key]
    sub.paths.output_dir = str(folder)
    if algo:
        sub.algo = cfg.stage[algo]
    if start:
        sub.init_from = str(start / CHECKPOINT)
    return sub


def pipeline_stage(cfg: DictConfig) -> dict:
    """Every stage in one run folder, each step in <run>/<step>/; finished steps (done.json)
    are skipped unless listed in stage.redo, an interrupted one resumes from its last
    Lightning checkpoint. Ends with the SRCC/PLCC table per model."""
    run = Path(cfg.stage.run_dir) if cfg.stage.run_dir else output_dir(cfg)
    redo = set(cfg.stage.redo or ())
    summary: dict[str, dict] = {}
    for name, key, algo, start in PIPELINE:
        if name == "pretrain" and not perception_settings(cfg):
            continue  # the random tower (model.perception=null): nothing to pretrain
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
        result = STAGES[sub.stage.name](sub)
        summary[name] = {"wall_s": time.time() - t0, "result": json_safe(result)}
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


STAGES: dict[str, Callable[[DictConfig], dict]] = {
    "pipeline": pipeline_stage,
    "pretrain": pretrain_stage,
    "cot": cot_stage,
    "sft": sft_stage,
    "grpo": grpo_stage,
    "eval": eval_stage,
    "score": score_stage,
    "select": select_stage,
}


def run_stage(cfg: DictConfig) -> dict:
    name = cfg.stage.name
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {sorted(STAGES)}")
    hf_logging.disable_progress_bar()
    single_log_lines()
    seed_everything(cfg.seed, workers=True)
    metrics = STAGES[name](cfg)
    write_job_summary(cfg, metrics)
    return metrics


@rank_zero_only
def write_job_summary(cfg: DictConfig, metrics: dict) -> None:
    """<run dir>/job_summary.json: the job's overrides and its stage's metrics, the one file
    that every job of a sweep (multirun/<time>/<job num>/) leaves for a later collector."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    summary = {"stage": cfg.stage.name, "overrides": overrides, "metrics": json_safe(metrics)}
    text = json.dumps(summary, indent=2, default=str)  # default: stray tensors, paths
    (output_dir(cfg) / "job_summary.json").write_text(text)
