"""Native-layout dataset loaders, on tiny fixtures written in each dataset's own format."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import scipy.io
from PIL import Image

from omniquality_r.data.build import build_splits, load_sources
from omniquality_r.data.native import LOADERS
from omniquality_r.data.records import DataError, Record, assign_splits, write_manifest

AGIQA_HEADER = (
    "name",
    "prompt",
    "adj1",
    "adj2",
    "style",
    "mos_quality",
    "std_quality",
    "mos_align",
    "std_align",
)
KONIQ_HEADER = ("image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore")
SPAQ_HEADER = (
    "Image name",
    "MOS",
    "Brightness",
    "Colorfulness",
    "Contrast",
    "Noisiness",
    "Sharpness",
)
VOTES_MEAN_6 = (0, 0, 0, 0, 2, 0, 2, 0, 0, 0)
VOTES_MEAN_5_5 = (1, 0, 0, 0, 0, 0, 0, 0, 0, 1)


@dataclass(frozen=True)
class Spec:
    """A dataset's fixture in its native format and the records it must load as."""

    name: str
    file: str  # annotation path under the root
    header: tuple[str, ...]  # column names ("" for AVA's headerless text file)
    rows: tuple[tuple, ...]
    image: Callable[[tuple], str]  # a row's image path under the root
    ref: str  # how errors cite a row: "{line}" is its 1-based line / row / entry
    expected: dict[str, tuple]  # id -> (task, mos in [0, 5], mos_raw, group, prompt)
    image_col: str = ""
    mos_col: str = ""
    bad_mos: tuple = ()  # (out of range, not a number)


SPECS = [
    Spec(
        name="koniq",
        file="koniq10k_scores_and_distributions.csv",
        header=KONIQ_HEADER,
        rows=(
            ("826373.jpg", 0, 2, 40, 60, 2, 104, 3.0, 0.6, 65.2),
            ("10004473376.jpg", 1, 5, 50, 40, 4, 100, 4.2, 0.7, 80.1),
        ),
        image=lambda r: f"1024x768/{r[0]}",
        ref="koniq10k_scores_and_distributions.csv:{line}:",
        expected={
            "koniq/826373.jpg": ("technical", 2.5, 3.0, "826373.jpg", ""),
            "koniq/10004473376.jpg": ("technical", 4.0, 4.2, "10004473376.jpg", ""),
        },
        image_col="image_name",
        mos_col="MOS",
        bad_mos=(5.5, "n/a"),
    ),
    Spec(
        name="spaq",
        file="MOS and Image attribute scores.xlsx",
        header=SPAQ_HEADER,
        rows=(("00001.jpg", 42.0, 50, 40, 30, 20, 10), ("00002.jpg", 80, 60, 50, 40, 30, 20)),
        image=lambda r: f"TestImage/{r[0]}",
        ref="MOS and Image attribute scores.xlsx row {line}:",
        expected={
            "spaq/00001.jpg": ("technical", 2.1, 42.0, "00001.jpg", ""),
            "spaq/00002.jpg": ("technical", 4.0, 80.0, "00002.jpg", ""),
        },
        image_col="Image name",
        mos_col="MOS",
        bad_mos=(101.0, "abc"),
    ),
    Spec(
        name="kadid",
        file="dmos.csv",
        header=("dist_img", "ref_img", "dmos", "var"),
        rows=(
            ("I01_01_01.png", "I01.png", 4.2, 0.1),
            ("I01_01_02.png", "I01.png", 3.0, 0.2),
            ("I02_01_01.png", "I02.png", 1.8, 0.3),
        ),
        image=lambda r: f"images/{r[0]}",
        ref="dmos.csv:{line}:",
        expected={
            "kadid/I01_01_01.png": ("technical", 4.0, 4.2, "I01.png", ""),
            "kadid/I01_01_02.png": ("technical", 2.5, 3.0, "I01.png", ""),
            "kadid/I02_01_01.png": ("technical", 1.0, 1.8, "I02.png", ""),
        },
        image_col="dist_img",
        mos_col="dmos",
        bad_mos=(0.5, "x"),
    ),
    Spec(
        name="ava",
        file="AVA.txt",
        header=(),
        rows=((1, 953619, *VOTES_MEAN_6, 1, 22, 1396), (2, 953958, *VOTES_MEAN_5_5, 0, 0, 1396)),
        image=lambda r: f"images/{r[1]}.jpg",
        ref="AVA.txt:{line}:",
        expected={
            "ava/953619.jpg": ("aesthetic", 25 / 9, 6.0, "953619.jpg", ""),
            "ava/953958.jpg": ("aesthetic", 2.5, 5.5, "953958.jpg", ""),
        },
    ),
    Spec(
        name="agiqa3k",
        file="data.csv",
        header=AGIQA_HEADER,
        rows=(
            ("AttnGAN_normal_000.jpg", "a cat on a sofa", "", "", "", 1.5, 0.5, 3.0, 0.4),
            ("mj_lowstep_001.jpg", "a red car", "vivid", "", "anime", 4.25, 0.3, 2.0, 0.6),
        ),
        image=lambda r: f"images/{r[0]}",
        ref="data.csv:{line}:",
        expected={
            "agiqa3k/AttnGAN_normal_000.jpg#technical": (
                "technical",
                1.5,
                1.5,
                "AttnGAN_normal_000.jpg",
                "",
            ),
            "agiqa3k/AttnGAN_normal_000.jpg#alignment": (
                "alignment",
                3.0,
                3.0,
                "AttnGAN_normal_000.jpg",
                "a cat on a sofa",
            ),
            "agiqa3k/mj_lowstep_001.jpg#technical": (
                "technical",
                4.25,
                4.25,
                "mj_lowstep_001.jpg",
                "",
            ),
            "agiqa3k/mj_lowstep_001.jpg#alignment": (
                "alignment",
                2.0,
                2.0,
                "mj_lowstep_001.jpg",
                "a red car",
            ),
        },
        image_col="name",
        mos_col="mos_quality",
        bad_mos=(5.1, "high"),
    ),
    Spec(
        name="tad66k",
        file="labels/merge/train.csv",
        header=("image", "score"),
        rows=(("2.jpg", 5.0), ("10.jpg", 7.3)),
        image=lambda r: f"images/{r[0]}",
        ref="train.csv:{line}:",
        expected={
            "tad66k/2.jpg": ("aesthetic", 2.5, 5.0, "2.jpg", ""),
            "tad66k/10.jpg": ("aesthetic", 3.65, 7.3, "10.jpg", ""),
        },
        image_col="image",
        mos_col="score",
        bad_mos=(10.5, ""),
    ),
    Spec(
        name="livec",
        file="Data/AllImages_release.mat",
        header=("AllImages_release", "AllMOS_release"),
        rows=(*[(f"t{k}.bmp", 50.0) for k in range(1, 8)], ("3.bmp", 50.0), ("100.bmp", 80.0)),
        image=lambda r: f"Images/trainingImages/{r[0]}" if r[0][0] == "t" else f"Images/{r[0]}",
        ref="AllMOS_release.mat entry {line}:",
        expected={
            "livec/3.bmp": ("technical", 2.5, 50.0, "3.bmp", ""),
            "livec/100.bmp": ("technical", 4.0, 80.0, "100.bmp", ""),
        },
        image_col="AllImages_release",
        mos_col="AllMOS_release",
        bad_mos=(120.0, float("nan")),
    ),
]
BY_NAME = {s.name: s for s in SPECS}
WITH_COLUMNS = [s for s in SPECS if s.mos_col]
TABULAR = [s for s in SPECS if s.file.endswith((".csv", ".xlsx"))]


