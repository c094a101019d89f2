"""The batches training and evaluation read, through one ``torch.utils.data.DataLoader``.

In-memory tensors and image folders take the same path: a sampler yields each batch's
positions and the data set returns ``(x[positions], y[positions])``. For tensors that is
exactly the indexing training always did (same seeded order, same values); for a
:class:`~workers.data.stream.StreamedImages` it reads just that batch, in ``workers``
worker processes, so memory does not grow with the data set.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from base.errors import DataError, first_line
from workers.data.spec import Images
from workers.data.stream import StreamedImages


class _Pairs(Dataset):
    def __init__(self, x: Images, y: Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.x[positions], self.y[positions]


class _Batches(Sampler[Tensor]):
    """Consecutive batches of a permutation drawn from ``generator`` each pass (or of 0..n-1).

    With ``shard=(rank, size)`` each batch is cut to this worker's every size-th position,
    so data-parallel workers read disjoint parts of the same global batches (a batch smaller
    than ``size`` repeats positions: every worker must take every step).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator | None,
        shard: tuple[int, int] = (0, 1),
    ):
        self.n, self.batch_size, self.generator, self.shard = n, batch_size, generator, shard

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        if self.generator is None:
            order = torch.arange(self.n)
        else:
            order = torch.randperm(self.n, generator=self.generator)
        rank, size = self.shard
        for start in range(0, self.n, self.batch_size):
            batch = order[start : start + self.batch_size]
            if size > 1:
                batch = batch[torch.arange(rank, max(len(batch), size), size) % len(batch)]
            yield batch


def batches(
    x: Images,
    y: Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled batches (a fresh seeded order each pass) when ``generator`` is given, else in
    order. Tensors are read in this process; streamed images by ``workers`` processes.
    ``shard``: this data-parallel worker's part of each batch; ``pin_memory`` for copies to a
    GPU."""
    workers = workers if isinstance(x, StreamedImages) else 0
    return DataLoader(
        _Pairs(x, y),
        sampler=_Batches(len(y), batch_size, generator, shard),
        batch_size=None,
        pin_memory=pin_memory,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def read(loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
    """The loader's batches; an image that fails to decode in a worker is one DataError line
    (a worker re-raises it wrapped in its traceback)."""
    try:
        yield from loader
    except DataError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        message = lines[-1].removeprefix(f"{DataError.__module__}.DataError: ")
        raise DataError(first_line(message)) from None
