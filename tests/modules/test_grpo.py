"""The GRPO module on the tiny model: deterministic steps, the filter and gate acting,
several optimiser steps per rollout, the rollout budget and exact resume."""

import copy
import functools
import json
import math
import os
import signal

import lightning as L
import pytest
import torch

from omniquality_r.data.batches import EpochBatches
from omniquality_r.data.synthetic import generate_synthetic
from omniquality_r.modules import grpo as grpo_impl
from omniquality_r.modules.checkpoint import LastCheckpoint
from omniquality_r.modules.grpo import GRPOModule, GRPOSettings, SampleLog
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


def grpo_module(tiny_model, reward_fn, *, lr=1e-3, ref_noise=0.0, samples=None, **settings):
    """A GRPO module on a copy of the tiny model: 2 prompts x G=4 per rollout, 10 new tokens."""
    model, processor = tiny_model
    defaults = dict(group_size=4, prompts_per_step=2, micro_batch_prompts=1,
                    kl={"type": "k3", "beta": 0.1},
                    generation={"do_sample": True, "temperature": 1.0, "top_k": 0,
                                "max_new_tokens": 10})  # fmt: skip
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(ref_noise * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return GRPOModule(
        copy.deepcopy(model).train(), processor, reward_fn=reward_fn, instructions=INSTRUCTIONS,
        system_prompt="SYS", settings=settings_from(GRPOSettings, {**defaults, **settings}),
        optimizer=functools.partial(torch.optim.AdamW, lr=lr),
        scheduler=functools.partial(warmup_cosine_schedule, warmup_ratio=0.0),
        ref_model=ref, samples=samples,
    )  # fmt: skip


def fit(module, records, *, epochs=1, callbacks=(), ckpt_path=None, root=None):
    """Lightning fit over EpochBatches of the records, as stage=grpo does."""
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=bool(callbacks),
                        callbacks=list(callbacks), enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root)  # fmt: skip
    L.seed_everything(0)
    loader = EpochBatches(records, module.s.prompts_per_step, seed=0,
                          position=lambda: module.rollouts)  # fmt: skip
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer


def run_steps(tiny_model, records, reward_fn, steps=1, **settings):
    module = grpo_module(tiny_model, reward_fn, total_steps=steps, max_rollouts=steps, **settings)
    trainer = fit(module, records)
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


class PolicyLossSpy:
    """Records the stats of every real policy_loss call (one per micro-batch)."""

    def __init__(self, monkeypatch):
        self.calls: list[dict] = []
        real = grpo_impl.policy_loss

        def spy(*args, **kwargs):
            loss, stats = real(*args, **kwargs)
            self.calls.append({k: float(v) for k, v in stats.items()})
            return loss, stats

        monkeypatch.setattr(grpo_impl, "policy_loss", spy)


@pytest.mark.parametrize("settings", [{"train_batch_size": 4}, {"num_iterations": 2}])
def test_later_mini_batches_see_a_ratio_away_from_one_and_log_the_clip(
    tiny_model, records, monkeypatch, settings
):
    spy = PolicyLossSpy(monkeypatch)
    module = grpo_module(tiny_model, distinct_chars_reward, lr=3e-2, total_steps=2,
                         **settings)  # fmt: skip
    trainer = fit(module, records[:2])
    # 2 groups x 4: one group per step (train batch 4: 2 micro-batches), or the whole rollout
    # twice (4 micro-batches)
    assert trainer.global_step == 2 and module.rollouts == 1
    half = len(spy.calls) // 2
    first, later = spy.calls[:half], spy.calls[half:]
    assert all(c["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and c["clip_frac"] == 0
               for c in first)  # fmt: skip
    assert any(abs(c["ratio_mean"] - 1) > 1e-3 for c in later)
    assert any(c["clip_frac"] > 0 for c in later)
    logged = trainer.callback_metrics
    assert float(logged["train/policy/clip_frac"]) > 0
    assert float(logged["train/optimizer_step"]) == 2 and float(logged["train/rollout"]) == 1


def test_the_run_takes_the_configured_rollouts_over_episodes(tiny_model, records):
    # 4 prompts, 2 per rollout: 2 rollouts per episode; 5 rollouts stop inside episode 3
    module = grpo_module(tiny_model, distinct_chars_reward, train_batch_size=4, total_steps=10,
                         max_rollouts=5)  # fmt: skip
    trainer = fit(module, records, epochs=4)
    assert module.rollouts == 5 and trainer.global_step == 10


def test_k1_penalty_changes_the_update(tiny_model, records):
    def weights(beta):
        module = grpo_module(tiny_model, distinct_chars_reward, ref_noise=0.05,
                             kl={"type": "k1", "beta": beta})  # fmt: skip
        fit(module, records[:2])
        return torch.cat([p.detach().flatten() for p in module.model.parameters()])

    plain, penalised = weights(0.0), weights(1.0)
    assert (plain - penalised).abs().max() > 1e-6


class Trace(L.Callback):
    """Per-rollout policy loss; SIGTERM to this process after rollout `kill_at`."""

    def __init__(self, kill_at=None):
        self.losses: dict[int, float] = {}
        self.kill_at = kill_at

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses[module.rollouts] = float(trainer.callback_metrics["train/loss/policy"])
        if module.rollouts == self.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_killed_mid_episode_resumes_exactly(tiny_model, records, tmp_path):
    """SIGTERM after rollout 3 (the first of episode 2), resume from last.ckpt: the same
    per-rollout losses, final weights and samples log as an uninterrupted run."""
    settings = dict(train_batch_size=4, total_steps=10, max_rollouts=5, sample_log_every=1,
                    kl={"type": "k1", "beta": 0.1}, filter={"enabled": True, "refill": True},
                    gate={"enabled": True, "mode": "batch"})  # fmt: skip

    def run(folder, kill_at=None, resume=False):
        folder.mkdir(exist_ok=True)
        module = grpo_module(tiny_model, distinct_chars_reward, **settings,
                             samples=SampleLog(folder / "samples.jsonl"))  # fmt: skip
        trace = Trace(kill_at)
        ckpt = LastCheckpoint(dirpath=folder / "ckpt", save_top_k=0, save_last=True,
                              save_on_exception=True, every_n_train_steps=2,
                              enable_version_counter=False)  # fmt: skip
        last = folder / "ckpt" / "last.ckpt"
        fit(module, records, epochs=3, callbacks=[ckpt, trace], root=folder,
            ckpt_path=str(last) if resume else None)  # fmt: skip
        return module, trace.losses

    whole, losses = run(tmp_path / "a")
    with pytest.raises(SystemExit):
        run(tmp_path / "b", kill_at=3)
    resumed, after = run(tmp_path / "b", resume=True)
    assert sorted(losses) == [1, 2, 3, 4, 5] and sorted(after) == [4, 5]
    for r in (4, 5):
        assert after[r] == pytest.approx(losses[r], abs=1e-6)
    for (name, p), q in zip(whole.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)
    rows = [json.loads(x) for x in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert (tmp_path / "a" / "samples.jsonl").read_text() == (
        tmp_path / "b" / "samples.jsonl").read_text()
    assert [r["rollout"] for r in rows] == sorted(r["rollout"] for r in rows)
