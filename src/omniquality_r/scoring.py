"""Score images with an OmniQuality-R model: the Python API behind stage=score, stage=select
and the TRL reward adapter (reward_fn.py).

    scorer = QualityScorer.from_pretrained("outputs/grpo/<run>/checkpoint")  # or a hub id
    [res] = scorer.score(["cat.png"], task=["technical", "aesthetic", "alignment"],
                         prompts=["a cat on a sofa"])
    res["aesthetic"].score, res["aesthetic"].reasoning, res["aesthetic"].error

`inference.score_items` is the one prediction function for a batch of (image, task,
prompt); the eval stage (`eval.evaluate.predict`) and `QualityScorer.score` both call it.
"""

from __future__ import annotations

import csv
import glob
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from .console import progress as console_progress
from .data.records import DataError, jsonl_objects, load_image
from .inference import READOUTS, PromptSpec, check_samples, score_items, summarize
from .models.loading import load_model
from .prompts import answer_counts, read_answer

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SCORE_COLUMNS = ("image", "task", "prompt", "score", "std", "reasoning", "error")
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def project_defaults(conf_dir: Path = CONF_DIR) -> tuple[dict[str, str], str, dict]:
    """Task instructions, system prompt and greedy decoding settings from the project's conf/."""
    if not conf_dir.is_dir():
        raise FileNotFoundError(
            f"project config folder {conf_dir} not found; pass instructions=, system_prompt= "
            "and generation= to QualityScorer explicitly"
        )
    instructions = {p.stem: OmegaConf.load(p).instruction
                    for p in sorted((conf_dir / "task").glob("*.yaml"))}  # fmt: skip
    system_prompt = OmegaConf.load(conf_dir / "config.yaml").system_prompt
    generation = OmegaConf.to_container(OmegaConf.load(conf_dir / "decoding" / "greedy.yaml"))
    return instructions, system_prompt, generation


def invalid_error(responses: Sequence[str]) -> str:
    """The error entry of an item none of whose sampled answers is a score: each distinct
    reason (prompts.Answer.describe) with how many samples gave it."""
    reasons = Counter(read_answer(r).describe() or "no read-out" for r in responses)
    return "invalid answer: " + "; ".join(
        f"{why}" + (f" (x{n} of {len(responses)})" if len(responses) > 1 else "")
        for why, n in reasons.items())


def reasoning_of(response: str) -> str:
    """The text inside <think></think>, or the whole response when there is none."""
    m = _THINK_RE.search(response)
    return (m.group(1) if m else response).strip()


@dataclass
class ScoreResult:
    """One (image, task): mean score over the samples with a valid answer (0-5) and its std,
    the per-sample scores (NaN when invalid), raw responses, why each answer is invalid
    (prompts.INVALID, "" when valid) and whether the repetition guard stopped it. `error`
    says why there is no score: the item could not be scored (image, task, prompt), or no
    sample gave a valid answer (`invalid answer: out_of_range: '2666' is outside [0, 5]`);
    `score` is then NaN, never a number from outside the scale."""

    image: str
    task: str
    prompt: str = ""
    score: float = math.nan
    std: float = math.nan
    samples: list[float] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    looped: list[bool] = field(default_factory=list)
    error: str = ""

    @property
    def reasoning(self) -> str:
        """The first sample's reasoning."""
        return reasoning_of(self.responses[0]) if self.responses else ""


