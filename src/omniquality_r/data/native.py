"""Loaders for public IQA datasets in their native, as-downloaded layout.

Each loader takes the dataset's root folder and returns `list[Record]` with split "" unless
the dataset's own split is asked for (otherwise a source's `split` option or the seeded split
assigns one: data/build.py), ids "<dataset>/<image name>" and absolute image paths. Every
image's existence is checked; none is opened.

MOS is mapped linearly to [0, 5] from the dataset's documented range:

    name         dataset       annotation (column)                          range      mos
    koniq        KonIQ-10k     koniq10k_scores_and_distributions.csv (MOS)  [1, 5]     5(m-1)/4
    spaq         SPAQ          MOS and Image attribute scores.xlsx (MOS)    [0, 100]   m/20
    kadid        KADID-10k     dmos.csv (dmos, higher is better)            [1, 5]     5(m-1)/4
    ava          AVA           AVA.txt (mean of votes 1..10)                [1, 10]    5(m-1)/9
    agiqa3k      AGIQA-3K      data.csv (mos_quality, mos_align)            [0, 5]     m
    tad66k       TAD66K        labels/merge/train.csv (score)               [0, 10]    m/2
    livec        LIVE-C        Data/AllMOS_release.mat                      [0, 100]   m/20
    evalmuse     EvalMuse-40K  train_list.json (mean of total_score)        [1, 5]     5(m-1)/4
    aadb         AADB          imgList*Regression_score.txt (score)         [0, 1]     5m
    pipal        PIPAL         Train_Label/<ref>.txt (Elo)                  [lo, hi]*  linear
    aigciqa2023  AIGCIQA2023   DATA/MOS/mosz1.mat, mosz3.mat (MOSz)         [0, 100]   m/20
    pyiqa        (any)         meta_info_*.csv (mos_column)                 mos_range  linear

    * lo, hi = 916.7136, 1835.9856: 5(m - lo)/(hi - lo)

Tasks: koniq, spaq, kadid, livec, pipal technical; ava, tad66k, aadb aesthetic; evalmuse
alignment (with the prompt); agiqa3k and aigciqa2023 give two records per image,
"<id>#technical" (mos_quality / mosz1, quality) and "<id>#alignment" (mos_align / mosz3,
correspondence, with the prompt; AIGCIQA2023's authenticity, mosz2, is not used); pyiqa any
one task. `group` is the image name, except KADID-10k and PIPAL (the reference image) and
EvalMuse-40K and AIGCIQA2023 (the prompt), so that splits never share content.

Layouts of the releases below (as their own repositories and loaders read them):

- EvalMuse-40K (Hugging Face DY-Evalab/EvalMuse): a JSON list of entries {prompt_id, prompt,
  type, img_path, total_score: [one 1..5 rating per annotator], element_score: "{'<element>
  (<category>)': [one 0/1 label per annotator], ...}", ...}; images/<img_path>. The overall
  alignment MOS is the mean of total_score (process/process_train.py's mean also loads).
  train_list.json is the annotated release; test.json ships with total_score null, so it
  loads only once annotated (a source `{loader: evalmuse, json: test.json, split: test}`).
  The element scores are not part of a Record: `evalmuse_element_scores` reads them.
- AADB: space-separated "<image> <score>" lines in the official lists
  imgListFiles_label/imgList{Train,Validation,TestNew}Regression_score.txt (the legacy test
  list imgListTestRegression_score.txt too); each list's name gives its records' split.
  Images in datasetImages_originalSize/ (or datasetImages_warp256/: image_dir).
- PIPAL (NTIRE 2021/2022 training set): one Train_Label/<ref>.txt per reference image with
  "<distorted image>,<Elo>" lines; the distorted images gathered in one folder (Train_Dist/;
  some unpack it as Train_Distort/: image_dir). Elo scores have no fixed scale: the range is
  that of the 23,200 released training labels (min/max of IQA-PyTorch's
  meta_info_PIPALDataset.csv); other label sets can pass their own `elo_range`.
- AIGCIQA2023: Image/allimg/<i>.png for i = 0..2399 and the 2400 x 1 `MOSz` vectors of
  DATA/MOS/mosz1.mat (quality), mosz2.mat (authenticity) and mosz3.mat (correspondence),
  z-scores rescaled to [0, 100]. Images run model by model (6), then prompt by prompt, 4 per
  prompt: image i has prompt (i mod 400) // 4 of AIGCIQA2023_Prompts.xlsx (in the GitHub
  repository: 100 rows without a header, the prompt in column C).
- pyiqa: IQA-PyTorch's meta-info CSVs (meta_info_<Name>Dataset.csv, a header then one row
  per image: e.g. img_name,mos,std,split or ref_name,dist_name,dmos), for a dataset without
  a native loader here; the columns, range, task and name are options.

Errors are DataError naming the file and row: "<file>:<line>" (1-based, header
is line 1) for CSV/TXT, "<file> row <n>" (Excel row) for XLSX, "<file> entry <n>" (1-based
list index) for EvalMuse's JSON and AIGCIQA2023's .mat files, and "<file> / <file> entry <n>"
(1-based MATLAB index) for LIVE-C's .mat files.
"""

