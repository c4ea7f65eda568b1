"""Assemble the configured sources into train/val/test `datasets`.

A source is `{loader: <name>, [split: train|val|test], <loader options>}`; several sources
make a mix (datasets and tasks in one training set). A source with a `split` goes whole into
that split (a test-only dataset, a cross-dataset test, an official test file); the others are
split by content group, reproducibly from data.split.seed (records.assign_splits). Records of
unselected tasks are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import datasets

from .native import LOADERS as NATIVE_LOADERS
from .records import SPLITS, DataError, Record, assign_splits, to_dataset
from .synthetic import generate_synthetic

LOADERS: dict[str, Callable[..., list[Record]]] = {
    **NATIVE_LOADERS,
    "synthetic": generate_synthetic,
}


def load_sources(sources: Mapping[str, Mapping]) -> list[Record]:
    """Records of every source; `loader` picks the function, the other keys are its options."""
    records: list[Record] = []
    for name, source in sources.items():
        options = dict(source)
        loader = options.pop("loader", None)
        split = options.pop("split", None) or ""
        if loader not in LOADERS:
            raise DataError(f"data source {name!r}: unknown loader {loader!r}; "
                            f"expected one of {sorted(LOADERS)}")  # fmt: skip
        if split and split not in SPLITS:
            raise DataError(f"data source {name!r}: split {split!r}; expected one of {SPLITS} "
                            "(or none: a seeded split by content group)")  # fmt: skip
        loaded = LOADERS[loader](**options)
        records.extend(replace(r, split=split) if split else r for r in loaded)
    return records


def build_splits(
    sources: Mapping[str, Mapping],
    tasks: Sequence[str],
    *,
    seed: int,
    val: float,
    test: float,
) -> datasets.DatasetDict:
    """DatasetDict with train/val/test of the selected tasks, split reproducibly from `seed`."""
    records = [r for r in load_sources(sources) if r.task in tasks]
    if not records:
        raise DataError(f"no records for tasks {list(tasks)} in sources {list(sources)}")
    records = assign_splits(records, seed=seed, val=val, test=test)
    return datasets.DatasetDict({s: to_dataset(r for r in records if r.split == s) for s in SPLITS})
