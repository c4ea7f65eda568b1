"""`run.py` (its config, `run_stage`) with test hooks, to compare trainer=ddp with one process.
Lightning starts the other DDP ranks by re-running this file, so every rank has the hooks:

- every rank appends {step, loss} of each SFT micro-batch / GRPO prompt group to
  <run dir>/losses.rank<r>.jsonl;
- GRPO samples each prompt's completions from its own seed (record id, step), so the
  rollout of a prompt does not depend on the rank or batch it lands in;
- reward `digit_share` (share of digits in the completion) has spread on an untrained model,
  where the real rewards are all 0 and GRPO's loss would be trivially 0;
- with $FILTERED_IDS (comma-separated record ids) set, those prompts get one accuracy
  reward for all their completions, so the STD filter drops them, and the others
  digit_share + 0.1 x the completion's index in its group, so it keeps them.
"""

import json
import os
import zlib
from pathlib import Path

import hydra
import torch

from omniquality_r.modules.grpo import GRPOModule, _concat_rollouts
from omniquality_r.modules.sft import SFTModule
from omniquality_r.rewards import REWARDS, RewardParts
from omniquality_r.stages import run_stage

CONF = Path(__file__).resolve().parents[2] / "conf"
FILTERED = set(filter(None, os.environ.get("FILTERED_IDS", "").split(",")))


def record(module, loss: torch.Tensor) -> None:
    path = Path(module.trainer.default_root_dir) / f"losses.rank{module.global_rank}.jsonl"
    with path.open("a") as f:
        f.write(json.dumps({"step": module.global_step, "loss": float(loss)}) + "\n")


def sft_step(self, batch, batch_idx):
    loss = sft_training_step(self, batch, batch_idx)
    record(self, loss)
    return loss


def grpo_micro_loss(self, ro, rows, adv):
    loss, stats = grpo_micro_loss_base(self, ro, rows, adv)
    record(self, loss)
    return loss, stats


def seeded_rollout(self, records):
    parts = []
    for rec in records:
        torch.manual_seed(zlib.crc32(f"{rec.id}/{self.global_step}".encode()))
        ro = grpo_rollout(self, [rec])
        if ro is not None and FILTERED:
            acc = ro.rewards.accuracy
            acc = (torch.full_like(acc, 0.5) if rec.id in FILTERED
                   else acc + 0.1 * torch.arange(len(acc)))  # fmt: skip
            ro.rewards = RewardParts(ro.rewards.format, acc)
        if ro is not None:
            parts.append(ro)
    return _concat_rollouts(parts, self.processor.tokenizer.pad_token_id) if parts else None


def digit_share(completions, mos, group_ids, datasets, **_):
    acc = torch.tensor([sum(c.isdigit() for c in t) / max(len(t), 1) for t in completions])
    return RewardParts(torch.zeros_like(acc), acc)


if __name__ == "__main__":
    sft_training_step, SFTModule.training_step = SFTModule.training_step, sft_step
    grpo_micro_loss_base, GRPOModule._micro_loss = GRPOModule._micro_loss, grpo_micro_loss
    grpo_rollout, GRPOModule.rollout = GRPOModule.rollout, seeded_rollout
    REWARDS["digit_share"] = digit_share
    hydra.main(str(CONF), "config", version_base="1.3")(run_stage)()