def ids(specs: list[Spec]) -> list[str]:
    return [s.name for s in specs]


def write_fixture(
    root: Path, spec: Spec, header=None, rows=None, *, skip_image: int | None = None
) -> Path:
    """Write spec's annotation in its native format and a tiny image per row (but skip_image)."""
    header = spec.header if header is None else header
    rows = spec.rows if rows is None else rows
    path = root / spec.file
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([header, *rows] if header else [])
    elif path.suffix == ".xlsx":
        book = openpyxl.Workbook()
        for row in [header, *rows] if header else []:
            book.active.append(row)
        book.save(path)
    elif path.suffix == ".txt":
        path.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    else:  # LIVE-C ships a cell array of names and a 1 x N MOS vector, one .mat each
        columns = dict(zip(header, zip(*rows)))
        if "AllImages_release" in columns:
            names = np.empty((len(rows), 1), dtype=object)
            names[:, 0] = columns["AllImages_release"]
            columns["AllImages_release"] = names
        if "AllMOS_release" in columns:
            columns["AllMOS_release"] = np.array([columns["AllMOS_release"]], dtype=float)
        for key in spec.header:
            variables = {key: columns[key]} if key in columns else {"other": [[0.0]]}
            scipy.io.savemat(path.parent / f"{key}.mat", variables)
    for i, row in enumerate(spec.rows):
        image = root / spec.image(row)
        if i != skip_image:
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (30 * i, 90, 160)).save(image)
    return root


def cites_row(spec: Spec, i: int, *text: str):
    """pytest.raises for a DataError citing spec's annotation file at data row i (0-based)."""
    line = i + 1 + (spec in TABULAR)  # line/row 1 holds the header, where there is one
    return pytest.raises(
        DataError, match=".*".join(map(re.escape, [spec.ref.format(line=line), *text]))
    )


