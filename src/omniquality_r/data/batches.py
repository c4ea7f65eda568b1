"""Resumable training batches: a fresh seeded order each epoch, each rank its share, and a
resumed run continuing the interrupted epoch where it stopped, in the same order."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the running process group, (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochBatches(Generic[T]):
    """Batches of `batch_size` items (global: over every rank) in the order
    randperm(n, seed + epoch); rank r of W takes items r, r + W, ... of each batch, so
    batch_size must divide by W. Iteration starts at batch `position()` (batches trained so
    far, counted over epochs: the module's counter, restored from its checkpoint), so a
    resumed run continues its epoch in order: Lightning iterates it like a DataLoader and
    checkpoints its state (checked on load against the restored counter)."""

    def __init__(self, items: Sequence[T], batch_size: int, seed: int,
                 position: Callable[[], int], drop_last: bool = True):  # fmt: skip
        if not items:
            raise ValueError("no training items")
        self.items, self.batch_size, self.seed, self.position = items, batch_size, seed, position
        self.drop_last = drop_last and len(items) >= batch_size

    def __len__(self) -> int:
        n = len(self.items) / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)

    def __iter__(self) -> Iterator[list[T]]:
        rank, world = rank_and_world()
        if self.batch_size % world:
            raise ValueError(f"batch size {self.batch_size} does not split over {world} ranks")
        epoch, start = divmod(self.position(), len(self))
        shuffle = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.items), generator=shuffle)
        for b in range(start, len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size][rank::world]
            yield [self.items[i] for i in batch.tolist()]

    def state_dict(self) -> dict:
        return {"position": self.position()}

    def load_state_dict(self, state: dict) -> None:
        if state["position"] != self.position():
            raise RuntimeError(f"the checkpoint's batch position {state['position']} differs "
                               f"from the restored module's {self.position()}")  # fmt: skip
