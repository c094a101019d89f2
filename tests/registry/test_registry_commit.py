"""The commit protocol: round trip, compare-and-swap, and all-or-nothing under failures."""

import contextlib
import json
import multiprocessing
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from registry_fakes import crash_commit, make_commit, race_commit, snapshot
from sqlalchemy import event
from sqlalchemy.orm import Session

from registry import models
from registry.errors import HeadMoved, TaskExists, TaskNotFound
from registry.ownership import OWNER_PREFIX
from registry.store import Registry


class Boom(Exception):
    """Injected failure."""


def _assert_arrays_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(actual) == list(expected) or set(actual) == set(expected)
    for name, array in expected.items():
        assert actual[name].dtype == np.asarray(array).dtype, name
        assert np.array_equal(actual[name], array), name


def test_full_commit_round_trips(registry: Registry) -> None:
    assert registry.head() is None and registry.list_tasks() == []
    assert registry.capacity() == {
        "layers": [],
        "free_fraction": 1.0,
        "dense_bytes": 0,
        "stored_bytes": 0,
        "tasks": [],
    }

    first = make_commit(registry, "t1", seed=1)
    row1 = registry.commit_task(first)
    second = make_commit(registry, "t2", seed=2)
    row2 = registry.commit_task(second)

    assert (row1.seq, row2.seq) == (1, 2)
    head = registry.head()
    assert head is not None and head.is_head and head.id == row2.model_version_id
    assert head.parent_id == row1.model_version_id
    assert registry.get_task("t2") == row2
    assert [t.name for t in registry.list_tasks()] == ["t1", "t2"]
    assert registry.task_exists("t1") and not registry.task_exists("nope")

    assert row2.reference_task == "t1" and row2.reference_jsd == 0.25
    assert row2.kept == "finetuned" and row2.status == "committed"
    assert row2.backbone == second.backbone and row2.extra == second.extra
    assert row2.mask.numel == 143 and row2.mask.size_bytes == 18  # ceil(143 / 8)
    assert row2.created_at.tzinfo is not None

    _assert_arrays_equal(registry.load_mask("t2"), second.mask)
    assert list(registry.load_mask("t2")) == ["conv1", "fc"]  # layer order is kept
    _assert_arrays_equal(registry.load_private("t2"), second.private)
    _assert_arrays_equal(registry.load_weights(), second.shared)
    _assert_arrays_equal(registry.load_weights(row1.model_version_id), first.shared)
    _assert_arrays_equal(registry.load_summary("t1"), first.summary)
    assert set(registry.load_summaries()) == {"t1", "t2"}
    assert registry.task_layers("t2") == second.layers
    assert [(s.task, s.jsd, s.method) for s in registry.similarities("t2")] == [
        ("t1", 0.25, "jsd-hist")
    ]
    assert registry.similarities("t1") == []

    capacity = registry.capacity()
    owners = {n: second.shared[OWNER_PREFIX + n] for n in second.mask}
    assert capacity["layers"] == [
        {"name": n, "numel": o.size, "free": int((o == 0).sum()), "owned": int((o > 0).sum())}
        for n, o in owners.items()
    ]
    free = sum(int((o == 0).sum()) for o in owners.values())
    assert capacity["free_fraction"] == pytest.approx(free / 143)
    assert capacity["dense_bytes"] == 143 * 4
    stored = capacity["tasks"]
    assert [(t["name"], t["seq"]) for t in stored] == [("t1", 1), ("t2", 2)]
    assert [t["mask"] for t in stored] == [18, 18]  # 1 bit per weight per task
    assert capacity["stored_bytes"] == sum(t["mask"] + t["values"] + t["private"] for t in stored)

    listed = json.loads(json.dumps([t.to_dict() for t in registry.list_tasks()]))
    required = {"name", "seq", "status", "rate", "val_accuracy", "reference_task", "reference_jsd"}
    assert required <= set(listed[0])
    assert set(listed[1]["mask"]) == {"sha256", "uri", "numel", "bytes"}
    assert registry.verify() == []


def test_unknown_task(registry: Registry) -> None:
    for read in (registry.get_task, registry.task_layers, registry.load_mask):
        with pytest.raises(TaskNotFound, match="nope"):
            read("nope")


def test_second_commit_from_the_same_head_loses_and_stores_nothing(registry: Registry) -> None:
    registry.commit_task(make_commit(registry, "t1"))
    winner = make_commit(registry, "a", seed=1)
    loser = make_commit(registry, "b", seed=2)
    registry.commit_task(winner)
    before = snapshot(registry.engine)
    with pytest.raises(HeadMoved, match=r"moved from version 1 to version 2 .*re-run the job"):
        registry.commit_task(loser)
    assert snapshot(registry.engine) == before
    assert registry.verify() == []
    # The re-run (built on the new head) goes through.
    assert registry.commit_task(make_commit(registry, "b", seed=2)).seq == 3


def test_two_first_tasks(registry: Registry) -> None:
    first, rival = make_commit(registry, "a"), make_commit(registry, "b", seed=1)
    registry.commit_task(first)
    before = snapshot(registry.engine)
    with pytest.raises(HeadMoved, match="moved from empty to version 1"):
        registry.commit_task(rival)
    assert snapshot(registry.engine) == before


def test_duplicate_name(registry: Registry) -> None:
    registry.commit_task(make_commit(registry, "t1"))
    before = snapshot(registry.engine)
    with pytest.raises(TaskExists, match="'t1' already exists"):
        registry.commit_task(make_commit(registry, "t1", seed=3))
    assert snapshot(registry.engine) == before