from __future__ import annotations

import ast
import logging
import re
import zipfile
from collections.abc import Callable, Sequence
from csv import DictReader
from csv import Error as CsvError
from dataclasses import replace
from json import JSONDecodeError
from json import load as load_json
from pathlib import Path

import numpy as np
import openpyxl
import scipy.io
from openpyxl.utils.exceptions import InvalidFileException

from omniquality_r.data.records import (
    MOS_MAX,
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
    "evalmuse": (1.0, 5.0),
    "aadb": (0.0, 1.0),
    "pipal": (916.7136, 1835.9856),  # the released training labels' extremes
    "aigciqa2023": (0.0, 100.0),
}
LIVEC_TRAINING_IMAGES = 7  # subject-training images t1..t7.bmp, in Images/trainingImages/
AADB_LISTS = tuple(f"imgListFiles_label/imgList{split}Regression_score.txt"
                   for split in ("Train", "Validation", "TestNew"))  # fmt: skip
AADB_LIST_NAME = re.compile(r"imgList(Train|Validation|Test)(?:New)?Regression_")
AIGCIQA_MODELS = 6  # text-to-image models; each generated AIGCIQA_PER_PROMPT images a prompt
AIGCIQA_PER_PROMPT = 4


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


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped line) for each non-blank line of a text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not readable as UTF-8 text ({e})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip()]  # fmt: skip
    if not lines:
        raise DataError(f"{path}: no data rows")
    return lines


def _read_xlsx(path: Path) -> list[tuple]:
    """The first sheet's rows as tuples of cell values; names `path` if unreadable or empty."""
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
    mos_range: tuple[float, float] | None = None,
) -> Record:
    """One validated record for image `folder / name`; `name` is the id and default group.
    The MOS is mapped from `mos_range`, by default the dataset's MOS_RANGES entry."""
    if not name:
        raise DataError(f"{where}: empty image name")
    mos = rescale_mos(raw, *(mos_range or MOS_RANGES[dataset]), where=where)
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


def _mos_range(value: Sequence[float], what: str) -> tuple[float, float]:
    """A configured (low, high) scale; DataError naming `what` unless two numbers, low < high."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{what} {value!r} is not two numbers (low, high)") from None
    if not low < high:
        raise DataError(f"{what} {value!r} needs low < high")
    return low, high


def _cell(row: dict[str, str | None], column: str) -> str:
    return (row.get(column) or "").strip()


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


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
    rows = _read_xlsx(path)
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
    test_list: str | None = None,
) -> list[Record]:
    """AVA: MOS = mean of the ten vote counts for scores 1..10, on [1, 10].

    AVA downloads often lack images: with `skip_missing_images` such rows are
    dropped and counted in a logged warning instead of raising DataError.

    `test_list`, the official test list (aesthetics_image_lists/generic_test.jpgl, one image
    id per line), puts the listed images in split "test" and leaves the others unsplit, for
    the seeded split to make train/val of them: set data.split.test=0 with it.
    """
    root = _root(root)
    path = _annotation(root, txt)
    images = root / image_dir
    test_ids = {}
    if test_list:
        list_path = _annotation(root, test_list)
        test_ids = {line: f"{list_path}:{n}" for n, line in _lines(list_path)}
    records, ids, rows, missing = [], set(), 0, 0
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
            ids.add(fields[1])
            name = f"{fields[1]}.jpg"
            if skip_missing_images and not (images / name).is_file():
                missing += 1
                continue
            mean = sum(k * c for k, c in enumerate(votes, start=1)) / total
            rec = _record("ava", images, name, "aesthetic", mean, where)
            records.append(replace(rec, split="test") if fields[1] in test_ids else rec)
    for image_id, where in test_ids.items():
        if image_id not in ids:
            raise DataError(f"{where}: image id {image_id!r} is not in {path.name}")
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


def _json_entries(path: Path) -> list[tuple[str, dict]]:
    """("<file> entry <n>", object) for each object of a JSON list, n 1-based."""
    try:
        with path.open(encoding="utf-8") as f:
            data = load_json(f)
    except (UnicodeDecodeError, JSONDecodeError) as e:
        raise DataError(f"{path}: not readable as UTF-8 JSON ({e})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no entries")
    entries = []
    for i, entry in enumerate(data, start=1):
        if not isinstance(entry, dict):
            raise DataError(f"{path} entry {i}: expected a JSON object, got {entry!r}")
        entries.append((f"{path} entry {i}", entry))
    return entries


def _evalmuse_mean(value: object, field: str, where: str) -> float:
    """An EvalMuse score: the annotators' list of numbers (the release) or its mean."""
    if value is None:
        raise DataError(f"{where}: {field} is null (not annotated, as in the test.json release)")
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int | float) and not isinstance(v, bool)
                             for v in values):  # fmt: skip
        raise DataError(f"{where}: {field} {value!r} is not a number or a list of numbers")
    return float(np.mean(values))


