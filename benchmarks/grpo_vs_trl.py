"""One GRPO step of this project's loop (modules/grpo.py) against TRL's GRPOTrainer, side by
side in one process on the same model, prompts, images and settings.

    python benchmarks/grpo_vs_trl.py [--checkpoint <run>/sft/checkpoint] [--steps 5]

Both: 4 prompts x G = 8 completions of exactly 64 new tokens (min_new_tokens = max), sampling
at temperature 1, one optimiser step per rollout (AdamW), KL beta 0.001 as TRL's k3 loss term
against a reference copy, no filter or gate, the same reward (distinct characters of the
completion), fp32 on the CPU, no gradient checkpointing (TRL's GRPOConfig turns it on by
default, which also turns the KV cache off in its generation). Median seconds per step over
`steps` timed steps after one warm-up step each, and their ratio. Default model: the tiny
model, untrained (the forced length makes the work independent of the weights).
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import TrainerCallback

from omniquality_r.data.batches import EpochBatches
from omniquality_r.data.records import load_image
from omniquality_r.data.synthetic import generate_synthetic
from omniquality_r.models.loading import load_model
from omniquality_r.models.tiny import build_tiny
from omniquality_r.modules.grpo import GRPOModule, GRPOSettings
from omniquality_r.modules.optim import warmup_cosine_schedule
from omniquality_r.prompts import build_messages
from omniquality_r.rewards import RewardParts
from omniquality_r.settings import settings_from

ROOT = Path(__file__).resolve().parents[1]
P, G, NEW_TOKENS, BETA, LR = 4, 8, 64, 0.001, 1e-6


def distinct_chars(text: str) -> float:
    return len(set(text)) / 20


def ours_reward(completions, mos, group_ids, datasets):
    acc = torch.tensor([distinct_chars(t) for t in completions])
    return RewardParts(torch.zeros_like(acc), acc)


def trl_reward(prompts, completions, **_):
    return [distinct_chars(c if isinstance(c, str) else c[0]["content"]) for c in completions]


class StepTimes:
    """Wall seconds of each training step (Lightning batches or HF Trainer steps)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def start(self, *_, **__):
        self._start = time.perf_counter()

    def stop(self, *_, **__):
        self.times.append(time.perf_counter() - self._start)


def run_ours(model, processor, records, instructions, system, steps: int) -> list[float]:
    settings = settings_from(GRPOSettings, {
        "group_size": G, "prompts_per_step": P, "train_batch_size": P * G,
        "micro_batch_prompts": P, "kl": {"type": "k3", "beta": BETA},
        "generation": {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
                       "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS},
        "total_steps": steps + 1, "max_rollouts": steps + 1,
    })  # fmt: skip
    module = GRPOModule(
        copy.deepcopy(model).train(), processor, reward_fn=ours_reward,
        instructions=instructions, system_prompt=system, settings=settings,
        optimizer=functools.partial(torch.optim.AdamW, lr=LR, betas=(0.9, 0.999)),
        scheduler=functools.partial(warmup_cosine_schedule, warmup_ratio=0.0, min_lr_ratio=1.0),
        ref_model=copy.deepcopy(model).eval().requires_grad_(False),
    )  # fmt: skip
    times = StepTimes()

    class Timer(L.Callback):
        on_train_batch_start, on_train_batch_end = times.start, times.stop

    trainer = L.Trainer(accelerator="cpu", max_epochs=steps + 1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Timer()])  # fmt: skip
    loader = EpochBatches(records, P, seed=0, position=lambda: module.rollouts)
    trainer.fit(module, loader)
    return times.times[1:]


def run_trl(model, processor, records, instructions, system, steps: int, out: Path) -> list[float]:
    from trl import GRPOConfig, GRPOTrainer

    rows = [{"prompt": build_messages(r.task, instructions, system, r.prompt),
             "image": load_image(r.image)} for r in records]  # fmt: skip
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=P * G, num_generations=G,
        max_completion_length=NEW_TOKENS, generation_kwargs={"min_new_tokens": NEW_TOKENS},
        temperature=1.0, top_p=1.0, top_k=0, beta=BETA, learning_rate=LR,
        lr_scheduler_type="constant", max_steps=steps + 1, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, bf16=False, seed=0, num_iterations=1,
        steps_per_generation=1, dataloader_num_workers=0,
        gradient_checkpointing=False,  # TRL's default is True; the tiny model trains without
    )  # fmt: skip
    times = StepTimes()

    class Timer(TrainerCallback):
        on_step_begin, on_step_end = times.start, times.stop

    trainer = GRPOTrainer(model=copy.deepcopy(model).train(), processing_class=processor,
                          args=args, train_dataset=Dataset.from_list(rows),
                          reward_funcs=trl_reward, callbacks=[Timer()])  # fmt: skip
    trainer.train()
    return times.times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a model folder (default: tiny)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    conf = OmegaConf.load(ROOT / "conf" / "config.yaml")
    instructions = {t: OmegaConf.load(ROOT / "conf" / "task" / f"{t}.yaml").instruction
                    for t in ("technical", "aesthetic", "alignment")}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = args.checkpoint or build_tiny(tmp / "models", OmegaConf.to_container(
            OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml").spec))  # fmt: skip
        model, processor = load_model(str(path))
        records = generate_synthetic(tmp / "syn", n_per_task=4)[: P * (args.steps + 1)]
        ours = run_ours(model, processor, records, instructions, conf.system_prompt, args.steps)
        trl = run_trl(model, processor, records, instructions, conf.system_prompt, args.steps,
                      tmp / "trl")  # fmt: skip
    cpu = torch.backends.cpu.get_cpu_capability()
    print(f"CPU capability {cpu}, {torch.get_num_threads()} threads; {P} prompts x G={G}, "
          f"{NEW_TOKENS} new tokens, KL {BETA} (k3, reference copy), {args.steps} timed steps")
    print("| loop | median s/step | steps |\n|---|---|---|")
    print(f"| omniquality_r (modules/grpo.py) | {statistics.median(ours):.2f} | {len(ours)} |")
    print(f"| TRL GRPOTrainer | {statistics.median(trl):.2f} | {len(trl)} |")
    print(f"ratio ours / TRL: {statistics.median(ours) / statistics.median(trl):.2f}x")


if __name__ == "__main__":
    main()
