"""One record type for every task and dataset, held as Hugging Face `datasets`.

A record is one (image, task) pair with its ground truth:

    id        unique within a dataset, e.g. "koniq/826373.jpg"
    image     absolute path to the image file
    task      "technical" | "aesthetic" | "alignment"
    prompt    the text prompt the image was generated from ("" unless alignment)
    mos       ground-truth mean opinion score mapped linearly to [0, 5]
    mos_raw   the dataset's own MOS, on its own scale
    dataset   dataset name ("koniq", "synthetic", ...)
    split     "train" | "val" | "test"
    group     content key; splits never share a group (KADID: the reference image)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

TASKS = ("technical", "aesthetic", "alignment")
SPLITS = ("train", "val", "test")
MOS_MAX = 5.0


class DataError(ValueError):
    """Bad input data; the message names the file (and row) at fault."""


@dataclass(frozen=True)
class Record:
    id: str
    image: str
    task: str
    mos: float
    mos_raw: float
    dataset: str
    prompt: str = ""
    split: str = ""
    group: str = ""


RECORD_FIELDS = tuple(f.name for f in fields(Record))
FEATURES = datasets.Features(
    {
        name: datasets.Value("float64" if name in ("mos", "mos_raw") else "string")
        for name in RECORD_FIELDS
    }
)


def rescale_mos(value: float, low: float, high: float, *, where: str) -> float:
    """Linear map of a MOS on the dataset scale [low, high] to [0, 5]: 5 (v - low) / (high - low).

    Raises DataError naming `where` when the value is not finite or lies outside [low, high].
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: MOS {value!r} is not a number") from None
    if not math.isfinite(v) or v < low or v > high:
        raise DataError(f"{where}: MOS {value!r} outside the dataset's range [{low}, {high}]")
    return MOS_MAX * (v - low) / (high - low)


def validate_record(rec: Record, *, where: str) -> Record:
    """Check task, MOS range and image existence; raise DataError naming `where` otherwise."""
    if rec.task not in TASKS:
        raise DataError(f"{where}: unknown task {rec.task!r}; expected one of {TASKS}")
    if not (0.0 <= rec.mos <= MOS_MAX) or not math.isfinite(rec.mos):
        raise DataError(f"{where}: mos {rec.mos!r} outside [0, {MOS_MAX}]")
    if rec.task == "alignment" and not rec.prompt:
        raise DataError(f"{where}: alignment record {rec.id!r} has no prompt")
    if rec.split and rec.split not in SPLITS:
        raise DataError(f"{where}: unknown split {rec.split!r}; expected one of {SPLITS}")
    if not Path(rec.image).is_file():
        raise DataError(f"{where}: image file not found: {rec.image}")
    return rec


def to_dataset(records: Iterable[Record]) -> datasets.Dataset:
    rows = [asdict(r) for r in records]
    columns = {name: [row[name] for row in rows] for name in RECORD_FIELDS}
    return datasets.Dataset.from_dict(columns, features=FEATURES)


def from_row(row: dict) -> Record:
    return Record(**{name: row[name] for name in RECORD_FIELDS})


def write_manifest(ds: datasets.Dataset | Sequence[Record], path: str | Path) -> Path:
    """Write records as JSONL, one record per line, image paths as stored."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ds if isinstance(ds, datasets.Dataset) else [asdict(r) for r in ds]
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps({name: row[name] for name in RECORD_FIELDS}) + "\n")
    return path


def jsonl_objects(path: str | Path) -> Iterator[tuple[int, str, dict]]:
    """(line number, "<file>:<line>", object) for each non-blank line of a JSONL manifest;
    a missing file, invalid JSON or a non-object line raises DataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object")
        yield lineno, where, row


def read_manifest(path: str | Path) -> list[Record]:
    """Read a JSONL manifest. Relative image paths resolve against the manifest's folder.

    Required keys: image, task, mos. Optional: id, prompt, mos_raw, dataset, split, group.
    """
    path = Path(path)
    records = []
    for lineno, where, row in jsonl_objects(path):
        missing = [k for k in ("image", "task", "mos") if k not in row]
        if missing:
            raise DataError(f"{where}: missing key(s) {missing}")
        unknown = sorted(set(row) - set(RECORD_FIELDS))
        if unknown:
            raise DataError(f"{where}: unknown key(s) {unknown}; allowed {list(RECORD_FIELDS)}")
        image = Path(row["image"])
        image = image if image.is_absolute() else path.parent / image
        mos = rescale_mos(row["mos"], 0.0, MOS_MAX, where=where)
        rec = Record(
            id=str(row.get("id", f"{path.stem}/{lineno}")),
            image=str(image),
            task=str(row["task"]),
            mos=mos,
            mos_raw=float(row.get("mos_raw", mos)),
            dataset=str(row.get("dataset", path.stem)),
            prompt=str(row.get("prompt", "")),
            split=str(row.get("split", "")),
            group=str(row.get("group", "")),
        )
        records.append(validate_record(rec, where=where))
    if not records:
        raise DataError(f"{path}: manifest holds no records")
    return records


def assign_splits(
    records: Sequence[Record], *, seed: int, val: float, test: float
) -> list[Record]:
    """Assign train/val/test by content group, reproducibly from `seed`.

    Groups (record.group, or record.image when empty) are shuffled with
    numpy's default_rng(seed); the first ceil(test*n) go to test, the next
    ceil(val*n) to val, the rest to train, so no content is shared across
    splits. Records that already carry a split keep it.
    """
    if not (val >= 0.0 and test >= 0.0 and val + test <= 1.0):
        raise DataError(f"split fractions val={val}, test={test} must be >= 0 and sum to at "
                        "most 1")  # fmt: skip
    keys = sorted({r.group or r.image for r in records if not r.split})
    order = np.random.default_rng(seed).permutation(len(keys))
    n_test = math.ceil(test * len(keys))
    n_val = math.ceil(val * len(keys))
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[keys[idx]] = (
            "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        )
    out = []
    for r in records:
        split = r.split or split_of[r.group or r.image]
        out.append(Record(**{**asdict(r), "split": split}))
    return out


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB; a missing or corrupt file raises DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"corrupt or unreadable image {path}: {e}") from None


def load_readable(records: Sequence[Record]) -> tuple[list[Record], list[Image.Image], list[str]]:
    """The records whose image opens, their RGB images, and "<id>: <error>" for each other one
    (a missing or corrupt image is logged and skipped, never a crash; the caller counts)."""
    kept, images, skipped = [], [], []
    for rec in records:
        try:
            images.append(load_image(rec.image))
            kept.append(rec)
        except DataError as e:
            skipped.append(f"{rec.id}: {e}")
            log.warning("skipping record %s", skipped[-1])
    return kept, images, skipped
