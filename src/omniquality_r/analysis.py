"""Collect the outputs of runs and sweeps into pandas tables (notebooks/analysis.ipynb).

A job is a Hydra run folder: `.hydra/overrides.yaml`, `.hydra/config.yaml`, `.hydra/hydra.yaml`,
plus what its stage wrote (metrics.json and predictions.csv from eval, grpo_samples.jsonl from
GRPO, CSVLogger logs `<name>/version_*/metrics.csv`, wandb runs `wandb/*run-*/run-*.wandb`).
A folder may hold one job, a multirun sweep (`<sweep>/<job num>/`) or several sweeps.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from .data.build import LOADERS
from .data.records import DataError, read_manifest
from .eval.metrics import POOLED

log = logging.getLogger(__name__)

METRICS = ("srcc", "plcc", "parse_rate")  # per task and read-out, as `{readout}/{task}/{metric}`
RUN_COLUMNS = ("job", "report", "path")
CURVE_COLUMNS = ["job", "log", "step", "metric", "value"]


def _natural(path: Path) -> list:
    """Sort key that puts job 10 after job 9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def _relative(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def find_jobs(folder: str | Path) -> list[Path]:
    """The Hydra job folders under `folder` (itself included), in job-number order."""
    folder = Path(folder).resolve()
    return sorted({p.parents[1] for p in folder.rglob(".hydra/overrides.yaml")}, key=_natural)


def latest_sweep(root: str | Path = "multirun") -> Path:
    """The most recently written multirun sweep folder under `root`."""
    sweeps = [p.parent for p in Path(root).rglob("multirun.yaml")]
    if not sweeps:
        raise FileNotFoundError(f"no multirun sweep (multirun.yaml) under {root}")
    return max(sweeps, key=lambda p: (p / "multirun.yaml").stat().st_mtime)


def read_overrides(job: str | Path) -> dict:
    """The job's command-line overrides, key -> value (lists and dicts as their text)."""
    lines = OmegaConf.to_container(OmegaConf.load(Path(job) / ".hydra" / "overrides.yaml"))
    return {
        o.key_or_group: (o.get_value_element_as_str() if isinstance(o.value(), list | dict)
                         else o.value())
        for o in OverridesParser.create().parse_overrides(lines)
        if not o.is_delete()
    }  # fmt: skip


def _pooled_metrics(report: Path) -> dict[str, float]:
    """`{readout}/{task}/{metric}` of each task's pooled row in a metrics.json."""
    metrics = json.loads(report.read_text())["metrics"]
    return {
        f"{readout}/{row['task']}/{m}": math.nan if row[m] is None else float(row[m])
        for readout, rows in metrics.items()
        for row in rows
        if row["dataset"] == POOLED
        for m in METRICS
    }


def collect_runs(folder: str | Path) -> pd.DataFrame:
    """One row per evaluation report (metrics.json) of each job under `folder`: the job's
    overrides, `{readout}/{task}/{srcc,plcc,parse_rate}`, `job` (relative to `folder`),
    `report` (the report's folder in the job, "." at its top) and `path` (the job folder)."""
    folder = Path(folder).resolve()
    rows = [
        {**read_overrides(job), "job": _relative(job, folder),
         "report": _relative(report.parent, job), "path": str(job), **_pooled_metrics(report)}
        for job in find_jobs(folder)
        for report in sorted(job.rglob("metrics.json"), key=_natural)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The `{readout}/{task}/{metric}` columns of a collect_runs table."""
    return [c for c in df.columns if c.count("/") == 2 and c.rsplit("/", 1)[1] in METRICS]


def variant_columns(df: pd.DataFrame) -> list[str]:
    """The override columns (and `report`) whose value differs between rows, except `seed`."""
    skip = {*metric_columns(df), "job", "path", "seed"}
    return [c for c in df.columns if c not in skip and df[c].astype(str).nunique() > 1]


def ablation_table(df: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, std and count (of finite values) of every metric column per variant, over the
    rows (seeds) that share the `by` columns (default: variant_columns)."""
    by = variant_columns(df) if by is None else list(by)
    metrics = df[metric_columns(df)]
    groups = metrics.groupby([df[c].astype(str) for c in by]) if by else metrics.groupby(
        pd.Series("all", index=df.index, name="variant"))  # fmt: skip
    return groups.agg(["mean", "std", "count"])


def paired_gain(df: pd.DataFrame, reports: Sequence[str], base: str = "eval_sft",
                by: Sequence[str] | None = None) -> pd.DataFrame:
    """Per job, metric(report) - metric(base report of the same job) for each of `reports`:
    each model's gain over the model it started from in that seed (a pipeline job's
    eval_grpo_stage2 minus its eval_sft); then mean, std and count per variant and report as
    ablation_table. The std is the spread of the per-seed gains, so a gain larger than it
    holds seed by seed. Jobs without the base report are left out."""
    metrics = metric_columns(df)
    start = df[df.report == base].set_index("path")[metrics]
    missing = sorted({base, *reports} - set(df.report))
    if missing:
        raise ValueError(f"no report {missing} to take the gain of; reports: "
                         f"{sorted(df.report.unique())}")  # fmt: skip
    rows = df[df.report.isin(reports) & df.path.isin(start.index)].reset_index(drop=True)
    rows[metrics] = rows[metrics].to_numpy() - start.loc[rows.path, metrics].to_numpy()
    by = variant_columns(rows) if by is None else list(by)
    return ablation_table(rows, by=by if "report" in by else [*by, "report"])


def gain_pairs(reports: Iterable[str]) -> dict[str, list[str]]:
    """Each SFT report -> the GRPO reports of the same data that start from it, as paired_gain
    takes them: a pipeline job's eval_sft -> eval_grpo_*; a benchmark job's sft/<data> ->
    <label>/<data> for each checkpoint label holding "grpo". SFT reports without a GRPO
    report are left out."""
    reports = sorted(set(reports))
    split = {r: r.partition("/")[::2] for r in reports}  # report -> (step or label, data)
    pairs = {r: [g for g in reports if split[g][1] == data and "grpo" in split[g][0]]
             for r, (step, data) in split.items() if step.removeprefix("eval_") == "sft"}
    return {base: later for base, later in pairs.items() if later}


def variant_labels(table: pd.DataFrame) -> list[str]:
    """One label per ablation_table row: its variant values joined by ' / '."""
    return [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in table.index]


def mean_std(table: pd.DataFrame, metric: str, with_n: bool = True) -> list[str]:
    """'mean ± std (n=k)' of `metric` per ablation_table row (no std from one value); '-' when
    no report has a finite value."""
    mean, std, n = (table[(metric, s)] for s in ("mean", "std", "count"))
    return ["-" if k == 0 else f"{m:.3f}" + ("" if pd.isna(s) else f" ± {s:.3f}")
            + (f" (n={k})" if with_n else "") for m, s, k in zip(mean, std, n)]  # fmt: skip


def markdown_table(table: pd.DataFrame, readout: str = "greedy", metric: str = "srcc") -> str:
    """An ablation_table as a Markdown table: one row per variant, one column per task, cells
    'mean ± std' of `readout`/<task>/`metric` over seeds, and the seeds' count n."""
    columns = [c for c in dict.fromkeys(c for c, _ in table.columns)
               if c.startswith(f"{readout}/") and c.endswith(f"/{metric}")]  # fmt: skip
    tasks = [c.split("/")[1] for c in columns]
    labels = variant_labels(table)
    cells = [mean_std(table, c, with_n=False) for c in columns]
    counts = table[[(c, "count") for c in columns]].max(axis=1).astype(int)
    lines = [f"| variant | {' | '.join(tasks)} | n |", "|---" * (len(tasks) + 2) + "|"]
    for i, label in enumerate(labels):
        lines.append(f"| {label} | {' | '.join(col[i] for col in cells)} | {counts.iloc[i]} |")
    return "\n".join(lines)


def _leveldb_records(data: bytes) -> Iterator[bytes]:
    """Records of a wandb transaction log: a 7-byte header, then the LevelDB log format
    (32 KiB blocks of chunks: crc32c 4, length 2, type 1 = full/2 first/3 middle/4 last)."""
    pos, chunks = 7, []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer
            pos += left
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        chunk = data[pos + 7 : pos + 7 + length]
        if len(chunk) < length:  # a run still writing or killed mid-record
            return
        pos += 7 + length
        chunks.append(chunk)
        if kind in (1, 4):
            yield b"".join(chunks)
            chunks = []


def wandb_history(path: str | Path) -> pd.DataFrame:
    """(step, metric, value) of the numeric history of a wandb run file (`run-*.wandb`, offline
    or online); step is Lightning's trainer/global_step when logged, else wandb's _step."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = Path(path).read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a wandb run file")
    rows = []
    for raw in _leveldb_records(data):
        record = Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                 for i in record.history.item}  # fmt: skip
        step = items.pop("trainer/global_step", items.get("_step"))
        rows += [(step, k, float(v)) for k, v in items.items()
                 if not k.startswith("_") and isinstance(v, int | float)]  # fmt: skip
    return pd.DataFrame(rows, columns=["step", "metric", "value"])


def _csv_log(path: Path) -> pd.DataFrame:
    """(step, metric, value) of a CSVLogger metrics.csv."""
    wide = pd.read_csv(path).drop(columns="epoch", errors="ignore")
    return wide.melt(id_vars="step", var_name="metric").dropna(subset=["value"])


def training_curves(folder: str | Path) -> pd.DataFrame:
    """Long table (job, log, step, metric, value) of every CSVLogger log and wandb run under
    `folder`; job is the logger's save_dir relative to `folder`, log the log's folder in it."""
    folder = Path(folder).resolve()
    logs = [(p, _csv_log(p)) for p in sorted(folder.rglob("version_*/metrics.csv"), key=_natural)]
    wandb_runs = {p.resolve() for p in folder.rglob("run-*.wandb")}  # latest-run is a link
    logs += [(p, wandb_history(p)) for p in sorted(wandb_runs, key=_natural)]
    frames = [
        f.assign(job=_relative(p.parents[2], folder), log=_relative(p.parent, p.parents[2]))
        for p, f in logs
        if len(f)
    ]
    if not frames:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CURVE_COLUMNS]


def _source_records(source: dict, cwd: Path) -> list:
    """The records of one configured data source; the synthetic one is read from its cache,
    never generated (an empty list, with a warning, when that cache does not match)."""
    options = dict(source)
    loader = options.pop("loader")
    options.pop("split", None)  # a whole source assigned to one split (data.build.load_sources)
    for key in {"root", "path"} & set(options):  # a folder, or a manifest file
        options[key] = cwd / options[key]
    if loader != "synthetic":
        return LOADERS[loader](**options)
    meta_path = options["root"] / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if (meta.get("seed"), meta.get("image_size")) != (options["seed"], options["image_size"]):
        log.warning("no synthetic cache with seed %s, size %s at %s", options["seed"],
                    options["image_size"], options["root"])  # fmt: skip
        return []
    return read_manifest(options["root"] / "records.jsonl")


def image_paths(run: str | Path, report: str = ".") -> dict[str, str]:
    """Record id -> image path for the data sources that `report` scored: a benchmark job's
    `<checkpoint>/<data>` report reads `stage.datasets.<data>`, any other report the run's
    `data` (the run folder's config, or for a pipeline step the job folder's above it;
    relative roots resolve against the folder the run was launched from). Sources that fail
    to load are skipped."""
    run = Path(run).resolve()
    job = next((p for p in (run, *run.parents) if (p / ".hydra" / "config.yaml").is_file()), run)
    hydra_dir = job / ".hydra"
    cfg = OmegaConf.load(hydra_dir / "config.yaml")
    cwd = Path(OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.cwd)
    datasets = OmegaConf.select(cfg, "stage.datasets") or {}
    data = datasets.get(Path(report).name, cfg.data)
    paths = {}
    for name, source in OmegaConf.to_container(data.sources, resolve=True).items():
        try:
            paths.update({r.id: r.image for r in _source_records(source, cwd)})
        except (DataError, OSError) as e:
            log.warning("data source %s: %s", name, e)
    return paths


def _with_images(df: pd.DataFrame, run: str | Path, report: str = ".") -> pd.DataFrame:
    return df.assign(image=df["id"].map(image_paths(run, report))) if len(df) else df


def load_predictions(run: str | Path, report: str = ".") -> pd.DataFrame:
    """A job's predictions.csv (in its `report` folder), with each record's `image` path."""
    df = pd.read_csv(Path(run) / report / "predictions.csv", keep_default_na=False)
    scores = [c for c in df.columns if c.startswith("score_")]
    df[scores] = df[scores].apply(pd.to_numeric, errors="coerce")  # "nan": no parsed answer
    return _with_images(df, run, report)


def load_samples(run: str | Path) -> pd.DataFrame:
    """A GRPO job's grpo_samples.jsonl (rollout, id, task, mos, completion, reward, format,
    accuracy, advantage), with each record's `image` path; empty when it has none."""
    path = Path(run) / "grpo_samples.jsonl"
    if not path.is_file():
        return pd.DataFrame()
    return _with_images(pd.read_json(path, lines=True), run)
