"""SFTModule on the tiny model: the loss falls, the frozen tower stays put, the LR follows
warmup + cosine to 0.1 x lr, and an SFT checkpoint reloads and scores identically."""

from __future__ import annotations

import functools
import json
import math
import os
import signal
from dataclasses import asdict

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from omniquality_r.data.batches import EpochBatches
from omniquality_r.data.collate import collate_sft
from omniquality_r.data.records import from_row
from omniquality_r.data.synthetic import generate_synthetic
from omniquality_r.eval.evaluate import predict
from omniquality_r.models.loading import (
    apply_lora,
    load_model,
    set_vision_trainable,
    vision_modules,
)
from omniquality_r.models.shared_prefix import common_prefix_length
from omniquality_r.modules.checkpoint import LastCheckpoint
from omniquality_r.modules.sft import (
    BATCH_INFO,
    SFTModule,
    accumulation_steps,
    repeat_per_task,
    sft_loss,
    train_sft,
)
from omniquality_r.settings import ConfigError

INSTRUCTIONS = {"technical": "Rate the quality.", "aesthetic": "Rate the beauty.",
                "alignment": 'Does it show "{prompt}"?'}  # fmt: skip
SYSTEM = "Think, then answer."
LR, STEPS, WARMUP_RATIO = 1e-3, 6, 0.3  # warmup w = ceil(0.3 * 6) = 2 steps
GENERATION = {"max_new_tokens": 16, "do_sample": False}


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    records = generate_synthetic(tmp_path_factory.mktemp("syn"), n_per_task=2)
    return [{**asdict(r), "split": "train", "plan": "", "reasoning": f"Judged on {r.task}.",
             "score": round(r.mos, 2)} for r in records]  # fmt: skip


class LRTrace(L.Callback):
    def __init__(self):
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def fit(model, processor, rows, out_dir, optim, *, steps=STEPS):
    """Train `steps` optimiser steps of micro-batch 4 over `rows` (one row per batch
    unreadable), save to `out_dir`; return the module, the LR trace and the summary."""
    collate = functools.partial(collate_sft, processor, instructions=INSTRUCTIONS,
                                system_prompt=SYSTEM)  # fmt: skip
    bad = {**rows[0], "id": "bad", "image": str(out_dir.parent / "missing.png")}
    train = [*rows[:3], bad] * steps
    module = SFTModule(model, processor, **optim(LR, WARMUP_RATIO), instructions=INSTRUCTIONS,
                       system_prompt=SYSTEM)  # fmt: skip
    trace = LRTrace()
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, callbacks=[trace],
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0)  # fmt: skip
    summary = train_sft(module, trainer, DataLoader(train, batch_size=4, collate_fn=collate),
                        None, out_dir)  # fmt: skip
    return module, trace.lrs, summary, collate


@pytest.fixture(scope="module")
def trained(tiny_path, rows, tmp_path_factory, adamw_cosine):
    model, processor = load_model(str(tiny_path))
    set_vision_trainable(model, False)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batch = collate_sft(processor, rows, instructions=INSTRUCTIONS, system_prompt=SYSTEM)
    with torch.no_grad():
        loss_before = float(SFTModule(model, processor, **adamw_cosine(LR))._loss(batch))
    out = tmp_path_factory.mktemp("run") / "sft"
    module, lrs, summary, _ = fit(model, processor, rows, out, adamw_cosine)
    return module, before, batch, loss_before, lrs, summary, out


def test_steps_reduce_the_loss_on_a_fixed_batch(trained):
    module, _, batch, loss_before, *_ = trained
    with torch.no_grad():
        loss_after = float(module._loss(batch))
    assert loss_after < 0.8 * loss_before


def test_frozen_vision_tower_is_unchanged_and_the_language_model_moves(trained):
    module, before, *_ = trained
    after = module.model.state_dict()
    visual = {f"model.visual.{k}" for k in vision_modules(module.model)[0].state_dict()}
    assert visual and all(torch.equal(before[k], after[k]) for k in visual)
    moved = [k for k in after if k not in visual and not torch.equal(before[k], after[k])]
    assert any("language_model" in k for k in moved) and "lm_head.weight" in moved


