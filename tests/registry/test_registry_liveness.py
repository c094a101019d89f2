"""Jobs that died are reported lost and stop blocking gc; short database outages are ridden out."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from registry_fakes import make_commit, snapshot
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, OperationalError

from registry import liveness
from registry.errors import JobStateError, RegistryError, RegistryUnavailable
from registry.garbage import StoreBusy, collect_garbage, find_garbage
from registry.liveness import Heartbeat, heartbeat_interval, lost_after
from registry.models import Job
from registry.retry import MAX_DELAY_S, retry_connection
from registry.store import Registry


def _silent_for(registry: Registry, job_id: str, seconds: float) -> None:
    """Pretend the job's last sign of life (created, started, heartbeat) is that old."""
    job = registry.get_job(job_id)
    with registry.engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                created_at=job.created_at - timedelta(seconds=seconds),
                started_at=job.started_at and job.started_at - timedelta(seconds=seconds),
                heartbeat_at=job.heartbeat_at and job.heartbeat_at - timedelta(seconds=seconds),
            )
        )


def test_a_silent_job_is_lost_and_a_beat_revives_it(registry: Registry) -> None:
    limit = registry.lost_after.total_seconds()
    assert limit == liveness.LOST_AFTER_BEATS * liveness.DEFAULT_HEARTBEAT_S
    job = registry.start_job(registry.create_job("t1").id)
    assert registry.get_job(job.id).state == "running"
    _silent_for(registry, job.id, limit - 5)
    assert registry.get_job(job.id).state == "running"
    _silent_for(registry, job.id, 10)
    assert registry.get_job(job.id).state == "lost"
    assert registry.get_job(job.id).to_dict()["state"] == "lost"
    assert [j.id for j in registry.list_jobs(state="lost")] == [job.id]
    assert registry.list_jobs(state="running") == []

    assert registry.heartbeat(job.id) is True  # stored state is still running
    assert registry.get_job(job.id).state == "running"
    assert registry.list_jobs(state="lost") == []
    assert registry.finish_job(job.id).state == "succeeded"


def test_a_queued_job_that_never_started_goes_lost_too(registry: Registry) -> None:
    queued = registry.create_job("t1")
    _silent_for(registry, queued.id, registry.lost_after.total_seconds() + 1)
    assert registry.get_job(queued.id).state == "lost"
    assert registry.finish_job(queued.id, error="driver gone").state == "failed"
    assert registry.get_job(queued.id).state == "failed"  # finished jobs are never lost


def test_lost_jobs_do_not_block_gc_and_live_ones_do(registry: Registry) -> None:
    registry.commit_task(make_commit(registry, "t1"))
    registry.blobs.put(b"left behind by a killed add-task", "bin")
    dead = registry.start_job(registry.create_job("t2").id)
    _silent_for(registry, dead.id, registry.lost_after.total_seconds() + 1)
    assert [item.key for item in collect_garbage(registry, 0, delete=True).old] != []
    assert find_garbage(registry, 0).orphans == []

    registry.blobs.put(b"being written by a live add-task", "bin")
    live = registry.start_job(registry.create_job("t3").id)
    with pytest.raises(StoreBusy, match=rf"{live.id}.*silent for 60 s"):
        collect_garbage(registry, 0, delete=True)
    assert len(find_garbage(registry, 0).orphans) == 1
    assert registry.verify() == []


def test_heartbeat_interval_is_configurable_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(liveness.HEARTBEAT_ENV, "2.5")
    assert heartbeat_interval() == 2.5 and lost_after() == timedelta(seconds=15)
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv(liveness.HEARTBEAT_ENV, bad)
        with pytest.raises(RegistryError, match=f"{liveness.HEARTBEAT_ENV} must be"):
            heartbeat_interval()


def test_heartbeat_thread_beats_and_survives_failures() -> None:
    beats: list[int] = []
    enough = threading.Event()

    def beat() -> None:
        beats.append(len(beats))
        if len(beats) == 1:
            raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))
        if len(beats) == 3:
            enough.set()

    with Heartbeat(beat, interval_s=0.01) as heartbeat:
        assert enough.wait(timeout=30), "the heartbeat stopped after a failed beat"
    assert not heartbeat._thread.is_alive()  # stopped (and joined) with the block


