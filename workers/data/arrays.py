"""Pixel and label arrays: their layout, their scale to [0, 1], and fitting images to the
backbone. Training data and inference inputs go through the same functions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as tvf

from base.errors import DataError
from workers.data.checks import MAX_CLASSES, check_image_size, label_summary, label_text

_RESIZE_CHUNK = 512  # images per interpolate call: bounds peak memory on large sets
_RESIZE_VALUES = 2**25  # ... and at most this many input values per call (large images)
_SCAN_VALUES = 2**24  # values per chunk when scanning an array for its range or NaNs


def pixel_layout(shape: tuple[int, ...], key: str) -> str:
    """'NHW', 'NCHW' or 'NHWC' from the shape alone (see the module docstring)."""
    expected = "(N,H,W), (N,C,H,W) or (N,H,W,C) with C = 1 or 3"
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise DataError(f"{key} has shape {shape}; expected {expected}")
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if first and last:
        raise DataError(
            f"{key} has shape {shape}: cannot tell channels-first from channels-last; "
            "images must be larger than 3 pixels per side"
        )
    if not (first or last):
        raise DataError(f"{key} has shape {shape}; expected {expected}")
    return "NCHW" if first else "NHWC"


def pixels_nchw(x: np.ndarray, key: str) -> np.ndarray:
    layout = pixel_layout(x.shape, key)
    if x.dtype == np.bool_ or x.dtype.kind not in "uif":
        raise DataError(f"{key} has dtype {x.dtype}; expected uint8 or float pixels")
    if x.shape[0] == 0 or 0 in x.shape:
        raise DataError(f"{key} is empty (shape {x.shape})")
    if x.dtype.kind == "f" and not all(np.isfinite(part).all() for part in row_chunks(x)):
        raise DataError(f"{key} contains NaN or infinite values")
    return to_nchw(x, layout)


def to_nchw(x: np.ndarray, layout: str) -> np.ndarray:
    """A view of ``x`` (laid out as ``layout``) as (N, C, H, W)."""
    if layout == "NHW":
        return x[:, None]
    return x.transpose(0, 3, 1, 2) if layout == "NHWC" else x


def labels(y: np.ndarray, key: str) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{key} has shape {y.shape}; expected (N,) integer labels")
    if len(y) == 0:
        raise DataError(f"{key} is empty: 0 samples")
    if y.dtype == np.bool_ or y.dtype.kind not in "uif":
        raise DataError(f"{key} has dtype {y.dtype}; expected integer labels")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataError(f"{key} holds non-integer labels; expected integers 0..K-1")
    if y.min() < 0:
        raise DataError(f"{key} has negative label {label_text(y.min())}; expected labels 0..K-1")
    if y.max() >= MAX_CLASSES:  # before the int64 cast, which would wrap huge values
        raise DataError(
            f"{key} has label {label_text(y.max())}: at most {MAX_CLASSES:,} classes "
            f"(labels 0..K-1) are supported (labels found: {label_summary(np.unique(y))})"
        )
    return y.astype(np.int64)


def row_chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    """``x`` a bounded number of rows at a time: a memory-mapped array is never read whole."""
    step = max(1, _SCAN_VALUES // max(1, math.prod(x.shape[1:])))
    for start in range(0, len(x), step):
        yield x[start : start + step]


def pixel_range(xs: Iterable[np.ndarray]) -> tuple[float, float]:
    """(offset, scale) that map every non-uint8 array of ``xs`` into [0, 1] by one rule."""
    others = [x for x in xs if x.dtype != np.uint8]
    low = min((float(part.min()) for x in others for part in row_chunks(x)), default=0.0)
    high = max((float(part.max()) for x in others for part in row_chunks(x)), default=1.0)
    if low >= 0 and high <= 1:
        return 0.0, 1.0
    if low >= 0:
        return 0.0, high
    return low, (high - low) or 1.0


def scaled(x: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """float32 pixels in [0, 1]: uint8 / 255, anything else (x - offset) / scale."""
    pixels = np.array(x, dtype=np.float32, order="C")  # a fresh copy: scaled in place
    if x.dtype == np.uint8:
        pixels /= np.float32(255)
    else:
        pixels -= np.float32(offset)
        pixels /= np.float32(scale)
    return pixels


def scale_pixels(xs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float32 in [0, 1]: uint8 / 255; other dtypes by one range rule shared by all splits."""
    offset, scale = pixel_range(xs.values())
    return {key: scaled(x, offset, scale) for key, x in xs.items()}


def as_images(x: np.ndarray, key: str = "x") -> Tensor:
    """Any accepted pixel array (see the npz rules above) as float32 (N, C, H, W) in [0, 1].

    Inference inputs go through this and ``fit_images``, exactly like training data.
    """
    return scaled_images(checked_pixels(x, key))


def checked_pixels(x: np.ndarray, key: str = "x") -> np.ndarray:
    """The first half of ``as_images``: checked, (N, C, H, W), still in the array's own dtype.

    The serving replicas check requests with it and keep these compact pixels (uint8 is a
    quarter of float32) until the forward, which finishes with ``scaled_images``.
    """
    return pixels_nchw(np.asarray(x), key)


def scaled_images(pixels: np.ndarray) -> Tensor:
    """The second half of ``as_images``: checked pixels as float32 in [0, 1]."""
    return torch.from_numpy(scale_pixels({"x": pixels})["x"])


def fit_images(x: Tensor, image_size: int, channels: int, *, crop: bool = False) -> Tensor:
    """Resize float images (N, C, H, W) in [0, 1] to ``image_size``² and ``channels`` (1 or 3).

    Grey → RGB repeats the channel, RGB → grey takes the mean. Without ``crop`` the image is
    stretched to the square; with it (evaluation of RGB photo tasks), torchvision's eval
    transform: the shorter side resized to ``image_size`` (aspect kept), then a center crop.
    A square image gets the same pixels either way. Returns ``x`` itself when it already fits.
    """
    check_image_size(image_size)
    n, c, h, w = x.shape
    if c not in (1, 3) or channels not in (1, 3):
        raise DataError(f"cannot adapt {c}-channel images to {channels} channels")
    if (c, h, w) == (channels, image_size, image_size):
        return x
    out = torch.empty(n, channels, image_size, image_size, dtype=torch.float32)
    step = max(1, min(_RESIZE_CHUNK, _RESIZE_VALUES // (c * h * w)))  # each image alone
    for start in range(0, n, step):
        chunk = x[start : start + step].float()
        if c == 3 and channels == 1:
            chunk = chunk.mean(dim=1, keepdim=True)  # before resizing: a third of the work
        if crop and h != w:
            chunk = _resize_center_crop(chunk, image_size)
        elif (h, w) != (image_size, image_size):
            chunk = F.interpolate(
                chunk,
                size=(image_size, image_size),
                mode="bilinear",
                align_corners=False,
                antialias=image_size < max(h, w),
            ).clamp_(0.0, 1.0)
        out[start : start + len(chunk)] = chunk  # broadcasts grey into 3 channels
    return out


def _resize_center_crop(x: Tensor, size: int) -> Tensor:
    """torchvision's ``Resize(size)`` + ``CenterCrop(size)``, bilinear and antialiased."""
    resized = tvf.resize(x, [size], interpolation=tvf.InterpolationMode.BILINEAR, antialias=True)
    return tvf.center_crop(resized, [size, size]).clamp_(0.0, 1.0)
