import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from omniquality_r.models.loading import load_model
from omniquality_r.models.tiny import VISION_TOKENS, build_tiny, spec_hash


def test_build_is_deterministic_and_cached(tmp_path, tiny_spec):
    a = build_tiny(tmp_path / "a", tiny_spec)
    b = build_tiny(tmp_path / "b", tiny_spec)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert build_tiny(tmp_path / "a", tiny_spec) == a  # second call reuses the folder
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime
    assert a.name == f"tiny-{spec_hash(tiny_spec)}"
    changed = {**tiny_spec, "seed": tiny_spec["seed"] + 1}
    assert build_tiny(tmp_path / "a", changed) != a


def test_processor_and_model_reload_with_from_pretrained(tiny_path):
    processor = AutoProcessor.from_pretrained(tiny_path)
    tok = processor.tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in VISION_TOKENS)
    assert tok.tokenize("4.25") == ["4", ".", "2", "5"]  # digits one by one, as Qwen's
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    assert "<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_path)
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")


def test_generation_never_emits_vision_tokens(tiny_path):
    model, processor = load_model(str(tiny_path))
    suppressed = set(model.generation_config.suppress_tokens)
    tok = processor.tokenizer
    assert {tok.convert_tokens_to_ids(t) for t in VISION_TOKENS} <= suppressed
    vision_ids = torch.tensor(sorted(suppressed))
    with torch.no_grad():  # make the vision tokens the most likely ones, then generate
        model.lm_head.weight[vision_ids] *= 50
    ids = tok("hello", return_tensors="pt").input_ids
    out = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False)
    assert not set(out[0, ids.shape[1]:].tolist()) & suppressed
