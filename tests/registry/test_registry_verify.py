from pathlib import Path

import numpy as np
import pytest
import registry_fakes
from registry_fakes import LAYER_SHAPES, make_commit
from sqlalchemy import select, update

from registry import versions as registry_versions
from registry.codecs import pack_mask, unpack_mask
from registry.deltas import Delta, Materialised, decode_values, encode_values
from registry.errors import BlobCorrupted
from registry.models import Blob, ModelVersion, Task, TaskLayer
from registry.records import VersionRow
from registry.store import Registry


@pytest.fixture
def three_tasks(registry: Registry) -> Registry:
    for seq, name in enumerate(["t1", "t2", "t3"], start=1):
        registry.commit_task(make_commit(registry, name, seed=seq))
    assert registry.verify() == []
    return registry


def _file(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _repoint(registry: Registry, blob_id: int, data: bytes, suffix: str, **fields: object) -> None:
    """Tamper: store new bytes and point an existing blob row at them."""
    ref = registry.blobs.put(data, suffix)
    with registry.engine.begin() as conn:
        conn.execute(
            update(Blob)
            .where(Blob.id == blob_id)
            .values(sha256=ref.sha256, uri=ref.uri, size_bytes=ref.size, **fields)
        )


def test_empty_registry_is_sound(registry: Registry) -> None:
    assert registry.verify() == []


def test_deleted_blob(three_tasks: Registry) -> None:
    private = three_tasks.get_task("t2").private
    _file(private.uri).unlink()
    problems = three_tasks.verify()
    assert len(problems) == 1
    assert "task t2 (seq 2)" in problems[0] and "missing" in problems[0]


def test_corrupted_blob(three_tasks: Registry) -> None:
    mask = three_tasks.get_task("t1").mask
    path = _file(mask.uri)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = three_tasks.verify()
    assert any("task t1 (seq 1)" in p and "corrupted" in p for p in problems)


def _tamper_delta(registry: Registry, task: str, layer: str, index: int, value: float) -> None:
    """Point ``task``'s delta at a mask that also takes flat ``index`` of ``layer``, with
    ``value`` at its place in the values (or that drops it, if it took it)."""
    row = registry.get_task(task)
    with registry.engine.connect() as conn:
        meta = conn.scalar(select(Blob.meta).where(Blob.id == row.mask.id))
    taken = unpack_mask(registry.read_blob(row.mask), meta)
    version = registry._version(VersionRow.query().where(ModelVersion.id == row.model_version_id))
    values = decode_values(registry.read_blob(version.weights), list(taken))
    flat = taken[layer].ravel()
    place = int(np.count_nonzero(flat[:index]))
    if flat[index]:
        values[layer] = np.delete(values[layer], place)
    else:
        values[layer] = np.insert(values[layer], place, np.float32(value))
    flat[index] = not flat[index]
    data, meta = pack_mask(taken)
    _repoint(registry, row.mask.id, data, "mask", meta=meta)
    _repoint(registry, version.weights.id, encode_values(values), "safetensors")


def test_delta_takes_an_earlier_tasks_weight(three_tasks: Registry) -> None:
    """t3's delta hands t3 a weight that t1 owns: the double allocation CAS prevents."""
    owners = three_tasks.load_version(three_tasks.get_task("t1").model_version_id).owners
    owned_by_t1 = int(np.flatnonzero(owners["conv1"] == 1)[0])
    _tamper_delta(three_tasks, "t3", "conv1", owned_by_t1, 123.0)
    problems = three_tasks.verify()
    assert any("task t3" in p and "1 new weights were already owned" in p for p in problems)
    assert any("task t3" in p and "earlier-owned weights changed" in p for p in problems)
    with pytest.raises(BlobCorrupted, match=r"task 't3' \(seq 3\) does not fit.*already owned"):
        three_tasks.load_weights()


def test_delta_values_must_match_its_mask(three_tasks: Registry) -> None:
    """A mask that takes one weight more than the values blob holds is refused, per layer."""
    row = three_tasks.get_task("t2")
    with three_tasks.engine.connect() as conn:
        meta = conn.scalar(select(Blob.meta).where(Blob.id == row.mask.id))
    taken = unpack_mask(three_tasks.read_blob(row.mask), meta)
    taken["fc"].ravel()[np.flatnonzero(~taken["fc"].ravel())[0]] = True
    data, meta = pack_mask(taken)
    _repoint(three_tasks, row.mask.id, data, "mask", meta=meta)
    problems = three_tasks.verify()
    assert any("task t2" in p and "layer fc" in p and "values for" in p for p in problems)
    assert any("task t2" in p and "layer fc: owned" in p for p in problems), problems


def test_new_weights_are_counted_exactly(three_tasks: Registry) -> None:
    with three_tasks.engine.begin() as conn:
        conn.execute(
            update(TaskLayer)
            .where(TaskLayer.task_id == select(Task.id).where(Task.name == "t2").scalar_subquery())
            .where(TaskLayer.name == "conv1")
            .values(owned=TaskLayer.owned + 1)
        )
    assert any("task t2" in p and "layer conv1: owned" in p for p in three_tasks.verify())


def test_recorded_capacity_must_match(three_tasks: Registry) -> None:
    weights_blob = three_tasks.head().weights  # type: ignore[union-attr]
    with three_tasks.engine.begin() as conn:
        meta = conn.scalar(select(Blob.meta).where(Blob.id == weights_blob.id))
        meta["layers"][0]["free"] += 1
        conn.execute(update(Blob).where(Blob.id == weights_blob.id).values(meta=meta))
    assert any("recorded capacity" in p for p in three_tasks.verify())


def test_versions_load_alike_in_chunks(three_tasks: Registry, monkeypatch) -> None:
    """Deltas scattered in chunks of 24 weights (straddling layers, on several threads) give
    every version bit for bit as one chunk a delta does."""
    versions = [three_tasks.get_task(name).model_version_id for name in ("t1", "t2", "t3")]
    whole = {version: three_tasks.load_weights(version) for version in versions}
    monkeypatch.setattr(registry_versions, "CHUNK_BYTES", 3)
    for version, expected in whole.items():
        chunked = three_tasks.load_weights(version)
        assert {n: a.tobytes() for n, a in chunked.items()} == {
            n: a.tobytes() for n, a in expected.items()
        }


@pytest.mark.parametrize("chunk_bytes", [registry_versions.CHUNK_BYTES, 3])
@pytest.mark.parametrize("layer_order", [["conv1", "fc"], ["fc", "conv1"]])
def test_versions_load_as_their_deltas_applied_one_by_one(
    registry: Registry, monkeypatch, layer_order: list[str], chunk_bytes: int
) -> None:
    """The replica's load (values viewed in the blob when its layers lie in network order,
    copied when not; scattered whole or in chunks on threads) gives every version bit for
    bit as applying each delta's unpacked mask and values in seq order does."""
    monkeypatch.setattr(registry_fakes, "LAYER_SHAPES", {n: LAYER_SHAPES[n] for n in layer_order})
    monkeypatch.setattr(registry_versions, "CHUNK_BYTES", chunk_bytes)
    names = ["t1", "t2", "t3", "t4"]
    for seq, name in enumerate(names, start=1):
        registry.commit_task(make_commit(registry, name, seed=seq))
    state = None
    for name in names:
        task = registry.get_task(name)
        with registry.engine.connect() as conn:
            meta = conn.scalar(select(Blob.meta).where(Blob.id == task.mask.id))
        taken = unpack_mask(registry.read_blob(task.mask), meta)
        assert list(taken) == layer_order
        version = registry._version(
            VersionRow.query().where(ModelVersion.id == task.model_version_id)
        )
        values = decode_values(registry.read_blob(version.weights), list(taken))
        shapes = {layer: mask.shape for layer, mask in taken.items()}
        state = state.copy() if state else Materialised.empty(shapes, len(names))
        assert state.apply(Delta(taken, values), task.seq) == []
        loaded = registry.load_version(task.model_version_id)
        for layer in layer_order:
            assert loaded.weights[layer].tobytes() == state.weights[layer].tobytes()
            assert np.array_equal(loaded.owners[layer], state.owners[layer])


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        (["not", "an", "object"], r"is unusable: .*layout meta is unreadable"),
        ({"numel": 143}, r"is unusable: .*layout meta is unreadable"),
        (
            {"numel": 143, "layers": [["fc", [5, 7]], ["conv1", [4, 3, 3, 3]]]},
            r"does not fit the network: delta layers",
        ),
    ],
)
def test_a_delta_whose_layout_meta_differs_is_refused(
    three_tasks: Registry, meta: object, problem: str
) -> None:
    mask = three_tasks.get_task("t2").mask
    with three_tasks.engine.begin() as conn:
        conn.execute(update(Blob).where(Blob.id == mask.id).values(meta=meta))
    with pytest.raises(BlobCorrupted, match=rf"task 't2' \(seq 2\) {problem}"):
        three_tasks.load_weights()


def test_a_value_moved_to_another_layer_is_refused(three_tasks: Registry) -> None:
    """One of t2's conv1 values moved to the end of its fc values: the counts still add up
    to its mask's, but its values no longer fall in their layers."""
    row = three_tasks.get_task("t2")
    weights = three_tasks._version(
        VersionRow.query().where(ModelVersion.id == row.model_version_id)
    ).weights
    values = decode_values(three_tasks.read_blob(weights), ["conv1", "fc"])
    values = {"conv1": values["conv1"][:-1], "fc": np.append(values["fc"], values["conv1"][-1])}
    _repoint(three_tasks, weights.id, encode_values(values), "safetensors")
    with pytest.raises(BlobCorrupted, match=r"task 't2' \(seq 2\) does not fit.*layer conv1"):
        three_tasks.load_weights()


def test_the_first_damaged_delta_is_named(three_tasks: Registry) -> None:
    for name in ("t3", "t2"):
        path = _file(three_tasks.get_task(name).mask.uri)
        path.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))
    with pytest.raises(BlobCorrupted, match=r"task 't2' \(seq 2\) is unusable.*corrupted"):
        three_tasks.load_weights()
