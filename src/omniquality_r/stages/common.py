"""What every stage builds from its config: run folder, data splits, model, Trainer, logger."""

from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ..console import ProgressLines, interactive
from ..data.build import build_splits
from ..data.records import Record
from ..models.loading import (
    apply_lora,
    count_parameters,
    load_model,
    resolve_model_path,
    set_vision_trainable,
)
from ..perception.build import ensure_perception
from ..precision import describe_device, resolve_precision, uses_cuda
from ..settings import ConfigError

log = logging.getLogger(__name__)


CHECKPOINT = "checkpoint"  # every training stage saves its Hugging Face folder as <run>/checkpoint


def run_id(folder: str) -> str:
    """A logger run id from the run folder (conf/logger/wandb.yaml `${run_id:...}`): a job
    requeued or rerun in the same folder continues its wandb run instead of opening another."""
    return hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]


def _hydra_job():
    return HydraConfig.get() if HydraConfig.initialized() else None


def run_name(stage: str) -> str:
    """A logger run's name (conf/config.yaml `run.name`): `<experiment>/<stage>`, "default"
    without an experiment; a multirun job adds its number, as its folder does (`.../3`; its
    overrides are in the logged config)."""
    hc = _hydra_job()
    name = f"{(hc and hc.runtime.choices.get('experiment')) or 'default'}/{stage}"
    return f"{name}/{hc.job.num}" if hc and hc.mode == RunMode.MULTIRUN else name


def run_group() -> str | None:
    """The runs' group (`run.group`): the sweep folder of a multirun, else the run folder
    (a pipeline's steps share it); None outside a Hydra job."""
    hc = _hydra_job()
    if hc is None:
        return None
    return str(hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.run.dir)


TAGGED_CHOICES = ("experiment", "data", "model", "algo", "reward")


def run_tags(extra, tasks) -> list[str]:
    """`run.tags` (extra) plus `<group>=<choice>` for the choices a researcher filters runs
    by (TAGGED_CHOICES) and `task=<name>` per selected task (the `task` node's keys)."""
    hc = _hydra_job()
    choices = hc.runtime.choices if hc else {}
    tags = [f"{g}={choices[g]}" for g in TAGGED_CHOICES if choices.get(g)]
    return [*map(str, extra or ()), *tags, *(f"task={t}" for t in tasks)]


for _name, _resolver in (("run_id", run_id), ("run_name", run_name), ("run_group", run_group),
                         ("run_tags", run_tags)):  # fmt: skip
    OmegaConf.register_new_resolver(_name, _resolver, replace=True)


def output_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_of(trainer: DictConfig) -> torch.device:
    return torch.device("cuda" if uses_cuda(trainer.accelerator) else "cpu")


def instructions_of(cfg: DictConfig) -> dict[str, str]:
    """Task name -> instruction, for the tasks selected by `task=[...]`."""
    return {name: task.instruction for name, task in cfg.task.items()}


def answer_generation(cfg: DictConfig) -> dict:
    """Generation settings of a stage that answers (eval, score, select): `decoding` for one
    answer per image, `stage.sampling` for stage.samples > 1 (inference.score_items). A
    sampling `decoding` that differs from `stage.sampling` is refused with several answers:
    it would be silently ignored."""
    decoding = OmegaConf.to_container(cfg.decoding, resolve=True)
    if cfg.stage.samples == 1:
        return decoding
    sampling = OmegaConf.to_container(cfg.stage.sampling, resolve=True)
    if decoding.get("do_sample") and decoding != sampling:
        raise ConfigError(
            f"stage.samples={cfg.stage.samples} draws its answers with stage.sampling "
            f"({sampling}), not with the sampling `decoding` ({decoding}); set "
            "stage.sampling.<key> instead of decoding.<key>")
    return sampling


def data_splits(cfg: DictConfig, data: DictConfig | None = None):
    """Train/val/test of the selected tasks from a `data` node (default cfg.data)."""
    data = cfg.data if data is None else data
    return build_splits(
        OmegaConf.to_container(data.sources, resolve=True),
        list(cfg.task),
        seed=data.split.seed,
        val=data.split.val,
        test=data.split.test,
    )


def perception_settings(cfg: DictConfig) -> dict | None:
    """The tiny model's perception-pretraining settings (model.perception), None if unset."""
    p = cfg.model.get("perception")
    return OmegaConf.to_container(p, resolve=True) if p else None


def tiny_model_path(cfg: DictConfig) -> str:
    """The tiny model built into the cache (models/tiny.py), with its perception-pretrained
    tower when model.perception is set: built once when missing (perception/build.py; parallel
    jobs and DDP ranks wait on its file lock, then load it)."""
    m = cfg.model
    spec = OmegaConf.to_container(m.spec, resolve=True) if m.spec else None
    base = resolve_model_path(m.name, None, str(Path(cfg.paths.cache) / "models"), spec)
    perception = perception_settings(cfg)
    return str(ensure_perception(base, perception, spec["image_size"])) if perception else base


