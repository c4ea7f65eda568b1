"""Loaders for public IQA datasets in their native, as-downloaded layout.

Each loader takes the dataset's root folder and returns `list[Record]` with
split "" (a source's `split` option assigns one: data/build.py), ids "<dataset>/<image name>" and
absolute image paths. Every image's existence is checked; none is opened.

MOS is mapped linearly to [0, 5] from the dataset's documented range:

    name     dataset    annotation (column)                        native range  mos in [0, 5]
    koniq    KonIQ-10k  koniq10k_scores_and_distributions.csv (MOS)  [1, 5]        5 (m - 1) / 4
    spaq     SPAQ       MOS and Image attribute scores.xlsx (MOS)    [0, 100]      m / 20
    kadid    KADID-10k  dmos.csv (dmos, higher is better)            [1, 5]        5 (m - 1) / 4
    ava      AVA        AVA.txt (mean of votes 1..10)                [1, 10]       5 (m - 1) / 9
    agiqa3k  AGIQA-3K   data.csv (mos_quality, mos_align)            [0, 5]        m
    tad66k   TAD66K     labels/merge/train.csv (score)               [0, 10]       m / 2
    livec    LIVE-C     Data/AllMOS_release.mat                      [0, 100]      m / 20

Tasks: koniq, spaq, kadid, livec technical; ava, tad66k aesthetic; agiqa3k
gives two records per image, "<id>#technical" (mos_quality) and
"<id>#alignment" (mos_align, with the prompt). `group` is the image name,
except KADID-10k (the reference image) so that splits never share content.

Errors are DataError naming the file and row: "<file>:<line>" (1-based, header
is line 1) for CSV/TXT, "<file> row <n>" (Excel row) for XLSX and
"<file> / <file> entry <n>" (1-based MATLAB index) for LIVE-C's .mat files.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Sequence
from csv import DictReader
from csv import Error as CsvError
from dataclasses import replace
from pathlib import Path

import numpy as np
import openpyxl
import scipy.io
from openpyxl.utils.exceptions import InvalidFileException

from omniquality_r.data.records import (
    DataError,
    Record,
    read_manifest,
    rescale_mos,
    validate_record,
)

logger = logging.getLogger(__name__)

# Native MOS range per dataset, the `low, high` handed to rescale_mos.
MOS_RANGES: dict[str, tuple[float, float]] = {
    "koniq": (1.0, 5.0),
    "spaq": (0.0, 100.0),
    "kadid": (1.0, 5.0),
    "ava": (1.0, 10.0),
    "agiqa3k": (0.0, 5.0),
    "tad66k": (0.0, 10.0),
    "livec": (0.0, 100.0),
}
LIVEC_TRAINING_IMAGES = 7  # subject-training images t1..t7.bmp, in Images/trainingImages/


def _root(root: str | Path) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"dataset root not found: {root}")
    return path


def _annotation(root: Path, name: str) -> Path:
    path = root / name
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    return path


def _require(path: Path, header: Sequence[str], columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(header)}")


def _read_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with a header as (line number, row); names `path` on any problem."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = DictReader(f)
        try:
            if not reader.fieldnames:
                raise DataError(f"{path}: empty file")
            reader.fieldnames = [h.strip() for h in reader.fieldnames]
            _require(path, reader.fieldnames, columns)
            rows = [(reader.line_num, row) for row in reader]
        except (UnicodeDecodeError, CsvError) as e:
            raise DataError(f"{path}: not readable as UTF-8 CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    return rows


def _record(
    dataset: str,
    folder: Path,
    name: str,
    task: str,
    raw: object,
    where: str,
    *,
    suffix: str = "",
    prompt: str = "",
    group: str = "",
) -> Record:
    """One validated record for image `folder / name`; `name` is the id and default group."""
    if not name:
        raise DataError(f"{where}: empty image name")
    mos = rescale_mos(raw, *MOS_RANGES[dataset], where=where)
    rec = Record(
        id=f"{dataset}/{name}{suffix}",
        image=str(folder / name),
        task=task,
        mos=mos,
        mos_raw=float(raw),
        dataset=dataset,
        prompt=prompt,
        group=group or name,
    )
    return validate_record(rec, where=where)


def _cell(row: dict[str, str | None], column: str) -> str:
    return (row.get(column) or "").strip()


OFFICIAL_SPLITS = {"training": "train", "train": "train", "validation": "val", "val": "val",
                   "test": "test"}  # fmt: skip


def official_split(value: str, where: str) -> str:
    """A dataset's own split name (KonIQ-10k's `set` column: training / validation / test)
    as a record split; anything else is a DataError naming the row and the value."""
    split = OFFICIAL_SPLITS.get(value.strip().lower())
    if split is None:
        raise DataError(f"{where}: split {value!r} is not one of {sorted(OFFICIAL_SPLITS)}")
    return split


def load_koniq(
    root: str | Path,
    *,
    csv: str = "koniq10k_scores_and_distributions.csv",
    image_dir: str = "1024x768",
    split_column: str | None = None,
) -> list[Record]:
    """KonIQ-10k: MOS on [1, 5] from the scores-and-distributions CSV. The official split:
    `csv=koniq10k_distributions_sets.csv split_column=set` (training / validation / test)."""
    root = _root(root)
    path = _annotation(root, csv)
    images = root / image_dir
    columns = ("image_name", "MOS", *([split_column] if split_column else []))
    records = []
    for n, row in _read_csv(path, columns):
        where = f"{path}:{n}"
        rec = _record("koniq", images, _cell(row, "image_name"), "technical", row["MOS"], where)
        if split_column:
            rec = replace(rec, split=official_split(_cell(row, split_column), where))
        records.append(rec)
    return records


def load_spaq(
    root: str | Path,
    *,
    xlsx: str = "MOS and Image attribute scores.xlsx",
    image_dir: str = "TestImage",
) -> list[Record]:
    """SPAQ: MOS on [0, 100] from the first sheet of the annotation workbook."""
    root = _root(root)
    path = _annotation(root, xlsx)
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, InvalidFileException, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{path}: not a readable .xlsx file ({e})") from None
    try:
        rows = list(book.worksheets[0].iter_rows(min_row=1, values_only=True))
    finally:
        book.close()
    if not rows or all(v is None for v in rows[0]):
        raise DataError(f"{path}: empty file")
    header = ["" if v is None else str(v).strip() for v in rows[0]]
    _require(path, header, ("Image name", "MOS"))
    name_at, mos_at = header.index("Image name"), header.index("MOS")
    images = root / image_dir
    records = []
    for n, row in enumerate(rows[1:], start=2):
        if all(v is None for v in row):
            continue
        row = (*row, *[None] * (len(header) - len(row)))  # short rows read as blank cells
        name = "" if row[name_at] is None else str(row[name_at]).strip()
        records.append(_record("spaq", images, name, "technical", row[mos_at], f"{path} row {n}"))
    if not records:
        raise DataError(f"{path}: no data rows")
    return records


def load_kadid(
    root: str | Path, *, csv: str = "dmos.csv", image_dir: str = "images"
) -> list[Record]:
    """KADID-10k: DMOS on [1, 5] (higher is better); group = reference image."""
    root = _root(root)
    path = _annotation(root, csv)
    images = root / image_dir
    records = []
    for n, row in _read_csv(path, ("dist_img", "ref_img", "dmos")):
        where = f"{path}:{n}"
        ref = _cell(row, "ref_img")
        if not ref:
            raise DataError(f"{where}: empty ref_img")
        name = _cell(row, "dist_img")
        records.append(_record("kadid", images, name, "technical", row["dmos"], where, group=ref))
    return records


def load_ava(
    root: str | Path,
    *,
    txt: str = "AVA.txt",
    image_dir: str = "images",
    skip_missing_images: bool = False,
) -> list[Record]:
    """AVA: MOS = mean of the ten vote counts for scores 1..10, on [1, 10].

    AVA downloads often lack images: with `skip_missing_images` such rows are
    dropped and counted in a logged warning instead of raising DataError.
    """
    root = _root(root)
    path = _annotation(root, txt)
    images = root / image_dir
    records, rows, missing = [], 0, 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            rows += 1
            where = f"{path}:{n}"
            if len(fields) != 15:
                raise DataError(
                    f"{where}: expected 15 whitespace-separated fields, got {len(fields)}"
                )
            try:
                votes = [int(v) for v in fields[2:12]]
            except ValueError:
                raise DataError(f"{where}: vote counts {fields[2:12]} are not integers") from None
            total = sum(votes)
            if total <= 0 or min(votes) < 0:
                raise DataError(f"{where}: vote counts {votes} must be >= 0 with a positive sum")
            name = f"{fields[1]}.jpg"
            if skip_missing_images and not (images / name).is_file():
                missing += 1
                continue
            mean = sum(k * c for k, c in enumerate(votes, start=1)) / total
            records.append(_record("ava", images, name, "aesthetic", mean, where))
    if missing:
        logger.warning("%s: skipped %d of %d rows whose image is missing", path, missing, rows)
    if not records:
        raise DataError(f"{path}: no usable rows ({rows} rows, {missing} without image)")
    return records


def load_agiqa3k(
    root: str | Path, *, csv: str = "data.csv", image_dir: str = "images"
) -> list[Record]:
    """AGIQA-3K: two records per image, technical (mos_quality) and alignment (mos_align)."""
    root = _root(root)
    path = _annotation(root, csv)
    images = root / image_dir
    records = []
    for n, row in _read_csv(path, ("name", "prompt", "mos_quality", "mos_align")):
        where = f"{path}:{n}"
        name = _cell(row, "name")
        prompt = _cell(row, "prompt")
        for task, column, text in (
            ("technical", "mos_quality", ""),
            ("alignment", "mos_align", prompt),
        ):
            records.append(
                _record(
                    "agiqa3k",
                    images,
                    name,
                    task,
                    row[column],
                    where,
                    suffix=f"#{task}",
                    prompt=text,
                )
            )
    return records


def load_tad66k(
    root: str | Path,
    *,
    csv: str = "labels/merge/train.csv",
    image_dir: str = "images",
) -> list[Record]:
    """TAD66K: score on [0, 10] from an (image, score) CSV.

    The release ships `labels/merge/train.csv` and `labels/merge/test.csv`; the official
    test set is a source `{loader: tad66k, csv: labels/merge/test.csv, split: test}`.
    """
    root = _root(root)
    path = _annotation(root, csv)
    images = root / image_dir
    return [
        _record(
            "tad66k",
            images,
            _cell(row, "image"),
            "aesthetic",
            row["score"],
            f"{path}:{n}",
        )
        for n, row in _read_csv(path, ("image", "score"))
    ]


def _mat_vector(path: Path, key: str) -> np.ndarray:
    try:
        mat = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError, NotImplementedError) as e:
        raise DataError(f"{path}: not a readable .mat file ({e})") from None
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: missing variable {key!r}; found {found}")
    return np.asarray(mat[key]).ravel()


def load_livec(
    root: str | Path,
    *,
    images_mat: str = "Data/AllImages_release.mat",
    mos_mat: str = "Data/AllMOS_release.mat",
    image_dir: str = "Images",
    drop_first_seven: bool = True,
) -> list[Record]:
    """LIVE-Challenge: MOS on [0, 100] from the release's two .mat files.

    The first seven entries are the subjects' training images
    (Images/trainingImages/t1..t7.bmp); by default they are dropped, leaving
    the 1162 images of the standard protocol.
    """
    root = _root(root)
    names_path = _annotation(root, images_mat)
    mos_path = _annotation(root, mos_mat)
    names = _mat_vector(names_path, "AllImages_release")
    mos = _mat_vector(mos_path, "AllMOS_release").tolist()
    if len(names) != len(mos):
        raise DataError(f"{names_path} lists {len(names)} images but {mos_path} {len(mos)} MOS")
    images = root / image_dir
    records = []
    for i in range(LIVEC_TRAINING_IMAGES if drop_first_seven else 0, len(names)):
        where = f"{names_path} / {mos_path.name} entry {i + 1}"
        cell = np.asarray(names[i]).ravel()
        if cell.size != 1 or not isinstance(cell[0], str):
            raise DataError(f"{where}: expected one file name, got {names[i]!r}")
        folder = images if i >= LIVEC_TRAINING_IMAGES else images / "trainingImages"
        records.append(_record("livec", folder, cell[0].strip(), "technical", mos[i], where))
    if not records:
        raise DataError(f"{names_path}: no images listed")
    return records


LOADERS: dict[str, Callable[..., list[Record]]] = {
    "koniq": load_koniq,
    "spaq": load_spaq,
    "kadid": load_kadid,
    "ava": load_ava,
    "agiqa3k": load_agiqa3k,
    "tad66k": load_tad66k,
    "livec": load_livec,
    "manifest": read_manifest,
}
