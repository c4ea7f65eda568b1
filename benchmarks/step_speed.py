"""The main job's hot paths, each against the plain Hugging Face path, side by side in one run.

    python benchmarks/step_speed.py [--repeats 7]

On the tiny default model (random weights: speed does not depend on them) and synthetic
records at the pipeline's batch sizes, median seconds over `repeats` runs of:

  vision tower fwd+bwd, 32 images  HF Conv3d + per-image attention | models/fast_vision.py
  SFT step (fwd+bwd), 16 rows      model(**batch).loss on full rows | modules/sft.sft_loss
                                   (system prompt once per batch, logits on labelled tokens)
  GRPO loss pass, 4 prompts x 8    a forward on G copies of each prompt | completion_logits
  GRPO generation, 4 prompts x 8   generate from G copies (48 new tokens) | prefill_groups

The GRPO rows hand both sides the image features computed once per prompt (what the code did
before each prompt's text ran once per group too), so they measure the shared text prefix
alone. Prints the CPU capability and threads.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from omniquality_r.data.collate import collate_sft
from omniquality_r.data.records import load_image
from omniquality_r.data.synthetic import generate_synthetic
from omniquality_r.inference import PromptSpec, completion_mask, encode_prompts
from omniquality_r.models.loading import load_model, set_vision_trainable
from omniquality_r.models.shared_prefix import image_features
from omniquality_r.modules.sft import BATCH_INFO, sft_loss
from omniquality_r.perception.tower import vision_tokens
from omniquality_r.rl.rollout import completion_logits, expand_rows, generate_groups, group_rows

ROOT = Path(__file__).resolve().parents[1]
P, G, NEW_TOKENS = 4, 8, 48


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cfg = OmegaConf.load(ROOT / "conf/config.yaml")
    instructions = {t: OmegaConf.load(ROOT / f"conf/task/{t}.yaml").instruction
                    for t in ("technical", "aesthetic", "alignment")}  # fmt: skip
    spec = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/tiny.yaml").spec)
    tmp = Path(tempfile.mkdtemp(prefix="step-speed-"))
    from omniquality_r.models.tiny import build_tiny

    path = str(build_tiny(tmp / "models", spec))
    model, processor = load_model(path)
    set_vision_trainable(model, False)
    records = generate_synthetic(tmp / "synthetic", n_per_task=12)
    rows = [{**asdict(r), "plan": "", "reasoning": "Sharpness: slightly soft. Noise: clean. "
             "Compression: free of blocking. Weighing this, the quality is fair.",
             "score": round(r.mos, 2)} for r in records]  # fmt: skip
    rows = rows[::3] + rows[1::3] + rows[2::3]  # tasks mixed as a shuffled epoch has them
    results = []

    # vision tower
    hf_tower = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).model.visual
    fast_tower = copy.deepcopy(model.model.visual).requires_grad_(True)
    pixels = processor.image_processor([load_image(r.image) for r in records[:32]],
                                       return_tensors="pt")  # fmt: skip
    for name, tower in (("HF", hf_tower), ("fast_vision", fast_tower)):
        def tower_step(tower=tower):
            vision_tokens(tower, pixels["pixel_values"], pixels["image_grid_thw"]).sum().backward()

        seconds = median_s(tower_step, args.repeats)
        results.append(("vision tower fwd+bwd, 32 images", name, seconds))

    # SFT step
    batch = collate_sft(processor, rows[:16], instructions=instructions,
                        system_prompt=cfg.system_prompt)  # fmt: skip
    inputs = {k: v for k, v in batch.items() if k not in BATCH_INFO}
    steps = {"full rows (HF loss)": lambda: model(**inputs).loss.backward(),
             "sft_loss": lambda: sft_loss(model, inputs).backward()}  # fmt: skip
    for name, fn in steps.items():
        results.append((f"SFT fwd+bwd, 16 rows x {inputs['input_ids'].shape[1]}", name,
                        median_s(fn, args.repeats)))  # fmt: skip

    # GRPO loss pass and generation
    specs = [PromptSpec(load_image(r.image), r.task, r.prompt) for r in records[:P]]
    prompts = encode_prompts(processor, specs, instructions, cfg.system_prompt)
    model.eval()
    with torch.no_grad():
        feats = image_features(model, prompts)
        gen = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
               "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}  # fmt: skip
        ids = generate_groups(model, processor, prompts, feats, G, gen)
    mask = completion_mask(ids, processor.tokenizer.eos_token_id)
    rows_in = expand_rows(prompts, group_rows(P, G))
    copies = {"image": BaseModelOutputWithPooling(pooler_output=tuple(f for f in feats
                                                                        for _ in range(G)))}
    model.train()

    def copies_loss():
        model(input_ids=torch.cat([rows_in["input_ids"], ids], 1),
              attention_mask=torch.cat([rows_in["attention_mask"], mask], 1),
              mm_token_type_ids=torch.cat([rows_in["mm_token_type_ids"], torch.zeros_like(ids)],
                                          1),
              mm_encoder_outputs=copies, image_grid_thw=rows_in["image_grid_thw"],
              logits_to_keep=ids.shape[1] + 1).logits.sum().backward()  # fmt: skip

    def shared_loss():
        completion_logits(model, prompts, feats, group_rows(P, G), ids, mask).sum().backward()

    results.append((f"GRPO loss pass fwd+bwd, {P} x {G} x {ids.shape[1]}", "G copies",
                    median_s(copies_loss, args.repeats)))  # fmt: skip
    results.append((f"GRPO loss pass fwd+bwd, {P} x {G} x {ids.shape[1]}", "completion_logits",
                    median_s(shared_loss, args.repeats)))  # fmt: skip
    model.eval()
    tok = processor.tokenizer

    @torch.no_grad()
    def copies_generate():
        model.generate(**rows_in, mm_encoder_outputs=copies, **gen,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    @torch.no_grad()
    def prefilled_generate():
        generate_groups(model, processor, prompts, feats, G, gen)

    results.append((f"GRPO generation, {P} x {G} x {NEW_TOKENS} tokens", "G copies",
                    median_s(copies_generate, args.repeats)))  # fmt: skip
    results.append((f"GRPO generation, {P} x {G} x {NEW_TOKENS} tokens", "prefill_groups",
                    median_s(prefilled_generate, args.repeats)))  # fmt: skip

    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch threads "
          f"{torch.get_num_threads()}, median of {args.repeats}")
    print("| path | plain s | ours s | ratio |\n|---|---|---|---|")
    for i in range(0, len(results), 2):
        (what, _, plain), (_, _, ours) = results[i], results[i + 1]
        print(f"| {what} | {plain:.3f} | {ours:.3f} | {plain / ours:.2f}x |")


if __name__ == "__main__":
    main()