def test_lr_warms_up_then_decays_by_cosine_to_a_tenth(trained):
    *_, lrs, _, _ = trained
    module = trained[0]
    assert lrs[0] == pytest.approx(LR / 2) and lrs[1] == pytest.approx(LR)  # warmup end
    mid = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 1 / 4))  # step 3: (3 - w) / (T - w)
    assert lrs[3] == pytest.approx(LR * mid)
    assert module.optimizers().param_groups[0]["lr"] == pytest.approx(0.1 * LR)  # end


def test_unreadable_rows_are_counted_not_fatal_and_summary_is_written(trained):
    module, *_, summary, out = trained
    assert summary["steps"] == STEPS and summary["skipped"] == STEPS == len(module.skipped)
    assert summary["samples"] == 3 * STEPS and summary["epochs"] == 1.0
    assert summary["samples_per_s"] > 0
    assert json.loads((out / "train_summary.json").read_text())["steps"] == STEPS


def _logits_and_scores(model, processor, batch, records):
    inputs = {k: v for k, v in batch.items() if k not in ("skipped", "truncated", "labels")}
    with torch.no_grad():
        logits = model.eval()(**inputs).logits
    rows, _ = predict(model, processor, records, instructions=INSTRUCTIONS, system_prompt=SYSTEM,
                      generation=GENERATION, readouts=("greedy", "expectation"))  # fmt: skip
    return logits, [(r["response"], r["score_greedy"], r["score_expectation"]) for r in rows]


def test_an_sft_checkpoint_reloads_and_scores_identically(trained, rows):
    module, _, batch, *_, out = trained
    records = [from_row(r) for r in rows]
    logits, scores = _logits_and_scores(module.model, module.processor, batch, records)
    reloaded, processor = load_model(str(out))
    logits2, scores2 = _logits_and_scores(reloaded, processor, batch, records)
    assert torch.equal(logits, logits2)
    assert str(scores) == str(scores2)  # str: NaN == NaN


def test_a_lora_sft_checkpoint_saves_the_adapter_and_a_merged_model(tiny_path, rows, tmp_path,
                                                                    adamw_cosine):
    model, processor = load_model(str(tiny_path))
    model = apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules=".*language_model.*q_proj")
    module, _, _, collate = fit(model, processor, rows, tmp_path / "sft", adamw_cosine, steps=2)
    assert (tmp_path / "sft" / "adapter" / "adapter_config.json").is_file()
    batch = collate(rows)
    logits, _ = _logits_and_scores(module.model, processor, batch, [])
    merged, _ = load_model(str(tmp_path / "sft"))
    logits2, _ = _logits_and_scores(merged, processor, batch, [])
    assert torch.allclose(logits, logits2, atol=1e-4)


def test_repeat_per_task_repeats_the_named_tasks_rows_in_place():
    rows = [{"id": "a", "task": "technical"}, {"id": "b", "task": "alignment"},
            {"id": "c", "task": "aesthetic"}]  # fmt: skip
    assert [r["id"] for r in repeat_per_task(rows, {"alignment": 3})] == ["a", "b", "b", "b", "c"]
    assert repeat_per_task(rows, {}) == rows


@pytest.mark.parametrize("repeats, match", [({"alignmnet": 2}, "repeat_per_task.alignmnet: no CoT"),
                                            ({"alignment": 0}, "expected an integer >= 1"),
                                            ({"alignment": 1.5}, "expected an integer >= 1")])
def test_repeat_per_task_refuses_an_unknown_task_or_a_bad_count(repeats, match):
    with pytest.raises(ConfigError, match=match):
        repeat_per_task([{"id": "b", "task": "alignment"}], repeats)


def test_accumulation_reaches_the_global_batch():
    assert accumulation_steps(256, 4, 8) == 8 and accumulation_steps(16, 16, 1) == 1
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_steps(256, 3, 8)


def test_sft_loss_equals_the_models_own_loss_and_gradient(tiny_path, rows):
    """sft_loss (system prompt once per batch, output layer on labelled positions only) is
    Hugging Face's causal-LM loss over the full rows, value and gradient."""
    model, processor = load_model(str(tiny_path))
    model.eval()  # no dropout: both passes see the same function
    batch = collate_sft(processor, rows, instructions=INSTRUCTIONS, system_prompt=SYSTEM)
    inputs = {k: v for k, v in batch.items() if k not in BATCH_INFO}
    assert common_prefix_length(model, inputs["input_ids"], inputs["attention_mask"]) > 5
    ours = sft_loss(model, inputs)
    ours.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    theirs = model(**inputs).loss
    theirs.backward()
    assert torch.allclose(ours, theirs, atol=1e-5)
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[n], p.grad, atol=1e-5), n