def load_evalmuse(
    root: str | Path, *, json: str = "train_list.json", image_dir: str = "images"
) -> list[Record]:
    """EvalMuse-40K: the overall alignment MOS, the mean of the annotators' total_score on
    [1, 5], with the prompt; group = the prompt. `json` picks the file (test.json: see top)."""
    root = _root(root)
    path = _annotation(root, json)
    images = root / image_dir
    records = []
    for where, entry in _json_entries(path):
        missing = [k for k in ("img_path", "prompt", "total_score") if k not in entry]
        if missing:
            raise DataError(f"{where}: missing key(s) {missing}")
        prompt = _text(entry["prompt"])
        score = _evalmuse_mean(entry["total_score"], "total_score", where)
        records.append(_record("evalmuse", images, _text(entry["img_path"]), "alignment", score,
                               where, prompt=prompt, group=prompt))  # fmt: skip
    return records


def evalmuse_element_scores(
    root: str | Path, *, json: str = "train_list.json"
) -> dict[str, dict[str, float]]:
    """EvalMuse-40K's fine-grained labels, which a Record does not hold: record id (as
    load_evalmuse names it) -> {"<element> (<category>)": mean of the annotators' 0/1 labels,
    on [0, 1]}; {} for an entry without element_score. The release stores each entry's
    element_score as the text of a Python dict (process/process_train.py: a dict of means)."""
    root = _root(root)
    path = _annotation(root, json)
    scores = {}
    for where, entry in _json_entries(path):
        raw = entry.get("element_score") or {}
        if isinstance(raw, str):
            try:
                raw = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                raise DataError(f"{where}: element_score {raw!r} is not a dict literal") from None
        if not isinstance(raw, dict):
            raise DataError(f"{where}: element_score {raw!r} is not a mapping element -> score")
        elements = {}
        for element, value in raw.items():
            field = f"element_score[{element!r}]"
            mean = _evalmuse_mean(value, field, where)
            if not 0.0 <= mean <= 1.0:
                raise DataError(f"{where}: {field} {value!r} outside [0, 1]")
            elements[str(element)] = mean
        scores[f"evalmuse/{_text(entry.get('img_path'))}"] = elements
    return scores


def load_aadb(
    root: str | Path,
    *,
    lists: Sequence[str] = AADB_LISTS,
    image_dir: str = "datasetImages_originalSize",
) -> list[Record]:
    """AADB: the overall aesthetic score on [0, 1] from the official "<image> <score>" lists;
    each list's name (imgList{Train,Validation,Test,TestNew}Regression_*.txt) gives its
    records' split. `lists` picks the files (by default train, validation and new test)."""
    root = _root(root)
    images = root / image_dir
    records = []
    for name in [lists] if isinstance(lists, str) else lists:
        path = _annotation(root, name)
        match = AADB_LIST_NAME.match(path.name)
        if match is None:
            raise DataError(f"{path}: the name gives no split; expected "
                            "imgList{Train,Validation,Test,TestNew}Regression_*.txt")  # fmt: skip
        split = official_split(match.group(1), str(path))
        for n, line in _lines(path):
            where = f"{path}:{n}"
            fields = line.split()
            if len(fields) < 2:
                raise DataError(f"{where}: expected '<image> <score>', got {line!r}")
            rec = _record("aadb", images, fields[0], "aesthetic", fields[1], where)
            records.append(replace(rec, split=split))
    return records


def load_pipal(
    root: str | Path,
    *,
    label_dir: str = "Train_Label",
    image_dir: str = "Train_Dist",
    elo_range: Sequence[float] = MOS_RANGES["pipal"],
) -> list[Record]:
    """PIPAL: Elo scores from the "<distorted image>,<Elo>" lines of one label file per
    reference image; group = the reference image, "<label file stem>.bmp" (Train_Ref/)."""
    root = _root(root)
    labels = root / label_dir
    if not labels.is_dir():
        raise DataError(f"annotation folder not found: {labels}")
    paths = sorted(labels.glob("*.txt"))
    if not paths:
        raise DataError(f"{labels}: no label files (<reference>.txt)")
    low, high = _mos_range(elo_range, f"{labels}: elo_range")
    images = root / image_dir
    records = []
    for path in paths:
        for n, line in _lines(path):
            where = f"{path}:{n}"
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != 2:
                raise DataError(f"{where}: expected '<image>,<Elo>', got {line!r}")
            records.append(_record("pipal", images, fields[0], "technical", fields[1], where,
                                   group=f"{path.stem}.bmp", mos_range=(low, high)))  # fmt: skip
    return records


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


