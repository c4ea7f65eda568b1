"""The GRPO module on the tiny model: deterministic steps, the filter and gate acting."""

import copy
import functools
import math

import lightning as L
import pytest
import torch

from omniquality_r.data.synthetic import generate_synthetic
from omniquality_r.modules.grpo import GRPOModule, GRPOSettings
from omniquality_r.modules.optim import warmup_cosine_schedule
from omniquality_r.rewards import RewardParts, gaussian_reward
from omniquality_r.settings import settings_from

INSTRUCTIONS = {"technical": "Rate.", "aesthetic": "Rate.", "alignment": 'Match "{prompt}"?'}


def distinct_chars_reward(completions, mos, group_ids, datasets):
    """A reward with spread on an untrained model: distinct characters of the completion."""
    acc = torch.tensor([len(set(t)) / 20 for t in completions])
    return RewardParts(torch.zeros_like(acc), acc)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("syn"), n_per_task=2)[:4]


def run_steps(tiny_model, records, reward_fn, steps=1, **settings):
    model, processor = tiny_model
    policy = copy.deepcopy(model).train()
    defaults = dict(group_size=4, micro_batch_prompts=1, kl={"type": "k3", "beta": 0.1},
                    generation={"do_sample": True, "temperature": 1.0, "top_k": 0,
                                "max_new_tokens": 10}, total_steps=steps)  # fmt: skip
    module = GRPOModule(
        policy, processor, reward_fn=reward_fn, instructions=INSTRUCTIONS, system_prompt="SYS",
        settings=settings_from(GRPOSettings, {**defaults, **settings}),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        scheduler=functools.partial(warmup_cosine_schedule, warmup_ratio=0.0),
        ref_model=copy.deepcopy(model).eval().requires_grad_(False),
    )
    trainer = L.Trainer(max_steps=steps, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    L.seed_everything(0)
    loader = torch.utils.data.DataLoader(records, batch_size=2, collate_fn=list)
    trainer.fit(module, loader)
    return module, trainer.callback_metrics


@pytest.mark.parametrize("kl_type", ["k1", "k3"])
def test_grpo_step_is_deterministic_and_updates_the_policy(tiny_model, records, kl_type):
    a, ma = run_steps(tiny_model, records, distinct_chars_reward, kl={"type": kl_type, "beta": 0.1})
    b, mb = run_steps(tiny_model, records, distinct_chars_reward, kl={"type": kl_type, "beta": 0.1})
    assert float(ma["train/loss/policy"]) == float(mb["train/loss/policy"])
    assert float(ma["train/reward/total_std"]) > 0
    before = dict(tiny_model[0].named_parameters())
    moved = [n for n, p in a.model.named_parameters() if not torch.equal(p, before[n])]
    assert moved and all(torch.equal(p, dict(b.model.named_parameters())[n])
                         for n, p in a.model.named_parameters())  # fmt: skip
    assert float(ma[f"train/kl/{kl_type}"]) >= 0 or kl_type == "k1"  # k1 may be negative


def test_std_filter_drops_collapsed_groups(tiny_model, records):
    # An untrained model never writes a parsable answer: every accuracy reward is 0.
    module, metrics = run_steps(tiny_model, records, gaussian_reward, filter={"enabled": True})
    assert float(metrics["train/filter/dropped_frac"]) == 1.0
    before = dict(tiny_model[0].named_parameters())
    assert all(torch.equal(p, before[n]) for n, p in module.model.named_parameters())


def test_entropy_gate_keeps_about_rho_of_the_tokens(tiny_model, records):
    _, metrics = run_steps(tiny_model, records, distinct_chars_reward,
                           gate={"enabled": True, "rho": 0.25})  # fmt: skip
    kept = float(metrics["train/gate/kept_frac"])
    assert 0.25 <= kept <= 0.25 + 1 / 10 + 1e-6  # ceil(rho * T) of T <= 10 valid tokens
    assert math.isfinite(float(metrics["train/entropy/mean"]))


def test_checkpoints_leave_out_the_frozen_reference_and_restore_it(tiny_model, records):
    module, _ = run_steps(tiny_model, records, distinct_chars_reward)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("ref_model.")
                                                for k in checkpoint["state_dict"])  # fmt: skip
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])  # strict: every key is back
