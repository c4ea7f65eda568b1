import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from omniquality_r.data.records import TASKS
from omniquality_r.data.synthetic import DISTORTIONS, SAMPLERS, sample_rng
from omniquality_r.models.loading import load_model, resolve_model_path
from omniquality_r.perception import build
from omniquality_r.perception.build import perception_folder
from omniquality_r.perception.head import PerceptionHead, fold_norm, load_head, perception_loss
from omniquality_r.perception.labels import IGNORE, LABELS, label_vector, labels_of
from omniquality_r.perception.report import (
    REPORT,
    auc,
    perception_metrics,
    position_metrics,
    predict_probs,
    technical_metrics,
)
from omniquality_r.perception.stream import PerceptionStream, task_counts
from omniquality_r.perception.tower import (
    dct_filters,
    init_dct_stem,
    init_energy_block,
    vision_tokens,
)

ROOT = Path(__file__).resolve().parents[2]
NO_DISTORTION = {f"distortion/{d}": 0 for d in DISTORTIONS}


def test_technical_labels_are_the_levels():
    levels = dict.fromkeys(DISTORTIONS, 0) | {"blur": 3, "jpeg": 1}
    labels = labels_of("technical", {"levels": levels, "distortions": ["blur", "jpeg"]})
    assert labels == NO_DISTORTION | {"distortion/blur": 3, "distortion/jpeg": 1}


def test_aesthetic_labels_are_level_indices_and_exposure_is_a_distortion():
    factors = {"placement": "thirds", "harmony": "clashing", "clutter": 5, "exposure": -2,
               "background": 0, "palette": "clashing"}  # fmt: skip
    assert labels_of("aesthetic", factors) == NO_DISTORTION | {
        "distortion/underexposure": 3,  # 2 stops under = technical level 2 * 2 - 1
        "aesthetic/placement": 2, "aesthetic/harmony": 0, "aesthetic/clutter": 1,
        "aesthetic/background": 3, "aesthetic/exposure": 0,  # stops -2..2 -> classes 0..4
    }  # fmt: skip
    over = labels_of("aesthetic", factors | {"exposure": 1})
    assert over["distortion/overexposure"] == 1 and over["aesthetic/exposure"] == 3


def test_alignment_labels_describe_what_is_rendered_per_region():
    objects = [
        {"prompt": {"shape": "star", "colour": "red", "count": 2, "position": "left"},
         "rendered": {"shape": "ring", "colour": "blue", "count": 3, "position": "top"}},
        {"prompt": {"shape": "circle", "colour": "white", "count": 1, "position": "right"},
         "rendered": None},
    ]  # fmt: skip
    labels = labels_of("alignment", {"objects": objects})
    assert labels == NO_DISTORTION | {
        "object/top/colour": 2, "object/top/shape": 4, "object/top/count": 3,
        "object/left/count": 0, "object/right/count": 0, "object/bottom/count": 0,
        "object/centre/count": 0,
    }  # fmt: skip
    vector = label_vector(labels)
    assert vector.shape == (len(LABELS),)
    assert vector[list(LABELS).index("object/left/colour")] == IGNORE
    assert vector[list(LABELS).index("aesthetic/harmony")] == IGNORE


@pytest.mark.parametrize("task", TASKS)
def test_every_sampler_yields_valid_labels(task):
    for i in range(5):
        vector = label_vector(labels_of(task, SAMPLERS[task](sample_rng(0, task, i), 56).factors))
        assert all(v == IGNORE or 0 <= v < n for v, n in zip(vector, LABELS.values()))


def test_head_gives_one_logit_row_per_label_and_the_loss_skips_absent_labels():
    head = PerceptionHead(in_dim=32, n_tokens=16, width=24)
    logits = head(torch.randn(3, 16, 32))
    assert {k: tuple(v.shape) for k, v in logits.items()} == {
        **{k: (3, n) for k, n in LABELS.items()}, "token/row": (3, 16, 4), "token/col": (3, 16, 4)}
    labels = torch.full((3, len(LABELS)), IGNORE)
    labels[:, : len(DISTORTIONS)] = 0  # only distortion labels: one task term (+ position)
    loss, terms = perception_loss(logits, labels, dict.fromkeys([*TASKS, "position"], 1.0))
    assert set(terms) == {"technical", "position"} and torch.isfinite(loss)
    loss.backward()
    weights = {**dict.fromkeys(TASKS, 1.0), "position": 0.0}  # off: no term, the same loss
    off, terms = perception_loss(logits, labels, weights)
    assert set(terms) == {"technical"} and off.item() == terms["technical"].item()


