"""Sweeps, launchers and distributed training. Fast: the sweep configs (conf/sweep, sweeps/)
expand to the documented jobs, the launcher and trainer configs compose, the Trainer writes
the checkpoint a rerun resumes from. Slow (run.py end to end, untrained tiny model, tiny
data): a 2x2 multirun leaves one metrics file and one wandb run per job; submitit's local and
SLURM launchers run two-job sweeps, a SLURM job signalled before its time limit requeues and
resumes; trainer=ddp on two CPU processes gives one process's losses and weights; SFT and
GRPO resume from last.ckpt with their optimiser and LR-schedule state."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class, instantiate
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from omniquality_r.stages.common import (
    configured_model,
    data_splits,
    lightning_trainer,
    resume_path,
    trainer_node,
)
from omniquality_r.stages.pipeline import _step_config

ROOT = Path(__file__).resolve().parents[2]
DDP_APP = Path(__file__).with_name("ddp_app.py")
TRAINER = "lightning.pytorch.Trainer"
TASKS = ["technical", "aesthetic", "alignment"]
# sweep name -> (what each job changes, read from its composed config; the jobs' values)
SWEEPS = {
    "reward_ablation": (lambda c: c.reward.name,
                        ["gaussian", "laplace", "threshold", "neg_abs_error", "fidelity"]),
    "filter_gate_ablation": (lambda c: (c.stage.algo2.filter.enabled, c.stage.algo2.gate.enabled),
                             [(False, False), (False, True), (True, False), (True, True)]),
    "task_ablation": (lambda c: list(c.task), [[t] for t in TASKS] + [TASKS]),
    "seeds": (lambda c: c.seed, [0, 1, 2]),
    "readout_ablation": (lambda c: (c.stage.eval.samples, c.stage.eval.sampling.temperature),
                         [(1, 0.7), (8, 0.7)]),
}  # fmt: skip


def composed(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_config_expands_to_its_jobs(name):
    read, expected = SWEEPS[name]
    params = composed([f"+sweep={name}"], hydra=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    jobs = BasicSweeper.split_arguments(parsed, None)[0]  # what `run.py -m` launches
    assert [read(composed([f"+sweep={name}", *job])) for job in jobs] == expected


def test_an_ablation_over_seeds_reuses_the_base_job_of_its_seed():
    """The README's ablation command: `+sweep=[seeds,reward_ablation]` is 3 x 5 jobs, each
    reusing multirun/base/<its seed>."""
    fixed = ["+sweep=[seeds,reward_ablation]", "stage.reuse_from=multirun/base/${seed}"]
    params = composed(fixed, hydra=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    jobs = [composed([*fixed, *job]) for job in BasicSweeper.split_arguments(parsed, None)[0]]
    assert len(jobs) == 15
    assert {(c.seed, c.reward.name, c.stage.reuse_from) for c in jobs} == {
        (s, r, f"multirun/base/{s}") for s in (0, 1, 2) for r in SWEEPS["reward_ablation"][1]}


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_wandb_sweep_passes_hydra_overrides_to_run_py(path):
    spec = yaml.safe_load(path.read_text())
    assert spec["program"] == "run.py" and spec["method"] == "grid"
    assert spec["command"][:3] == ["${env}", "${interpreter}", "${program}"]
    assert spec["command"][-1] == "${args_no_hyphens}"
    fixed = spec["command"][3:-1]
    parser = OverridesParser.create()
    for key, values in spec["parameters"].items():
        for value in values.get("values", [values.get("value")]):
            override = f"{key}={value}"  # what wandb writes for ${args_no_hyphens}
            node = OmegaConf.select(composed([*fixed, override]), key)
            if isinstance(node, DictConfig):  # a config group: its name, or the task list
                node = node.name if "name" in node else list(node)
            assert node == parser.parse_override(override).value(), override


def test_launcher_and_trainer_configs():
    slurm = composed(["hydra/launcher=slurm"], hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.max_num_timeout > 0
    assert slurm.additional_parameters.requeue is True
    local = composed(["hydra/launcher=local"], hydra=True).hydra.launcher
    assert local._target_.endswith("LocalLauncher")
    trainers = {t: composed([f"trainer={t}"]).trainer
                for t in ("cpu", "gpu", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")}
    assert {t: c._target_ for t, c in trainers.items()} == dict.fromkeys(trainers, TRAINER)
    assert trainers["cpu"].strategy == trainers["gpu"].strategy == "auto"
    assert trainers["ddp"].devices == 2
    # Each strategy node binds to its class's constructor without a GPU (DeepSpeed itself is
    # not installed here, so it is not built): a misspelt key fails here, not on the cluster.
    expected = {"ddp": DDPStrategy, "fsdp": FSDPStrategy, "deepspeed_zero2": DeepSpeedStrategy,
                "deepspeed_zero3": DeepSpeedStrategy}  # fmt: skip
    for name, cls in expected.items():
        node = OmegaConf.to_container(trainers[name].strategy)
        assert get_class(node.pop("_target_")) is cls
        inspect.signature(cls).bind(**node)
    stages = [trainers[f"deepspeed_zero{z}"].strategy.config.zero_optimization.stage
              for z in (2, 3)]  # fmt: skip
    assert stages == [2, 3]
    assert isinstance(instantiate(trainers["ddp"].strategy), DDPStrategy)


@pytest.mark.parametrize("zero", [2, 3])
def test_grpo_clipping_reaches_deepspeeds_engine(zero):
    """DeepSpeed clips inside its engine (GRPO's manual clip is a no-op there): stage=grpo's
    Trainer node hands algo.grad_clip to the DeepSpeed config; other strategies unchanged."""
    cfg = composed(["stage=grpo", f"trainer=deepspeed_zero{zero}", "algo.grad_clip=0.7"])
    node = OmegaConf.to_container(trainer_node(cfg, cfg.algo.grad_clip).strategy)
    assert node["config"]["gradient_clipping"] == 0.7
    assert node["config"]["zero_optimization"]["stage"] == zero
    assert "gradient_clipping" not in cfg.trainer.strategy.config  # the composed config kept
    assert get_class(node.pop("_target_")) is DeepSpeedStrategy
    inspect.signature(DeepSpeedStrategy).bind(**node)
    ddp = composed(["stage=grpo", "trainer=ddp"])
    assert trainer_node(ddp, 1.0) == ddp.trainer


def test_trainer_callbacks_and_optimiser_are_target_nodes_in_the_job_config():
    """`python run.py --cfg job` shows what each stage instantiates."""
    job = subprocess.run([sys.executable, str(ROOT / "run.py"), "--cfg", "job"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    cfg = OmegaConf.create(job)
    assert cfg.trainer._target_ == TRAINER
    assert cfg.callbacks.checkpoint._target_ == "omniquality_r.modules.checkpoint.LastCheckpoint"
    for node in (cfg.stage.sft.optim, cfg.stage.algo1.optim, cfg.stage.algo2.optim):
        assert node.optimizer._target_ == "torch.optim.AdamW" and node.optimizer._partial_
        assert node.scheduler._target_.endswith("modules.optim.warmup_cosine_schedule")
    lrs = [n.optim.optimizer.lr for n in (cfg.stage.sft, cfg.stage.algo1, cfg.stage.algo2)]
    assert lrs == [1e-3, 3e-5, 3e-6]


def test_trainer_saves_last_checkpoint_for_a_rerun_to_resume(tmp_path):
    cfg = composed(["callbacks.checkpoint.every_n_train_steps=3", f"paths.output_dir={tmp_path}"])
    trainer = lightning_trainer(cfg, max_steps=1)
    assert Path(trainer.checkpoint_callback.dirpath) == tmp_path / "checkpoints"
    assert trainer.checkpoint_callback._every_n_train_steps == 3
    assert resume_path(trainer) is None
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    (tmp_path / "checkpoints" / "last.ckpt").touch()
    assert resume_path(trainer) == str(tmp_path / "checkpoints" / "last.ckpt")


def test_training_stages_leave_placement_to_lightning(tiny_path):
    """SFT and GRPO load with on_device=False: Lightning places the model on each rank's
    device (every rank's policy and reference on cuda:0 otherwise)."""
    cfg = composed(["trainer=gpu", f"model.path={tiny_path}"])
    model, _ = configured_model(cfg, on_device=False)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError)):  # .to("cuda") on a CPU-only torch
            configured_model(cfg)


