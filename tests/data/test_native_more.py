"""The EvalMuse-40K, AADB, PIPAL, AIGCIQA2023 and pyiqa loaders, AVA's official test list and
conf/data/paper_mix.yaml, on tiny fixtures written in each dataset's own format."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import scipy.io
from fixtures import write_ava, write_evalmuse, write_koniq
from omegaconf import OmegaConf
from PIL import Image
from test_native import BY_NAME

from omniquality_r.data.build import build_splits, load_sources
from omniquality_r.data.native import LOADERS, evalmuse_element_scores
from omniquality_r.data.records import DataError

CONF = Path(__file__).resolve().parents[2] / "conf"
NEW_LOADERS = {"evalmuse", "aadb", "pipal", "aigciqa2023", "pyiqa"}


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (20, 120, 200)).save(path)


def raises(*text: str):
    """pytest.raises for a DataError whose message holds each of `text`, in order."""
    return pytest.raises(DataError, match=".*".join(map(re.escape, text)))


def loaded(records) -> dict[str, tuple]:
    return {r.id: (r.task, pytest.approx(r.mos), r.mos_raw, r.split, r.group, r.prompt)
            for r in records}  # fmt: skip


def test_every_loader_has_fixture_tests():
    assert set(LOADERS) == {*BY_NAME, *NEW_LOADERS, "manifest"}


# EvalMuse-40K: train_list.json, a list of entries with per-annotator scores.


def test_evalmuse_loads_the_release(tmp_path):
    records = LOADERS["evalmuse"](write_evalmuse(tmp_path, 4))
    fox, car = "a red fox number 0", "a blue car number 1"
    assert loaded(records) == {
        "evalmuse/SDXL-Turbo/00000.png": ("alignment", 0.625, 1.5, "", fox, fox),
        "evalmuse/DALLE3/00001.png": ("alignment", 1.875, 2.5, "", fox, fox),
        "evalmuse/Kandinsky3/00002.png": ("alignment", 3.125, 3.5, "", car, car),
        "evalmuse/SDXL-Turbo/00003.png": ("alignment", 4.375, 4.5, "", car, car),
    }
    assert records[0].image == str(tmp_path / "images" / "SDXL-Turbo" / "00000.png")
    assert evalmuse_element_scores(tmp_path)["evalmuse/DALLE3/00001.png"] == {
        "a red fox (object)": 1.0,
        "number (counting)": 0.0,
    }


def write_entries(root: Path, entries: list, name: str = "train_list.json") -> Path:
    for entry in entries:
        if isinstance(entry, dict) and entry.get("img_path"):
            image(root / "images" / entry["img_path"])
    (root / name).write_text(json.dumps(entries))
    return root


def entry(i: int = 0, **fields) -> dict:
    return {"prompt_id": f"{i:05d}", "prompt": "a cat", "type": "real",
            "img_path": f"SD/{i}.png", "total_score": [3, 4],
            "element_score": "{'cat (animal)': [1, 1]}", **fields}  # fmt: skip


def test_evalmuse_reads_the_averaged_train_json_and_a_test_file_as_a_split(tmp_path):
    """process/process_train.py's train.json keeps the means; an annotated test file is a
    test-only source."""
    write_entries(tmp_path, [entry(total_score=3.5, element_score={"cat (animal)": 0.5})],
                  "train.json")  # fmt: skip
    [rec] = LOADERS["evalmuse"](tmp_path, json="train.json")
    assert (rec.mos, rec.mos_raw) == (3.125, 3.5)
    assert evalmuse_element_scores(tmp_path, json="train.json") == {
        "evalmuse/SD/0.png": {"cat (animal)": 0.5}
    }
    write_entries(tmp_path, [entry(0), entry(1)], "test.json")
    source = {"loader": "evalmuse", "root": str(tmp_path), "json": "test.json", "split": "test"}
    assert [r.split for r in load_sources({"evalmuse_test": source})] == ["test", "test"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"total_score": None}, ("total_score is null",)),
        ({"total_score": [6, 5]}, ("MOS 5.5", "outside")),
        ({"total_score": ["x", 3]}, ("total_score ['x', 3] is not a number",)),
        ({"total_score": []}, ("total_score [] is not a number",)),
        ({"prompt": ""}, ("has no prompt",)),
        ({"img_path": ""}, ("empty image name",)),
    ],
    ids=["test-json-null", "out-of-range", "not-a-number", "no-ratings", "no-prompt", "no-image"],
)
def test_evalmuse_bad_entry(bad, message, tmp_path):
    write_entries(tmp_path, [entry(0), entry(1, **bad)])
    with raises("train_list.json entry 2:", *message):
        LOADERS["evalmuse"](tmp_path)


def test_evalmuse_missing_key_image_and_file(tmp_path):
    write_entries(tmp_path, [{k: v for k, v in entry().items() if k != "img_path"}])
    with raises("train_list.json entry 1: missing key(s) ['img_path']"):
        LOADERS["evalmuse"](tmp_path)
    write_entries(tmp_path, [entry(0), entry(1)])
    (tmp_path / "images" / "SD" / "1.png").unlink()
    with raises("train_list.json entry 2:", "image file not found", "SD/1.png"):
        LOADERS["evalmuse"](tmp_path)
    with raises("annotation file not found", "test.json"):
        LOADERS["evalmuse"](tmp_path, json="test.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [("[{", "not readable as UTF-8 JSON"), ('{"a": 1}', "expected a JSON list"),
     ("[]", "no entries"), ("[1]", "entry 1: expected a JSON object, got 1")],
    ids=["not-json", "not-a-list", "empty", "not-an-object"],
)  # fmt: skip
def test_evalmuse_bad_file(text, message, tmp_path):
    (tmp_path / "train_list.json").write_text(text)
    with raises("train_list.json", message):
        LOADERS["evalmuse"](tmp_path)


@pytest.mark.parametrize(
    ("scores", "message"),
    [("{'cat (animal)': [1, 2]}", "element_score['cat (animal)'] [1, 2] outside [0, 1]"),
     ("{'cat (animal)': [1,", "is not a dict literal"), ("[1, 0]", "is not a mapping"),
     ("{'cat (animal)': None}", "element_score['cat (animal)'] is null")],
    ids=["out-of-range", "not-a-literal", "not-a-dict", "null"],
)  # fmt: skip
def test_evalmuse_bad_element_scores(scores, message, tmp_path):
    write_entries(tmp_path, [entry(0), entry(1, element_score=scores)])
    with raises("train_list.json entry 2:", message):
        evalmuse_element_scores(tmp_path)


# AADB: imgListFiles_label/imgList<Split>Regression_score.txt, "<image> <score>" lines.

AADB_LISTS = {
    "imgListTrainRegression_score.txt": ("farm1_255_19452343093_8ee7e5e375_b.jpg 0.6",
                                         "farm1_256_19773339713_d3e4b6c6b3_b.jpg 0.25"),
    "imgListValidationRegression_score.txt": ("farm1_262_20018442202_08d1d12fa8_b.jpg 1",),
    "imgListTestNewRegression_score.txt": ("farm1_305_19970138380_7b9a5de6c0_b.jpg 0",),
}  # fmt: skip


def write_aadb(root: Path, lists: dict[str, tuple[str, ...]] = AADB_LISTS) -> Path:
    for name, lines in lists.items():
        path = root / "imgListFiles_label" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in lines))
        for line in lines:
            image(root / "datasetImages_originalSize" / line.split()[0])
    return root


def test_aadb_official_lists_give_the_splits(tmp_path):
    records = LOADERS["aadb"](write_aadb(tmp_path))
    got = {r.id: (r.task, pytest.approx(r.mos), r.mos_raw, r.split) for r in records}
    assert got == {
        "aadb/farm1_255_19452343093_8ee7e5e375_b.jpg": ("aesthetic", 3.0, 0.6, "train"),
        "aadb/farm1_256_19773339713_d3e4b6c6b3_b.jpg": ("aesthetic", 1.25, 0.25, "train"),
        "aadb/farm1_262_20018442202_08d1d12fa8_b.jpg": ("aesthetic", 5.0, 1.0, "val"),
        "aadb/farm1_305_19970138380_7b9a5de6c0_b.jpg": ("aesthetic", 0.0, 0.0, "test"),
    }
    legacy = "imgListFiles_label/imgListTestRegression_score.txt"
    write_aadb(tmp_path, {"imgListTestRegression_score.txt": AADB_LISTS[
        "imgListTrainRegression_score.txt"]})  # fmt: skip
    assert [r.split for r in LOADERS["aadb"](tmp_path, lists=[legacy])] == ["test", "test"]
    assert len(LOADERS["aadb"](tmp_path, lists=legacy)) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [("farm1_9.jpg 1.2", "MOS '1.2' outside"), ("farm1_9.jpg high", "MOS 'high' is not a number"),
     ("farm1_9.jpg", "expected '<image> <score>', got 'farm1_9.jpg'")],
    ids=["out-of-range", "not-a-number", "no-score"],
)  # fmt: skip
def test_aadb_bad_line(line, message, tmp_path):
    train = "imgListTrainRegression_score.txt"
    write_aadb(tmp_path, {**AADB_LISTS, train: (AADB_LISTS[train][0], line)})
    with raises(f"{train}:2:", message):
        LOADERS["aadb"](tmp_path)


def test_aadb_missing_image_list_or_split_name(tmp_path):
    write_aadb(tmp_path)
    (tmp_path / "datasetImages_originalSize" / "farm1_262_20018442202_08d1d12fa8_b.jpg").unlink()
    with raises("imgListValidationRegression_score.txt:1:", "image file not found"):
        LOADERS["aadb"](tmp_path)
    write_aadb(tmp_path)
    (tmp_path / "imgListFiles_label" / "imgListTestNewRegression_score.txt").unlink()
    with raises("annotation file not found", "imgListTestNewRegression_score.txt"):
        LOADERS["aadb"](tmp_path)
    write_aadb(tmp_path, {"scores.txt": ("farm1_9.jpg 0.5",)})
    with raises("scores.txt: the name gives no split"):
        LOADERS["aadb"](tmp_path, lists=["imgListFiles_label/scores.txt"])


# PIPAL: Train_Label/<reference>.txt with "<distorted image>,<Elo>" lines.

PIPAL_LABELS = {"A0001": ("A0001_00_00.bmp,1376.3495", "A0001_10_03.bmp,916.7136"),
                "A0002": ("A0002_00_00.bmp,1835.9856",)}  # fmt: skip


def write_pipal(root: Path, labels: dict[str, tuple[str, ...]] = PIPAL_LABELS) -> Path:
    (root / "Train_Label").mkdir(parents=True, exist_ok=True)
    for ref, lines in labels.items():
        (root / "Train_Label" / f"{ref}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            if "," in line:
                image(root / "Train_Dist" / line.split(",")[0])
    return root


def test_pipal_elo_on_the_released_range_grouped_by_reference(tmp_path):
    records = LOADERS["pipal"](write_pipal(tmp_path))
    assert loaded(records) == {
        "pipal/A0001_00_00.bmp": ("technical", 2.5, 1376.3495, "", "A0001.bmp", ""),
        "pipal/A0001_10_03.bmp": ("technical", 0.0, 916.7136, "", "A0001.bmp", ""),
        "pipal/A0002_00_00.bmp": ("technical", 5.0, 1835.9856, "", "A0002.bmp", ""),
    }
    wider = LOADERS["pipal"](tmp_path, elo_range=[816.7136, 1935.9856])
    width = 1935.9856 - 816.7136
    assert [r.mos for r in wider] == pytest.approx([2.5, 500 / width, 5 * 1019.272 / width])


@pytest.mark.parametrize(
    ("line", "message"),
    [("A0002_00_01.bmp,1900", "MOS '1900' outside"), ("A0002_00_01.bmp,n/a", "'n/a' is not a"),
     ("A0002_00_01.bmp 1500", "expected '<image>,<Elo>', got 'A0002_00_01.bmp 1500'")],
    ids=["out-of-range", "not-a-number", "not-comma-separated"],
)  # fmt: skip
def test_pipal_bad_line(line, message, tmp_path):
    write_pipal(tmp_path, {**PIPAL_LABELS, "A0002": (PIPAL_LABELS["A0002"][0], line)})
    with raises("A0002.txt:2:", message):
        LOADERS["pipal"](tmp_path)


def test_pipal_missing_image_labels_or_bad_range(tmp_path):
    with raises("annotation folder not found", "Train_Label"):
        LOADERS["pipal"](tmp_path)
    (tmp_path / "Train_Label").mkdir()
    with raises("Train_Label: no label files"):
        LOADERS["pipal"](tmp_path)
    write_pipal(tmp_path)
    (tmp_path / "Train_Dist" / "A0001_10_03.bmp").unlink()
    with raises("A0001.txt:2:", "image file not found", "A0001_10_03.bmp"):
        LOADERS["pipal"](tmp_path)
    with raises("elo_range [1900, 900] needs low < high"):
        LOADERS["pipal"](tmp_path, elo_range=[1900, 900])


# AIGCIQA2023: Image/allimg/<i>.png, DATA/MOS/mosz{1,2,3}.mat, AIGCIQA2023_Prompts.xlsx.

AIGC_PROMPTS = (("Basic", "Animals", "a corgi"), ("Basic", "People", "a girl"))
AIGC_IMAGES = 6 * 4 * len(AIGC_PROMPTS)  # 6 models x 4 images a prompt


def write_aigciqa(root: Path, quality=None, correspondence=None, prompts=AIGC_PROMPTS) -> Path:
    quality = np.linspace(0, 100, AIGC_IMAGES) if quality is None else quality
    correspondence = quality[::-1] if correspondence is None else correspondence
    mos = root / "DATA" / "MOS"
    mos.mkdir(parents=True, exist_ok=True)
    for name, values in (("mosz1", quality), ("mosz2", quality), ("mosz3", correspondence)):
        scipy.io.savemat(mos / f"{name}.mat", {"MOSz": np.asarray(values, float).reshape(-1, 1)})
    book = openpyxl.Workbook()
    for row in prompts:
        book.active.append(row)
    book.save(root / "AIGCIQA2023_Prompts.xlsx")
    for i in range(len(quality)):
        image(root / "Image" / "allimg" / f"{i}.png")
    return root


def test_aigciqa2023_quality_and_correspondence_with_the_prompt(tmp_path):
    records = {r.id: r for r in LOADERS["aigciqa2023"](write_aigciqa(tmp_path))}
    assert len(records) == 2 * AIGC_IMAGES
    step = 100 / (AIGC_IMAGES - 1)
    # image 13: model 1 (images 8..15), prompt (13 - 8) // 4 = 1
    got = {key: (r.task, r.mos, r.mos_raw, r.group, r.prompt) for key, r in records.items()
           if key.startswith(("aigciqa2023/0.png", "aigciqa2023/13.png"))}  # fmt: skip
    assert got == {
        "aigciqa2023/0.png#technical": ("technical", 0.0, 0.0, "a corgi", ""),
        "aigciqa2023/0.png#alignment": ("alignment", 5.0, 100.0, "a corgi", "a corgi"),
        "aigciqa2023/13.png#technical": ("technical", pytest.approx(13 * step / 20),
                                         pytest.approx(13 * step), "a girl", ""),
        "aigciqa2023/13.png#alignment": ("alignment", pytest.approx(34 * step / 20),
                                         pytest.approx(34 * step), "a girl", "a girl"),
    }  # fmt: skip
    assert [records[f"aigciqa2023/{i}.png#alignment"].prompt for i in (3, 4, 8, 47)] == [
        "a corgi", "a girl", "a corgi", "a girl"]  # fmt: skip
    assert records["aigciqa2023/47.png#technical"].image == str(
        tmp_path / "Image" / "allimg" / "47.png")  # fmt: skip


def test_aigciqa2023_bad_mos(tmp_path):
    values = np.full(AIGC_IMAGES, 50.0)
    values[4] = 120.0
    write_aigciqa(tmp_path, correspondence=values)
    with raises("mosz3.mat entry 5:", "MOS 120.0 outside"):
        LOADERS["aigciqa2023"](tmp_path)
    values[4] = np.nan
    write_aigciqa(tmp_path, quality=values)
    with raises("mosz1.mat entry 5:", "MOS nan"):
        LOADERS["aigciqa2023"](tmp_path)
    write_aigciqa(tmp_path, quality=np.full(AIGC_IMAGES - 1, 50.0), correspondence=values)
    with raises("mosz1.mat holds 47 MOS but the 2 prompts", "make 48 images"):
        LOADERS["aigciqa2023"](tmp_path)
    scipy.io.savemat(tmp_path / "DATA" / "MOS" / "mosz1.mat", {"MOS": values.reshape(-1, 1)})
    with raises("mosz1.mat: missing variable 'MOSz'"):
        LOADERS["aigciqa2023"](tmp_path)


def test_aigciqa2023_missing_image_prompt_or_file(tmp_path):
    write_aigciqa(tmp_path)
    (tmp_path / "Image" / "allimg" / "7.png").unlink()
    with raises("mosz1.mat entry 8:", "image file not found", "7.png"):
        LOADERS["aigciqa2023"](tmp_path)
    write_aigciqa(tmp_path, prompts=(AIGC_PROMPTS[0], ("Basic", "People", None)))
    with raises("AIGCIQA2023_Prompts.xlsx row 2: no prompt in column C"):
        LOADERS["aigciqa2023"](tmp_path)
    (tmp_path / "AIGCIQA2023_Prompts.xlsx").unlink()
    with raises("annotation file not found", "AIGCIQA2023_Prompts.xlsx"):
        LOADERS["aigciqa2023"](tmp_path)


# pyiqa: IQA-PyTorch's meta_info_<Name>Dataset.csv.


def write_meta(path: Path, header: tuple, rows: list[tuple], image_dir: Path, column: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    for row in rows:
        image(image_dir / str(row[header.index(column)]))
    return path


KONIQ_META = (("img_name", "mos", "std", "split"),
              [("10004473376.jpg", 77.38, 0.52, "training"), ("10007357496.jpg", 1, 0.58, "test"),
               ("10043785683.jpg", 100, 0.49, "validation")])  # fmt: skip


def test_pyiqa_nr_meta_info_with_its_split(tmp_path):
    meta = write_meta(tmp_path / "meta" / "meta_info_KonIQ10kDataset.csv", *KONIQ_META,
                      tmp_path / "koniq" / "512x384", "img_name")  # fmt: skip
    options = {"csv": str(meta), "dataset": "koniq", "mos_range": [1, 100]}  # an absolute csv
    records = LOADERS["pyiqa"](tmp_path / "koniq", image_dir="512x384", split_column="split",
                               **options)  # fmt: skip
    assert {k: (mos, raw, split, group) for k, (_, mos, raw, split, group, _) in
            loaded(records).items()} == {
        "koniq/10004473376.jpg": (5 * 76.38 / 99, 77.38, "train", "10004473376.jpg"),
        "koniq/10007357496.jpg": (0.0, 1.0, "test", "10007357496.jpg"),
        "koniq/10043785683.jpg": (5.0, 100.0, "val", "10043785683.jpg"),
    }  # fmt: skip
    assert {r.task for r in records} == {"technical"}
    assert records[0].image == str(tmp_path / "koniq" / "512x384" / "10004473376.jpg")
    unsplit = LOADERS["pyiqa"](tmp_path / "koniq", image_dir="512x384", **options)
    assert {r.split for r in unsplit} == {""}


def test_pyiqa_fr_dmos_and_alignment_columns(tmp_path):
    meta = write_meta(tmp_path / "meta_info_CSIQDataset.csv", ("ref_name", "dist_name", "dmos"),
                      [("1600.png", "1600.AWGN.1.png", 0.06), ("1600.png", "1600.JPEG.5.png", 1)],
                      tmp_path / "dst_imgs", "dist_name")  # fmt: skip
    records = LOADERS["pyiqa"](tmp_path, csv=meta.name, dataset="csiq", mos_range=[0, 1],
                               image_dir="dst_imgs", image_column="dist_name", mos_column="dmos",
                               group_column="ref_name", lower_better=True)  # fmt: skip
    assert loaded(records) == {
        "csiq/1600.AWGN.1.png": ("technical", 4.7, 0.06, "", "1600.png", ""),
        "csiq/1600.JPEG.5.png": ("technical", 0.0, 1.0, "", "1600.png", ""),
    }
    write_meta(tmp_path / "agiqa.csv", ("name", "prompt", "mos_align"),
               [("mj_001.jpg", "a red car", 2.5)], tmp_path, "name")  # fmt: skip
    options = {"csv": "agiqa.csv", "dataset": "agiqa3k", "mos_range": [0, 5], "task": "alignment",
               "image_column": "name", "mos_column": "mos_align"}  # fmt: skip
    [rec] = LOADERS["pyiqa"](tmp_path, prompt_column="prompt", **options)
    assert (rec.id, rec.task, rec.mos, rec.prompt) == ("agiqa3k/mj_001.jpg", "alignment", 2.5,
                                                       "a red car")  # fmt: skip
    with raises("agiqa.csv:2:", "has no prompt"):
        LOADERS["pyiqa"](tmp_path, **options)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("mos", 101, "MOS '101' outside"), ("mos", "n/a", "MOS 'n/a' is not a number"),
     ("split", "holdout", "split 'holdout' is not one of")],
    ids=["out-of-range", "not-a-number", "bad-split"],
)  # fmt: skip
def test_pyiqa_bad_row(column, value, message, tmp_path):
    header, rows = KONIQ_META
    rows = [*rows[:2], tuple(value if h == column else v for h, v in zip(header, rows[2]))]
    write_meta(tmp_path / "meta.csv", header, rows, tmp_path, "img_name")
    with raises("meta.csv:4:", message):
        LOADERS["pyiqa"](tmp_path, csv="meta.csv", dataset="koniq", mos_range=[1, 100],
                         split_column="split")  # fmt: skip


def test_pyiqa_missing_column_image_or_range(tmp_path):
    meta = write_meta(tmp_path / "meta.csv", *KONIQ_META, tmp_path, "img_name")
    options = {"csv": meta.name, "dataset": "koniq", "mos_range": [1, 100]}
    with raises("meta.csv: missing column(s) ['MOS']"):
        LOADERS["pyiqa"](tmp_path, mos_column="MOS", **options)
    (tmp_path / "10007357496.jpg").unlink()
    with raises("meta.csv:3:", "image file not found", "10007357496.jpg"):
        LOADERS["pyiqa"](tmp_path, **options)
    for bad, message in (([100, 1], "needs low < high"), ([1], "is not two numbers")):
        with raises(f"meta.csv: mos_range {bad!r} {message}"):
            LOADERS["pyiqa"](tmp_path, **{**options, "mos_range": bad})


# AVA's official test list: aesthetics_image_lists/generic_test.jpgl.


def test_ava_official_test_list(tmp_path):
    write_ava(tmp_path, 6)
    test_list = tmp_path / "aesthetics_image_lists" / "generic_test.jpgl"
    test_list.parent.mkdir()
    test_list.write_text("953001\n\n953004\n")
    options = {"test_list": "aesthetics_image_lists/generic_test.jpgl"}
    records = LOADERS["ava"](tmp_path, **options)
    assert {r.id: r.split for r in records} == {
        f"ava/{953000 + i}.jpg": "test" if i in (1, 4) else "" for i in range(6)
    }
    source = {"ava": {"loader": "ava", "root": str(tmp_path), **options}}
    splits = build_splits(source, ["aesthetic"], seed=0, val=0.5, test=0.0)
    assert sorted(splits["test"]["id"]) == ["ava/953001.jpg", "ava/953004.jpg"]
    assert (len(splits["train"]), len(splits["val"])) == (2, 2)
    (tmp_path / "images" / "953004.jpg").unlink()  # listed, in AVA.txt, but not downloaded
    kept = LOADERS["ava"](tmp_path, skip_missing_images=True, **options)
    assert [r.id for r in kept if r.split == "test"] == ["ava/953001.jpg"]
    test_list.write_text("953001\n999999\n")
    with raises("generic_test.jpgl:2: image id '999999' is not in AVA.txt"):
        LOADERS["ava"](tmp_path, skip_missing_images=True, **options)


# conf/data/paper_mix.yaml: AVA + EvalMuse-40K + KonIQ-10k, as the paper trains.


def test_paper_mix_composes_and_splits_all_three_tasks(tmp_path):
    from hydra import compose, initialize_config_dir

    # 30 images each: with split seed 0 every split draws groups of all three datasets
    roots = {"ava": write_ava(tmp_path / "ava", 30), "evalmuse": write_evalmuse(
        tmp_path / "evalmuse", 30), "koniq": write_koniq(tmp_path / "koniq", 30)}  # fmt: skip
    overrides = ["data=paper_mix", *(f"data.sources.{k}.root={v}" for k, v in roots.items())]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    sources, split = OmegaConf.to_container(cfg.data.sources, resolve=True), cfg.data.split
    splits = build_splits(sources, list(cfg.task), seed=split.seed, val=split.val,
                          test=split.test)  # fmt: skip
    assert sum(len(splits[s]) for s in ("train", "val", "test")) == 90
    for name in ("train", "val", "test"):
        assert set(splits[name]["task"]) == {"technical", "aesthetic", "alignment"}, name
        assert set(splits[name]["dataset"]) == {"ava", "evalmuse", "koniq"}, name
    for name, other in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(splits[name]["group"]) & set(splits[other]["group"])
