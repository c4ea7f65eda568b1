"""QualityReward: TRL's reward-function call signature, and two GRPOTrainer steps with it."""

import numpy as np
import pytest
from PIL import Image

import omniquality_r.inference as inference
from omniquality_r.reward_fn import QualityReward, text_of
from omniquality_r.scoring import QualityScorer, project_defaults

GENERATION = {"max_new_tokens": 12, "do_sample": False}


@pytest.fixture
def scorer(tiny_model):
    instructions, system_prompt, _ = project_defaults()
    model, processor = tiny_model
    return QualityScorer(model, processor, instructions=instructions, system_prompt=system_prompt,
                         generation=GENERATION)  # fmt: skip


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"im{i}.png"))
        pixels = np.random.default_rng(i).integers(0, 255, (112, 112, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(paths[-1])
    return paths


@pytest.fixture
def parsed(monkeypatch):
    """Control parsing (the untrained scorer's answers do not parse): a response reads as the
    sum of its query's token ids mod 6, so different captions get different scores."""

    def read_scores(responses, readout, *, inputs, **_):
        return [float(ids.sum() % 6) for ids in inputs["input_ids"]]

    monkeypatch.setattr(inference, "read_scores", read_scores)


def test_text_of_plain_and_conversational():
    assert text_of("a cat") == "a cat"
    assert text_of([{"role": "assistant", "content": "a dog"}]) == "a dog"
    parts = [{"type": "image"}, {"type": "text", "text": "a "}, {"type": "text", "text": "cow"}]
    conversation = [{"role": "system", "content": "x"}, {"role": "user", "content": parts}]
    assert text_of(conversation) == "a cow"


def test_reward_call_signature_and_sources(scorer, images, parsed):
    logged = {}
    reward = QualityReward(scorer, "alignment", image_column="image_path")
    out = reward(prompts=["Caption:", "Caption:"], completions=["a red circle", ""],
                 completion_ids=[[1], [2]], image_path=images, trainer_state=None,
                 log_extra=logged.__setitem__, log_metric=lambda *a: None)  # fmt: skip
    assert reward.__name__ == "omniquality_alignment"
    assert 0 <= out[0] <= 5 and out[1] == 0.0  # empty caption: no prompt, the fallback
    assert "needs a prompt" in logged["omniquality_alignment_reasoning"][1]

    generator = QualityReward(scorer, "alignment", image_column=None, text="prompt")
    out = generator(prompts=[[{"role": "user", "content": "a red circle"}]] * 2,
                    completions=[[{"role": "assistant", "content": images[0]}],
                                 [{"role": "assistant", "content": "nowhere.png"}]])  # fmt: skip
    assert 0 <= out[0] <= 5 and out[1] == 0.0
    skip = QualityReward(scorer, "alignment", image_column=None, text="prompt", fallback=None)
    assert skip(prompts=["a red circle"], completions=["nowhere.png"]) == [None]
    with pytest.raises(KeyError, match="image_path"):
        reward(prompts=["p"], completions=["c"], image=images[:1])
    with pytest.raises(ValueError, match="text must be"):
        QualityReward(scorer, text="caption")


def test_two_grpo_steps_with_omniquality_reward(scorer, images, parsed, tiny_path, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    torch.manual_seed(0)
    policy = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=128, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    ))  # fmt: skip
    dataset = Dataset.from_dict({"prompt": ["Describe the picture:", "Caption this image:"] * 2,
                                 "image_path": images * 2})  # fmt: skip
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
        max_completion_length=8, max_steps=2, learning_rate=1e-3, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=policy, processing_class=tokenizer, args=args, train_dataset=dataset,
        reward_funcs=QualityReward(scorer, "alignment", image_column="image_path"),
    )  # fmt: skip
    before = [p.detach().clone() for p in policy.parameters()]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "rewards/omniquality_alignment/mean" in h]
    assert trainer.state.global_step == 2 and len(logs) == 2
    assert all(0.0 <= h["rewards/omniquality_alignment/mean"] <= 5.0 for h in logs)
    assert any(h["rewards/omniquality_alignment/std"] > 0 for h in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
