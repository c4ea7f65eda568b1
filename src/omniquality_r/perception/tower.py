"""The tower's low-level start (a DCT filter-bank stem, band energies in its first block)
and the tokens it hands the LM."""

from __future__ import annotations

import torch

OPPONENT = ((1, 1, 1), (1, -1, 0), (1, 1, -2))  # luminance, red-green, blue-yellow


def dct_filters(patch: int, temporal: int, n: int) -> torch.Tensor:
    """(n, 3, temporal, patch, patch) orthonormal filters: the 2-D DCT-II basis functions
    phi_uv(x, y) = c_u c_v cos(pi (2x + 1) u / 2p) cos(pi (2y + 1) v / 2p) in order of u + v,
    on luminance (the first 3n/4) and on two opponent-colour channels (n/8 each), the
    same in every frame."""
    x = torch.arange(patch, dtype=torch.float64)
    basis = torch.stack([torch.cos(torch.pi * (2 * x + 1) * u / (2 * patch)) for u in range(patch)])
    basis = basis / basis.norm(dim=1, keepdim=True)
    order = sorted(((u, v) for u in range(patch) for v in range(patch)), key=lambda f: (sum(f), f))
    counts = (n - 2 * (n // 8), n // 8, n // 8)
    filters = []
    for colour, count in zip(OPPONENT, counts):
        c = torch.tensor(colour, dtype=torch.float64)
        for u, v in order[:count]:
            f = c[:, None, None] / c.norm() * torch.outer(basis[u], basis[v])
            filters.append(f[:, None].expand(3, temporal, patch, patch) / temporal**0.5)
    return torch.stack(filters).float()


@torch.no_grad()
def init_dct_stem(visual, pixel_values: torch.Tensor) -> None:
    """Start the patch embedding as dct_filters, each scaled to unit standard deviation on
    `pixel_values`: fine-detail (high-frequency) channels exist from the first step, which
    a random projection of a 14 px patch buries under the content (issue 3: a low-level
    inductive bias; the model stays a standard Qwen2.5-VL)."""
    proj = visual.patch_embed.proj
    out, _, temporal, patch, _ = proj.weight.shape
    proj.weight.copy_(dct_filters(patch, temporal, out))
    std = visual.patch_embed(pixel_values.to(proj.weight.dtype)).std(0)
    proj.weight.div_(std.clamp_min(1e-6)[:, None, None, None, None])


@torch.no_grad()
def init_energy_block(block) -> None:
    """Start a vision block (the first) as a per-patch band-energy detector: its MLP units
    2c and 2c + 1 get gate = up = +e_c and -e_c, so that with a = norm2(x)_c, the patch's
    DCT coefficient c over the RMS of all of them, silu(a) a + silu(-a) (-a) = a^2 (since
    silu(a) - silu(-a) = a): the patch's relative energy in band c. down_proj adds
    Q (a^2 - 1) to the residual, Q a random orthogonal basis; spare units start silent
    (zero down_proj columns) and the block's attention output at zero. A linear patch
    embedding cannot compute energies, and before any training a linear read-out of their
    image mean predicts blur/JPEG/noise levels with SRCC .79/.86/.62, against .07/.00/-.05
    from the coefficients alone (benchmarks/energy_probe.py)."""
    mlp, dim = block.mlp, block.norm2.weight.numel()
    n = min(dim, mlp.gate_proj.out_features // 2)
    channels, units = torch.arange(n), 2 * torch.arange(n)
    for proj in (mlp.gate_proj, mlp.up_proj):
        proj.weight[: 2 * n] = 0
        proj.bias[: 2 * n] = 0
        proj.weight[units, channels] = 1
        proj.weight[units + 1, channels] = -1
    q = torch.linalg.qr(torch.randn(dim, n, dtype=torch.float64))[0].to(mlp.down_proj.weight)
    mlp.down_proj.weight.zero_()
    mlp.down_proj.weight[:, units] = q
    mlp.down_proj.weight[:, units + 1] = q
    mlp.down_proj.bias.copy_(-q.sum(1))
    block.attn.proj.weight.zero_()
    block.attn.proj.bias.zero_()


def vision_tokens(visual, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
    """The merger output, the image tokens the LM sees, as (images, tokens, dim)."""
    out = visual(pixel_values.to(visual.dtype), grid_thw=grid_thw).pooler_output
    return out.view(len(grid_thw), -1, out.shape[-1])
