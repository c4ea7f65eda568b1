import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from omniquality_r.rl.loss import aggregate, kl_k1, kl_k3, masked_mean, policy_loss

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
PARTIAL = torch.tensor([[1, 1, 0], [1, 0, 0]])

# Two rows with the same ratios r = [1, 1.5, 0.5, 4]; row 0 has A = +1, row 1 A = -1.
RATIOS = torch.tensor([[1.0, 1.5, 0.5, 4.0], [1.0, 1.5, 0.5, 4.0]])
ADV = torch.tensor([1.0, -1.0])
FULL = torch.ones(2, 4, dtype=torch.bool)


def test_masked_mean_hand_values():
    torch.testing.assert_close(masked_mean(VALUES, PARTIAL), torch.tensor(7 / 3))  # (1+2+4)/3
    torch.testing.assert_close(masked_mean(VALUES, PARTIAL, dim=-1), torch.tensor([1.5, 4.0]))
    torch.testing.assert_close(masked_mean(VALUES, PARTIAL, normalizer=10), torch.tensor(0.7))
    # an all-masked row is 0, not NaN; masked-out NaN/inf never reach the result
    empty = torch.tensor([[1, 1, 0], [0, 0, 0]])
    dirty = torch.tensor([[1.0, 2.0, math.nan], [math.inf, 0.0, 0.0]])
    torch.testing.assert_close(masked_mean(dirty, empty, dim=-1), torch.tensor([1.5, 0.0]))


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("seq_mean_token_mean", (1.5 + 4.0) / 2),  # row means 1.5, 4
        ("token_mean", 7 / 3),  # (1+2+4) / 3 tokens
        ("fixed_length", 7 / (2 * 4)),  # (1+2+4) / (B=2 * max_len=4)
    ],
)
def test_aggregate_hand_values(aggregation, expected):
    out = aggregate(VALUES, PARTIAL, aggregation, max_len=4)
    torch.testing.assert_close(out, torch.tensor(expected))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"aggregation": "fixed_length"}, "max_len"), ({"aggregation": "sum"}, "aggregation")],
)
def test_aggregate_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        aggregate(VALUES, PARTIAL, **kwargs)


@pytest.mark.parametrize(
    ("ratio_max", "eps_high", "expected"),
    [
        # r' = min(r, 3) = [1, 1.5, 0.5, 3]; clip(r', 0.8, 1.2) = [1, 1.2, 0.8, 1.2]
        # A = +1: -min(r', clip) = -[1, 1.2, 0.5, 1.2] -> row mean -0.975
        # A = -1:  max(r', clip) =  [1, 1.5, 0.8, 3.0] -> row mean  1.575;  (-0.975 + 1.575)/2
        (3.0, 0.2, 0.3),
        # no cap: row 1 last token is 4 -> row mean 7.3/4 = 1.825; (-0.975 + 1.825)/2
        (None, 0.2, 0.425),
        # clip high 1.28: row 0 = -[1, 1.28, 0.5, 1.28] -> -1.015; (-1.015 + 1.575)/2
        (3.0, 0.28, 0.28),
    ],
)
def test_policy_loss_hand_values(ratio_max, eps_high, expected):
    loss, _ = policy_loss(RATIOS.log(), torch.zeros(2, 4), ADV, FULL, eps_high=eps_high,
                          ratio_max=ratio_max)
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_policy_loss_stats_hand_values():
    _, stats = policy_loss(RATIOS.log(), torch.zeros(2, 4), ADV, FULL)
    # clip_low: r < 0.8 with A < 0 -> row 1 t2 -> 1/8; clip_high: r > 1.2 with A > 0 -> row 0
    # t1, t3 -> 2/8; capped: r > 3 with A < 0 -> row 1 t3 -> 1/8; mean r = 2*(1+1.5+0.5+4)/8
    expected = {"clip_low": 1 / 8, "clip_high": 2 / 8, "clip_frac": 3 / 8, "capped": 1 / 8,
                "ratio_mean": 1.75}
    assert stats.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(stats[key], torch.tensor(value))


