"""QualityScorer: same scores as stage=eval's predict, per-item errors, tasks, samples."""

import csv
import json
import math
import statistics

import numpy as np
import pytest
from PIL import Image

import omniquality_r.inference as inference
import omniquality_r.scoring as scoring
from omniquality_r.data.records import DataError, Record
from omniquality_r.eval.evaluate import predict
from omniquality_r.scoring import (
    QualityScorer,
    ScoreResult,
    as_image,
    collect_images,
    project_defaults,
    score_summary,
    summarize,
    write_scores_csv,
)

GREEDY = {"max_new_tokens": 24, "do_sample": False}
SAMPLING = {"max_new_tokens": 24, "do_sample": True, "temperature": 1.0}


def _pixels(seed: int, size=(112, 112)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)


def _write_images(folder, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"im{i}.png") for i in range(n)]
    for i, p in enumerate(paths):
        Image.fromarray(_pixels(i)).save(p)
    return paths


def _scorer(tiny_model, generation=GREEDY) -> QualityScorer:
    instructions, system_prompt, _ = project_defaults()
    model, processor = tiny_model
    return QualityScorer(model, processor, instructions=instructions, system_prompt=system_prompt,
                         generation=generation)  # fmt: skip


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_summarize_ignores_unparsed_samples():
    mean, std = summarize([2.0, math.nan, 4.0, 3.0])
    assert mean == 3.0 and std == pytest.approx(statistics.pstdev([2, 3, 4]))
    assert summarize([1.5]) == (1.5, 0.0)
    assert all(math.isnan(v) for v in summarize([math.nan, math.nan]))


def test_reasoning_is_the_think_text():
    res = ScoreResult("a.png", "technical", responses=["<think> sharp </think><answer>4</answer>"])
    assert res.reasoning == "sharp"
    assert ScoreResult("a.png", "technical", responses=["no tags"]).reasoning == "no tags"


def test_as_image_accepts_paths_pil_and_arrays(tmp_path):
    [path] = _write_images(tmp_path, 1)
    assert as_image(path, path).size == (112, 112)
    assert as_image(Image.new("L", (8, 4)), "#0").mode == "RGB"
    assert as_image(np.zeros((4, 8), np.uint8), "#0").size == (8, 4)
    assert as_image(np.ones((4, 8, 1), np.float32), "#0").getpixel((0, 0)) == (255, 255, 255)
    for bad in (np.zeros(5, np.uint8), np.zeros((4, 4, 2), np.uint8), 42):
        with pytest.raises(DataError, match="#3"):
            as_image(bad, "#3")


def test_project_defaults_come_from_conf_or_must_be_passed(tmp_path):
    instructions, system_prompt, generation = project_defaults()
    assert set(instructions) == {"technical", "aesthetic", "alignment"}
    assert "{prompt}" in instructions["alignment"] and "<think>" in system_prompt
    assert generation["do_sample"] is False
    with pytest.raises(FileNotFoundError, match="pass instructions="):
        project_defaults(tmp_path / "nowhere")


def test_api_scores_equal_eval_predict(tiny_path, tmp_path):
    paths = _write_images(tmp_path, 6)
    prompts = ["", "", "", "a red circle", "two blue squares", "a tree"]
    tasks = ["technical"] * 3 + ["alignment"] * 3
    records = [Record(id=f"r{i}", image=p, task=t, mos=2.5, mos_raw=2.5, dataset="d", prompt=q)
               for i, (p, t, q) in enumerate(zip(paths, tasks, prompts))]  # fmt: skip
    scorer = QualityScorer.from_pretrained(tiny_path, generation=GREEDY, device="cpu")
    rows, skipped = predict(
        scorer.model, scorer.processor, records, instructions=scorer.instructions,
        system_prompt=scorer.system_prompt, generation=GREEDY, batch_size=3,
    )  # fmt: skip
    api = scorer.score(paths[:3], task="technical", batch_size=3) + scorer.score(
        paths[3:], task="alignment", prompts=prompts[3:], batch_size=3)  # fmt: skip
    assert not skipped and len(api) == len(rows) == 6
    for rec, row, res in zip(records, rows, api):
        assert (res.image, res.task, res.prompt) == (rec.image, row["task"], row["prompt"])
        assert res.responses == [row["response"]] and res.invalid == [row["invalid"]]
        assert res.error.startswith("invalid answer: ") == bool(row["invalid"])  # untrained
        assert _same(res.score, row["score_greedy"]) and _same(res.samples[0], res.score)