def test_a_frozen_towers_features_are_computed_once_and_give_the_same_loss(tiny_path, rows,
                                                                           adamw_cosine):
    model, processor = load_model(str(tiny_path))
    set_vision_trainable(model, False)
    model.eval()
    module = SFTModule(model, processor, **adamw_cosine(LR))
    batch = collate_sft(processor, rows, instructions=INSTRUCTIONS, system_prompt=SYSTEM)
    with torch.no_grad():
        first = module._loss(batch)
        assert set(module.frozen_features) == set(batch["ids"])
        cached = dict(module.frozen_features)
        again = module._loss(batch)
        plain = sft_loss(model, {k: v for k, v in batch.items() if k not in BATCH_INFO})
    assert all(module.frozen_features[i] is cached[i] for i in cached)  # reused, not recomputed
    assert torch.allclose(first, plain, atol=1e-6) and torch.equal(first, again)
    set_vision_trainable(model, True)
    assert module._frozen_features(batch["ids"], batch) is None  # a training tower: no cache


def test_sft_loss_of_rows_that_share_no_prefix_is_still_the_models_loss(tiny_path, rows):
    model, processor = load_model(str(tiny_path))
    model.eval()
    batch = collate_sft(processor, rows[:2], instructions=INSTRUCTIONS, system_prompt=SYSTEM)
    inputs = {k: v for k, v in batch.items() if k not in BATCH_INFO}
    inputs["input_ids"][1, 0] = processor.tokenizer.pad_token_id  # the rows differ at once
    assert common_prefix_length(model, inputs["input_ids"], inputs["attention_mask"]) == 0
    with torch.no_grad():
        assert torch.allclose(sft_loss(model, inputs), model(**inputs).loss, atol=1e-5)


class LossTrace(L.Callback):
    """Per-batch training loss; SIGTERM to this process after batch `kill_at`."""

    def __init__(self, kill_at=None):
        self.losses: dict[int, float] = {}
        self.kill_at = kill_at

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses[module.batches] = float(outputs["loss"])
        if module.batches == self.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sft_killed_mid_epoch_resumes_in_order(tiny_path, rows, tmp_path, adamw_cosine):
    """6 rows, 3 batches per epoch, 2 epochs; SIGTERM after batch 4 (the first of epoch 2),
    resume from last.ckpt: the rest of epoch 2 comes in the uninterrupted run's order, with
    its losses and final weights."""
    def run(folder, kill_at=None, resume=False):
        model, processor = load_model(str(tiny_path))
        collate = functools.partial(collate_sft, processor, instructions=INSTRUCTIONS,
                                    system_prompt=SYSTEM)  # fmt: skip
        module = SFTModule(model, processor, **adamw_cosine(LR), instructions=INSTRUCTIONS,
                           system_prompt=SYSTEM)  # fmt: skip
        order = EpochBatches(list(range(len(rows))), 2, seed=0, position=lambda: module.batches)
        trace = LossTrace(kill_at)
        ckpt = LastCheckpoint(dirpath=folder / "ckpt", save_top_k=0, save_last=True,
                              save_on_exception=True, every_n_train_steps=1,
                              enable_version_counter=False)  # fmt: skip
        trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False,
                            callbacks=[ckpt, trace], enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=folder)  # fmt: skip
        L.seed_everything(0)
        loader = DataLoader(rows, batch_sampler=order, collate_fn=collate)
        trainer.fit(module, loader,
                    ckpt_path=str(folder / "ckpt" / "last.ckpt") if resume else None)  # fmt: skip
        return module, trace.losses

    whole, losses = run(tmp_path / "a")
    with pytest.raises(SystemExit):
        run(tmp_path / "b", kill_at=4)
    resumed, after = run(tmp_path / "b", resume=True)
    assert len(rows) == 6 and sorted(losses) == [1, 2, 3, 4, 5, 6] and sorted(after) == [5, 6]
    for b in after:
        assert after[b] == pytest.approx(losses[b], abs=1e-6)
    for (name, p), q in zip(whole.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)
