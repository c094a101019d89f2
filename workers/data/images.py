"""Image files: their size from the header alone, decoded pixels, and a pixel budget judged
before anything is decoded."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image
from torch import Tensor

from base.defaults import MAX_PIXELS
from base.errors import DataError, first_line
from workers.data.arrays import as_images

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_DRAFT_ABOVE_PIXELS = 2**22  # JPEGs above 4 Mi pixels may decode at reduced scale
_IMAGE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, zlib.error)
_UNKNOWN_FORMAT = "not a complete image in a format Pillow reads (png, jpeg, bmp, tiff, webp, ...)"


def majority_mode_and_size(
    sources: Iterable[Path | BinaryIO],
) -> tuple[str, tuple[int, int]]:
    """'L' or 'RGB' by majority (ties → RGB) and the most common (W, H); headers only."""
    modes: Counter[str] = Counter()
    sizes: Counter[tuple[int, int]] = Counter()
    for source in sources:
        with open_image(source) as image:
            modes["L" if image.mode in GREY_MODES else "RGB"] += 1
            sizes[image.size] += 1
    mode = "L" if modes["L"] > modes["RGB"] else "RGB"
    return mode, sizes.most_common(1)[0][0]


def open_image(source: Path | BinaryIO, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image with only its header read, refused above ``max_pixels`` before decoding.

    PIL's own decompression-bomb warning (``Image.MAX_IMAGE_PIXELS``) counts as an error.
    """
    name = source_name(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"image {name} is too large to decode: {first_line(exc)}") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"cannot read image {name}: {_UNKNOWN_FORMAT}") from None
    except _IMAGE_ERRORS as exc:
        raise DataError(f"cannot read image {name}: {first_line(exc)}") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise DataError(
            f"image {name} has {width}x{height} = {width * height:,} pixels, more than the "
            f"{max_pixels:,} accepted; scale it down first"
        )
    return image


def source_name(source: Path | BinaryIO) -> str:
    return str(source) if isinstance(source, str | Path) else str(getattr(source, "name", "upload"))


def decoded(image: Image.Image, mode: str, name: str) -> np.ndarray:
    """uint8 pixels of ``image`` in ``mode``; a truncated or corrupt body is a DataError."""
    try:
        return np.asarray(image.convert(mode), dtype=np.uint8)
    except _IMAGE_ERRORS as exc:
        raise DataError(
            f"cannot decode image {name}: {first_line(exc)}; is the file complete?"
        ) from None


def image_size_of(data: bytes) -> tuple[int, int]:
    """(width, height) from an image's header alone: lets a server budget pixels up front."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.UnidentifiedImageError:
        raise DataError(f"not a readable image: {_UNKNOWN_FORMAT}") from None
    except (*_IMAGE_ERRORS, Image.DecompressionBombError) as exc:
        raise DataError(f"not a readable image: {first_line(exc)}") from None


def read_pixels(
    source: Path | BinaryIO, *, max_pixels: int = MAX_PIXELS, target_size: int | None = None
) -> np.ndarray:
    """One image file as uint8 (1, H, W) (grey) or (1, H, W, 3) (anything else, as RGB).

    ``source`` is a path or a binary stream (its ``name`` is used in errors). Images over
    ``max_pixels`` are refused from their header. With ``target_size`` (the backbone's
    input side), a JPEG of more than 4 Mi pixels decodes at 1/2..1/8 scale, keeping at least
    4 x ``target_size`` per side; everything else decodes exactly as without it.
    """
    with open_image(source, max_pixels) as image:
        mode = "L" if image.mode in GREY_MODES else "RGB"
        if target_size is not None and image.width * image.height > _DRAFT_ABOVE_PIXELS:
            image.draft(None, (4 * target_size, 4 * target_size))  # JPEG only; others: no-op
        return decoded(image, mode, source_name(source))[None]


def read_image(
    path: Path, *, max_pixels: int = MAX_PIXELS, target_size: int | None = None
) -> Tensor:
    """One image file as float32 (1, C, H, W) in [0, 1] (grey stays 1 channel, else RGB)."""
    pixels = read_pixels(path, max_pixels=max_pixels, target_size=target_size)
    return as_images(pixels, str(path))