def without(spec: Spec, column: str) -> tuple[tuple, tuple]:
    """spec's header and rows with `column` left out."""
    keep = [k for k, name in enumerate(spec.header) if name != column]
    return tuple(spec.header[k] for k in keep), tuple(tuple(r[k] for k in keep) for r in spec.rows)


def with_value(spec: Spec, i: int, column: str, value) -> tuple[tuple, ...]:
    rows = [list(r) for r in spec.rows]
    rows[i][spec.header.index(column)] = value
    return tuple(map(tuple, rows))


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_loads_native_layout(spec, tmp_path, monkeypatch):
    write_fixture(tmp_path / "root", spec)
    monkeypatch.chdir(tmp_path)
    records = LOADERS[spec.name]("root")  # a relative root still yields absolute image paths
    got = {r.id: (r.task, r.mos, r.mos_raw, r.group, r.prompt) for r in records}
    want = {
        key: (task, pytest.approx(mos), pytest.approx(raw), group, prompt)
        for key, (task, mos, raw, group, prompt) in spec.expected.items()
    }
    assert got == want
    assert {(r.dataset, r.split) for r in records} == {(spec.name, "")}
    assert all(Path(r.image).is_absolute() and Path(r.image).is_file() for r in records)


def test_livec_keeps_training_images_on_request(tmp_path):
    records = LOADERS["livec"](write_fixture(tmp_path, BY_NAME["livec"]), drop_first_seven=False)
    assert [r.id for r in records] == [f"livec/t{k}.bmp" for k in range(1, 8)] + [
        "livec/3.bmp",
        "livec/100.bmp",
    ]
    assert records[0].image == str(tmp_path / "Images" / "trainingImages" / "t1.bmp")


def test_tad66k_official_test_split_is_a_test_only_source(tmp_path):
    spec = BY_NAME["tad66k"]
    write_fixture(tmp_path, replace(spec, file="labels/merge/test.csv"))
    source = {"loader": "tad66k", "root": str(tmp_path), "csv": "labels/merge/test.csv",
              "split": "test"}  # fmt: skip
    records = load_sources({"tad66k_test": source})
    assert [r.split for r in records] == ["test", "test"]
    splits = build_splits({"tad66k_test": source}, ["aesthetic"], seed=0, val=0.1, test=0.2)
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (0, 0, 2)
    with pytest.raises(DataError, match="data source 'tad66k_test': split 'eval'"):
        load_sources({"tad66k_test": {**source, "split": "eval"}})


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_missing_annotation_file(spec, tmp_path):
    with pytest.raises(DataError, match=f"annotation file not found: .*{re.escape(spec.file)}"):
        LOADERS[spec.name](tmp_path)


EMPTY_CASES = [(s, h) for s in TABULAR for h in (False, True)] + [(BY_NAME["ava"], False)]


@pytest.mark.parametrize(
    ("spec", "header_only"),
    EMPTY_CASES,
    ids=[f"{s.name}-{'header-only' if h else 'empty'}" for s, h in EMPTY_CASES],
)
def test_empty_annotation_file(spec, header_only, tmp_path):
    write_fixture(tmp_path, spec, spec.header if header_only else (), ())
    with pytest.raises(DataError, match=f"{re.escape(Path(spec.file).name)}: (empty|no)"):
        LOADERS[spec.name](tmp_path)


@pytest.mark.parametrize(
    ("spec", "column"),
    [(s, c) for s in WITH_COLUMNS for c in (s.image_col, s.mos_col)],
    ids=[f"{s.name}-{c}" for s in WITH_COLUMNS for c in (s.image_col, s.mos_col)],
)
def test_missing_column(spec, column, tmp_path):
    write_fixture(tmp_path, spec, *without(spec, column))
    file = f"{column}.mat" if spec.name == "livec" else Path(spec.file).name
    with pytest.raises(DataError, match=f"{re.escape(file)}: missing .*'{re.escape(column)}'"):
        LOADERS[spec.name](tmp_path)


@pytest.mark.parametrize("kind", [0, 1], ids=["out-of-range", "not-a-number"])
@pytest.mark.parametrize("spec", WITH_COLUMNS, ids=ids(WITH_COLUMNS))
def test_bad_mos(spec, kind, tmp_path):
    last = len(spec.rows) - 1
    write_fixture(tmp_path, spec, rows=with_value(spec, last, spec.mos_col, spec.bad_mos[kind]))
    with cites_row(spec, last, "MOS"):
        LOADERS[spec.name](tmp_path)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_missing_image(spec, tmp_path):
    last = len(spec.rows) - 1
    write_fixture(tmp_path, spec, skip_image=last)
    with cites_row(spec, last, "image file not found", spec.image(spec.rows[last])):
        LOADERS[spec.name](tmp_path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ((2, 953958, *VOTES_MEAN_5_5, 0, 0), "expected 15"),
        ((2, 953958, "x", *VOTES_MEAN_5_5[1:], 0, 0, 1396), "not integers"),
        ((2, 953958, *[0] * 10, 0, 0, 1396), "positive sum"),
    ],
    ids=["field-count", "non-integer-vote", "no-votes"],
)
def test_ava_bad_row(row, message, tmp_path):
    spec = BY_NAME["ava"]
    write_fixture(tmp_path, spec, rows=(spec.rows[0], row))
    with cites_row(spec, 1, message):
        LOADERS["ava"](tmp_path)


