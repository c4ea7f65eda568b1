"""Every sampling knob explicit: a checkpoint's generation_config.json changes nothing."""

import copy

import numpy as np
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from PIL import Image

from omniquality_r.decoding import describe_generation, generation_kwargs
from omniquality_r.inference import PromptSpec, encode_prompts, generate
from omniquality_r.models.shared_prefix import image_features
from omniquality_r.modules.checkpoint import generation_under
from omniquality_r.rl.rollout import generate_groups

SAMPLE = {"do_sample": True, "temperature": 1.0, "max_new_tokens": 6}
GREEDY = {"do_sample": False, "max_new_tokens": 6}


def test_generation_kwargs_hand_values():
    assert generation_kwargs({**SAMPLE, "top_p": 0.8}) == {
        "do_sample": True, "max_new_tokens": 6, "num_beams": 1, "temperature": 1.0,
        "top_p": 0.8, "top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
    }  # fmt: skip
    greedy = generation_kwargs(GREEDY)
    assert greedy["do_sample"] is False and greedy["repetition_penalty"] == 1.0
    assert "top_k" not in greedy and "min_p" not in greedy  # transformers warns on them
    assert describe_generation(GREEDY).startswith("greedy, max_new_tokens=6")
    assert describe_generation({**GREEDY, "repetition_stop": 32}).endswith("repetition_stop=32")
    assert describe_generation(SAMPLE).startswith("sampling, temperature=1.0, top_p=1.0, top_k=0")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['topk'\]"):
        generation_kwargs({**SAMPLE, "topk": 5})
    with pytest.raises(ValueError, match="max_new_tokens"):
        generation_kwargs({"do_sample": True})


@pytest.fixture(scope="module")
def qwen_like(tiny_model):
    """The tiny model with Qwen2.5-VL-7B-Instruct's shipped generation_config.json values."""
    model, processor = tiny_model
    shipped = copy.deepcopy(model)
    c = shipped.generation_config
    c.do_sample, c.top_k, c.top_p, c.temperature, c.repetition_penalty = True, 1, 0.001, 0.1, 1.05
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    inputs = encode_prompts(processor, [PromptSpec(image, "technical")], {"technical": "Rate."},
                            "SYS")  # fmt: skip
    return shipped, processor, inputs


def test_sampling_ignores_the_checkpoints_top_k(qwen_like):
    model, processor, inputs = qwen_like
    torch.manual_seed(0)
    plain = model.generate(**inputs, do_sample=True, temperature=1.0, max_new_tokens=6,
                           num_return_sequences=4, pad_token_id=processor.tokenizer.pad_token_id)
    assert len({tuple(r) for r in plain.tolist()}) == 1  # top_k=1 from the checkpoint acts
    torch.manual_seed(0)
    ours = generate(model, processor, inputs, {**SAMPLE, "num_return_sequences": 4})
    assert len({tuple(r) for r in ours.tolist()}) == 4
    torch.manual_seed(0)
    with torch.no_grad():
        groups = generate_groups(model, processor, inputs, image_features(model, inputs), 4,
                                 SAMPLE)  # fmt: skip
    assert len({tuple(r) for r in groups.tolist()}) == 4


def test_greedy_ignores_the_checkpoints_repetition_penalty(tiny_model, qwen_like):
    _, processor, inputs = qwen_like
    model = copy.deepcopy(tiny_model[0])
    model.generation_config.repetition_penalty = 5.0  # strong enough to move the tiny model
    clean = generate(tiny_model[0], processor, inputs, {**GREEDY, "max_new_tokens": 12})
    shipped = generate(model, processor, inputs, {**GREEDY, "max_new_tokens": 12})
    penalised = model.generate(**inputs, do_sample=False, max_new_tokens=12,
                               pad_token_id=processor.tokenizer.pad_token_id)  # fmt: skip
    assert torch.equal(clean, shipped)
    assert not torch.equal(penalised[:, inputs["input_ids"].shape[1]:], clean)


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group, as Lightning sets up under a distributed strategy."""
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0,
                            world_size=1)  # fmt: skip
    yield
    dist.destroy_process_group()


def test_sharded_strategies_generate_in_lockstep(process_group, qwen_like):
    fsdp = FSDPStrategy(parallel_devices=[torch.device("cpu")])
    assert generation_under(fsdp, SAMPLE) == {**SAMPLE, "synced_gpus": True}
    assert generation_under(DDPStrategy(parallel_devices=[torch.device("cpu")]), SAMPLE) == SAMPLE
    model, processor, inputs = qwen_like  # the rollout path runs with synced_gpus
    with torch.no_grad():
        ids = generate_groups(model, processor, inputs, image_features(model, inputs), 2,
                              generation_under(fsdp, SAMPLE))  # fmt: skip
    assert ids.shape[0] == 2


def test_no_lockstep_without_a_process_group():
    assert generation_under(FSDPStrategy(), SAMPLE) == SAMPLE
