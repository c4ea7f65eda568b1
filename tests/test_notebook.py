"""notebooks/analysis.ipynb and omniquality_r.analysis on real outputs: a two-seed eval sweep and
a two-step GRPO job of the untrained tiny model (run.py -m), and Lightning's own loggers."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from omniquality_r.analysis import (
    ablation_table,
    collect_runs,
    gain_pairs,
    load_predictions,
    load_samples,
    markdown_table,
    paired_gain,
    training_curves,
    variant_columns,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import run_notebook  # noqa: E402

NO_PERCEPTION = "++model.perception=null"  # the random tower: no perception pretraining (3.5 min)
TASKS = ("aesthetic", "alignment", "technical")
METRICS = {f"{r}/{t}/{m}" for r in ("greedy", "expectation") for t in TASKS
           for m in ("srcc", "plcc", "parse_rate")}  # fmt: skip
FIGURES = {"ablation.csv", "ablation.md", "ablation.png", "scatter.png", "traces.png"}


def run_sweep(*overrides: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", *overrides, NO_PERCEPTION],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Path:
    """<tmp>/sweeps/eval: stage=eval over seed=0,1; <tmp>/sweeps/grpo: one GRPO job, 2 rollouts
    of 2 optimiser steps each."""
    tmp = tmp_path_factory.mktemp("analysis")
    common = ["data.sources.synthetic.n_per_task=20", "decoding.max_new_tokens=8",
              f"paths.cache={tmp / 'cache'}"]  # fmt: skip
    run_sweep("stage=eval", "experiment=tiny_smoke", "seed=0,1", "stage.max_per_task=3", *common,
              f"hydra.sweep.dir={tmp / 'sweeps' / 'eval'}")  # fmt: skip
    run_sweep("stage=grpo", "stage.max_rollouts=2", "stage.episodes=1", "stage.val_per_task=1",
              "stage.sample_log_every=1", "algo.group_size=2", "algo.prompts_per_step=2",
              "algo.train_batch_size=2",
              "algo.generation.max_new_tokens=8", "algo.gate.enabled=true", *common,
              f"hydra.sweep.dir={tmp / 'sweeps' / 'grpo'}")  # fmt: skip
    return tmp / "sweeps"


def execute_notebook(sweep_dir: Path) -> str:
    """The notebook run headless on `sweep_dir` by scripts/run_notebook.py; its output text."""
    return run_notebook.output_text(run_notebook.execute_notebook(sweep_dir, timeout=300))


def figures(sweep_dir: Path) -> set[str]:
    files = list((sweep_dir / "figures").iterdir())
    assert all(f.stat().st_size > 500 for f in files if f.suffix == ".png")
    markdown = (sweep_dir / "figures" / "ablation.md").read_text().splitlines()
    assert markdown[0].startswith("| variant |") and len(markdown) > 2
    return {f.name for f in files}


@pytest.mark.slow
def test_notebook_on_eval_sweep(sweeps):
    text = execute_notebook(sweeps / "eval")
    assert figures(sweeps / "eval") == FIGURES
    assert "no training curves" in text and "no GRPO samples" in text
    assert "no gain over SFT" in text  # no eval_sft report
    assert "technical/srcc" in text and "technical/plcc" in text  # the ablation table
    table = pd.read_csv(sweeps / "eval" / "figures" / "ablation.csv", header=[0, 1], index_col=0)
    assert list(table.index) == ["all"]
    assert {m for m, _ in table.columns} == METRICS
    assert table[("greedy/technical/parse_rate", "count")].item() == 2  # both seeds


@pytest.mark.slow
def test_notebook_on_folder_of_sweeps(sweeps):
    text = execute_notebook(sweeps)
    assert figures(sweeps) == FIGURES | {"curves.png", "grpo_samples.png"}
    assert "no training curves" not in text and "no GRPO samples" not in text


def test_markdown_table_gives_mean_and_std_over_seeds_per_task():
    runs = pd.DataFrame({"reward": ["gaussian", "gaussian", "laplace"], "seed": [0, 1, 0],
                         "greedy/technical/srcc": [0.8, 0.6, 0.5],
                         "greedy/alignment/srcc": [0.2, float("nan"), float("nan")],
                         "greedy/technical/plcc": [0.9, 0.9, 0.9]})  # fmt: skip
    assert markdown_table(ablation_table(runs)).splitlines() == [
        "| variant | technical | alignment | n |", "|---|---|---|---|",
        "| gaussian | 0.700 ± 0.141 | 0.200 | 2 |", "| laplace | 0.500 | - | 1 |"]


@pytest.mark.slow
def test_collect_runs_and_ablation_table(sweeps):
    runs = collect_runs(sweeps)
    assert list(runs.job) == ["eval/0", "eval/1"]  # the GRPO job has no metrics.json
    assert list(runs.seed) == [0, 1] and set(runs["stage.max_per_task"]) == {3}
    assert set(runs.columns) >= METRICS and set(runs.report) == {"."}
    assert runs["greedy/technical/parse_rate"].between(0, 1).all()
    assert variant_columns(runs) == []
    table = ablation_table(runs)
    assert list(table.index) == ["all"]
    pooled = table[("greedy/aesthetic/parse_rate", "mean")].item()
    assert pooled == pytest.approx(runs["greedy/aesthetic/parse_rate"].mean())
    per_seed = ablation_table(runs, by=["seed"])
    assert list(per_seed.index) == ["0", "1"]
    assert (per_seed.xs("count", axis=1, level=1)[sorted(METRICS)].max() <= 1).all()


@pytest.mark.slow
def test_training_curves_and_samples(sweeps):
    curves = training_curves(sweeps)
    grpo = curves[curves.job == "grpo/0"]
    assert {"train/reward/total", "train/gate/kept_frac", "train/filter/dropped_frac",
            "train/policy/clip_frac"} <= set(grpo.metric)  # fmt: skip
    assert sorted(grpo[grpo.metric == "train/reward/total"].step) == [0, 1]  # per rollout
    steps = grpo[grpo.metric == "train/optimizer_step"].sort_values("step").value
    assert steps.tolist() == [2, 4]
    assert set(grpo.log) == {"logs/version_0"}
    assert curves[curves.job == "eval/0"].metric.str.startswith("test/").all()
    samples = load_samples(sweeps / "grpo" / "0")
    assert len(samples) == 2 * 2 * 2  # rollouts x prompts x group
    assert {"rollout", "id", "task", "mos", "completion", "reward", "advantage"} <= set(samples)
    assert samples.image.map(lambda p: Path(p).is_file()).all()
    assert load_samples(sweeps / "eval" / "0").empty


@pytest.mark.slow
def test_load_predictions(sweeps):
    preds = load_predictions(sweeps / "eval" / "0")
    assert 0 < len(preds) <= 9 and set(preds.task) <= set(TASKS)
    assert preds.score_greedy.dtype == float and preds.prompt.map(type).eq(str).all()
    for row in preds.itertuples():
        assert Path(row.image).is_file() and row.image.endswith(row.id.split("/", 1)[1] + ".png")


def test_training_curves_from_lightning_loggers(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    loggers = [CSVLogger(save_dir=tmp_path / "csv", name="logs"),
               WandbLogger(project="test", save_dir=tmp_path / "wandb", offline=True)]  # fmt: skip
    for logger in loggers:
        for step in range(3):
            logger.log_metrics({"train/reward/total": step / 2}, step=step)
        logger.log_metrics({"val/greedy/technical/all/srcc": 0.5}, step=2)
        logger.finalize("success")
    loggers[1].experiment.finish()
    curves = training_curves(tmp_path)
    assert set(curves.job) == {"csv", "wandb"}
    for _, log in curves.groupby("job"):
        assert sorted(zip(log.step, log.metric, log.value)) == [
            (0, "train/reward/total", 0.0), (1, "train/reward/total", 0.5),
            (2, "train/reward/total", 1.0), (2, "val/greedy/technical/all/srcc", 0.5)]  # fmt: skip


def test_empty_folder(tmp_path):
    assert collect_runs(tmp_path).empty and training_curves(tmp_path).empty


def test_samples_of_a_pipeline_step_find_their_images_through_the_job_config(tmp_path):
    """A pipeline job's GRPO samples live in <job>/grpo_stage1/ with no .hydra folder of
    their own: their images come from the job's config."""
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "m/a", "image": str(image), "task": "technical",
                                    "mos": 2.0}) + "\n")
    (tmp_path / "job" / ".hydra").mkdir(parents=True)
    (tmp_path / "job" / ".hydra" / "config.yaml").write_text(
        f"data:\n  sources:\n    m:\n      loader: manifest\n      path: {manifest}\n")
    (tmp_path / "job" / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  runtime:\n    cwd: {tmp_path}\n")
    step = tmp_path / "job" / "grpo_stage1"
    step.mkdir()
    (step / "grpo_samples.jsonl").write_text(
        '{"rollout": 1, "id": "m/a", "task": "technical", "mos": 2.0, "completion": "c", '
        '"reward": 0.5, "format": 1.0, "accuracy": 0.3, "advantage": 0.1}\n')
    assert load_samples(step)["image"].tolist() == [str(image)]


def test_paired_gain_is_each_seeds_gain_over_its_own_start():
    runs = pd.DataFrame({"path": ["j0", "j0", "j1", "j1", "j2"], "seed": [0, 0, 1, 1, 2],
                         "report": ["eval_sft", "eval_grpo", "eval_sft", "eval_grpo", "eval_grpo"],
                         "greedy/technical/srcc": [0.80, 0.85, 0.60, 0.68, 0.99]})  # fmt: skip
    gain = paired_gain(runs, ["eval_grpo"])
    assert list(gain.index) == ["eval_grpo"]  # j2 has no start to compare with: left out
    assert gain[("greedy/technical/srcc", "mean")].item() == pytest.approx(0.065)
    assert gain[("greedy/technical/srcc", "std")].item() == pytest.approx(0.03 / 2**0.5)
    assert gain[("greedy/technical/srcc", "count")].item() == 2
    # the unpaired spread of the two seeds' eval_grpo (0.12) would hide this gain
    assert markdown_table(gain).splitlines()[2] == "| eval_grpo | 0.065 ± 0.021 | 2 |"
    with pytest.raises(ValueError, match=r"no report \['eval_base'\].*'eval_grpo'"):
        paired_gain(runs, ["eval_grpo"], base="eval_base")


def test_load_predictions_of_a_benchmark_report_joins_the_benchmarked_images(tmp_path):
    """A benchmark job's `<checkpoint>/<data>` report takes its images from
    stage.datasets.<data>, not from the training data, although both use the same ids."""
    for name in ("train", "heldout"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / f"{name}.png")
        rows = [{"id": "x/technical/000000", "image": f"{name}.png", "task": "technical",
                 "mos": 3.0}]  # fmt: skip
        (tmp_path / name / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    train = {"loader": "manifest", "path": "train/records.jsonl"}
    held = {"loader": "manifest", "path": "heldout/records.jsonl", "split": "test"}  # all test
    config = {"data": {"sources": {"x": train}},
              "stage": {"datasets": {"held": {"sources": {"x": held}}}}}  # fmt: skip
    (job / ".hydra" / "config.yaml").write_text(json.dumps(config))
    (job / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": {"runtime": {
        "cwd": str(tmp_path)}}}))  # fmt: skip
    for report in ("sft/held", "sft"):
        (job / report).mkdir(parents=True, exist_ok=True)
        (job / report / "predictions.csv").write_text(
            "id,task,mos,score_greedy\nx/technical/000000,technical,3.0,nan\n")
    preds = load_predictions(job, "sft/held")
    assert preds.image.tolist() == [str(tmp_path / "heldout" / "heldout.png")]
    assert preds.score_greedy.isna().all()
    assert load_predictions(job, "sft").image.tolist() == [str(tmp_path / "train" / "train.png")]