def test_ava_skips_missing_images_on_request(tmp_path, caplog):
    write_fixture(tmp_path, BY_NAME["ava"], skip_image=0)
    with caplog.at_level(logging.WARNING):
        records = LOADERS["ava"](tmp_path, skip_missing_images=True)
    assert [r.id for r in records] == ["ava/953958.jpg"]
    assert "skipped 1 of 2 rows" in caplog.text


def test_manifest_loader_round_trips(tmp_path):
    records = LOADERS["kadid"](write_fixture(tmp_path, BY_NAME["kadid"]))
    assert LOADERS["manifest"](write_manifest(records, tmp_path / "kadid.jsonl")) == records
    assert {*BY_NAME, "manifest"} <= set(LOADERS)  # the others: test_native_more.py


def kadid_like(n_refs: int = 20, n_dists: int = 3) -> list[Record]:
    return [
        Record(
            id=f"kadid/I{r:02d}_{d:02d}.png",
            image=f"/data/kadid/images/I{r:02d}_{d:02d}.png",
            task="technical",
            mos=2.5,
            mos_raw=3.0,
            dataset="kadid",
            group=f"I{r:02d}.png",
        )
        for r in range(n_refs)
        for d in range(n_dists)
    ]


def test_assign_splits_keeps_reference_images_together():
    def split_of(seed: int) -> dict[str, str]:
        return {r.id: r.split for r in assign_splits(kadid_like(), seed=seed, val=0.2, test=0.2)}

    splits = assign_splits(kadid_like(), seed=0, val=0.2, test=0.2)
    by_group: dict[str, set[str]] = {}
    for r in splits:
        by_group.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in by_group.values())
    assert {r.split for r in splits} == {"train", "val", "test"}
    assert split_of(0) == split_of(0)
    assert split_of(0) != split_of(1)


def test_a_whole_dataset_can_be_split_into_val_and_test_alone():
    splits = assign_splits(kadid_like(), seed=0, val=0.5, test=0.5)
    assert {r.split for r in splits} == {"val", "test"}
    with pytest.raises(DataError, match="sum to at most 1"):
        assign_splits(kadid_like(), seed=0, val=0.6, test=0.5)


def test_the_split_seed_does_not_follow_the_training_seed():
    """A seed sweep varies training only: every data config keeps its own split seed."""
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "conf"
    names = sorted(p.stem for p in (conf / "data").glob("*.yaml"))
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for name in names:
            seeds = {compose("config", overrides=[f"data={name}", f"seed={s}"]).data.split.seed
                     for s in (0, 1, 7)}  # fmt: skip
            assert seeds == {0}, name


def test_koniq_official_split_from_its_sets_file(tmp_path):
    """koniq10k_distributions_sets.csv: the scores file's columns plus `set`."""
    spec = replace(BY_NAME["koniq"], file="koniq10k_distributions_sets.csv",
                   header=(*KONIQ_HEADER, "set"),
                   rows=tuple((*r, s) for r, s in zip(BY_NAME["koniq"].rows,
                                                       ("training", "test"))))  # fmt: skip
    write_fixture(tmp_path, spec)
    options = {"csv": "koniq10k_distributions_sets.csv", "split_column": "set"}
    records = LOADERS["koniq"](tmp_path, **options)
    assert [(r.id, r.split) for r in records] == [("koniq/826373.jpg", "train"),
                                                   ("koniq/10004473376.jpg", "test")]
    assert [r.split for r in LOADERS["koniq"](tmp_path, csv=spec.file)] == ["", ""]
    bad = replace(spec, rows=(spec.rows[0], (*spec.rows[1][:-1], "holdout")))
    write_fixture(tmp_path, bad)
    with pytest.raises(DataError, match=r"koniq10k_distributions_sets\.csv:3: split 'holdout'"):
        LOADERS["koniq"](tmp_path, **options)
    write_fixture(tmp_path, BY_NAME["koniq"])  # the scores file has no `set` column
    with pytest.raises(DataError, match="set"):
        LOADERS["koniq"](tmp_path, split_column="set")
