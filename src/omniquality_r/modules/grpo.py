"""Hand-written GRPO as a LightningModule with manual optimisation.

One training step (METHOD.md steps 3-4):
  1. take P prompts, encode each image once, sample G completions per prompt;
  2. rewards (format + accuracy) per completion; STD filter on the accuracy rewards
     drops groups without signal (optional refill with fresh prompts, bounded tries);
  3. group-relative advantages; k1 KL as a per-token reward penalty (authors) or
     k3 KL as a loss term (TRL) against a frozen reference;
  4. `num_iterations` passes of micro-batches (whole groups): PPO-clip loss on the
     tokens kept by the entropy gate, old log-probs recorded at generation;
     one optimiser step per pass.
The math lives in rl/*.py and rewards.py; this module only orchestrates and logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import lightning as L
import torch
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
from ..rl.gate import entropy_gate, token_entropy
from ..rl.loss import aggregate, kl_k1, kl_k3, masked_mean, policy_loss
from ..rl.rollout import (
    completion_logits,
    generate_groups,
    select_prompts,
    token_logprobs,
)
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
    `val_generation` (decoding), `total_steps`, `sample_log_every`."""

    group_size: int = 8
    prompts_per_step: int = 64  # read by the stage's DataLoader
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
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None


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
        samples_sink: Callable[[list[dict]], None] | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model, self.processor, self.ref_model = model, processor, ref_model
        self.reward_fn = reward_fn
        self.instructions, self.system_prompt = instructions, system_prompt
        self.s = settings
        self.optimizer, self.scheduler = optimizer, scheduler  # conf/optim partials
        self._refill = self._cycle(list(refill_records))
        self._samples_sink = samples_sink
        self._val_rows: list[dict] = []
        self.skipped_images = 0

    # ----------------------------------------------------------- checkpoints
    # The reference stays a submodule (FSDP/ZeRO-3 shard it with the policy) but not in
    # last.ckpt, which it would double: a resumed run rebuilds it from init_from.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("ref_model.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.ref_model is not None and "state_dict" in checkpoint:
            checkpoint["state_dict"].update(
                {f"ref_model.{k}": v for k, v in self.ref_model.state_dict().items()}
            )

    # ----------------------------------------------------------------- data
    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a list of Records; tensors are built and placed in `rollout`

    @staticmethod
    def _cycle(records: list[Record]) -> Iterator[Record] | None:
        if not records:
            return None

        def forever():
            while True:
                yield from records

        return forever()

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
        ids = generate_groups(self.model, self.processor, inputs, features, G, s.generation)
        self.model.train(was_training)
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
            if not (s.filter.enabled and s.filter.refill) or have >= want or self._refill is None:
                break
            pending = [next(self._refill) for _ in range(want - have)]
        stats["filter/dropped_frac"] = dropped / max(seen, 1)
        pad = self.processor.tokenizer.pad_token_id
        return (_concat_rollouts(parts, pad) if parts else None), stats

    # ---------------------------------------------------------------- update
    def _micro_batches(self, n_prompts: int) -> list[list[int]]:
        m = self.s.micro_batch_prompts
        return [list(range(i, min(i + m, n_prompts))) for i in range(0, n_prompts, m)]

    def _rows(self, prompts: Sequence[int]) -> torch.Tensor:
        G = self.s.group_size
        return torch.tensor([p * G + g for p in prompts for g in range(G)], device=self.device)

    def _logits(self, model, ro: Rollout, prompts: Sequence[int]) -> torch.Tensor:
        inputs = select_prompts(ro.prompt_inputs, prompts)
        feats = ([ro.features[p] for p in prompts] if ro.features is not None
                 else image_features(model, inputs))  # fmt: skip
        rows = self._rows(prompts)
        return completion_logits(model, inputs, feats, self.s.group_size,
                                 ro.completion_ids[rows], ro.mask[rows])  # fmt: skip

    @torch.no_grad()
    def _record_logps(self, ro: Rollout) -> None:
        """Reference log-probs, and old (behaviour) log-probs when several passes reuse the
        rollout (with a single pass the policy has not moved since generation, so the current
        log-probs, detached, are the old ones)."""
        need_ref = self.s.kl.type != "none" and self.s.kl.beta > 0
        need_old = self.s.num_iterations > 1  # with one pass, old = current (detached)
        if not (need_old or need_ref):
            return
        old, ref = [], []
        for prompts in self._micro_batches(len(ro.records)):
            ids = ro.completion_ids[self._rows(prompts)]
            if need_old:
                old.append(token_logprobs(self._logits(self.model, ro, prompts), ids))
            if need_ref:
                with self._reference() as ref_model:
                    ref.append(token_logprobs(self._logits(ref_model, ro, prompts), ids))
        ro.old_logp = torch.cat(old) if old else None
        ro.ref_logp = torch.cat(ref) if ref else None

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

    def training_step(self, records: list[Record], batch_idx: int):
        s, G = self.s, self.s.group_size
        opt = self.optimizers()
        sched = self.lr_schedulers()
        ro, stats = self._filtered_rollout(records)
        if ro is None:  # every group filtered: nothing to learn from this batch
            self.log_dict({f"train/{k}": float(v) for k, v in stats.items()}, on_step=True,
                          batch_size=len(records))  # fmt: skip
            return None
        self._record_logps(ro)
        n = len(ro.records)
        adv = group_advantages(ro.rewards.total.view(n, G).to(self.device), s.advantage_std)
        adv = adv.reshape(-1)
        total_seqs, total_tokens = n * G, ro.mask.sum().clamp(min=1)
        acc: dict[str, list[float]] = {}
        for _ in range(s.num_iterations):
            for prompts in self._micro_batches(n):
                rows = self._rows(prompts)
                loss, mstats = self._micro_loss(ro, prompts, rows, adv[rows])
                weight = (ro.mask[rows].sum() / total_tokens if s.aggregation == "token_mean"
                          else len(rows) / total_seqs)  # fmt: skip
                self.manual_backward(loss * weight)
                for k, v in mstats.items():
                    acc.setdefault(k, []).append(float(v))
            self.clip_gradients(opt, gradient_clip_val=s.grad_clip, gradient_clip_algorithm="norm")
            opt.step()
            opt.zero_grad(set_to_none=True)
        sched.step()
        self._log_step(ro, adv, stats, acc, batch_idx)
        return None

    def _micro_loss(self, ro: Rollout, prompts, rows, adv) -> tuple[torch.Tensor, dict]:
        s = self.s
        ids, mask = ro.completion_ids[rows], ro.mask[rows]
        logits = self._logits(self.model, ro, prompts)
        logp = token_logprobs(logits, ids)
        old = ro.old_logp[rows] if ro.old_logp is not None else logp.detach()
        if s.kl.type == "k1" and ro.ref_logp is not None:  # the authors' k1 reward penalty
            adv = kl_penalized_advantages(adv, old, ro.ref_logp[rows], mask, s.kl.beta)
        entropy = token_entropy(logits.detach())
        loss_mask = mask.bool()
        stats = {"entropy/mean": masked_mean(entropy, mask)}
        if s.gate.enabled:
            keep, kept = entropy_gate(entropy, mask, s.gate.rho, s.gate.mode)
            loss_mask = loss_mask & keep
            stats["gate/kept_frac"] = kept
        loss, pstats = policy_loss(
            logp, old, adv, loss_mask, eps_low=s.eps_low, eps_high=s.eps_high,
            ratio_max=s.ratio_max, aggregation=s.aggregation, max_len=ids.shape[1],
        )  # fmt: skip
        stats.update({f"policy/{k}": v for k, v in pstats.items()})
        if ro.ref_logp is not None:
            ref = ro.ref_logp[rows]
            stats["kl/k1"] = masked_mean(kl_k1(logp.detach(), ref), mask)
            if s.kl.type == "k3":
                kl = aggregate(kl_k3(logp, ref), mask, s.aggregation, ids.shape[1])
                loss = loss + s.kl.beta * kl
                stats["kl/k3"] = kl.detach()
        stats["loss/policy"] = loss.detach()
        return loss, stats

    # ---------------------------------------------------------------- logging
    def _log_step(
        self, ro: Rollout, adv: torch.Tensor, stats: dict, acc: dict[str, list[float]],
        batch_idx: int,
    ) -> None:
        """Step metrics; every `sample_log_every` steps the completions with the advantages
        the update used (before the k1 penalty)."""
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
            "lr": self.lr_schedulers().get_last_lr()[0],
            "skipped_images": float(self.skipped_images),
        }  # fmt: skip
        for task in sorted(set(tasks)):
            sel = torch.tensor([t == task for t in tasks])
            metrics[f"reward/{task}/accuracy"] = r.accuracy[sel].mean()
            metrics[f"reward/{task}/accuracy_std"] = r.accuracy[sel].std()
            metrics[f"reward/{task}/format"] = r.format[sel].mean()
        self.log_dict({f"train/{k}": float(v) for k, v in metrics.items()}, on_step=True,
                      prog_bar=False, batch_size=len(ro.records))  # fmt: skip
        if batch_idx % self.s.sample_log_every == 0:
            samples = [
                {"step": self.global_step, "id": ro.records[i // G].id, "task": tasks[i],
                 "mos": ro.records[i // G].mos, "completion": ro.texts[i],
                 "reward": float(r.total[i]), "format": float(r.format[i]),
                 "accuracy": float(r.accuracy[i]), "advantage": float(adv[i])}
                for i in range(len(ro.texts))
            ]  # fmt: skip
            if self._samples_sink:
                self._samples_sink(samples)
            if hasattr(self.logger, "log_table"):  # wandb: a table of completions
                self.logger.log_table(key="train/samples", columns=list(samples[0]),
                                      data=[list(x.values()) for x in samples])  # fmt: skip

    # ------------------------------------------------------------- validation
    def validation_step(self, records: list[Record], batch_idx: int):
        rows, _ = predict(self.model, self.processor, records, instructions=self.instructions,
                          system_prompt=self.system_prompt, generation=self.s.val_generation,
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