def test_gain_pairs_match_each_sft_report_with_the_grpo_reports_of_its_data():
    pipeline = ["eval_untrained", "eval_sft", "eval_grpo_stage2", "eval_grpo_stage1"]
    assert gain_pairs(pipeline) == {"eval_sft": ["eval_grpo_stage1", "eval_grpo_stage2"]}
    benchmark = ["sft/synthetic", "grpo_stage2/synthetic", "g8_grpo_stage2/synthetic",
                 "sft/photos", "grpo_stage2/photos", "model/photos", "sft/only"]
    assert gain_pairs(benchmark) == {
        "sft/photos": ["grpo_stage2/photos"],
        "sft/synthetic": ["g8_grpo_stage2/synthetic", "grpo_stage2/synthetic"]}
    assert gain_pairs([".", "eval_grpo_stage1"]) == {}


@pytest.mark.slow
def test_notebook_gain_over_sft_on_pipeline_layout(sweeps, tmp_path):
    """Two pipeline-shaped jobs (eval_sft and eval_grpo_stage2 reports, from the eval sweep's
    real metrics.json with the technical SRCC set): figures/gain.md is each seed's gain."""
    for seed, (sft, grpo) in enumerate([(0.50, 0.60), (0.70, 0.74)]):
        source, job = sweeps / "eval" / str(seed), tmp_path / "pipe" / str(seed)
        shutil.copytree(source / ".hydra", job / ".hydra")
        report = json.loads((source / "metrics.json").read_text())
        for step, value in (("eval_sft", sft), ("eval_grpo_stage2", grpo)):
            for row in report["metrics"]["greedy"]:
                row["srcc"] = value if row["task"] == "technical" else None
            (job / step).mkdir()
            (job / step / "metrics.json").write_text(json.dumps(report))
            shutil.copy(source / "predictions.csv", job / step)
    text = execute_notebook(tmp_path / "pipe")
    assert "no gain over SFT" not in text
    lines = (tmp_path / "pipe" / "figures" / "gain.md").read_text().splitlines()
    assert lines[0] == "| variant | aesthetic | alignment | technical | n |"
    assert lines[2] == "| eval_grpo_stage2 | - | - | 0.070 ± 0.042 | 2 |"
