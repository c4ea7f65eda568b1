"""Assemble the configured sources into train/val/test `datasets`.

A source is `{loader: <name>, <loader options>}`; several sources make a mix
(datasets and tasks in one training set). Records of unselected tasks are
dropped, then splits are assigned by content group (records.assign_splits).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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
        if loader not in LOADERS:
            raise DataError(f"data source {name!r}: unknown loader {loader!r}; "
                            f"expected one of {sorted(LOADERS)}")  # fmt: skip
        records.extend(LOADERS[loader](**options))
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
