"""A tiny Qwen2.5-VL built offline: tokenizer, processor and randomly initialised model.

Everything is deterministic: the byte-level BPE tokenizer is trained on a corpus
shipped with the package (`assets/tokenizer_corpus.txt`) plus the digits, and the
model is initialised from `torch.manual_seed(seed)`. `build_tiny` writes a
Hugging Face folder once; afterwards every stage loads it with `from_pretrained`,
exactly like a real checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2TokenizerFast,
    Qwen2VLImageProcessorPil,
)

# Qwen2.5-VL's special tokens, in Qwen's order (ids follow the BPE vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                 "<|video_pad|>")  # fmt: skip

# Qwen2-VL's chat template (images as <|vision_start|><|image_pad|><|vision_end|>).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without a video processor (that one needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    @classmethod
    def get_attributes(cls):
        return ["image_processor", "tokenizer"]


AutoProcessor.register(Qwen2_5_VLConfig, ImageOnlyQwen2_5_VLProcessor, exist_ok=True)


def _corpus_lines() -> list[str]:
    text = resources.files("omniquality_r").joinpath("assets/tokenizer_corpus.txt").read_text()
    numbers = [f"{i / 100:.2f}" for i in range(501)]
    return [*text.splitlines(), " ".join(numbers)]


def build_tokenizer(vocab_size: int) -> Qwen2TokenizerFast:
    """Byte-level BPE (digits split one by one, as Qwen's) with Qwen's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return Qwen2TokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )


def build_processor(vocab_size: int, image_size: int, patch_size: int, merge_size: int):
    """Tokenizer + PIL image processor fixed to `image_size` px squares."""
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )
    tokenizer = build_tokenizer(vocab_size)
    return ImageOnlyQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)


def tiny_config(tokenizer, *, text: dict, vision: dict) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL config at tiny size; `mrope_section` must sum to head_dim / 2."""
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    half = head_dim // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    return Qwen2_5_VLConfig(
        text_config={
            **text,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": mrope,
            },
            "bos_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            **vision,
            "out_hidden_size": text["hidden_size"],
            "fullatt_block_indexes": list(range(vision["depth"])),
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def spec_hash(spec: dict) -> str:
    """Hash of the spec and of the tokenizer corpus, so a change to either builds anew."""
    payload = json.dumps(spec, sort_keys=True) + "\n".join(_corpus_lines())
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_tiny(cache_dir: str | Path, spec: dict) -> Path:
    """Build the tiny model folder for `spec` once (atomic rename) and return its path.

    `spec` holds seed, vocab_size, image_size, text and vision sizes; the folder
    name carries a hash of it, so a changed spec builds a new folder.
    """
    target = Path(cache_dir) / f"tiny-{spec_hash(spec)}"
    if (target / "spec.json").is_file():
        return target
    processor = build_processor(
        spec["vocab_size"],
        spec["image_size"],
        spec["vision"]["patch_size"],
        spec["vision"]["spatial_merge_size"],
    )
    config = tiny_config(processor.tokenizer, text=spec["text"], vision=spec["vision"])
    torch.manual_seed(spec["seed"])
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.suppress_tokens = [
        processor.tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS
    ]
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
    try:
        tmp.rename(target)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