def test_wandb_run_id_follows_the_run_folder(tmp_path):
    """A job requeued in its run folder resumes its wandb run; another folder opens another."""
    def logger(folder):
        cfg = composed(["logger=wandb", f"paths.output_dir={folder}"])
        return instantiate(cfg.logger)._wandb_init

    first, again, other = logger(tmp_path / "a"), logger(tmp_path / "a"), logger(tmp_path / "b")
    assert first["id"] == again["id"] != other["id"] and first["resume"] == "allow"


def test_wandb_runs_are_named_grouped_tagged_and_typed_by_the_job(tmp_path):
    """name <experiment>/<stage>, group = the run folder, tags = run.tags + the choices,
    job_type = the stage; a pipeline step's run is named after the step."""
    def wandb_init(overrides, step=None):
        cfg = composed(["logger=wandb", f"paths.output_dir={tmp_path}",
                        f"hydra.run.dir={tmp_path}", *overrides], hydra=True)  # fmt: skip
        HydraConfig.instance().set_config(cfg)
        try:
            if step:
                cfg = _step_config(cfg, tmp_path / step, "eval", None, None)
            return instantiate(cfg.logger)._wandb_init
        finally:
            HydraConfig.instance().cfg = None

    init = wandb_init(["experiment=tiny_rl_stage1", "reward=laplace", "run.tags=[ablation]",
                       "task=[technical,alignment]"])  # fmt: skip
    assert init["name"] == "tiny_rl_stage1/grpo" and init["job_type"] == "grpo"
    assert init["group"] == str(tmp_path)
    assert init["tags"] == ["ablation", "experiment=tiny_rl_stage1", "data=synthetic",
                            "model=tiny", "algo=grpo", "reward=laplace", "task=technical",
                            "task=alignment"]  # fmt: skip
    step = wandb_init([], step="eval_sft")
    assert (step["name"], step["job_type"], step["group"]) == ("default/eval_sft", "eval",
                                                               str(tmp_path))  # fmt: skip
    assert step["id"] != init["id"]  # one run per step


