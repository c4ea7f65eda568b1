"""Decoding settings (conf/decoding, algo.generation, teacher.generation) as the explicit
keyword arguments of `model.generate`, one rule for rollouts, the hf teacher, eval and scoring.

transformers fills every sampling knob a call leaves unset from the checkpoint's
generation_config.json: Qwen2.5-VL-7B-Instruct ships top_k=1, top_p=0.001 and
repetition_penalty=1.05, so a call that sets only temperature would sample almost greedily
(the hf teacher would write k identical trajectories) and with a penalty that the GRPO loss
does not model. Every knob is therefore passed: the configured value, else the neutral one
(no filtering, no penalty), whatever the checkpoint ships.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

NEUTRAL = {
    "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "typical_p": 1.0,
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
}  # fmt: skip
# Greedy decoding ignores these; transformers warns when they are set away from its defaults.
GREEDY_UNSET = ("top_k", "min_p")
# Passed through as given: constrained decoding (prefix_allowed_tokens_fn), and synced_gpus
# (sharded_generation) among them.
KEYS = ("do_sample", "max_new_tokens", "min_new_tokens", "num_return_sequences",
        "prefix_allowed_tokens_fn", "synced_gpus", *NEUTRAL)  # fmt: skip


def generation_kwargs(settings: Mapping) -> dict:
    """`model.generate`'s keyword arguments for `settings`: do_sample (default False) and
    max_new_tokens (required) as given, num_beams 1, and every key of NEUTRAL as configured or
    neutral (greedy leaves GREEDY_UNSET to transformers). An unknown key is an error that
    names it (a typo must not fall back to the checkpoint's value)."""
    unknown = sorted(set(settings) - set(KEYS))
    if unknown:
        raise ValueError(f"generation settings: unknown key(s) {unknown}; expected some of "
                         f"{sorted(KEYS)}")  # fmt: skip
    if "max_new_tokens" not in settings:
        raise ValueError("generation settings: max_new_tokens is required")
    sampling = bool(settings.get("do_sample"))
    neutral = NEUTRAL if sampling else {k: v for k, v in NEUTRAL.items() if k not in GREEDY_UNSET}
    return {**neutral, "num_beams": 1, **settings, "do_sample": sampling}


def describe_generation(settings: Mapping) -> str:
    """The effective settings in one line, e.g. for the log of each stage (a decoding
    config's `repetition_stop`, inference.RepetitionStop's window, is shown as given)."""
    settings = dict(settings)
    stop = settings.pop("repetition_stop", None)
    kwargs = generation_kwargs(settings)
    if kwargs["do_sample"]:
        shown = {k: v for k, v in kwargs.items() if k != "do_sample"}
    else:
        kept = ("max_new_tokens", "repetition_penalty", "no_repeat_ngram_size")
        shown = {k: kwargs[k] for k in kept}
    text = ("sampling, " if kwargs["do_sample"] else "greedy, ") + ", ".join(
        f"{k}={v}" for k, v in shown.items())  # fmt: skip
    return text + (f", repetition_stop={stop}" if stop else "")


def sharded_generation(sharded: bool) -> dict:
    """{"synced_gpus": True} when the running strategy shards the parameters over ranks
    (DeepSpeed ZeRO-3, FSDP: modules/checkpoint.shards_parameters): every rank then keeps
    stepping until the longest generation of any rank ends, since each forward pass gathers
    parameters from all of them (a rank that stopped early would leave the others waiting
    for ever). Else {}."""
    return {"synced_gpus": True} if sharded and torch.distributed.is_initialized() else {}