def test_the_position_term_is_the_cross_entropy_of_each_tokens_own_row_and_column():
    """2 x 2 grid: token 0 (row 0, col 0) ... token 3 (row 1, col 1); logits that put
    probability p on the right row and column give -log p per token."""
    p = 0.8
    right = torch.log(torch.tensor([[p, 1 - p], [1 - p, p]]))  # row / col 0, then 1
    rows = torch.stack([right[0], right[0], right[1], right[1]])[None]  # (1, 4, 2)
    cols = torch.stack([right[0], right[1], right[0], right[1]])[None]
    labels = torch.full((1, len(LABELS)), IGNORE)
    _, terms = perception_loss({"token/row": rows, "token/col": cols, **{
        k: torch.zeros(1, n) for k, n in LABELS.items()}}, labels, {"position": 1.0})
    assert terms == {"position": pytest.approx(-math.log(p))}
    wrong = perception_loss({"token/row": rows.flip(1), "token/col": cols, **{
        k: torch.zeros(1, n) for k, n in LABELS.items()}}, labels, {"position": 1.0})[1]
    assert wrong["position"].item() == pytest.approx(-(math.log(p) + math.log(1 - p)) / 2)


def test_task_counts_split_a_batch_by_the_mix():
    mix = {"technical": 2, "aesthetic": 1, "alignment": 1}
    assert task_counts(64, mix) == {"technical": 32, "aesthetic": 16, "alignment": 16}
    assert task_counts(10, mix) == {"technical": 5, "aesthetic": 3, "alignment": 2}


def test_stream_batches_depend_only_on_seed_and_index(tiny_model):
    image_processor = tiny_model[1].image_processor
    mix = {"technical": 1, "alignment": 1}
    a = PerceptionStream(image_processor, 112, 4, mix, seed=1).batch(3)
    b = PerceptionStream(image_processor, 112, 4, mix, seed=1).batch(3)
    c = PerceptionStream(image_processor, 112, 4, mix, seed=2).batch(3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["pixel_values"], c["pixel_values"])
    assert a["tasks"].tolist() == [TASKS.index("technical")] * 2 + [TASKS.index("alignment")] * 2
    assert a["pixel_values"].shape == (4 * 64, 1176) and a["grid_thw"].tolist() == [[1, 8, 8]] * 4


def test_the_parts_of_a_batch_are_the_batch(tiny_model):
    """Rank r of W generates every W-th sample of each task: together the same images."""
    stream = PerceptionStream(tiny_model[1].image_processor, 112, 5, {"technical": 3,
                                                                      "alignment": 2}, seed=1)
    whole = stream.batch(2)
    parts = [stream.batch(2, r, 2) for r in range(2)]
    assert [len(p["labels"]) for p in parts] == [3, 2]
    rows = {tuple(x.tolist()) for x in whole["pixel_values"].view(5, -1)[:, :32]}
    split = {tuple(x.tolist()) for p in parts for x in p["pixel_values"].view(len(p["labels"]),
                                                                            -1)[:, :32]}
    assert rows == split and sorted(whole["tasks"].tolist()) == sorted(
        t for p in parts for t in p["tasks"].tolist())


def test_auc_and_technical_metrics_of_perfect_predictions():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == 0.75
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 5, (40, len(DISTORTIONS)))
    labels = np.full((40, len(LABELS)), IGNORE)
    labels[:, : len(DISTORTIONS)] = levels
    probs = {f"distortion/{d}": np.eye(5)[levels[:, i]] for i, d in enumerate(DISTORTIONS)}
    m = technical_metrics(probs, labels)
    assert m["mean_srcc"] == pytest.approx(1) and m["mean_auc"] == 1 and m["mos_srcc"] > 0.99
    tasks = np.full(40, TASKS.index("technical"))
    assert set(perception_metrics(probs, labels, tasks)) == {"technical"}