def test_inconsistent_commits_are_rejected(registry: Registry) -> None:
    registry.commit_task(make_commit(registry, "t1"))
    before = snapshot(registry.engine)

    bad_mask = make_commit(registry, "t2")
    bad_mask.mask["fc"] = ~bad_mask.mask["fc"]
    with pytest.raises(ValueError, match="mask disagrees with the owner map"):
        registry.commit_task(bad_mask)

    future_owner = make_commit(registry, "t2")  # claims weights for a task seq 9 (checked in tx)
    owners = future_owner.shared[OWNER_PREFIX + "fc"]
    owners[owners == 2] = 9
    with pytest.raises(ValueError, match=r"owner ids outside \[0, 2\]"):
        registry.commit_task(future_owner)
    assert snapshot(registry.engine) == before


# ---- failure injection: every step of the protocol ----------------------------------------


def _raise(*_args: object, **_kwargs: object) -> None:
    raise Boom


MAPPED = [
    models.Blob,
    models.ModelVersion,
    models.Task,
    models.TaskLayer,
    models.Summary,
    models.Similarity,
]
EVENTS: dict[str, tuple[object, str]] = {
    f"{name}-{cls.__name__}": (cls, name)
    for cls in MAPPED
    for name in ("before_insert", "after_insert")
}
EVENTS |= {
    f"{name}-ModelVersion": (models.ModelVersion, name)
    for name in ("before_update", "after_update")
}
EVENTS["before_commit-Session"] = (Session, "before_commit")
STEPS = ["after-blobs", "after-head-check", *EVENTS, "engine-commit"]


@contextlib.contextmanager
def injected(where: str, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make step ``where`` of a commit raise Boom."""
    methods = {"after-blobs": "_claim_head", "after-head-check": "_insert"}
    target, name = EVENTS.get(where, (registry.engine, "commit"))
    if where in methods:
        monkeypatch.setattr(Registry, methods[where], _raise)
    else:
        event.listen(target, name, _raise)
    try:
        yield
    finally:
        monkeypatch.undo()
        if event.contains(target, name, _raise):
            event.remove(target, name, _raise)


@pytest.mark.parametrize("where", STEPS)
def test_failure_at_any_step_leaves_the_registry_unchanged(
    registry: Registry, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.commit_task(make_commit(registry, "t1"))  # so the commit also unsets a head
    commit = make_commit(registry, "t2", seed=5)
    before = snapshot(registry.engine)
    with injected(where, registry, monkeypatch), pytest.raises(Boom):
        registry.commit_task(commit)
    assert snapshot(registry.engine) == before
    assert registry.verify() == []
    # Nothing of the failed attempt (rows, locks) blocks the retry.
    assert registry.commit_task(commit).seq == 2


# ---- real concurrency ------------------------------------------------------------------


def test_concurrent_commits_in_threads(registry: Registry) -> None:
    """Hold the winner inside its transaction while the rival tries; the rival must lose.

    On PostgreSQL the rival of a first task has no head row to lock and is stopped by the
    one-head unique index; on SQLite it waits for the writer lock (BEGIN IMMEDIATE).
    """
    first, rival = make_commit(registry, "a"), make_commit(registry, "b", seed=1)
    inside, release = threading.Event(), threading.Event()

    def hold(_session: Session) -> None:
        if threading.current_thread().name == "winner":
            inside.set()
            release.wait(10)

    outcomes: dict[str, str] = {}

    def run(commit) -> None:  # type: ignore[no-untyped-def]
        try:
            registry.commit_task(commit)
            outcomes[commit.name] = "committed"
        except HeadMoved:
            outcomes[commit.name] = "head moved"

    event.listen(Session, "before_commit", hold)
    try:
        winner = threading.Thread(target=run, args=(first,), name="winner")
        winner.start()
        assert inside.wait(10)
        loser = threading.Thread(target=run, args=(rival,), name="loser")
        loser.start()
        time.sleep(0.5)  # let the rival block on the lock / index
        release.set()
        winner.join(20)
        loser.join(20)
    finally:
        event.remove(Session, "before_commit", hold)
    assert outcomes == {"a": "committed", "b": "head moved"}
    assert [t.name for t in registry.list_tasks()] == ["a"]
    assert registry.verify() == []


def test_concurrent_commits_in_processes(registry: Registry, db_url: str, store_uri: str) -> None:
    registry.commit_task(make_commit(registry, "t1"))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=race_commit, args=(db_url, store_uri, name, barrier, results))
        for name in ("p1", "p2")
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    outcomes = dict(results.get(timeout=5) for _ in procs)
    committed = [name for name, outcome in outcomes.items() if outcome == "committed"]
    assert len(committed) == 1, outcomes
    loser = ({"p1", "p2"} - set(committed)).pop()
    assert outcomes[loser].startswith("HeadMoved: registry head moved from version 1 to version 2")
    assert [t.name for t in registry.list_tasks()] == ["t1", committed[0]]
    assert registry.verify() == []


def test_process_killed_mid_commit_leaves_registry_unchanged(
    registry: Registry, db_url: str, store_uri: str
) -> None:
    registry.commit_task(make_commit(registry, "t1"))
    before = snapshot(registry.engine)
    proc = multiprocessing.get_context("spawn").Process(
        target=crash_commit, args=(db_url, store_uri, "t2")
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 17
    assert snapshot(registry.engine) == before
    assert registry.commit_task(make_commit(registry, "t2")).seq == 2  # no lock left behind
    assert registry.verify() == []
