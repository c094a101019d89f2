"""What ``--data SPEC`` names: the spec's syntax, and the shapes a source hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from torch import Tensor

from base.errors import DataError
from workers.data.builtin import parse_options
from workers.data.stream import FolderImages, StreamedImages

# Pixels of a split: in memory, or read a batch at a time (image files, mapped arrays).
Images = Tensor | StreamedImages

SCHEMES = ("npz", "imagefolder", "wds", "builtin")
_SCHEME_FORMS = "npz:PATH, imagefolder:PATH, wds:PATTERN, builtin:NAME?opt=val&opt=val"
_PATH_OPTIONS = {"imagefolder": ("augment",), "wds": ("augment", "endpoint_url")}


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` spec: ``target`` is a path (npz, imagefolder), a shard pattern
    (wds) or a data set name."""

    scheme: str
    target: str
    options: tuple[tuple[str, str], ...] = ()


class DataInfo(NamedTuple):
    """What :func:`peek_spec` learns cheaply: class count and native (C, H, W)."""

    num_classes: int
    shape: tuple[int, int, int]


@dataclass(frozen=True, repr=False, eq=False)  # tensors have no truth value
class TaskData:
    """One task's splits, fitted to the backbone: x float32 (N, C, S, S) in [0, 1], y int64.

    Streamed x (image folders, shards, large npz) are :class:`StreamedImages`, read and
    fitted per batch when indexed.

    ``x_test`` may hold 0 samples when the source has no test split.
    """

    x_train: Images
    y_train: Tensor
    x_val: Images
    y_val: Tensor
    x_test: Images
    y_test: Tensor
    num_classes: int
    spec: str
    name: str
    class_names: tuple[str, ...] = field(default=())

    @property
    def eval_crop(self) -> bool:
        """Whether evaluation center-crops (RGB photos) rather than stretches: recorded with
        the task (``extra["eval_crop"]``) so that serving fits inputs the same way."""
        return isinstance(self.x_val, FolderImages) and self.x_val.crop

    def __repr__(self) -> str:
        sizes = f"train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)}"
        shape = tuple(self.x_train.shape[1:])
        return f"TaskData({self.name!r}, {self.num_classes} classes, {sizes}, shape={shape})"


@dataclass
class Splits:
    """What a source yields: training data plus optional explicit val/test splits."""

    train: tuple[Images, Tensor]
    val: tuple[Images, Tensor] | None
    test: tuple[Images, Tensor] | None
    num_classes: int
    class_names: tuple[str, ...]
    name: str


def parse_spec(spec: str) -> DataSpec:
    """Check a spec's syntax (and built-in names/options) without touching any data."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty data spec; expected one of: {_SCHEME_FORMS}")
    scheme, sep, rest = spec.strip().partition(":")
    scheme = scheme.strip().lower()
    if not sep:
        raise DataError(f"data spec {spec!r} has no scheme; expected one of: {_SCHEME_FORMS}")
    if scheme not in SCHEMES:
        raise DataError(
            f"unknown data scheme {scheme!r} in {spec!r}; accepted schemes: {_SCHEME_FORMS}"
        )
    if scheme in _PATH_OPTIONS and "?" in rest:
        path, _, query = rest.rpartition("?")
        pairs = _parse_query(spec, query)
        for key, _ in pairs:
            if key not in _PATH_OPTIONS[scheme]:
                allowed = ", ".join(_PATH_OPTIONS[scheme])
                raise DataError(f"unknown option {key!r} in {spec!r}; {scheme} takes {allowed}")
        return DataSpec(scheme, _path(spec, scheme, path), tuple(pairs))
    if scheme != "builtin":
        return DataSpec(scheme, _path(spec, scheme, rest))
    name, _, query = rest.partition("?")
    name = name.strip()
    if not name:
        raise DataError(f"data spec {spec!r} names no data set (expected builtin:NAME)")
    pairs = _parse_query(spec, query)
    parse_options(name, pairs)
    return DataSpec(scheme, name, tuple(pairs))


def _path(spec: str, scheme: str, path: str) -> str:
    if not path:
        raise DataError(f"data spec {spec!r} names no path (expected {scheme}:PATH)")
    return path


def _parse_query(spec: str, query: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in query.split("&"))):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise DataError(f"option {item!r} in {spec!r} is not of the form name=value")
        if key in (k for k, _ in pairs):
            raise DataError(f"option {key!r} is given twice in {spec!r}")
        pairs.append((key, value))
    return pairs


def existing(target: str, what: str, *, want_dir: bool) -> Path:
    path = Path(target).expanduser()
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if want_dir and not path.is_dir():
        raise DataError(f"{what} {path} is not a directory")
    if not want_dir and not path.is_file():
        raise DataError(f"{what} {path} is not a file")
    return path
