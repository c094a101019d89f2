"""A model version stored as the ordered deltas of its tasks.

Owned weights never change and free weights are 0, so all that task k adds to the shared
network is which weights it now owns (a 1-bit mask) and their values. A commit stores only
that delta; version k is materialised by applying the deltas of tasks 1…k in seq order. The
store then holds about one float32 copy of the owned weights plus 1 bit per weight per task,
and task k's effective mask (tasks 1…k, nested by construction) is the union of their masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

import numpy as np

from registry.codecs import TensorSpan, encode_arrays, safetensors_spans
from registry.errors import BlobCorrupted
from registry.ownership import OWNER_PREFIX, WEIGHT_PREFIX, owner_dtype

VALUE_DTYPE = np.dtype(np.float32)


@dataclass(frozen=True)
class Delta:
    """What one task added: ``mask`` (bool, per layer) the weights it took, ``values``
    (float32, 1-D, per layer) their values in the mask's C order."""

    mask: dict[str, np.ndarray]
    values: dict[str, np.ndarray]


def delta_of(
    mask: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray],
    parent_mask: Mapping[str, np.ndarray] | None,
) -> Delta:
    """The delta of a task whose effective mask is ``mask`` on top of ``parent_mask``."""
    new = {
        name: layer & ~parent_mask[name] if parent_mask is not None else layer.copy()
        for name, layer in mask.items()
    }
    return Delta(new, {name: weights[name][taken] for name, taken in new.items()})


def encode_values(values: Mapping[str, np.ndarray]) -> bytes:
    return encode_arrays({WEIGHT_PREFIX + name: v for name, v in values.items()})


def decode_values(data: bytes, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """A values blob's arrays by layer (read-only views of ``data``, no copy); BlobCorrupted
    unless it holds exactly ``layers``, each 1-D float32."""
    return {name: span.view(data) for name, span in zip(layers, _spans(data, layers), strict=True)}


def flat_values(data: bytes, layers: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """A values blob's values of every layer, concatenated in ``layers`` order, and how many
    each layer has; BlobCorrupted as :func:`decode_values`. A read-only view of ``data`` when
    the blob holds them in that order (safetensors does when the layer names sort in network
    order, as the VGG backbones' do), else one concatenation."""
    spans = _spans(data, layers)
    sizes = [span.shape[0] for span in spans]
    filled = [span for span in spans if span.end > span.begin]
    if all(one.end == following.begin for one, following in pairwise(filled)):
        begin = filled[0].begin if filled else len(data)
        return np.frombuffer(data, VALUE_DTYPE, sum(sizes), begin), sizes
    return np.concatenate([span.view(data) for span in spans]), sizes


@cache
def _keys(layers: tuple[str, ...]) -> tuple[str, ...]:
    """The values blob's tensor names of ``layers`` (a version's loading asks for them per
    task)."""
    return tuple(WEIGHT_PREFIX + name for name in layers)


def _spans(data: bytes, layers: Sequence[str]) -> list[TensorSpan]:
    """Where each layer's values lie in a values blob, in ``layers`` order; BlobCorrupted
    unless it holds exactly ``layers``, each 1-D float32."""
    spans = {span.name: span for span in safetensors_spans(data)}
    keys = _keys(tuple(layers))
    if spans.keys() != set(keys):
        raise BlobCorrupted(f"the values blob holds {sorted(spans)}, expected {sorted(keys)}")
    ordered = [spans[key] for key in keys]
    for name, span in zip(layers, ordered, strict=True):
        if len(span.shape) != 1 or span.dtype != VALUE_DTYPE:
            raise BlobCorrupted(
                f"layer {name}: values are {span.dtype} of shape {span.shape}, expected 1-D float32"
            )
    return ordered


class Materialised:
    """A model version's dense weights and owner map (0 = free, k = task seq k).

    Built by :meth:`empty`, each layer is a view into one flat buffer (weights, owners), so
    applying a delta costs a few whole-network numpy calls, not a few per layer.
    """

    def __init__(self, weights: dict[str, np.ndarray], owners: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.owners = owners
        self._flat: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def empty(cls, shapes: Mapping[str, tuple[int, ...]], tasks: int) -> Materialised:
        """Every weight free (0), with an owner map that holds ids up to ``tasks``."""
        size = sum(math.prod(shape) for shape in shapes.values())
        weights, owners = np.zeros(size, VALUE_DTYPE), np.zeros(size, owner_dtype(tasks))
        return cls.over(weights, owners, shapes)

    @classmethod
    def over(
        cls, weights: np.ndarray, owners: np.ndarray, shapes: Mapping[str, tuple[int, ...]]
    ) -> Materialised:
        views: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {})
        start = 0
        for name, shape in shapes.items():
            end = start + math.prod(shape)
            views[0][name] = weights[start:end].reshape(shape)
            views[1][name] = owners[start:end].reshape(shape)
            start = end
        state = cls(*views)
        state._flat = (weights, owners)
        return state

    @property
    def mask(self) -> dict[str, np.ndarray]:
        """The effective mask of this version's task: every owned weight."""
        return {name: owner > 0 for name, owner in self.owners.items()}

    def shared(self) -> dict[str, np.ndarray]:
        """As ``weight.<layer>`` / ``owner.<layer>`` arrays, the layout a TaskCommit carries."""
        return {WEIGHT_PREFIX + n: w for n, w in self.weights.items()} | {
            OWNER_PREFIX + n: o for n, o in self.owners.items()
        }

    def copy(self) -> Materialised:
        assert self._flat is not None, "only versions built by Materialised.empty are copied"
        shapes = {name: weight.shape for name, weight in self.weights.items()}
        return Materialised.over(self._flat[0].copy(), self._flat[1].copy(), shapes)

    def apply(self, delta: Delta, seq: int) -> list[str]:
        """Hand ``delta``'s weights to task ``seq``, in place; the ways it does not tile the
        network (layers, value counts, weights already owned, non-finite values). A delta of
        the wrong layout or counts changes nothing; overlapping weights are still written,
        so a check of earlier-owned weights sees the damage too."""
        assert self._flat is not None, "deltas apply to versions built by Materialised.empty"
        layout = [(name, weight.shape) for name, weight in self.weights.items()]
        given = [(name, taken.shape) for name, taken in delta.mask.items()]
        if given != layout:
            return [f"delta layers {given} differ from the network's {layout}"]
        taken = np.concatenate([layer.reshape(-1) for layer in delta.mask.values()])
        values = np.concatenate([delta.values[name] for name in delta.mask])
        index = np.flatnonzero(taken)  # the one pass over the network; the rest is per weight
        bounds = np.cumsum([0] + [math.prod(shape) for _, shape in layout])
        counts = np.diff(np.searchsorted(index, bounds))
        problems = [
            f"layer {name}: {delta.values[name].size} values for {count} new weights"
            for (name, _), count in zip(layout, counts.tolist(), strict=True)
            if delta.values[name].size != count
        ]
        if problems:
            return problems
        weights, owners = self._flat
        clash = index[owners[index] != 0]
        if clash.size:  # name the layers (rare: a damaged delta)
            per_layer = np.diff(np.searchsorted(clash, bounds)).tolist()
            problems += [
                f"layer {name}: {count} new weights were already owned"
                for (name, _), count in zip(layout, per_layer, strict=True)
                if count
            ]
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        if bad:
            problems.append(f"{bad} non-finite values")
        weights[index] = values
        owners[index] = seq
        return problems
