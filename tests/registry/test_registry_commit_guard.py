"""The commit itself refuses a version that would change an earlier task by one bit, or NaN/inf.

What ``strata add-task --lr inf`` did: task 1's owned weights became NaN and every logit of
every task with them. ``verify`` found it afterwards; the commit must never let it in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from registry_fakes import make_commit, snapshot

from registry.commit import TaskCommit
from registry.errors import CommitRefused
from registry.ownership import OWNER_PREFIX, WEIGHT_PREFIX
from registry.store import Registry
from tests.registries import build_registry
from tests.synthetic import TINY_BACKBONE, synthetic_task


def _owned_by(commit: TaskCommit, seq: int) -> tuple[str, tuple[int, ...]]:
    """A layer and the index of one weight that task ``seq`` owns in ``commit``."""
    for name in commit.layer_names:
        where = np.argwhere(commit.shared[OWNER_PREFIX + name] == seq)
        if len(where):
            return name, tuple(int(i) for i in where[0])
    raise AssertionError(f"task {seq} owns nothing")


def _refused(registry: Registry, commit: TaskCommit, match: str) -> None:
    before = snapshot(registry.engine)
    with pytest.raises(CommitRefused, match=match) as caught:
        registry.commit_task(commit)
    assert "\n" not in str(caught.value)
    assert snapshot(registry.engine) == before
    assert registry.verify() == []


def test_one_ulp_on_an_owned_weight_is_refused(registry: Registry) -> None:
    registry.commit_task(make_commit(registry, "t1", seed=1))
    commit = make_commit(registry, "t2", seed=2)
    layer, index = _owned_by(commit, 1)
    weight = commit.shared[WEIGHT_PREFIX + layer]
    weight[index] = np.nextafter(weight[index], np.float32(np.inf), dtype=np.float32)
    _refused(registry, commit, rf"'t2'.*layer {layer}: 1 earlier-owned weights changed")


def test_sign_of_zero_counts_as_a_change(registry: Registry) -> None:
    """Bitwise, not numeric: -0.0 == 0.0 numerically but is another bit pattern."""
    first = make_commit(registry, "t1", seed=1)
    layer, index = _owned_by(first, 1)
    first.shared[WEIGHT_PREFIX + layer][index] = np.float32(0.0)
    registry.commit_task(first)
    commit = make_commit(registry, "t2", seed=2)
    commit.shared[WEIGHT_PREFIX + layer][index] = np.float32(-0.0)
    _refused(registry, commit, "earlier-owned weights changed")


def test_taking_an_earlier_weight_is_refused(registry: Registry) -> None:
    registry.commit_task(make_commit(registry, "t1", seed=1))
    commit = make_commit(registry, "t2", seed=2)
    layer, index = _owned_by(commit, 1)
    commit.shared[OWNER_PREFIX + layer][index] = 2  # claims task 1's weight (mask stays true)
    _refused(registry, commit, "earlier-owned weights changed")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_new_weight_is_refused(registry: Registry, bad: float) -> None:
    registry.commit_task(make_commit(registry, "t1", seed=1))
    commit = make_commit(registry, "t2", seed=2)
    layer, index = _owned_by(commit, 2)
    commit.shared[WEIGHT_PREFIX + layer][index] = bad
    _refused(registry, commit, rf"shared tensor 'weight\.{layer}' has 1 non-finite values")


def test_non_finite_first_task_private_and_numbers_are_refused(registry: Registry) -> None:
    commit = make_commit(registry, "t1", seed=1)
    commit.private["fc8.bias"][0] = np.nan
    _refused(registry, commit, "private tensor 'fc8.bias' has 1 non-finite values")
    _refused(registry, make_commit(registry, "t1", val_accuracy=float("nan")), "val_accuracy")
    summary = {"hist": np.full((4, 16), np.inf), "count": np.array([100])}
    _refused(registry, make_commit(registry, "t1", summary=summary), "summary tensor 'hist'")
    assert registry.head() is None
    assert registry.commit_task(make_commit(registry, "t1", seed=1)).seq == 1


def test_several_problems_are_one_line(registry: Registry) -> None:
    registry.commit_task(make_commit(registry, "t1", seed=1))
    commit = make_commit(registry, "t2", seed=2)
    for name in commit.layer_names:
        commit.shared[WEIGHT_PREFIX + name][commit.shared[OWNER_PREFIX + name] > 0] = np.nan
    _refused(registry, commit, r"non-finite values \(and \d+ more problems\)")


def test_a_learned_task_cannot_be_overwritten(db_url: str, tmp_path: Path) -> None:
    """A real (tiny) learned task: its weights flipped by one ulp never reach the registry,
    and the untouched next task goes through."""
    store = str(tmp_path / "learned")
    build_registry(db_url, store, [("t1", synthetic_task(0))], TINY_BACKBONE)
    with Registry.open(db_url, store) as registry:
        weights_before = registry.load_weights()
        commit = make_commit(registry, "t2", seed=2)
        layer, index = _owned_by(commit, 1)
        original = commit.shared[WEIGHT_PREFIX + layer][index]
        flipped = np.nextafter(original, np.float32(np.inf), dtype=np.float32)
        commit.shared[WEIGHT_PREFIX + layer][index] = flipped
        _refused(registry, commit, "earlier-owned weights changed")
        commit.shared[WEIGHT_PREFIX + layer][index] = original
        assert registry.commit_task(commit).seq == 2
        after = registry.load_weights(registry.get_task("t1").model_version_id)
        for key, array in weights_before.items():
            assert after[key].tobytes() == array.tobytes(), key
        assert registry.verify() == []
