"""The head that reads the merger tokens during pretraining, and its loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..data.synthetic import MAX_LEVEL, POSITIONS
from .labels import GLOBAL_LABELS, IGNORE, LABELS, REGION_LABELS, TASK_OF_GROUP
from .report import REPORT

HEAD_WEIGHTS = "perception_head.safetensors"


class PerceptionHead(nn.Module):
    """Multi-task read-out of the merger tokens (B, N, D), dropped after pretraining.

    Tokens are standardised per feature (`norm`, a BatchNorm without affine: a random
    tower's tokens share a large common offset that makes the read-out learn slowly; it
    is folded into the merger afterwards, fold_norm), then Linear(D, width) -> GELU; the
    global labels (GLOBAL_LABELS) are read linearly from the mean over tokens
    (translation-invariant), the region labels (REGION_LABELS per alignment region) by an
    MLP on all tokens flattened in raster order, so positions stay readable. Each standardised
    token also predicts its own row and column of the token grid linearly (`token/row`,
    `token/col`), trained where the loss weight `position` is above 0 (off by default: README,
    "Alignment: what the tiny model gets wrong"). The LM reads the tokens by attention, which
    sees an image token's place only through its rotary angles; without this term the tokens
    carry little position (a linear probe finds the grid index at 17 %, chance 6 %:
    benchmarks/token_position_probe.py).
    """

    def __init__(self, in_dim: int, n_tokens: int, width: int = 128, token_width: int = 32):
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim, affine=False)
        self.side = math.isqrt(n_tokens)
        if self.side**2 != n_tokens:
            raise ValueError(f"n_tokens={n_tokens}: expected a square token grid")
        self.token = nn.Sequential(nn.Linear(in_dim, width), nn.GELU())
        self.global_out = nn.Linear(width, sum(GLOBAL_LABELS.values()))
        self.region_out = nn.Sequential(
            nn.Linear(width, token_width), nn.Flatten(), nn.GELU(),
            nn.Linear(n_tokens * token_width, width), nn.GELU(),
            nn.Linear(width, len(POSITIONS) * sum(REGION_LABELS.values())),
        )  # fmt: skip
        # last, so that the other layers start as they did before it existed
        self.position_out = nn.Linear(in_dim, 2 * self.side)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.norm(tokens.flatten(0, 1)).view_as(tokens)
        x = self.token(z)
        sizes = list(GLOBAL_LABELS.values())
        logits = dict(zip(GLOBAL_LABELS, self.global_out(x.mean(1)).split(sizes, dim=-1)))
        logits["token/row"], logits["token/col"] = self.position_out(z).split(self.side, dim=-1)
        regions = self.region_out(x).view(len(x), len(POSITIONS), -1)
        for i, p in enumerate(POSITIONS):
            parts = regions[:, i].split(list(REGION_LABELS.values()), dim=-1)
            logits.update({f"object/{p}/{e}": z for e, z in zip(REGION_LABELS, parts)})
        return logits


def token_grid(n_tokens: int, side: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of each of n_tokens merger tokens in raster order on a side-wide grid."""
    index = torch.arange(n_tokens, device=device)
    return index // side, index % side


@torch.no_grad()
def fold_norm(visual, head: PerceptionHead) -> None:
    """Fold the head's standardisation (x - mean) / sqrt(var + eps) into the merger's last
    Linear, so the LM receives standardised tokens; the head's norm becomes the identity."""
    norm, last = head.norm, visual.merger.mlp[-1]
    scale = (norm.running_var + norm.eps).rsqrt()
    last.weight.mul_(scale[:, None])
    last.bias.sub_(norm.running_mean).mul_(scale)
    norm.running_mean.zero_()
    norm.running_var.fill_(1 - norm.eps)


def perception_loss(
    logits: dict[str, torch.Tensor], labels: torch.Tensor, weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """sum_task weights[task] * mean over that task's labels (present in the batch) of the
    label's cross-entropy over the images it applies to; distortion levels, being ordinal,
    add (E[level] - level)^2 / MAX_LEVEL (the expected level's error in levels, whose
    gradient CE lacks: confusing level 1 with 4 costs as much as with 2); plus
    weights["position"] * the tokens' mean cross-entropy of their own grid row and column
    (`token/row`, `token/col`, (B, N, side)) where that weight is not 0. Also the terms."""
    per_group: dict[str, list[torch.Tensor]] = {g: [] for g in TASK_OF_GROUP}
    levels = torch.arange(MAX_LEVEL + 1, device=labels.device, dtype=torch.float32)
    for j, name in enumerate(LABELS):
        y, z = labels[:, j], logits[name].float()
        keep = y != IGNORE
        if keep.any():
            loss = nn.functional.cross_entropy(z[keep], y[keep])
            if name.startswith("distortion/"):
                loss = loss + ((z[keep].softmax(-1) @ levels - y[keep]) ** 2).mean() / MAX_LEVEL
            per_group[name.split("/")[0]].append(loss)
    terms = {TASK_OF_GROUP[g]: torch.stack(v).mean() for g, v in per_group.items() if v}
    if weights["position"]:  # at 0 no term: the loss (and so the tower) is bit for bit as without
        rows, cols = logits["token/row"].float(), logits["token/col"].float()
        where = token_grid(rows.shape[1], rows.shape[2], rows.device)
        terms["position"] = sum(nn.functional.cross_entropy(z.flatten(0, 1), w.repeat(len(z)))
                                for z, w in zip((rows, cols), where)) / 2  # fmt: skip
    return sum(weights[t] * v for t, v in terms.items()), terms


def new_head(visual, image_size: int, width: int) -> PerceptionHead:
    """A PerceptionHead for the merger tokens of `visual` at image_size px."""
    merge = visual.config.spatial_merge_size * visual.config.patch_size
    return PerceptionHead(visual.config.out_hidden_size, (image_size // merge) ** 2, width)


def load_head(path: str | Path, visual) -> PerceptionHead:
    """The PerceptionHead saved beside a perception-pretrained model (for benchmarks)."""
    settings = json.loads((Path(path) / REPORT).read_text())["settings"]
    head = new_head(visual, settings["image_size"], settings["head_width"])
    head.load_state_dict(load_file(Path(path) / HEAD_WEIGHTS))
    return head.eval()
