"""Best-of-N: the combination and ranking on hand-set scores, candidates, and file outputs."""

import csv
import json
import math

import pytest
from PIL import Image

from omniquality_r.best_of_n import (
    DEFAULT_WEIGHTS,
    Candidate,
    collect_candidates,
    combine,
    rank,
    select,
    selection_summary,
    write_selection,
)
from omniquality_r.data.records import DataError
from omniquality_r.scoring import QualityScorer

NAN = math.nan


def test_combine_is_the_weighted_mean_of_positive_weight_tasks():
    scores = {"aesthetic": 4.0, "technical": 2.0, "alignment": NAN}
    assert combine(scores, DEFAULT_WEIGHTS) == 3.0  # alignment weight 0: its NaN is ignored
    assert combine(scores, {"aesthetic": 1, "technical": 3}) == 2.5
    assert math.isnan(combine(scores, {"aesthetic": 1, "alignment": 1}))
    assert math.isnan(combine({"aesthetic": 4.0}, DEFAULT_WEIGHTS))  # technical missing
    with pytest.raises(ValueError, match=">= 0"):
        combine(scores, {"aesthetic": 1, "technical": -1})
    with pytest.raises(ValueError, match="positive"):
        combine(scores, {"aesthetic": 0, "technical": 0})


def test_rank_orders_within_groups_and_puts_unscored_last():
    cands = [Candidate(g, f"prompt {g}", f"{g}{i}.png") for g, i in
             [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1), ("a", 3)]]  # fmt: skip
    scores = [{"aesthetic": 2, "technical": 2}, {"aesthetic": NAN, "technical": 5},
              {"aesthetic": 5, "technical": 3}, {"aesthetic": 3, "technical": 5},
              {"aesthetic": NAN, "technical": 1}, {"aesthetic": 1, "technical": 1}]  # fmt: skip
    rows = rank(cands, scores, DEFAULT_WEIGHTS)
    assert [r["image"] for r in rows] == [c.image for c in cands]
    assert [rows[i]["combined"] for i in (0, 2, 3, 5)] == [2.0, 4.0, 4.0, 1.0]
    assert [r["rank"] for r in rows] == [3, 1, 1, 2, 2, 4]  # a2 ties a1 at 4.0 and comes later
    assert [r["image"] for r in rows if r["winner"]] == ["a1.png"]  # group b: nothing scored
    assert selection_summary(rows) == {"groups": 2, "candidates": 6, "winners": 1, "errors": 0,
                                       "mean_all": 11 / 4, "mean_winners": 4.0}  # fmt: skip
    weighted = rank(cands, scores, {"technical": 1.0})
    assert [r["image"] for r in weighted if r["winner"]] == ["b0.png", "a2.png"]


def _png(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return str(path)


def test_collect_candidates_from_folders_and_manifest(tmp_path):
    root = tmp_path / "cands"
    a = [_png(root / "cat" / f"{i}.png", "red") for i in range(2)]
    (root / "cat" / "prompt.txt").write_text("a cat\n")
    b = _png(root / "dog" / "x.jpg", "blue")
    assert collect_candidates(root) == [Candidate("cat", "a cat", a[0]),
                                        Candidate("cat", "a cat", a[1]),
                                        Candidate("dog", "", b)]  # fmt: skip
    manifest = tmp_path / "c.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in [
        {"group": "g1", "prompt": "a cat", "image": "cands/cat/0.png"},
        {"prompt": "a dog", "image": b}]))  # fmt: skip
    assert collect_candidates(manifest) == [Candidate("g1", "a cat", a[0]),
                                            Candidate("a dog", "a dog", b)]  # fmt: skip
    with pytest.raises(DataError, match="no images"):
        collect_candidates(tmp_path / "cands" / "cat")


def test_ranked_rows_write_ranking_and_winners(tmp_path):
    root = tmp_path / "cands"
    spec = [("p1", "x.png", "red"), ("p1", "y.png", "green"), ("p2", "z.png", "blue"),
            ("p2", "bad.png", "white")]  # fmt: skip
    ims = {n: _png(root / g / n, c) for g, n, c in spec}
    cands = collect_candidates(root)
    by_name = {"x.png": (1.0, 1.0), "y.png": (2.0, 4.0), "z.png": (3.0, 3.0), "bad.png": (NAN, NAN)}
    scores = [dict(zip(("aesthetic", "technical"), by_name[c.image.split("/")[-1]]))
              for c in cands]  # fmt: skip
    rows = rank(cands, scores, DEFAULT_WEIGHTS)
    assert [(r["image"], r["rank"], r["winner"]) for r in rows] == [
        (ims["x.png"], 2, False), (ims["y.png"], 1, True),
        (ims["bad.png"], 2, False), (ims["z.png"], 1, True)]  # fmt: skip

    for link in ("copy", "symlink"):
        out = tmp_path / link
        write_selection(rows, out, link=link)
        ranking = list(csv.DictReader((out / "ranking.csv").open()))
        assert [r["image"] for r in ranking] == [ims[n] for n in ("y.png", "x.png", "z.png",
                                                                  "bad.png")]  # fmt: skip
        assert {"group", "prompt", "combined", "rank", "winner"} <= set(ranking[0])
        best = sorted(p.name for p in (out / "best").iterdir())
        assert best == ["p1.png", "p2.png"]
        assert (out / "best" / "p1.png").is_symlink() == (link == "symlink")
        assert Image.open(out / "best" / "p2.png").getpixel((0, 0)) == (0, 0, 255)
    with pytest.raises(ValueError, match="link"):
        write_selection(rows, tmp_path, link="hardlink")


def test_select_scores_every_candidate_with_the_real_scorer(tiny_model, tmp_path):
    model, processor = tiny_model
    scorer = QualityScorer(model, processor, instructions={"aesthetic": "Rate.",
                           "technical": "Rate."}, system_prompt="SYS",
                           generation={"max_new_tokens": 6, "do_sample": False})  # fmt: skip
    root = tmp_path / "cands"
    _png(root / "p1" / "a.png", "red")
    _png(root / "p1" / "b.png", "green")
    (root / "p1" / "broken.png").write_bytes(b"not a png")
    rows = select(scorer, collect_candidates(root), DEFAULT_WEIGHTS)
    assert len(rows) == 3 and {r["group"] for r in rows} == {"p1"}
    assert {"score_aesthetic", "score_technical", "error"} <= set(rows[0])
    broken = next(r for r in rows if r["image"].endswith("broken.png"))
    assert "broken.png" in broken["error"] and not broken["winner"]
    assert sorted(r["rank"] for r in rows) == [1, 2, 3]
