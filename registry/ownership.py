"""Owner maps: which task owns each shared weight (0 = free, k = the task with seq k).

A model version, materialised from its deltas (``registry.deltas``), holds for every
prunable layer ``L`` ``weight.L`` (float32) and ``owner.L`` (the smallest unsigned integer
type that holds the task count: uint8 up to 255 tasks, as PackNet does). The rules checked
here are the ones that make zero forgetting hold: a task's mask is exactly the weights owned
at its version, and free weights hold 0. They are used both before a commit and by
``Registry.verify``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

WEIGHT_PREFIX = "weight."
OWNER_PREFIX = "owner."
_OWNER_DTYPES = (np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.int32))


def owner_dtype(tasks: int) -> np.dtype:
    """The smallest integer type that holds owner ids 0…``tasks`` (uint8 up to 255 tasks;
    int16 next, since torch has no full uint16 support)."""
    for dtype in _OWNER_DTYPES:
        if tasks <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"{tasks} tasks do not fit an owner map")


def split_shared(
    shared: Mapping[str, np.ndarray], layer_names: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """(weights, owners, problems) for ``layer_names`` from a weights-blob dict."""
    expected = {f"{p}{n}" for n in layer_names for p in (WEIGHT_PREFIX, OWNER_PREFIX)}
    problems = [f"shared tensor {key!r} is missing" for key in sorted(expected - set(shared))]
    problems += [
        f"shared tensor {key!r} is not a weight/owner map of a masked layer"
        for key in sorted(set(shared) - expected)
    ]
    weights = {n: shared[WEIGHT_PREFIX + n] for n in layer_names if WEIGHT_PREFIX + n in shared}
    owners = {n: shared[OWNER_PREFIX + n] for n in layer_names if OWNER_PREFIX + n in shared}
    return weights, owners, problems


def owner_stats(owners: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per layer ``{name, numel, free, owned}``, in the owners' order (for capacity)."""
    stats = []
    for name, owner in owners.items():
        free = int(np.count_nonzero(owner == 0))
        stats.append(
            {"name": name, "numel": int(owner.size), "free": free, "owned": owner.size - free}
        )
    return stats


def ownership_problems(
    mask: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray],
    owners: Mapping[str, np.ndarray],
    seq: int | None = None,
) -> list[str]:
    """Violations of: mask == (owner > 0), owner in [0, seq], weight == 0 where free."""
    problems = []
    for name, layer_mask in mask.items():
        weight, owner = weights.get(name), owners.get(name)
        if weight is None or owner is None:
            continue  # reported by split_shared
        if not (weight.shape == owner.shape == layer_mask.shape):
            problems.append(
                f"layer {name}: shapes differ (mask {layer_mask.shape}, weight {weight.shape}, "
                f"owner {owner.shape})"
            )
            continue
        if owner.dtype not in _OWNER_DTYPES:
            problems.append(f"layer {name}: owner map is {owner.dtype}, not uint8/int16/int32")
        if owner.size and (owner.min() < 0 or (seq is not None and owner.max() > seq)):
            problems.append(f"layer {name}: owner ids outside [0, {seq}]")
        differ = np.count_nonzero(layer_mask != (owner > 0))
        if differ:
            problems.append(f"layer {name}: mask disagrees with the owner map at {differ} weights")
        nonzero_free = np.count_nonzero(weight[owner == 0])
        if nonzero_free:
            problems.append(f"layer {name}: {nonzero_free} free weights are not 0")
    return problems