# ------------------------------------------------------------------- run.py end to end
def app(*overrides: str, script: Path = ROOT / "run.py", env: dict | None = None
        ) -> subprocess.CompletedProcess:  # fmt: skip
    proc = subprocess.run([sys.executable, str(script), *overrides], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def common(tmp_path_factory, tiny_path) -> list[str]:
    """Overrides of every run here: the untrained tiny model, 3 synthetic images per task
    (train 6, val 1, test 2); the data is built once, before jobs share it."""
    overrides = [f"model.path={tiny_path}", f"paths.cache={tmp_path_factory.mktemp('cache')}",
                 "data.sources.synthetic.n_per_task=3"]
    data_splits(composed(overrides))
    return overrides


EVAL = ["stage=eval", "stage.readouts=[greedy]"]
SHORT = "decoding.max_new_tokens=8"
GRPO = ["stage=grpo", "algo.group_size=2", "algo.micro_batch_prompts=1",
        "algo.optim.optimizer.lr=1e-3", "algo.generation.max_new_tokens=8",
        "stage.val_per_task=1", SHORT, "callbacks.checkpoint.every_n_train_steps=1"]  # fmt: skip


def jobs_of(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def job_summaries(sweep: Path) -> list[dict]:
    return [json.loads((job / "job_summary.json").read_text()) for job in jobs_of(sweep)]


def swept(summary: dict, *keys: str) -> tuple[str, ...]:
    return tuple(o for o in summary["overrides"] if o.split("=")[0] in keys)


@pytest.mark.slow
def test_two_by_two_multirun_leaves_one_metrics_file_and_wandb_run_per_job(tmp_path, common):
    sweep = tmp_path / "sweep"
    app("-m", *EVAL, *common, "seed=0,1", "decoding.max_new_tokens=8,16", "logger=wandb",
        f"hydra.sweep.dir={sweep}", env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    jobs = jobs_of(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    assert {swept(s, "seed", "decoding.max_new_tokens") for s in job_summaries(sweep)} == {
        (f"seed={s}", f"decoding.max_new_tokens={n}") for s in (0, 1) for n in (8, 16)}
    runs = [list((j / "wandb").glob("offline-run-*/run-*.wandb")) for j in jobs]
    assert [len(r) for r in runs] == [1, 1, 1, 1] and len({r[0].name for r in runs}) == 4
    for job, (run,) in zip(jobs, runs):
        rows = json.loads((job / "metrics.json").read_text())["metrics"]["greedy"]
        data = run.read_bytes()  # one 32 KiB LevelDB block: strings are not split
        assert f"test/greedy/{rows[0]['task']}/all/parse_rate".encode() in data  # its metrics
        assert str(job).encode() in data  # ... and config (paths.output_dir), no other job's
        assert str(sweep).encode() in data  # the group: the sweep
        assert f"default/eval/{job.name}".encode() in data  # named by stage and job number
        assert not any(str(other).encode() in data for other in jobs if other != job)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path, common):
    sweep = tmp_path / "sweep"
    app("-m", "hydra/launcher=local", *EVAL, SHORT, *common, "seed=0,1",
        f"hydra.sweep.dir={sweep}")
    assert [swept(s, "seed") for s in job_summaries(sweep)] == [("seed=0",), ("seed=1",)]
    assert all((j / "metrics.json").is_file() for j in jobs_of(sweep))
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # two processes


def optimiser_state(ckpt: Path) -> tuple[int, set[int], int]:
    """global_step, Adam's step counts, the LR scheduler's step count of a Lightning ckpt."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    steps = {int(s["step"]) for s in state["optimizer_states"][0]["state"].values()}
    return state["global_step"], steps, state["lr_schedulers"][0]["last_epoch"]


def logged_steps(run: Path) -> list[list[int]]:
    """Steps logged by each CSVLogger version (one version per process that ran)."""
    versions = sorted((run / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return [sorted({int(line.split(",")[1]) for line in (v / "metrics.csv").read_text()
                    .splitlines()[1:]}) for v in versions]  # fmt: skip


def slurm_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout
    return any(s in states for s in ("idle", "mixed"))


@pytest.mark.slow
def test_slurm_sweep_and_a_requeued_job_resumes(tmp_path, common):
    if not slurm_up():
        pytest.skip("no SLURM cluster (sinfo missing or no idle node): as root, run "
                    "scripts/slurm_local_cluster.sh")  # fmt: skip
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=slurm",
           "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=15", *GRPO, *common,
           "stage.max_rollouts=4", "algo.prompts_per_step=2", "seed=0,1",
           f"hydra.sweep.dir={sweep}"]  # fmt: skip
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
    try:
        job = sweep / "0"
        deadline = time.time() + 300
        while not (job / "checkpoints" / "last.ckpt").is_file():  # job 0 finished step 1
            assert time.time() < deadline and launcher.poll() is None, "job 0 never checkpointed"
            time.sleep(0.5)
        job_id = OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.job.id
        # The signal submitit asks SLURM for signal_delay_s before the time limit: the job
        # saves last.ckpt, requeues itself and exits; SLURM holds a requeued job ~2 min
        # (BeginTime), which a real cluster would wait out; here it is released at once.
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        while launcher.poll() is None and time.time() < deadline:
            state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"],
                                   capture_output=True, text=True).stdout.strip()  # fmt: skip
            if state == "PENDING BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
            time.sleep(1)
        _, stderr = launcher.communicate(timeout=max(deadline - time.time(), 1))
    finally:
        launcher.kill()
    assert launcher.returncode == 0, stderr[-3000:]
    assert [s["metrics"]["rollouts"] for s in job_summaries(sweep)] == [4, 4]
    assert logged_steps(sweep / "1") == [[0, 1, 2, 3]]  # job 1 ran once
    before, after = logged_steps(job)  # job 0: interrupted, then resumed where it stopped
    # The CSV logger may not have flushed its last rows when the signal came, so `before` can
    # end earlier than the checkpoint; the resumed run must not start from 0, and Adam's step
    # count (below) proves no update was lost or repeated.
    assert before and after[0] > 0 and after[-1] == 3
    assert optimiser_state(job / "checkpoints" / "last.ckpt") == (4, {4}, 4)


# --------------------------------------------------------------------- DDP and resume
def recorded_losses(run: Path) -> dict[int, list[float]]:
    """step -> sorted losses of every micro-batch (SFT: one row; GRPO: one prompt group) of
    every rank, from ddp_app.py's losses.rank<r>.jsonl."""
    losses: dict[int, list[float]] = {}
    for path in run.glob("losses.rank*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            losses.setdefault(row["step"], []).append(row["loss"])
    return {step: sorted(values) for step, values in sorted(losses.items())}


def weights(run: Path) -> dict[str, torch.Tensor]:
    (path,) = [p for p in run.rglob("model.safetensors") if "checkpoints" not in p.parts]
    return load_file(path)


def relative_difference(a: dict, b: dict, start: dict) -> float:
    """|a - b| / |a - start| over all weights: 0 when two trainings end alike."""
    diff = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5
    moved = sum(float(((a[k] - start[k]) ** 2).sum()) for k in a) ** 0.5
    assert moved > 0, "training did not change the weights"
    return diff / moved


def sft_overrides(tmp: Path, common: list[str]) -> list[str]:
    """SFT on the 6 training records, one row per micro-batch, the global batch all 6 rows:
    one process accumulates 6 rows, each of two ranks 3, both see the same global batch."""
    cot = tmp / "cot.jsonl"
    rows = data_splits(composed(common))["train"]
    cot.write_text("".join(
        json.dumps({**r, "split": "train", "plan": "", "reasoning": f"The {r['task']} is judged.",
                    "score": round(r["mos"], 2)}) + "\n" for r in rows
    ))  # fmt: skip
    return ["stage=sft", f"stage.cot_path={cot}", "stage.micro_batch=1",
            f"stage.global_batch={len(rows)}", "stage.epochs=2", "stage.log_every_n_steps=1",
            "callbacks.checkpoint.every_n_train_steps=1", *common]  # fmt: skip


def grpo_overrides(tmp: Path, common: list[str]) -> list[str]:
    """GRPO over all 6 training prompts per rollout (2 episodes = 2 rollouts of one optimiser
    step): `algo.prompts_per_step` is global, so each of two ranks gets 3; rollouts are seeded
    per prompt and the reward has spread (ddp_app.py)."""
    return [*GRPO, "reward.name=digit_share", "stage.episodes=2", *common]


@pytest.fixture(scope="module", params=["sft", "grpo"])
def ddp_runs(request, tmp_path_factory, common) -> tuple[list[str], dict[str, Path]]:
    """The same training with trainer=cpu (one process) and trainer=ddp (two, gloo)."""
    tmp = tmp_path_factory.mktemp(request.param)
    overrides = (sft_overrides if request.param == "sft" else grpo_overrides)(tmp, common)
    runs = {t: tmp / t for t in ("cpu", "ddp")}
    for trainer, run in runs.items():
        app(*overrides, f"trainer={trainer}", f"hydra.run.dir={run}", script=DDP_APP)
    return overrides, runs


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process(ddp_runs, tiny_path):
    _, runs = ddp_runs
    one, two = recorded_losses(runs["cpu"]), recorded_losses(runs["ddp"])
    assert list(one) == list(two) == [0, 1]
    for step in one:  # the same micro-batch losses, only spread over the two ranks
        assert len(one[step]) == len(two[step]) == 6
        assert torch.allclose(torch.tensor(one[step]), torch.tensor(two[step]), atol=1e-5)
    assert len(set(one[1])) > 1  # not trivially equal
    start = load_file(tiny_path / "model.safetensors")
    assert relative_difference(weights(runs["cpu"]), weights(runs["ddp"]), start) < 1e-3


@pytest.mark.slow
def test_ddp_with_the_std_filter_dropping_unevenly_matches_one_process(tmp_path, common,
                                                                       tiny_path):  # fmt: skip
    """Rollout 1: the filter drops all 3 of rank 0's prompts and 1 of rank 1's (rank 0 then
    makes zero-weight backward passes); rollout 2 (a new order) drops the same prompts
    wherever they land. Two gloo ranks finish and match one process on the same batches."""
    train = data_splits(composed(common))["train"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    rank0, rank1 = order[0::2], order[1::2]  # EpochBatches: rank r takes items r, r + 2, ...
    filtered = [train[i]["id"] for i in rank0 + rank1[:1]]
    overrides = [*grpo_overrides(tmp_path, common), "algo.filter.enabled=true"]
    env = {"FILTERED_IDS": ",".join(filtered)}
    runs = {t: tmp_path / t for t in ("cpu", "ddp")}
    for trainer, run in runs.items():
        app(*overrides, f"trainer={trainer}", f"hydra.run.dir={run}", script=DDP_APP, env=env)
    one, two = recorded_losses(runs["cpu"]), recorded_losses(runs["ddp"])
    assert list(one) == list(two) == [0, 1]
    assert len(one[0]) == 2  # 6 prompts, 4 filtered: one micro-batch (group) each
    for step in one:
        assert torch.allclose(torch.tensor(one[step]), torch.tensor(two[step]), atol=1e-5)
    start = load_file(tiny_path / "model.safetensors")
    assert relative_difference(weights(runs["cpu"]), weights(runs["ddp"]), start) < 1e-3


@pytest.mark.slow
def test_rerun_with_more_steps_resumes_from_last_checkpoint(ddp_runs, tmp_path):
    overrides, runs = ddp_runs
    run = tmp_path / "run"
    shutil.copytree(runs["cpu"], run)
    assert optimiser_state(run / "checkpoints" / "last.ckpt") == (2, {2}, 2)
    more = "stage.epochs=3" if "stage=sft" in overrides else "stage.episodes=3"
    proc = app(*overrides, more, "trainer=cpu", f"hydra.run.dir={run}", script=DDP_APP)
    assert "Restored all states from the checkpoint" in proc.stdout + proc.stderr
    assert logged_steps(run) == [[0, 1], [2]]
    assert optimiser_state(run / "checkpoints" / "last.ckpt") == (3, {3}, 3)
    # GRPO's frozen reference is rebuilt on resume, never stored: the checkpoint holds the policy
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["state_dict"] and not any(k.startswith("ref_model.") for k in state["state_dict"])