def configured_model(cfg: DictConfig, path: str | None = None, on_device: bool = True):
    """The configured model (or the checkpoint at `path`) and its processor, on the trainer's
    device; `on_device=False` (training stages) leaves it on the CPU for Lightning to place
    on each rank's device (or shard). A stage's run folder stands for its checkpoint
    (`init_from=<run>/sft` = `<run>/sft/checkpoint`)."""
    m = cfg.model
    path = path or cfg.init_from or m.path
    if path and (Path(path) / CHECKPOINT / "config.json").is_file():
        path = str(Path(path) / CHECKPOINT)
    resolved = str(path) if path else tiny_model_path(cfg)
    model, processor = load_model(
        resolved, dtype=m.dtype, attn_implementation=m.attn_implementation,
        gradient_checkpointing=m.gradient_checkpointing, min_pixels=m.min_pixels,
        max_pixels=m.max_pixels,
    )  # fmt: skip
    return (model.to(device_of(cfg.trainer)) if on_device else model), processor


def trainable(cfg: DictConfig, model):
    """Apply the training-time model choices: frozen vision tower, LoRA adapter."""
    set_vision_trainable(model, not cfg.model.freeze_vision)
    if cfg.lora.enabled:
        model = apply_lora(model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                           target_modules=cfg.lora.target_modules)  # fmt: skip
    log.info("parameters: %s", count_parameters(model))
    return model


def trainer_node(cfg: DictConfig, engine_grad_clip: float | None = None) -> DictConfig:
    """cfg.trainer, with a DeepSpeed strategy's `config.gradient_clipping` set to
    `engine_grad_clip` when given: DeepSpeed clips inside its engine, where a module's manual
    clip_gradients does nothing (GRPO passes algo.grad_clip; SFT's Trainer gradient_clip_val
    reaches DeepSpeed through Lightning)."""
    node = cfg.trainer
    strategy = node.get("strategy")
    deepspeed = isinstance(strategy, DictConfig) and str(strategy.get("_target_", "")).endswith(
        "DeepSpeedStrategy")  # fmt: skip
    if engine_grad_clip is None or not deepspeed:
        return node
    node = copy.deepcopy(node)
    with open_dict(node):
        node.strategy.config.gradient_clipping = float(engine_grad_clip)
    return node


def lightning_trainer(cfg: DictConfig, engine_grad_clip: float | None = None,
                      **kwargs) -> L.Trainer:  # fmt: skip
    """The Lightning Trainer of the `trainer` group (`_target_`; its strategy may be a node
    too, e.g. DeepSpeed with a config dict; `engine_grad_clip`: trainer_node) with the
    `logger` and `callbacks` groups and the stage's kwargs (budget, clipping);
    `precision: auto` resolved per machine."""
    t = trainer_node(cfg, engine_grad_clip)
    precision = resolve_precision(t.precision, t.accelerator)
    log.info("%s: precision %s (trainer.precision=%s; %s)", cfg.stage.name, precision,
             t.precision, describe_device(t.accelerator))  # fmt: skip
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    lines = [] if interactive() else [ProgressLines(cfg.stage.name)]
    return instantiate(t, precision=precision, logger=stage_logger(cfg),
                       callbacks=[*callbacks, *lines], default_root_dir=str(output_dir(cfg)),
                       enable_progress_bar=interactive(), **kwargs)  # fmt: skip


def optimizer_factories(optim: DictConfig) -> dict:
    """An `optim` node (conf/optim) as the partial optimiser and scheduler its module calls
    (modules/optim.optimizer_with_schedule)."""
    return {"optimizer": instantiate(optim.optimizer, _convert_="all"),
            "scheduler": instantiate(optim.scheduler, _convert_="all")}  # fmt: skip


def resume_path(trainer: L.Trainer) -> str | None:
    """The last.ckpt an earlier run left in this run dir (a requeued SLURM job, a rerun with
    more steps) for `fit(ckpt_path=...)`; None starts afresh."""
    last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
    return str(last) if last.exists() else None  # a folder under DeepSpeed


def finish_logging(logger) -> None:
    """Close wandb's run so the next job of a multirun logs into its own."""
    if type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()


SUBSET_SEED = 0  # the capped subsets' own seed: every model is scored on the same records


def sample_per_task(records: list[Record], limit: int | None) -> list[Record]:
    """At most `limit` records per task: a uniform random sample of the task's records (seed
    SUBSET_SEED, the same for every model and run), kept in their order. A split stored by
    content (KADID-10k: by reference image, distortion, level) is then covered without bias,
    where its first records would be one image and evenly spaced ones one level. All of them
    when `limit` is None or at least their number."""
    if limit is None:
        return records
    positions: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        positions.setdefault(r.task, []).append(i)
    rng = np.random.default_rng(SUBSET_SEED)
    kept = set()
    for where in positions.values():
        picks = where if len(where) <= limit else rng.choice(where, limit, replace=False)
        kept.update(int(i) for i in picks)
    return [r for i, r in enumerate(records) if i in kept]


def stage_logger(cfg: DictConfig):
    """The `logger` group's logger with the stage's resolved config as its hyperparameters."""
    logger = instantiate(cfg.logger)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def scalars(result: dict, prefix: str) -> dict[str, float]:
    """The numeric leaves of a nested result as `prefix/key/subkey` -> float, for loggers."""
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update(scalars(value, f"{prefix}/{key}"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}/{key}"] = float(value)
    return flat


def log_metrics(cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Send a stage's config and metrics to the configured logger and close it (wandb: one
    run per stage)."""
    logger = stage_logger(cfg)
    logger.log_metrics(metrics)
    logger.finalize("success")
    finish_logging(logger)
