"""Images read a batch at a time, so memory does not grow with the data set.

A split that is not held in memory is a :class:`StreamedImages`: indexing it with a list or
tensor of positions reads just those images (in a DataLoader worker process when training),
fitted to the backbone exactly as an in-memory split would be; ``subset`` selects images
without reading any. Two kinds:

- :class:`FolderImages`: image files (``imagefolder:``), or images inside tar shards
  (``wds:``), decoded per image;
- :class:`MappedImages`: rows of an uncompressed ``.npz`` member, memory-mapped from the file
  (``npz:`` above ``npz.MAP_ABOVE_BYTES``) and scaled per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import BinaryIO, Protocol, Self

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2

from workers.data.arrays import fit_images, scaled, to_nchw
from workers.data.images import decoded, open_image


class StreamedImages:
    """A split read on demand; subclasses say how many images and how to read some."""

    size: int
    channels: int

    def __len__(self) -> int:
        raise NotImplementedError

    def subset(self, index: Tensor) -> Self:
        raise NotImplementedError

    def _read(self, positions: list[int]) -> Tensor:
        raise NotImplementedError

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.channels, self.size, self.size))

    def training(self) -> Self:
        """The view a training loader reads (augmented where the split asks for it)."""
        return self

    def __getitem__(self, index: Tensor | list[int] | slice) -> Tensor:
        positions = range(len(self))[index] if isinstance(index, slice) else index
        if isinstance(positions, Tensor):
            positions = positions.tolist()
        return self._read(list(positions))


class Member(Protocol):
    """An image stored inside something else (a tar shard): opened as a stream, named."""

    def open(self) -> BinaryIO: ...


@dataclass(frozen=True, eq=False)
class FolderImages(StreamedImages):
    """Encoded images: file paths or :class:`Member` s. ``augment`` only applies to the view
    :meth:`training` returns (random resized crop + horizontal flip); otherwise images are
    fitted by ``fit_images``, center-cropped when ``crop`` (RGB photos) else stretched."""

    paths: tuple[str | Member, ...]
    mode: str  # "L" or "RGB": how every file is decoded
    size: int
    channels: int
    augment: bool = False
    augmenting: bool = False
    crop: bool = False

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: Tensor) -> FolderImages:
        return replace(self, paths=tuple(self.paths[i] for i in index.tolist()))

    def training(self) -> FolderImages:
        return replace(self, augmenting=self.augment)

    def _read(self, positions: list[int]) -> Tensor:
        out = torch.empty(len(positions), self.channels, self.size, self.size)
        for row, position in enumerate(positions):
            out[row] = self._image(self.paths[position])
        return out

    def _image(self, path: str | Member) -> Tensor:
        source = path if isinstance(path, str) else path.open()
        with open_image(source) as image:
            pixels = decoded(image, self.mode, str(path))
        tensor = torch.from_numpy(pixels.astype(np.float32) / np.float32(255))
        tensor = tensor[None] if self.mode == "L" else tensor.permute(2, 0, 1)
        if self.augmenting:
            tensor = _augmented(tensor, self.size)
        return fit_images(tensor[None], self.size, self.channels, crop=self.crop)[0]


def _augmented(image: Tensor, size: int) -> Tensor:
    """torchvision's ImageNet training crop: random area and aspect, then a random flip."""
    crop = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])
    return crop(image).clamp_(0.0, 1.0)


@dataclass(frozen=True, eq=False)
class MappedImages(StreamedImages):
    """Rows of an array stored uncompressed at ``offset`` in ``path``, mapped per batch.

    Pickles as its location, never its pixels (loader workers map the file themselves);
    ``pixel_offset`` / ``pixel_scale`` are the file-wide scaling (``arrays.pixel_range``).
    """

    path: str
    offset: int
    dtype: str
    stored_shape: tuple[int, ...]
    layout: str  # "NHW", "NCHW" or "NHWC"
    rows: np.ndarray  # int64 positions in the stored array, in order
    pixel_offset: float
    pixel_scale: float
    size: int
    channels: int

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, index: Tensor) -> MappedImages:
        return replace(self, rows=self.rows[index.numpy()])

    def stored(self) -> np.memmap:
        """The whole stored array, mapped read-only: pages are read when touched."""
        return np.memmap(
            self.path, dtype=np.dtype(self.dtype), mode="r", offset=self.offset,
            shape=self.stored_shape,
        )  # fmt: skip

    def _read(self, positions: list[int]) -> Tensor:
        pixels = to_nchw(self.stored()[self.rows[positions]], self.layout)
        images = torch.from_numpy(scaled(pixels, self.pixel_offset, self.pixel_scale))
        return fit_images(images, self.size, self.channels)
