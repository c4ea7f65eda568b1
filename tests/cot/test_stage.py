"""write_cot's bookkeeping with a scripted teacher: kept, dropped and skipped records."""

import json

import pytest
from PIL import Image

from omniquality_r.cot.stage import make_teacher, write_cot
from omniquality_r.data.records import Record


class Scripted:
    """Proposes the scores listed per record key."""

    name = "scripted"

    def __init__(self, scores: dict[str, list[float]]):
        self.scores = scores

    def sample(self, items, k, seed):
        return [[f"<plan>p</plan><think>{it.task}</think><answer>{s:.2f}</answer>"
                 for s in self.scores[it.key][:k]] for it in items]  # fmt: skip


def test_write_cot_keeps_drops_and_skips(tmp_path):
    image = tmp_path / "ok.png"
    Image.new("RGB", (8, 8)).save(image)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rec = {"task": "technical", "mos": 3.0, "mos_raw": 3.0, "dataset": "d", "split": "train"}
    records = [Record(id="keep", image=str(image), **rec),
               Record(id="drop", image=str(image), **rec),
               Record(id="corrupt", image=str(tmp_path / "bad.png"), **rec),
               Record(id="missing", image=str(tmp_path / "none.png"), **rec)]  # fmt: skip
    teacher = Scripted({"keep": [1.0, 3.4, 2.8, 3.3], "drop": [0.5, 4.5, 5.0, 1.0]})
    stats = write_cot(records, teacher, tmp_path / "run", k=4, epsilon=0.5, rule="closest",
                      batch_size=3, seed=0)  # fmt: skip
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "cot.jsonl").open()]
    assert row["id"] == "keep" and row["score"] == 2.8 and row["n_accepted"] == 3
    assert row["teacher"] == "scripted" and row["k"] == 4 and row["reasoning"] == "technical"
    assert stats["written"] == 1 and stats["dropped"] == 1 and stats["skipped"] == 2
    assert json.loads((tmp_path / "run" / "cot_stats.json").read_text()) == stats
    (pooled,) = [a for a in stats["acceptance"] if a["dataset"] == "all"]
    assert pooled["records"] == 2 and pooled["accepted"] == 3 and pooled["dropped"] == 1


def test_unknown_teacher():
    with pytest.raises(ValueError, match="oracle"):
        make_teacher("oracle", {}, system_prompt="", instructions={})
