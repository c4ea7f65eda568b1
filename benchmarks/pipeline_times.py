"""Per-stage wall time and throughput of the main job (`python run.py`), and what it ran on.

    python benchmarks/pipeline_times.py                      # run the main job, then report
    python benchmarks/pipeline_times.py --cache .cache       # reuse a cache (no pretraining)
    python benchmarks/pipeline_times.py --run-dir outputs/pipeline/<time>   # report a run

By default the job runs as on a fresh clone: a new empty cache, so the tiny model, the
synthetic data and the perception pretraining are built and counted. Prints the CPU
capability, torch threads, the precision of each training stage, then one row per pipeline
step (wall s, throughput) and the total wall time measured around the whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omniquality_r.inference import READOUTS  # noqa: E402


def run_main_job(cache: Path, run_dir: Path) -> float:
    """`python run.py` with paths.cache = cache into run_dir; its wall time in seconds."""
    env = {**os.environ, "OMNIQUALITY_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={run_dir}"],
                   cwd=ROOT, env=env, check=True)  # fmt: skip
    return time.perf_counter() - start


def throughput(name: str, step: dict) -> str:
    """The step's own rate from what it recorded."""
    result, wall = step["result"], step["wall_s"]
    if name == "pretrain":
        return f"{result['images_seen'] / result['train_seconds']:.1f} images/s (training)"
    if name == "sft":
        return f"{result['samples_per_s']:.1f} samples/s ({result['steps']} steps)"
    if name.startswith("grpo"):
        rate = result["completions"] / result["wall_s"]
        return (f"{rate:.1f} completions/s ({result['rollouts']} rollouts, "
                f"{result['optimizer_steps']} optimiser steps)")
    if name == "cot":
        return f"{result['records'] / wall:.1f} records/s" if "records" in result else ""
    if name.startswith("eval"):
        ran = [k for k in READOUTS if result.get(k)]
        n = sum(r["n"] for r in result[ran[0]] if r["dataset"] == "all")
        return f"{n / wall:.2f} records/s ({n} records, {' + '.join(ran)})"
    return ""


def device_line(summary: dict) -> str:
    lines = []
    if "pretrain" in summary:
        d = summary["pretrain"]["result"]["device"]
        lines.append(f"pretrain: {d['precision']}, {d['processes']} process(es) x {d['threads']} "
                     f"thread(s), CPU {d['cpu_capability']}, native bf16 {d['native_bf16']}")
    for name in ("sft", "grpo_stage1", "grpo_stage2"):
        if d := summary.get(name, {}).get("result", {}).get("device"):
            lines.append(f"{name}: {d['precision']}, {d['world_size']} process(es) x "
                         f"{d['threads']} thread(s), CPU {d['cpu_capability']}")
    return "\n".join(lines)


def report(run_dir: Path, total_s: float | None) -> str:
    import torch

    summary = json.loads((run_dir / "summary.json").read_text())
    head = (f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, capability "
            f"{torch.backends.cpu.get_cpu_capability()}, torch threads {torch.get_num_threads()}")
    rows = ["| step | wall s | throughput |", "|---|---|---|"]
    rows += [f"| {name} | {step['wall_s']:.0f} | {throughput(name, step)} |"
             for name, step in summary.items()]  # fmt: skip
    steps_s = sum(step["wall_s"] for step in summary.values())
    tail = f"sum of steps: {steps_s:.0f} s ({steps_s / 60:.1f} min)"
    if total_s is not None:
        tail += f"; whole process: {total_s:.0f} s ({total_s / 60:.1f} min)"
    return "\n".join([head, device_line(summary), *rows, tail])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="report this finished run, run nothing")
    parser.add_argument("--cache", type=Path, help="cache to use (default: a new empty one)")
    args = parser.parse_args()
    if args.run_dir:
        print(report(args.run_dir, None))
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-times-") as tmp:
        cache = args.cache or Path(tmp) / "cache"
        run_dir = Path(tmp) / "run"
        total = run_main_job(cache, run_dir)
        text = report(run_dir, total)
        keep = ROOT / "outputs" / "pipeline_times"
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "summary.json").write_text((run_dir / "summary.json").read_text())
        (keep / "summary.md").write_text((run_dir / "summary.md").read_text())
    print(text)


if __name__ == "__main__":
    main()