def test_position_metrics_count_tokens_read_out_at_their_own_grid_cell():
    grid = np.arange(16)  # 4 x 4 tokens: each read out at its own place but token 0 (row 1)
    rows = np.eye(4)[np.tile(np.where(grid == 0, 1, grid // 4), (40, 1))]
    cols = np.eye(4)[np.tile(grid % 4, (40, 1))]
    m = position_metrics({"token/row": rows, "token/col": cols})
    assert m == {"accuracy": pytest.approx(15 / 16), "chance": 1 / 16}


def test_dct_stem_is_orthonormal_and_standardised(tiny_model):
    filters = dct_filters(14, 2, 128).flatten(1)
    assert torch.allclose(filters @ filters.T, torch.eye(128), atol=1e-5)
    model, processor = tiny_model
    visual = copy.deepcopy(model.model.visual)
    stream = PerceptionStream(processor.image_processor, 112, 4, {"technical": 1}, seed=0)
    pixels = stream.batch(0)["pixel_values"]
    init_dct_stem(visual, pixels)
    with torch.no_grad():
        std = visual.patch_embed(pixels).std(0)
    assert torch.allclose(std, torch.ones_like(std), atol=1e-4)


def test_energy_block_squares_the_normalised_coefficients(tiny_model):
    block = copy.deepcopy(tiny_model[0].model.visual.blocks[0])
    init_energy_block(block)
    dim = block.norm2.weight.numel()
    x = torch.randn(7, dim)
    with torch.no_grad():
        z = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()  # RMSNorm, weight 1
        q = block.mlp.down_proj.weight[:, 0 : 2 * dim : 2]
        assert torch.allclose(block.mlp(z), (z**2 - 1) @ q.T, atol=1e-4)
        assert torch.allclose(q.T @ q, torch.eye(dim), atol=1e-5)  # orthogonal
        assert not block.attn.proj.weight.any()
        assert not block.mlp.down_proj.weight[:, 2 * dim :].any()
    # the spare units can still learn: their down_proj columns get gradients
    block.mlp(torch.randn(3, dim)).sum().backward()
    assert block.mlp.down_proj.weight.grad[:, 2 * dim :].abs().sum() > 0


def test_fold_norm_moves_the_head_standardisation_into_the_merger(tiny_model):
    visual = copy.deepcopy(tiny_model[0].model.visual).eval()
    head = PerceptionHead(visual.config.out_hidden_size, 16).eval()
    head.norm.running_mean.normal_()
    head.norm.running_var.uniform_(0.5, 2)
    pixels = torch.randn(2 * 64, 1176)
    grid = torch.tensor([[1, 8, 8]] * 2)
    with torch.no_grad():
        before = head(vision_tokens(visual, pixels, grid))
        fold_norm(visual, head)
        tokens = vision_tokens(visual, pixels, grid)
        after = head(tokens)
    assert all(torch.allclose(before[k], after[k], atol=1e-4) for k in LABELS)
    assert torch.allclose(head.norm(tokens.flatten(0, 1)), tokens.flatten(0, 1), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_settings() -> dict:
    """conf/model/tiny.yaml's perception settings at a budget of a few seconds."""
    settings = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/tiny.yaml").perception)
    return settings | {"steps": 3, "batch_size": 6, "eval_batches": 1, "processes": 1}


def test_pretrained_cache_is_built_once_and_reloads_identically(
    tiny_path, tiny_spec, tiny_settings, monkeypatch
):
    calls = []
    pretrain = build.pretrain_vision
    monkeypatch.setattr(build, "pretrain_vision",
                        lambda *a, **k: calls.append(k) or pretrain(*a, **k))  # fmt: skip
    cache = str(tiny_path.parent)  # the session's tiny model is the base
    assert resolve_model_path("tiny", None, cache, tiny_spec) == str(tiny_path)  # never trains
    assert not calls
    path = build.ensure_perception(tiny_path, tiny_settings, tiny_spec["image_size"])
    assert path == perception_folder(tiny_path, tiny_settings)[0]
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert build.ensure_perception(tiny_path, tiny_settings, tiny_spec["image_size"]) == path
    assert len(calls) == 1 and (path / "model.safetensors").stat().st_mtime_ns == mtime

    # Only the tower (incl. merger) changed; the LM is the base model's.
    base, new = load_file(tiny_path / "model.safetensors"), load_file(path / "model.safetensors")
    assert base.keys() == new.keys()
    changed = {k for k in base if not torch.equal(base[k], new[k])}
    assert changed and all(k.startswith(("visual.", "model.visual.")) for k in changed)
    assert any(".merger." in k for k in changed) and any(".blocks." in k for k in changed)

    # Reloaded with load_model and the saved head, the held-out report is reproduced.
    report = json.loads((path / REPORT).read_text())
    model, processor = load_model(str(path))
    visual = model.model.visual
    head = load_head(path, visual)
    held_out = PerceptionStream(processor.image_processor, tiny_spec["image_size"],
                                tiny_settings["batch_size"], tiny_settings["mix"],
                                tiny_settings["eval_seed"])  # fmt: skip
    probs, labels, tasks = predict_probs(visual, head, [held_out.batch(0)])
    reported = {k: v for k, v in report["held_out"].items() if k not in ("seed", "images")}
    assert json.dumps(perception_metrics(probs, labels, tasks), sort_keys=True) == json.dumps(
        reported, sort_keys=True)  # NaN-safe: undefined metrics on a batch this small


def test_two_process_pretraining_trains_the_tower_and_records_how(tiny_path, tiny_spec,
                                                                 tiny_settings, tmp_path):
    """processes=2: two gloo ranks (ddp_spawn) train on their parts of each batch; the parent
    gets rank 0's weights, and the report names the precision and the process count."""
    out = tmp_path / "perception"
    report = build.pretrain_vision(tiny_path, out, image_size=tiny_spec["image_size"],
                                        **tiny_settings | {"processes": 2, "steps": 2,
                                                           "batch_size": 4})  # fmt: skip
    assert report["device"]["processes"] == 2 and report["device"]["precision"] in (
        "32-true", "bf16-mixed")
    base, new = load_file(tiny_path / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(base[k], new[k]) for k in base if ".blocks." in k)


def test_two_processes_needing_the_cache_build_it_once(tiny_path, tiny_spec, tiny_settings):
    """Two processes start together on a missing cache: one trains, the other waits on the
    lock and loads the same folder."""
    code = ("import json, logging, sys; logging.basicConfig(level=logging.INFO); "
            "from omniquality_r.perception import build as p; "
            "a = json.loads(sys.argv[1]); print(p.ensure_perception(a[0], a[1], a[2]))")
    args = json.dumps([str(tiny_path), tiny_settings | {"steps": 2, "seed": 7},
                       tiny_spec["image_size"]])  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", code, args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1 and (Path(paths.pop()) / REPORT).is_file()
    assert sum("no cache at" in err for _, err in outs) == 1  # trained once