def test_heartbeats_keep_a_job_running(registry: Registry) -> None:
    job = registry.start_job(registry.create_job("t1").id)
    _silent_for(registry, job.id, registry.lost_after.total_seconds() + 1)
    assert registry.get_job(job.id).state == "lost"
    beaten = threading.Event()

    def beat() -> None:
        registry.heartbeat(job.id)
        beaten.set()

    with Heartbeat(beat, interval_s=0.01):
        assert beaten.wait(timeout=30)
    assert registry.get_job(job.id).state == "running"


# ---- bounded retries -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _lost_connection() -> OperationalError:
    return OperationalError(
        "COMMIT",
        {},
        Exception("server closed the connection unexpectedly"),
        connection_invalidated=True,
    )


def test_retry_rides_out_an_outage() -> None:
    clock = FakeClock()
    attempts: list[int] = []

    def attempt(number: int) -> str:
        attempts.append(number)
        if number < 3:
            raise _lost_connection()
        return "committed"

    result = retry_connection(attempt, lambda exc: True, sleep=clock.sleep, clock=clock)
    assert result == "committed" and attempts == [0, 1, 2, 3]
    assert clock.sleeps == sorted(clock.sleeps) and clock.sleeps[1] == 2 * clock.sleeps[0]


def test_retry_gives_up_after_its_budget() -> None:
    clock = FakeClock()
    attempts: list[int] = []

    def attempt(number: int) -> None:
        attempts.append(number)
        raise _lost_connection()

    with pytest.raises(OperationalError):
        retry_connection(attempt, lambda exc: True, budget_s=30, sleep=clock.sleep, clock=clock)
    assert 5 < len(attempts) < 30 and clock.now <= 30
    assert max(clock.sleeps) == MAX_DELAY_S


def test_retry_never_retries_other_errors() -> None:
    clock = FakeClock()
    for error in (
        IntegrityError("INSERT", {}, Exception("duplicate key")),
        OperationalError("SELECT", {}, Exception("no such table: jobs")),
    ):
        attempts: list[int] = []

        def attempt(number: int, error: Exception = error, attempts: list[int] = attempts) -> None:
            attempts.append(number)
            raise error

        with pytest.raises(type(error)):
            retry_connection(
                attempt, lambda exc: exc.connection_invalidated, sleep=clock.sleep, clock=clock
            )
        assert attempts == [0]
    assert clock.sleeps == []


def _fail_once(monkeypatch: pytest.MonkeyPatch, registry: Registry, method: str, after: bool):
    """Make ``registry.<method>`` lose its connection once, before or after doing its work."""
    real = getattr(registry, method)
    calls: list[int] = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1 and not after:
            raise _lost_connection()
        result = real(*args, **kwargs)
        if len(calls) == 1:
            raise _lost_connection()  # it went through, but the reply was lost
        return result

    monkeypatch.setattr(registry, method, flaky)
    monkeypatch.setattr("registry.retry.FIRST_DELAY_S", 0.001)
    return calls


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_commit_survives_a_lost_connection(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    """Lost before the transaction: redone; lost after it committed: found, not redone
    (which would fail with TaskExists)."""
    registry.commit_task(make_commit(registry, "t1"))
    calls = _fail_once(monkeypatch, registry, "_commit_once", after)
    row = registry.commit_task(make_commit(registry, "t2", seed=2))
    assert row.seq == 2 and len(calls) == 2
    assert [t.name for t in registry.list_tasks()] == ["t1", "t2"]
    assert registry.verify() == []


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_finish_job_survives_a_lost_connection(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    job = registry.start_job(registry.create_job("t1").id)
    calls = _fail_once(monkeypatch, registry, "_transition", after)
    assert registry.finish_job(job.id).state == "succeeded" and len(calls) == 2
    monkeypatch.undo()
    with pytest.raises(JobStateError, match="it is succeeded"):
        registry.finish_job(job.id)  # a real second finish is still refused


def test_commit_gives_up_with_one_clear_line(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args, **kwargs):
        raise _lost_connection()

    monkeypatch.setattr(registry, "_claim_head", down)
    monkeypatch.setattr(registry, "retry_s", 0.05)
    monkeypatch.setattr("registry.retry.FIRST_DELAY_S", 0.01)
    before = snapshot(registry.engine)
    with pytest.raises(RegistryUnavailable, match="cannot open the registry at .*server closed"):
        registry.commit_task(make_commit(registry, "t1"))
    assert snapshot(registry.engine) == before
