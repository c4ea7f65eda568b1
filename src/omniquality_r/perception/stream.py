"""Endless batches of fresh procedural samples with their perception labels."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..data.records import TASKS
from ..data.synthetic import SAMPLERS
from .labels import STREAM_SALT, label_vector, labels_of


def stream_rng(seed: int, task: str, index: int) -> np.random.Generator:
    """Generator of pretraining sample `index` of `task`: SeedSequence([STREAM_SALT, seed,
    task, index]), never one of the dataset's SeedSequence([seed, task, index])."""
    return np.random.default_rng(np.random.SeedSequence([STREAM_SALT, seed, TASKS.index(task),
                                                         index]))  # fmt: skip


def task_counts(batch_size: int, mix: dict[str, float]) -> dict[str, int]:
    """Images per task in a batch, proportional to `mix` (largest remainders)."""
    total = sum(mix.values())
    exact = {t: batch_size * w / total for t, w in mix.items()}
    counts = {t: int(v) for t, v in exact.items()}
    for t in sorted(exact, key=lambda t: counts[t] - exact[t])[: batch_size - sum(counts.values())]:
        counts[t] += 1
    return counts


def collate(image_processor, images: list, labels: list[np.ndarray], tasks: list[int]) -> dict:
    """A model batch: the processor's pixel_values and grid, label vectors, task ids."""
    pixels = image_processor(images, return_tensors="pt")
    return {"pixel_values": pixels["pixel_values"], "grid_thw": pixels["image_grid_thw"],
            "labels": torch.from_numpy(np.stack(labels)), "tasks": torch.tensor(tasks)}  # fmt: skip


class PerceptionStream(IterableDataset):
    """Endless collated batches of fresh samples; batch b is a pure function of (seed, b):
    task t's samples b * n_t .. (b + 1) * n_t - 1 with n_t = task_counts(...)[t]. Under
    data parallelism (torch.distributed initialised, W ranks) rank r yields part r of each
    batch (`batch(b, r, W)`), so the W ranks of a step see the same images as one process;
    DataLoader workers take batches w, w + W', ... so the order does not depend on the
    worker count."""

    def __init__(self, image_processor, image_size: int, batch_size: int, mix: dict, seed: int):
        self.image_processor = image_processor
        self.image_size, self.seed = image_size, seed
        self.counts = {t: n for t, n in task_counts(batch_size, mix).items() if n}

    def batch(self, b: int, part: int = 0, parts: int = 1) -> dict[str, torch.Tensor]:
        """Batch b, or its part `part` of `parts`: every parts-th sample of each task."""
        images, labels, tasks = [], [], []
        for task, n in self.counts.items():
            for i in range(b * n + part, (b + 1) * n, parts):
                sample = SAMPLERS[task](stream_rng(self.seed, task, i), self.image_size)
                images.append(sample.image)
                labels.append(label_vector(labels_of(task, sample.factors)))
                tasks.append(TASKS.index(task))
        return collate(self.image_processor, images, labels, tasks)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        dist = torch.distributed
        rank, ranks = ((dist.get_rank(), dist.get_world_size()) if dist.is_initialized()
                       else (0, 1))  # fmt: skip
        return (self.batch(b, rank, ranks) for b in itertools.count(worker, workers))
