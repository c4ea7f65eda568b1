"""Hand-written GRPO as a LightningModule with manual optimisation.

One training step is one rollout (METHOD.md steps 3-4):
  1. take P prompts, encode each image once, sample G completions per prompt (torch's RNG
     seeded from (seed, rank, rollout index), so a resumed run samples what it would have);
  2. rewards (format + accuracy) per completion; STD filter on the accuracy rewards
     drops groups without signal (optional refill with fresh prompts, bounded tries);
  3. group-relative advantages; a behaviour pass (policy in eval mode, no grad) records the
     old log-probs, the entropy gate's token mask and the reference log-probs once;
     k1 KL as a per-token reward penalty (authors) or k3 KL as a loss term (TRL);
  4. `num_iterations` passes over the rollout, each cut into mini-batches of
     `train_batch_size` samples (groups in a shuffled order, rl/minibatch.py): one optimiser
     step (clip, AdamW, schedule) per mini-batch, so from the second step on the importance
     ratio differs from 1 and the PPO clip and ratio cap act; micro-batches bound memory.
Counters: `rollouts` (training steps: episodes, max_rollouts, validation, checkpoints, and
the x-axis of every train/ metric, which Lightning logs per batch) and Lightning's
`global_step` (optimiser steps: the learning-rate schedule; logged as train/optimizer_step).
The math lives in rl/*.py and rewards.py; this module only orchestrates and logs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from peft import PeftModel

from ..data.records import Record, load_readable
from ..eval.evaluate import flat_metrics, metric_rows, predict
from ..inference import PromptSpec, completion_mask, decode, encode_prompts
from ..models.loading import vision_trainable
from ..models.shared_prefix import image_features
from ..prompts import parse_answer
from ..rewards import RewardParts
from ..rl.advantage import group_advantages, kl_penalized_advantages
from ..rl.filter import std_filter
from ..rl.gate import entropy_gate
from ..rl.loss import aggregate, kl_k1, kl_k3, masked_mean, policy_loss
from ..rl.minibatch import batch_share, mini_batches, steps_per_pass
from ..rl.rollout import (
    completion_hidden,
    generate_groups,
    select_prompts,
    token_logprobs_and_entropy,
)
from .checkpoint import generation_under
from .optim import optimizer_with_schedule


@dataclass
class KLSettings:
    """KL to the frozen reference (`type`: k1 per-token reward penalty as the authors | k3
    loss term as TRL | none), weight `beta`."""

    type: str = "k1"
    beta: float = 0.001


@dataclass
class FilterSettings:
    """STD filter on each group's accuracy rewards (rl/filter.py); `refill` samples fresh
    prompts, at most `max_tries` times, until the batch is full (DAPO)."""

    enabled: bool = False
    min_std: float = 0.001
    refill: bool = False
    max_tries: int = 4


@dataclass
class GateSettings:
    """Entropy gate: the policy loss on the top-`rho` entropy tokens (rl/gate.py), per
    `sequence` or over the `batch`."""

    enabled: bool = False
    rho: float = 0.2
    mode: str = "sequence"


@dataclass
class GRPOSettings:
    """The `algo` config group as plain values (conf/algo/grpo.yaml documents each; built by
    settings.settings_from, so a key here is a key there), plus what the stage adds:
    `val_generation` (decoding), `total_steps` (optimiser steps, for the schedule),
    `max_rollouts`, `seed`, `sample_log_every`."""

    group_size: int = 8
    prompts_per_step: int = 64  # global, read by the stage's prompt batches
    train_batch_size: int = 64  # global samples per optimiser step
    micro_batch_prompts: int = 2
    num_iterations: int = 1
    grad_clip: float = 1.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    ratio_max: float | None = 3.0
    aggregation: str = "seq_mean_token_mean"
    advantage_std: str = "group"
    kl: KLSettings = field(default_factory=KLSettings)
    filter: FilterSettings = field(default_factory=FilterSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    generation: dict = field(default_factory=dict)
    val_generation: dict = field(default_factory=dict)
    total_steps: int = 1
    max_rollouts: int = 1
    seed: int = 0
    sample_log_every: int = 10


@dataclass
class Rollout:
    """One batch of P prompts x G completions, everything the update needs."""

    records: list[Record]
    prompt_inputs: dict
    features: tuple | None  # per-prompt vision features when the tower is frozen
    completion_ids: torch.Tensor
    mask: torch.Tensor
    texts: list[str]
    rewards: RewardParts
    old_logp: torch.Tensor | None = None  # behaviour pass (eval mode) when several steps
    ref_logp: torch.Tensor | None = None
    loss_mask: torch.Tensor | None = None  # valid tokens, AND the entropy gate when on
    gate_kept: float | None = None


class SampleLog:
    """grpo_samples.jsonl: rows appended per logged rollout; `rewind(r)` drops the rows of
    rollouts after r, so a run resumed from rollout r does not write them twice."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, rows: list[dict]) -> None:
        with self.path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def rewind(self, rollout: int) -> None:
        if self.path.is_file():
            lines = self.path.read_text().splitlines(keepends=True)
            self.path.write_text("".join(x for x in lines if json.loads(x)["rollout"] <= rollout))


