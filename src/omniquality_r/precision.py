"""Training precision chosen per machine (`precision: auto`).

bf16 autocast is fast only where the hardware has bf16 arithmetic: on a CPU without
AVX512-BF16 or AMX, PyTorch emulates it (measured on an AVX2-only AMD EPYC: a 128-512-128
MLP forward+backward 0.58 s in fp32, 6.0 s under bf16 autocast; perception pretraining 2
instead of ~75 images/s). `auto` therefore resolves to Lightning's "bf16-mixed" where
bf16 is native and to "32-true" everywhere else; any other value is passed through.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"


def cpu_has_native_bf16() -> bool:
    """True when this x86 CPU executes bf16 in hardware (AVX512-BF16 or AMX tiles)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def uses_cuda(accelerator: str) -> bool:
    """Whether Lightning's `accelerator` setting puts the model on a CUDA GPU."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def native_bf16(accelerator: str) -> bool:
    """Whether the device `accelerator` selects runs bf16 natively (CUDA: Ampere or newer)."""
    if uses_cuda(accelerator):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_has_native_bf16()


def resolve_precision(precision: str | int, accelerator: str) -> str:
    """`precision` for Lightning: "auto" -> BF16 where native_bf16(accelerator), else FP32;
    anything else unchanged (as a string)."""
    if str(precision) != AUTO:
        return str(precision)
    return BF16 if native_bf16(accelerator) else FP32


def trainer_device(trainer) -> dict:
    """describe_device for a Lightning Trainer, with the precision and world size it ran."""
    device = "cuda" if trainer.strategy.root_device.type == "cuda" else "cpu"
    return {**describe_device(device), "precision": trainer.precision,
            "world_size": trainer.world_size}  # fmt: skip


def describe_device(accelerator: str) -> dict:
    """What the precision choice was made on: CPU capability, threads, native bf16."""
    return {
        "accelerator": "cuda" if uses_cuda(accelerator) else "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "native_bf16": native_bf16(accelerator),
    }