def test_policy_loss_gradients_vanish_where_clipped_or_capped():
    logp = RATIOS.log().requires_grad_()
    loss, _ = policy_loss(logp, torch.zeros(2, 4), ADV, FULL)
    loss.backward()
    # d/dlogp of -r*A/(B*T) = -r*A/8 where the unclipped branch is active, else 0:
    # row 0: t0 -1/8, t1 clipped, t2 -0.5/8 (min picks r*A), t3 clipped
    # row 1: t0 1/8, t1 1.5/8 (max picks r'), t2 clipped at 0.8, t3 capped at 3
    expected = torch.tensor([[-1.0, 0.0, -0.5, 0.0], [1.0, 1.5, 0.0, 0.0]]) / 8
    torch.testing.assert_close(logp.grad, expected)


def test_ratio_cap_equals_openrlhf_dual_clip():
    """OpenRLHF PolicyLoss, dual_clip = c: -where(A < 0, max(min(rA, clip(r)A), cA), min(...))."""
    torch.manual_seed(0)
    logp, old = torch.randn(6, 10), torch.randn(6, 10)
    adv = torch.randn(6, 10)
    r = torch.exp(logp - old)
    clip1 = torch.min(r * adv, r.clamp(0.8, 1.2) * adv)
    dual = -torch.where(adv < 0, torch.max(clip1, 3.0 * adv), clip1)
    loss, _ = policy_loss(logp, old, adv, torch.ones(6, 10), ratio_max=3.0,
                          aggregation="token_mean")
    torch.testing.assert_close(loss, dual.mean())


def test_policy_loss_rejects_cap_below_clip():
    with pytest.raises(ValueError, match="ratio_max"):
        policy_loss(RATIOS, RATIOS, ADV, FULL, eps_high=0.3, ratio_max=1.2)


def test_kl_hand_values():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    torch.testing.assert_close(kl_k1(logp, ref), torch.tensor([math.log(2)]))  # 0.693147
    # exp(ln .25 - ln .5) - (ln .25 - ln .5) - 1 = 0.5 + 0.693147 - 1 = 0.193147
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([0.193147]))
    torch.manual_seed(0)
    x, y = torch.randn(100), torch.randn(100)
    assert (kl_k3(x, y) >= 0).all() and (kl_k3(x, x) == 0).all()


def trl_loss(loss_type, logp, old, ref, adv, mask, beta, max_len):
    """Run TRL 1.16.0 GRPOTrainer._compute_loss on given log-probs through a minimal stand-in
    for the trainer: one process, token-level ratios, delta = 3 (two-sided clipping)."""
    grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    b, t = logp.shape
    acc = SimpleNamespace(reduce=lambda x, reduction: x, gather=lambda x: x)
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros(b, t), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=beta, loss_type=loss_type,
        epsilon_low=0.2, epsilon_high=0.2, use_vllm=False, max_completion_length=max_len,
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False,
        args=SimpleNamespace(delta=3.0, use_bias_correction_kl=False),
        model=SimpleNamespace(training=True), accelerator=acc,
        _metrics={"train": defaultdict(list)},
    )
    inputs = {
        "prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1),
        "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask.float(),
        "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
    }
    loss = grpo.GRPOTrainer._compute_loss(fake, None, inputs)
    return loss, fake._metrics["train"]


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize(
    ("loss_type", "aggregation"),
    [("grpo", "seq_mean_token_mean"), ("bnpo", "token_mean"), ("dr_grpo", "fixed_length")],
)
def test_policy_loss_matches_trl(loss_type, aggregation, beta):
    torch.manual_seed(4)
    b, t, max_len = 5, 12, 16
    old = torch.randn(b, t) - 1
    logp = old + 0.6 * torch.randn(b, t)  # ratios spread well past 0.8, 1.2 and 3
    ref = old + 0.3 * torch.randn(b, t)
    adv = torch.randn(b)
    mask = torch.arange(t)[None, :] < torch.tensor([[12], [7], [3], [10], [1]])
    expected, metrics = trl_loss(loss_type, logp, old, ref, adv, mask, beta, max_len)

    loss, stats = policy_loss(logp, old, adv, mask, ratio_max=3.0, aggregation=aggregation,
                              max_len=max_len)
    loss = loss + beta * aggregate(kl_k3(logp, ref), mask, aggregation, max_len)
    torch.testing.assert_close(loss, expected)
    assert stats["clip_low"].item() == pytest.approx(metrics["clip_ratio/low_mean"][0])
    assert stats["clip_high"].item() == pytest.approx(metrics["clip_ratio/high_mean"][0])
    assert stats["clip_frac"].item() == pytest.approx(metrics["clip_ratio/region_mean"][0])