def clip_grad_norm(strategy, module: L.LightningModule, optimizer, max_norm: float) -> None:
    """Clip the gradients to global norm `max_norm` under the running strategy: DeepSpeed
    clips inside its engine (its config's gradient_clipping, which stage=grpo sets from
    algo.grad_clip); FSDP shards the gradients, so its own clip_grad_norm_ takes the norm over
    every shard; otherwise Lightning's clip_gradients (all-reduced gradients under DDP)."""
    if max_norm <= 0 or isinstance(strategy, DeepSpeedStrategy):
        return
    if isinstance(strategy, FSDPStrategy):
        strategy.model.clip_grad_norm_(max_norm)
        return
    module.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")


def rollout_seed(seed: int, rank: int, rollout: int) -> int:
    """The seed of one rollout's sampling: numpy's SeedSequence of (seed, rank, rollout)."""
    return int(np.random.SeedSequence([seed, rank, rollout]).generate_state(1)[0])


class GRPOModule(L.LightningModule):
    def __init__(
        self,
        model,
        processor,
        *,
        reward_fn: Callable[..., RewardParts],
        instructions: dict[str, str],
        system_prompt: str,
        settings: GRPOSettings,
        optimizer: Callable,
        scheduler: Callable,
        ref_model=None,
        refill_records: Sequence[Record] = (),
        samples: SampleLog | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model, self.processor, self.ref_model = model, processor, ref_model
        self.reward_fn = reward_fn
        self.instructions, self.system_prompt = instructions, system_prompt
        self.s = settings
        self.optimizer, self.scheduler = optimizer, scheduler  # conf/optim partials
        self._refill_records, self._refill_pos = list(refill_records), 0
        self._samples = samples
        self._val_rows: list[dict] = []
        self.skipped_images = 0
        self.rollouts = 0  # rollouts trained on (the prompt batches' resume position)
        self.completions = 0  # sampled on this rank

    # ----------------------------------------------------------- checkpoints
    # The reference stays a submodule (FSDP/ZeRO-3 shard it with the policy) but not in
    # last.ckpt, which it would double: a resumed run rebuilds it from its checkpoint.
    # The counters resume exactly: rollouts (and with them the prompt batches and the
    # sampling seeds), the refill position, the skipped-image count; rows the samples log
    # wrote after the checkpoint are dropped.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("ref_model.")]:
            del state[key]
        checkpoint["grpo"] = {"rollouts": self.rollouts, "refill_pos": self._refill_pos,
                              "skipped_images": self.skipped_images,
                              "completions": self.completions}  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.ref_model is not None and "state_dict" in checkpoint:
            checkpoint["state_dict"].update(
                {f"ref_model.{k}": v for k, v in self.ref_model.state_dict().items()}
            )
        if "grpo" in checkpoint:
            counters = checkpoint["grpo"]
            self.rollouts, self._refill_pos = counters["rollouts"], counters["refill_pos"]
            self.skipped_images = counters["skipped_images"]
            self.completions = counters.get("completions", 0)
            if self._samples is not None:
                self._samples.rewind(self.rollouts)

    # ----------------------------------------------------------------- data
    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a list of Records; tensors are built and placed in `rollout`

    def _next_refill(self, n: int) -> list[Record]:
        """The next n refill prompts, cycling through the training records in order."""
        pool = self._refill_records
        picked = [pool[(self._refill_pos + i) % len(pool)] for i in range(n)]
        self._refill_pos += n
        return picked

    def _prompt_specs(self, records: Sequence[Record]) -> tuple[list[Record], list[PromptSpec]]:
        kept, images, unreadable = load_readable(records)
        self.skipped_images += len(unreadable)
        return kept, [PromptSpec(im, r.task, r.prompt) for r, im in zip(kept, images)]

    # -------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self, records: Sequence[Record]) -> Rollout | None:
        """Generate G completions for each readable prompt and score them."""
        records, specs = self._prompt_specs(records)
        if not records:
            return None
        s, G = self.s, self.s.group_size
        inputs = encode_prompts(self.processor, specs, self.instructions, self.system_prompt)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        was_training = self.model.training
        self.model.eval()
        features = image_features(self.model, inputs)
        generation = generation_under(self.trainer.strategy, s.generation)
        ids = generate_groups(self.model, self.processor, inputs, features, G, generation)
        self.model.train(was_training)
        self.completions += ids.shape[0]
        mask = completion_mask(ids, self.processor.tokenizer.eos_token_id).to(ids.device)
        texts = decode(self.processor, ids)
        mos = torch.tensor([r.mos for r in records for _ in range(G)], dtype=torch.float32)
        group_ids = torch.arange(len(records)).repeat_interleave(G)
        datasets = [r.dataset for r in records for _ in range(G)]
        rewards = self.reward_fn(texts, mos, group_ids, datasets)
        return Rollout(list(records), inputs, None if vision_trainable(self.model) else features,
                       ids, mask, texts, rewards)  # fmt: skip

    def _filtered_rollout(self, records: Sequence[Record]) -> tuple[Rollout | None, dict]:
        """Rollout, then the STD filter; with refill, top up with fresh prompts (bounded)."""
        s, G = self.s, self.s.group_size
        want = len(records)
        parts: list[Rollout] = []
        stats = {"filter/dropped_frac": 0.0, "filter/tries": 0}
        pending, seen, dropped = list(records), 0, 0
        for attempt in range(1 + (s.filter.max_tries if s.filter.refill else 0)):
            ro = self.rollout(pending)
            stats["filter/tries"] = attempt + 1
            if ro is not None:
                n = len(ro.records)
                seen += n
                if s.filter.enabled:
                    keep, _ = std_filter(ro.rewards.accuracy.view(n, G), s.filter.min_std)
                    dropped += int((~keep).sum())
                    ro = _keep_groups(ro, keep.tolist(), G) if keep.any() else None
                if ro is not None:
                    parts.append(ro)
            have = sum(len(p.records) for p in parts)
            refill = s.filter.enabled and s.filter.refill and self._refill_records
            if not refill or have >= want:
                break
            pending = self._next_refill(want - have)
        stats["filter/dropped_frac"] = dropped / max(seen, 1)
        pad = self.processor.tokenizer.pad_token_id
        return (_concat_rollouts(parts, pad) if parts else None), stats

    # ---------------------------------------------------------------- update
    def _chunks(self, items: Sequence[int], size: int) -> list[list[int]]:
        return [list(items[i:i + size]) for i in range(0, len(items), size)]

    def _rows(self, prompts: Sequence[int]) -> list[int]:
        G = self.s.group_size
        return [p * G + g for p in prompts for g in range(G)]

    def _token_stats(self, model, ro: Rollout, rows: Sequence[int]):
        """(log-probs, entropies) [rows, T] of the completions `rows`, each prompt among them
        run once, the output layer chunked (rl/rollout.token_logprobs_and_entropy)."""
        G = self.s.group_size
        prompts = sorted({r // G for r in rows})
        local = {p: i for i, p in enumerate(prompts)}
        inputs = select_prompts(ro.prompt_inputs, prompts)
        feats = ([ro.features[p] for p in prompts] if ro.features is not None
                 else image_features(model, inputs))  # fmt: skip
        prompt_of = torch.tensor([local[r // G] for r in rows])
        index = torch.tensor(list(rows), device=ro.completion_ids.device)
        ids = ro.completion_ids[index]
        hidden = completion_hidden(model, inputs, feats, prompt_of, ids, ro.mask[index])
        return token_logprobs_and_entropy(model, hidden, ids)

    @torch.no_grad()
    def _behaviour_pass(self, ro: Rollout | None, need_old: bool) -> None:
        """Once per rollout, before the first update, with the policy in eval mode (no
        dropout): the old (behaviour) log-probs when the rollout makes several optimiser
        steps (with one, the policy has not moved since generation and the current log-probs,
        detached, are the old ones), the reference log-probs for KL, and the entropy gate's
        loss mask from the behaviour policy's entropies (fixed for the rollout: its quantile
        in batch mode is taken over the whole rollout, every rank)."""
        s = self.s
        if ro is None:  # this rank's groups were all filtered; it still joins the pooling
            if s.gate.enabled and s.gate.mode == "batch":
                self._gather_valid(torch.zeros(0, device=self.device))
            return
        need_ref = s.kl.type != "none" and s.kl.beta > 0
        ro.loss_mask = ro.mask.bool()
        if not (need_old or need_ref or s.gate.enabled):
            return
        old, ref, entropy = [], [], []
        was_training = self.model.training
        self.model.eval()
        for prompts in self._chunks(range(len(ro.records)), s.micro_batch_prompts):
            rows = self._rows(prompts)
            if need_old or s.gate.enabled:
                logp, h = self._token_stats(self.model, ro, rows)
                old.append(logp)
                entropy.append(h)
            if need_ref:
                with self._reference() as ref_model:
                    ref.append(self._token_stats(ref_model, ro, rows)[0])
        self.model.train(was_training)
        ro.old_logp = torch.cat(old) if need_old else None
        ro.ref_logp = torch.cat(ref) if ref else None
        if s.gate.enabled:
            h = torch.cat(entropy)
            pool = self._gather_valid(h[ro.mask.bool()]) if s.gate.mode == "batch" else None
            keep, kept = entropy_gate(h, ro.mask, s.gate.rho, s.gate.mode, pool=pool)
            ro.loss_mask, ro.gate_kept = ro.loss_mask & keep, float(kept)

    def _gather_valid(self, values: torch.Tensor) -> torch.Tensor:
        """A 1-D tensor of every rank's values (different lengths), for rollout-wide stats:
        padded with NaN to the longest, gathered, the padding dropped."""
        sizes = self._gather(torch.tensor(values.numel(), device=values.device))
        padded = F.pad(values, (0, int(sizes.max()) - values.numel()), value=float("nan"))
        pooled = self._gather(padded).reshape(-1)
        return pooled[~pooled.isnan()]

    @contextlib.contextmanager
    def _reference(self):
        """The frozen reference: its own copy, or the LoRA base with the adapter disabled."""
        if self.ref_model is not None:
            yield self.ref_model
        elif isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                yield self.model
        else:
            raise ValueError("KL needs a reference model (kl_type != none)")

    def on_train_batch_start(self, batch, batch_idx: int):
        if self.rollouts >= self.s.max_rollouts:  # a resumed run that had already finished
            self.trainer.should_stop = True
            return -1
        return None

    def training_step(self, records: list[Record], batch_idx: int):
        s, G = self.s, self.s.group_size
        seed = rollout_seed(s.seed, self.global_rank, self.rollouts)
        torch.manual_seed(seed)
        ro, stats = self._filtered_rollout(records)
        self.rollouts += 1
        if self.rollouts >= s.max_rollouts:
            self.trainer.should_stop = True
        # Every rank takes the same steps and backward calls whatever the filter left it
        # (DDP all-reduces at each backward): the step count comes from the global count.
        n = 0 if ro is None else len(ro.records)
        total = int(self._gather(torch.tensor([n * G], device=self.device)).sum())
        if total == 0:  # every group of every rank filtered: nothing to learn from
            metrics = {**stats, **self._counters()}
            self.log_dict({f"train/{k}": float(v) for k, v in metrics.items()}, on_step=True,
                          batch_size=len(records))  # fmt: skip
            return None
        steps = steps_per_pass(total, s.train_batch_size)
        shuffle = torch.Generator().manual_seed(seed)
        passes = [mini_batches(n, G, steps, shuffle) for _ in range(s.num_iterations)]
        self._behaviour_pass(ro, need_old=steps * s.num_iterations > 1)
        adv = None
        if ro is not None:
            adv = group_advantages(ro.rewards.total.view(n, G).to(self.device), s.advantage_std)
            adv = adv.reshape(-1)
        acc = self._update(ro, adv, passes)
        if ro is None:
            return None
        if ro.gate_kept is not None:
            stats["gate/kept_frac"] = ro.gate_kept
        self._log_step(ro, adv, stats, acc)
        return None

    def _update(self, ro: Rollout | None, adv, passes: list[list[list[int]]]) -> dict:
        """One optimiser step per mini-batch of each pass; a rank with fewer micro-batches in
        a step than another (or none, its groups all filtered) makes zero-weight backward
        passes, so every rank all-reduces the same number of times."""
        s, opt, sched = self.s, self.optimizers(), self.lr_schedulers()
        micro_rows = s.micro_batch_prompts * s.group_size
        # Global rows and loss tokens of every mini-batch, and each rank's micro-batch count.
        local = torch.tensor([[len(b), int(ro.loss_mask[b].sum()) if b else 0,
                               -(-len(b) // micro_rows)] for p in passes for b in p],
                             device=self.device)  # fmt: skip
        counts = self._gather(local)  # [ranks, steps, 3]
        world = self.trainer.world_size
        acc: dict[str, list[float]] = {}
        for k, batch in enumerate(b for p in passes for b in p):
            rows_k, tokens_k = int(counts[:, k, 0].sum()), int(counts[:, k, 1].sum())
            chunks = self._chunks(batch, micro_rows)
            for j in range(int(counts[:, k, 2].max())):
                if j >= len(chunks):
                    self.manual_backward(self._zero_loss())
                    continue
                rows = chunks[j]
                loss, mstats = self._micro_loss(ro, rows, adv[rows])
                share = batch_share(ro.loss_mask[rows], rows_k, tokens_k, s.aggregation)
                self.manual_backward(loss * share * world)  # DDP averages over the ranks
                for key, v in mstats.items():
                    acc.setdefault(key, []).append(float(v))
            clip_grad_norm(self.trainer.strategy, self, opt, s.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        return acc

    def _zero_loss(self) -> torch.Tensor:
        """0 * sum of the trainable weights: a backward pass that adds nothing but joins the
        ranks' gradient all-reduce."""
        return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0

    def _gather(self, values: torch.Tensor) -> torch.Tensor:
        """[ranks, ...]: every rank's `values` (same shape on each)."""
        if self.trainer.world_size == 1:
            return values.unsqueeze(0)
        return self.all_gather(values)

    def _micro_loss(self, ro: Rollout, rows: list[int], adv) -> tuple[torch.Tensor, dict]:
        s = self.s
        mask, loss_mask = ro.mask[rows], ro.loss_mask[rows]
        logp, entropy = self._token_stats(self.model, ro, rows)
        old = ro.old_logp[rows] if ro.old_logp is not None else logp.detach()
        if s.kl.type == "k1" and ro.ref_logp is not None:  # the authors' k1 reward penalty
            adv = kl_penalized_advantages(adv, old, ro.ref_logp[rows], mask, s.kl.beta)
        stats = {"entropy/mean": masked_mean(entropy, mask)}
        max_len = s.generation["max_new_tokens"]  # Dr. GRPO's fixed normaliser
        loss, pstats = policy_loss(
            logp, old, adv, loss_mask, eps_low=s.eps_low, eps_high=s.eps_high,
            ratio_max=s.ratio_max, aggregation=s.aggregation, max_len=max_len,
        )  # fmt: skip
        stats.update({f"policy/{k}": v for k, v in pstats.items()})
        if ro.ref_logp is not None:
            ref = ro.ref_logp[rows]
            stats["kl/k1"] = masked_mean(kl_k1(logp.detach(), ref), mask)
            if s.kl.type == "k3":  # on the policy loss's tokens (the gate's, when it is on)
                kl = aggregate(kl_k3(logp, ref), loss_mask, s.aggregation, max_len)
                loss = loss + s.kl.beta * kl
                stats["kl/k3"] = kl.detach()
        stats["loss/policy"] = loss.detach()
        return loss, stats

    def _counters(self) -> dict[str, float]:
        return {"rollout": self.rollouts, "optimizer_step": self.global_step,
                "skipped_images": self.skipped_images}  # fmt: skip

    # ---------------------------------------------------------------- logging
    def _log_step(
        self, ro: Rollout, adv: torch.Tensor, stats: dict, acc: dict[str, list[float]]
    ) -> None:
        """Rollout metrics (micro-batch stats averaged over the rollout's passes); every
        `sample_log_every` rollouts the completions with the advantages the update used
        (before the k1 penalty)."""
        G = self.s.group_size
        r = ro.rewards
        lengths = ro.mask.sum(-1).float()
        parsed = torch.tensor([parse_answer(t) is not None for t in ro.texts], dtype=torch.float)
        tasks = [rec.task for rec in ro.records for _ in range(G)]
        metrics = {
            **stats,
            **{k: sum(v) / len(v) for k, v in acc.items()},
            "reward/total": r.total.mean(), "reward/total_std": r.total.std(),
            "reward/format": r.format.mean(), "reward/accuracy": r.accuracy.mean(),
            "completion/length": lengths.mean(), "completion/parse_rate": parsed.mean(),
            "lr": self.lr_schedulers().get_last_lr()[0], **self._counters(),
        }  # fmt: skip
        for task in sorted(set(tasks)):
            sel = torch.tensor([t == task for t in tasks])
            metrics[f"reward/{task}/accuracy"] = r.accuracy[sel].mean()
            metrics[f"reward/{task}/accuracy_std"] = r.accuracy[sel].std()
            metrics[f"reward/{task}/format"] = r.format[sel].mean()
        self.log_dict({f"train/{k}": float(v) for k, v in metrics.items()}, on_step=True,
                      prog_bar=False, batch_size=len(ro.records))  # fmt: skip
        if (self.rollouts - 1) % self.s.sample_log_every == 0:
            samples = [
                {"rollout": self.rollouts, "id": ro.records[i // G].id, "task": tasks[i],
                 "mos": ro.records[i // G].mos, "completion": ro.texts[i],
                 "reward": float(r.total[i]), "format": float(r.format[i]),
                 "accuracy": float(r.accuracy[i]), "advantage": float(adv[i])}
                for i in range(len(ro.texts))
            ]  # fmt: skip
            if self._samples is not None and self.global_rank == 0:  # one writer per run
                self._samples.write(samples)
            if hasattr(self.logger, "log_table"):  # wandb: a table of completions
                self.logger.log_table(key="train/samples", columns=list(samples[0]),
                                      data=[list(x.values()) for x in samples])  # fmt: skip

    # ------------------------------------------------------------- validation
    def validation_step(self, records: list[Record], batch_idx: int):
        generation = generation_under(self.trainer.strategy, self.s.val_generation)
        rows, _ = predict(self.model, self.processor, records, instructions=self.instructions,
                          system_prompt=self.system_prompt, generation=generation,
                          batch_size=len(records), desc=None)  # fmt: skip
        self._val_rows.extend(rows)

    def on_validation_epoch_end(self):
        rows, self._val_rows = self._val_rows, []
        if rows:  # the names and scheme of SFT's validation: val/greedy/<task>/<dataset>/<metric>
            self.log_dict(flat_metrics({"greedy": metric_rows(rows, "greedy")}, prefix="val"))

    def configure_optimizers(self):
        return optimizer_with_schedule(self.model.parameters(), self.optimizer, self.scheduler,
                                       self.s.total_steps)  # fmt: skip


def _keep_groups(ro: Rollout, keep: list[bool], group_size: int) -> Rollout:
    prompts = [i for i, k in enumerate(keep) if k]
    rows = torch.tensor([p * group_size + g for p in prompts for g in range(group_size)])
    return Rollout(
        records=[ro.records[p] for p in prompts],
        prompt_inputs=select_prompts(ro.prompt_inputs, prompts),
        features=None if ro.features is None else tuple(ro.features[p] for p in prompts),
        completion_ids=ro.completion_ids[rows.to(ro.completion_ids.device)],
        mask=ro.mask[rows.to(ro.mask.device)],
        texts=[ro.texts[i] for i in rows.tolist()],
        rewards=RewardParts(ro.rewards.format[rows], ro.rewards.accuracy[rows]),
    )


def _concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Join rollouts (refill rounds) into one; prompts are left-padded to a common length."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.prompt_inputs["input_ids"].shape[1] for p in parts)
    cwidth = max(p.completion_ids.shape[1] for p in parts)

    def left(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

    def right(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, cwidth - t.shape[1]), value=value)

    inputs = {
        "input_ids": torch.cat([left(p.prompt_inputs["input_ids"], pad_id) for p in parts]),
        "attention_mask": torch.cat([left(p.prompt_inputs["attention_mask"], 0) for p in parts]),
        "image_grid_thw": torch.cat([p.prompt_inputs["image_grid_thw"] for p in parts]),
        "pixel_values": torch.cat([p.prompt_inputs["pixel_values"] for p in parts]),
    }
    if "mm_token_type_ids" in parts[0].prompt_inputs:
        inputs["mm_token_type_ids"] = torch.cat(
            [left(p.prompt_inputs["mm_token_type_ids"], 0) for p in parts]
        )
    features = None if parts[0].features is None else tuple(f for p in parts for f in p.features)
    return Rollout(
        records=[r for p in parts for r in p.records],
        prompt_inputs=inputs,
        features=features,
        completion_ids=torch.cat([right(p.completion_ids, pad_id) for p in parts]),
        mask=torch.cat([right(p.mask, 0) for p in parts]),
        texts=[t for p in parts for t in p.texts],
        rewards=RewardParts(
            torch.cat([p.rewards.format for p in parts]),
            torch.cat([p.rewards.accuracy for p in parts]),
        ),
    )