def as_image(image, label: str) -> Image.Image:
    """RGB image from a path, PIL image or HxW[xC] array; DataError naming `label` if unusable."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype.kind == "f":
            arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        shape_ok = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))
        if arr.dtype != np.uint8 or not shape_ok:
            raise DataError(f"image {label}: array of shape {image.shape} and dtype {image.dtype} "
                            "is not an HxW[xC] (C = 1, 3, 4) uint8 or float image")  # fmt: skip
        return Image.fromarray(arr).convert("RGB")
    raise DataError(f"image {label}: expected a path, PIL image or numpy array, "
                    f"got {type(image).__name__}")  # fmt: skip


class QualityScorer:
    """Scores images for technical quality, aesthetics and text-image alignment (0-5)."""

    def __init__(self, model, processor, *, instructions: dict[str, str], system_prompt: str,
                 generation: dict, readout: str = "greedy"):  # fmt: skip
        if readout not in READOUTS:
            raise ValueError(f"unknown read-out {readout!r}; expected one of {READOUTS}")
        self.model, self.processor = model.eval(), processor
        self.instructions, self.system_prompt = dict(instructions), system_prompt
        self.generation, self.readout = dict(generation), readout

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        *,
        instructions: dict[str, str] | None = None,
        system_prompt: str | None = None,
        generation: dict | None = None,
        readout: str = "greedy",
        device: str = "auto",
        dtype: str = "float32",
    ) -> QualityScorer:
        """Load a checkpoint folder or hub id; unset prompts/decoding come from conf/."""
        if instructions is None or system_prompt is None or generation is None:
            conf = project_defaults()
            instructions = conf[0] if instructions is None else instructions
            system_prompt = conf[1] if system_prompt is None else system_prompt
            generation = conf[2] if generation is None else generation
        model, processor = load_model(str(path_or_hub_id), dtype=dtype)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model.to(device), processor, instructions=instructions,
                   system_prompt=system_prompt, generation=generation, readout=readout)  # fmt: skip

    def _check(self, task: str, prompt: str) -> str:
        """Why (image, task, prompt) cannot be scored, or ""."""
        if task not in self.instructions:
            return f"unknown task {task!r}; expected one of {sorted(self.instructions)}"
        if "{prompt}" in self.instructions[task] and not prompt:
            return f"task {task!r} needs a prompt"
        return ""

    def score(
        self,
        images,
        task: str | Sequence[str] = "technical",
        prompts: str | Sequence[str] | None = None,
        samples: int = 1,
        batch_size: int = 8,
        progress: bool = False,
    ) -> list:
        """Score each image for `task`: one ScoreResult per image, or per image a dict
        task -> ScoreResult when `task` is a list. `prompts` (one, or one per image) is
        needed for alignment. Unusable items get `error` set; the rest are still scored.
        `samples` answers per item (a sampling generation config), `batch_size` items per
        generation batch (each with its answers: batch_size * samples rows)."""
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        images = list(images)
        tasks = [task] if isinstance(task, str) else list(task)
        if prompts is None or isinstance(prompts, str):
            prompts = [prompts or ""] * len(images)
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
        check_samples(samples, self.generation)
        results, jobs = [], []
        for i, (image, prompt) in enumerate(zip(images, prompts)):
            label = str(image) if isinstance(image, (str, Path)) else f"#{i}"
            try:
                pil, error = as_image(image, label), ""
            except DataError as e:
                pil, error = None, str(e)
            row = {}
            for t in tasks:
                res = row[t] = ScoreResult(label, t, prompt, error=error or self._check(t, prompt))
                if not res.error:
                    jobs.append((res, PromptSpec(pil, t, prompt)))
            results.append(row[task] if isinstance(task, str) else row)
        starts = range(0, len(jobs), batch_size)
        for start in console_progress(starts, desc="score" if progress else None, unit="batch"):
            batch = jobs[start : start + batch_size]
            out = score_items(
                self.model, self.processor, [spec for _, spec in batch],
                instructions=self.instructions, system_prompt=self.system_prompt,
                generation=self.generation, readouts=(self.readout,), samples=samples,
            )  # fmt: skip
            for i, (res, _) in enumerate(batch):
                rows = out.answers_of(i)
                res.responses += out.responses[rows]
                res.samples += out.scores[self.readout][rows]
                res.invalid += out.invalid[rows]
                res.looped += out.looped[rows]
        for res, _ in jobs:
            res.score, res.std = summarize(res.samples)
            if not math.isfinite(res.score):
                res.error = invalid_error(res.responses)
        return results


def read_image_manifest(path: str | Path) -> list[dict]:
    """Rows of a JSONL manifest: `image` (relative to the manifest's folder) and optional
    `prompt` and `group`; other keys are ignored."""
    path = Path(path)
    rows = []
    for _, where, row in jsonl_objects(path):
        if "image" not in row:
            raise DataError(f"{where}: expected a JSON object with an 'image' key")
        image = Path(row["image"])
        rows.append({"image": str(image if image.is_absolute() else path.parent / image),
                     "prompt": str(row.get("prompt") or ""),
                     "group": str(row.get("group", ""))})  # fmt: skip
    if not rows:
        raise DataError(f"{path}: manifest holds no images")
    return rows


def collect_images(source: str | Path, prompt: str = "") -> tuple[list[str], list[str]]:
    """Image paths and prompts from a folder, a glob pattern or a JSONL manifest (whose
    prompts override `prompt`)."""
    source = str(source)
    if source.endswith(".jsonl"):
        rows = read_image_manifest(source)
        return [r["image"] for r in rows], [r["prompt"] or prompt for r in rows]
    if Path(source).is_dir():
        paths = sorted(str(p) for p in Path(source).iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
    else:
        paths = sorted(glob.glob(source, recursive=True))
    if not paths:
        raise DataError(f"no images found at {source} (expected a folder, a glob or a .jsonl)")
    return paths, [prompt] * len(paths)


def flatten(results: Sequence) -> list[ScoreResult]:
    """`score`'s output as a flat list, image by image."""
    return [r for item in results for r in (item.values() if isinstance(item, dict) else [item])]


def write_scores_csv(results: Sequence[ScoreResult], path: str | Path) -> Path:
    """SCORE_COLUMNS, one row per (image, task); the reasoning is the first sample's."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SCORE_COLUMNS)
        writer.writerows([r.image, r.task, r.prompt, r.score, r.std, r.reasoning, r.error]
                         for r in results)  # fmt: skip
    return path


def score_summary(results: Sequence[ScoreResult]) -> dict[str, dict]:
    """Per task: n items, n that could not be scored (errors: image, task, prompt), n whose
    answers were all invalid, per reason (prompts.INVALID) the invalid sampled answers, the
    generations the repetition guard stopped, and mean/std of the scores."""
    summary = {}
    for task in dict.fromkeys(r.task for r in results):
        rows = [r for r in results if r.task == task]
        scored = [r.score for r in rows if math.isfinite(r.score)]
        counts = answer_counts([x for r in rows for x in r.invalid],
                               [x for r in rows for x in r.looped])  # fmt: skip
        summary[task] = {
            "n": len(rows),
            "errors": sum(bool(r.error) and not r.responses for r in rows),
            "invalid": sum(bool(r.responses) and not math.isfinite(r.score) for r in rows),
            "invalid_answers": {k.removeprefix("invalid_"): v for k, v in counts.items()
                                if k.startswith("invalid_")},
            "looped": counts["looped"],
            "mean": statistics.fmean(scored) if scored else math.nan,
            "std": statistics.pstdev(scored) if scored else math.nan,
        }
    return summary


def format_summary(summary: dict[str, dict]) -> str:
    lines = [f"{'task':<12}{'n':>6}{'errors':>8}{'invalid':>9}{'looped':>8}{'mean':>8}{'std':>8}"
             "  invalid answers"]
    for t, s in summary.items():
        why = ", ".join(f"{k} {v}" for k, v in s["invalid_answers"].items() if v) or "-"
        lines.append(f"{t:<12}{s['n']:>6}{s['errors']:>8}{s['invalid']:>9}{s['looped']:>8}"
                     f"{s['mean']:>8.3f}{s['std']:>8.3f}  {why}")
    return "\n".join(lines)
