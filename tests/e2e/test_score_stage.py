"""`python run.py stage=score` and `stage=select` end to end on the untrained tiny model."""

import csv
import json

import numpy as np
from PIL import Image
from test_eval_stage import run_app  # tests/e2e is on sys.path (pytest's prepend mode)


def _png(path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_score_stage_writes_csv_and_summary(tmp_path, tiny_path):
    for i in range(3):
        _png(tmp_path / "shots" / f"im{i}.png", i)
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"image": "shots/im0.png", "prompt": "a red circle"},
        {"image": "shots/im1.png"},
        {"image": "shots/gone.png", "prompt": "a cat"},
        {"image": "shots/im2.png", "prompt": "two blue squares"}]))  # fmt: skip
    proc = run_app("stage=score", f"stage.checkpoint={tiny_path}",
                   f"stage.images={tmp_path / 'manifest.jsonl'}",
                   "stage.tasks=[technical,alignment]", "decoding.max_new_tokens=16",
                   f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "run" / "scores.csv").open()))
    assert list(rows[0]) == ["image", "task", "prompt", "score", "std", "reasoning", "error"]
    assert [(r["image"].rsplit("/", 1)[-1], r["task"]) for r in rows][:4] == [
        ("im0.png", "technical"), ("im0.png", "alignment"),
        ("im1.png", "technical"), ("im1.png", "alignment")]  # fmt: skip
    # The untrained model's answers are invalid: each row says why, with no score.
    invalid = [r for r in rows if r["error"].startswith("invalid answer: ")]
    assert invalid and all(r["score"] == "nan" for r in invalid)
    errors = {(r["image"].rsplit("/", 1)[-1], r["task"]): r["error"] for r in rows
              if r["error"] and r not in invalid}  # fmt: skip
    assert set(errors) == {("im1.png", "alignment"), ("gone.png", "technical"),
                           ("gone.png", "alignment")}  # fmt: skip
    assert "gone.png" in errors["gone.png", "technical"]
    assert "needs a prompt" in errors["im1.png", "alignment"]
    assert "invalid answers" in proc.stdout and "alignment" in proc.stdout

    proc = run_app("stage=score", f"stage.images={tmp_path / 'nothing_here'}",
                   f"stage.checkpoint={tiny_path}",
                   f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
    assert proc.returncode != 0 and "nothing_here" in proc.stderr


def test_select_stage_ranks_and_links(tmp_path):
    for g in ("cat", "dog"):
        (tmp_path / "cands" / g).mkdir(parents=True)
        (tmp_path / "cands" / g / "prompt.txt").write_text(f"a {g}")
        for i in range(2):
            _png(tmp_path / "cands" / g / f"c{i}.png", i)
    proc = run_app("stage=select", f"stage.candidates={tmp_path / 'cands'}",
                   "stage.weights.alignment=1.0", "stage.link=symlink",
                   "decoding.max_new_tokens=16", f"paths.cache={tmp_path / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "run" / "ranking.csv").open()))
    assert [(r["group"], r["rank"]) for r in rows] == [("cat", "1"), ("cat", "2"),
                                                       ("dog", "1"), ("dog", "2")]  # fmt: skip
    assert {"score_aesthetic", "score_technical", "score_alignment"} <= set(rows[0])
    winners = [r for r in rows if r["winner"] == "True"]
    best = sorted(p.name for p in (tmp_path / "run" / "best").iterdir())
    assert best == sorted(f"{r['group']}.png" for r in winners)  # the untrained model may pick none
    assert "groups have a winner" in proc.stdout
