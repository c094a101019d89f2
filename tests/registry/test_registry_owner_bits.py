"""Owner bit planes: a task's mask and the dense owner map agree with a plain owner array."""

from __future__ import annotations

import numpy as np
import pytest

from registry.codecs import MASK_BITORDER
from registry.versions import OwnerBits, set_bits, set_positions


def _packed(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits, bitorder=MASK_BITORDER)


@pytest.mark.parametrize("tasks", [1, 2, 3, 7, 10, 255, 300])
def test_masks_from_bit_planes_match_the_owner_map(tasks: int) -> None:
    rng = np.random.default_rng(tasks)
    owners = rng.integers(0, tasks + 1, 1001)
    bits = OwnerBits.empty(owners.size, tasks)
    assert len(bits.planes) == tasks.bit_length()
    for seq in range(1, tasks + 1):
        assert bits.take(_packed(owners == seq), seq) == 0
    assert np.array_equal(bits.owner_map(np.dtype(np.int32)), owners)
    for seq in {0, 1, tasks // 2, tasks - 1, tasks, tasks + 1}:
        upto = bits.unpack(bits.upto(seq))
        assert np.array_equal(upto, (owners > 0) & (owners <= seq)), seq


def test_taking_owned_weights_is_counted_and_a_seq_must_fit() -> None:
    bits = OwnerBits.empty(20, 2)
    first = np.zeros(20, bool)
    first[[0, 5, 19]] = True
    assert bits.take(_packed(first), 1) == 0
    second = np.zeros(20, bool)
    second[[5, 19, 7]] = True
    assert bits.take(_packed(second), 2) == 2
    with pytest.raises(ValueError, match="does not fit"):
        bits.take(_packed(first), 4)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
def test_set_positions_of_a_packed_mask(density: float) -> None:
    bits = np.random.default_rng(1).random(1003) < density
    assert set_bits(_packed(bits)) == bits.sum()
    for expected in (0, int(bits.sum()), bits.size):  # either way of finding them
        positions = set_positions(_packed(bits), bits.size, expected)
        assert np.array_equal(positions, np.flatnonzero(bits))