def test_bad_items_get_errors_and_the_rest_is_scored(tiny_model, tmp_path):
    [good] = _write_images(tmp_path, 1)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_text("not a png")
    images = [good, str(tmp_path / "missing.png"), str(corrupt), Image.fromarray(_pixels(1)),
              _pixels(2, (64, 96)), np.zeros(5)]  # fmt: skip
    prompts = ["a cat", "a dog", "a cow", "", "a red circle", "a hat"]
    results = _scorer(tiny_model).score(images, task=["technical", "alignment", "bogus"],
                                        prompts=prompts, batch_size=4)  # fmt: skip
    assert len(results) == 6 and all(list(r) == ["technical", "alignment", "bogus"]
                                      for r in results)  # fmt: skip
    for i, culprit in ((1, "missing.png"), (2, "corrupt.png"), (5, "#5")):
        assert all(culprit in r.error and not r.responses for r in results[i].values())
    assert all("unknown task 'bogus'" in results[i]["bogus"].error for i in (0, 3, 4))
    assert "needs a prompt" in results[3]["alignment"].error
    scored = [results[0]["technical"], results[0]["alignment"], results[3]["technical"],
              results[4]["technical"], results[4]["alignment"]]  # fmt: skip
    assert all(len(r.responses) == 1 == len(r.samples) for r in scored)
    assert all(r.error.startswith("invalid answer: ") for r in scored)  # untrained: no answer
    assert [r["technical"].image for r in results[3:]] == ["#3", "#4", "#5"]


def test_samples_return_mean_and_spread(tiny_model, tmp_path, monkeypatch):
    paths = _write_images(tmp_path, 2)
    with pytest.raises(ValueError, match="do_sample"):
        _scorer(tiny_model).score(paths, samples=2)
    results = _scorer(tiny_model, SAMPLING).score(paths, task="aesthetic", samples=3,
                                                  batch_size=4)  # fmt: skip
    assert all(len(r.responses) == len(r.samples) == 3 for r in results)
    assert any(len(set(r.responses)) > 1 for r in results)  # sampling differs per sample

    counter = iter(range(100))

    def read_scores(responses, *_, **__):  # control parsing: the i-th scored sample reads i
        return [float(next(counter)) for _ in responses]

    monkeypatch.setattr(inference, "read_scores", read_scores)
    results = _scorer(tiny_model, SAMPLING).score(paths, samples=3, batch_size=4)
    assert [r.samples for r in results] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert [r.score for r in results] == [1.0, 4.0]
    assert results[0].std == pytest.approx(statistics.pstdev([0, 1, 2]))


def test_collect_images_from_folder_glob_and_manifest(tmp_path):
    paths = _write_images(tmp_path / "shots", 3)
    (tmp_path / "shots" / "notes.txt").write_text("skip me")
    assert collect_images(tmp_path / "shots", "p") == (paths, ["p"] * 3)
    assert collect_images(str(tmp_path / "**" / "im[12].png"))[0] == paths[1:]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "shots/im0.png", "prompt": "a cat"}) + "\n\n"
                        + json.dumps({"image": paths[1], "mos": 3}) + "\n")  # fmt: skip
    assert collect_images(manifest, "default") == (paths[:2], ["a cat", "default"])
    manifest.write_text('{"prompt": "no image"}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:1"):
        collect_images(manifest)
    with pytest.raises(DataError, match="no images found"):
        collect_images(tmp_path / "empty*")


def test_scores_csv_and_summary(tmp_path):
    results = [ScoreResult("a.png", "technical", score=2.0, std=0.0, samples=[2.0],
                           responses=["<think>ok</think><answer>2</answer>"]),
               ScoreResult("b.png", "technical", score=4.0, std=0.0, samples=[4.0]),
               ScoreResult("c.png", "technical", samples=[math.nan], responses=["junk"],
                           invalid=["no_answer"], looped=[True],
                           error="invalid answer: no_answer: no <answer>...</answer>"),
               ScoreResult("d.png", "technical", error="image file not found: d.png")]  # fmt: skip
    rows = list(csv.DictReader(write_scores_csv(results, tmp_path / "s.csv").open()))
    assert list(rows[0]) == list(scoring.SCORE_COLUMNS)
    assert rows[0]["reasoning"] == "ok" and rows[3]["error"].startswith("image file not found")
    s = score_summary(results)["technical"]
    assert (s["n"], s["errors"], s["invalid"], s["mean"], s["std"]) == (4, 1, 1, 3.0, 1.0)
    assert s["invalid_answers"]["no_answer"] == 1 and s["looped"] == 1
    assert "no_answer 1" in scoring.format_summary({"technical": s})
