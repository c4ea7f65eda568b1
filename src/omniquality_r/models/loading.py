"""Load a Qwen2.5-VL (tiny built offline, hub id, or a checkpoint folder) with its processor.

The tiny model and the real 3B/7B models take the same path: a Hugging Face
folder or hub id -> `from_pretrained`. Checkpoints written by later stages are
such folders too (model + processor; LoRA runs also save the merged model).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from .fast_vision import use_fast_vision
from .tiny import VISION_TOKENS, build_tiny

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name: str, path: str | None, cache_dir: str, spec: dict | None) -> str:
    """The folder or hub id to load: `path` when given, else the tiny model built into cache
    (its perception-pretrained tower is perception/build.py's, which stages ask for)."""
    if path:
        return str(path)
    if name != "tiny" or spec is None:
        raise ValueError(f"model {name!r} needs model.path (a hub id or a local folder)")
    return str(build_tiny(cache_dir, spec))


def load_model(
    path: str,
    *,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """Model in train mode and its processor (left padding, vision tokens suppressed), the
    vision tower on its fast paths (fast_vision.py: same weights, same function)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    if Path(path).exists() and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model folder (no config.json)")
    model = use_fast_vision(
        Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=DTYPES[dtype], attn_implementation=attn_implementation
        )
    )
    kwargs = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}
    processor = AutoProcessor.from_pretrained(path, **kwargs)
    processor.tokenizer.padding_side = "left"
    tok = processor.tokenizer
    model.generation_config.suppress_tokens = sorted(
        {tok.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    )
    model.generation_config.pad_token_id = tok.pad_token_id
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()  # Lightning keeps modules in the mode they are given
    return model, processor


def base_model(model):
    """The Qwen2.5-VL itself, inside a peft wrapper or not."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def vision_modules(model) -> list[torch.nn.Module]:
    """The vision tower and its merger into the language model."""
    return [base_model(model).model.visual]


def vision_trainable(model) -> bool:
    """Whether any weight of the vision tower (incl. its merger) trains."""
    return any(p.requires_grad for m in vision_modules(model) for p in m.parameters())


def set_vision_trainable(model, trainable: bool) -> None:
    """Freeze or unfreeze the vision tower (incl. its merger)."""
    for module in vision_modules(model):
        module.requires_grad_(trainable)


def apply_lora(model, *, r: int, alpha: int, dropout: float, target_modules: str | list[str]):
    """Wrap the model with a peft LoRA adapter; only adapter weights stay trainable."""
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
        task_type="CAUSAL_LM",
    )  # fmt: skip
    return get_peft_model(model, config)


def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def save_checkpoint(model, processor, path: str | Path, state_dict: dict | None = None) -> Path:
    """Write the one checkpoint format every stage reads: a Hugging Face folder with the model
    and its processor. A LoRA model also keeps its adapter under `adapter/`; the folder itself
    holds the merged model, so `load_model(path)` works either way. `state_dict`: the full
    weights where the live model holds a shard only (modules/checkpoint.save_trained)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(path / "adapter")
        model = copy.deepcopy(model).merge_and_unload()  # the live model keeps its adapter
    model.save_pretrained(path, state_dict=state_dict)
    processor.save_pretrained(path)
    return path