def load_aigciqa2023(
    root: str | Path,
    *,
    mos_dir: str = "DATA/MOS",
    image_dir: str = "Image/allimg",
    prompts: str = "AIGCIQA2023_Prompts.xlsx",
) -> list[Record]:
    """AIGCIQA2023: two records per image from the MOSz vectors on [0, 100], technical
    (mosz1, quality) and alignment (mosz3, correspondence, with the prompt of column C of
    `prompts`); group = the prompt. Authenticity (mosz2) is not used."""
    root = _root(root)
    prompts_path = _annotation(root, prompts)
    texts = []
    for n, row in enumerate(_read_xlsx(prompts_path), start=1):
        if all(v is None for v in row):
            continue
        text = _text(row[2] if len(row) > 2 else None)
        if not text:
            raise DataError(f"{prompts_path} row {n}: no prompt in column C")
        texts.append(text)
    mats = {task: _annotation(root, f"{mos_dir}/{name}")
            for task, name in (("technical", "mosz1.mat"), ("alignment", "mosz3.mat"))}  # fmt: skip
    mos = {task: _mat_vector(path, "MOSz").tolist() for task, path in mats.items()}
    per_model = AIGCIQA_PER_PROMPT * len(texts)
    for task, path in mats.items():
        if len(mos[task]) != AIGCIQA_MODELS * per_model:
            raise DataError(
                f"{path} holds {len(mos[task])} MOS but the {len(texts)} prompts of "
                f"{prompts_path.name} make {AIGCIQA_MODELS * per_model} images "
                f"({AIGCIQA_MODELS} models x {AIGCIQA_PER_PROMPT} a prompt)"
            )
    images = root / image_dir
    records = []
    for i in range(AIGCIQA_MODELS * per_model):
        prompt = texts[i % per_model // AIGCIQA_PER_PROMPT]
        for task, path in mats.items():
            records.append(_record("aigciqa2023", images, f"{i}.png", task, mos[task][i],
                                   f"{path} entry {i + 1}", suffix=f"#{task}",
                                   prompt=prompt if task == "alignment" else "",
                                   group=prompt))  # fmt: skip
    return records


def load_pyiqa(
    root: str | Path,
    *,
    csv: str,
    dataset: str,
    mos_range: Sequence[float],
    task: str = "technical",
    image_dir: str = ".",
    image_column: str = "img_name",
    mos_column: str = "mos",
    split_column: str | None = None,
    prompt_column: str | None = None,
    group_column: str | None = None,
    lower_better: bool = False,
) -> list[Record]:
    """Any dataset described by an IQA-PyTorch (pyiqa) meta-info CSV, meta_info_<Name>Dataset.csv
    (may be an absolute path: pyiqa ships them apart from the images): `image_column` names the
    image under `image_dir`, `mos_column` its MOS on `mos_range` (low, high), mapped to [0, 5]
    (reversed when `lower_better`, a DMOS); ids "<dataset>/<image>". Optional columns: the split
    (`split_column`, e.g. official_split: train / val / test), the prompt (`prompt_column`,
    needed for task alignment) and the group (`group_column`, e.g. ref_name)."""
    root = _root(root)
    path = _annotation(root, csv)
    low, high = _mos_range(mos_range, f"{path}: mos_range")
    optional = [c for c in (split_column, prompt_column, group_column) if c]
    images = root / image_dir
    records = []
    for n, row in _read_csv(path, (image_column, mos_column, *optional)):
        where = f"{path}:{n}"
        rec = _record(dataset, images, _cell(row, image_column), task, row[mos_column], where,
                      prompt=_cell(row, prompt_column) if prompt_column else "",
                      group=_cell(row, group_column) if group_column else "",
                      mos_range=(low, high))  # fmt: skip
        if lower_better:
            rec = replace(rec, mos=MOS_MAX - rec.mos)
        if split_column:
            rec = replace(rec, split=official_split(_cell(row, split_column), where))
        records.append(rec)
    return records


LOADERS: dict[str, Callable[..., list[Record]]] = {
    "koniq": load_koniq,
    "spaq": load_spaq,
    "kadid": load_kadid,
    "ava": load_ava,
    "agiqa3k": load_agiqa3k,
    "tad66k": load_tad66k,
    "livec": load_livec,
    "evalmuse": load_evalmuse,
    "aadb": load_aadb,
    "pipal": load_pipal,
    "aigciqa2023": load_aigciqa2023,
    "pyiqa": load_pyiqa,
    "manifest": read_manifest,
}
