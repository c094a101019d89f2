"""Add-task as a Ray job against a real ``ray start --head``: ray job submit and strata submit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.addresses import cluster_auth_mode
from registry.db import upgrade
from registry.store import Registry
from tests.orchestrator.ray_head import RAY, RayHead

REPO = Path(__file__).resolve().parents[2]
TINY_ARGS = ["--width", "0.0625", "--epochs", "1", "--finetune-epochs", "1", "--limit", "160"]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    head = RayHead(tmp_path_factory.mktemp("rayhead"))
    head.start()
    yield head
    head.stop()


@pytest.fixture(scope="module")
def registry_args(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs-registry")
    db, store = f"sqlite:///{root}/registry.db", str(root / "blobs")
    upgrade(db)
    return db, store


def wait_for_job(head: RayHead, job_id: str) -> str:
    """Follow the job's logs until it ends (the CLI returns then), then read its status."""
    ray_job = [RAY, "job"]
    where = ["--address", head.jobs_address]
    follow = [*ray_job, "logs", *where, "--follow", job_id]
    subprocess.run(follow, capture_output=True, env=head.env(), timeout=600, check=False)
    status = subprocess.run(
        [*ray_job, "status", *where, job_id], capture_output=True, text=True, env=head.env()
    )
    return status.stdout + status.stderr


def test_ray_job_submit_then_strata_submit(head, registry_args):
    db, store = registry_args
    entry = [sys.executable, "-m", "orchestrator", "--db", db, "--store", store]
    submitted = subprocess.run(
        [RAY, "job", "submit", "--address", head.jobs_address, "--working-dir", str(REPO), "--",
         *entry, "add-task", "first", "--data", "builtin:mnist?classes=0-4", *TINY_ARGS],
        capture_output=True, text=True, env=head.env(), timeout=600, cwd=REPO,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]

    # strata submit follows the cluster's auth mode by itself: no RAY_AUTH_MODE given.
    assert cluster_auth_mode(head.jobs_address) == "token"
    client_env = {key: value for key, value in head.env().items() if key != "RAY_AUTH_MODE"}
    strata = str(Path(sys.executable).with_name("strata"))
    result = subprocess.run(
        [strata, "--address", head.jobs_address, "--db", db, "--store", store,
         "submit", "add-task", "second", "--data", "builtin:mnist?classes=5-9", *TINY_ARGS],
        capture_output=True, text=True, env=client_env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().splitlines()[-1]
    assert "SUCCEEDED" in wait_for_job(head, job_id).upper()

    with Registry.open(db, store) as registry:
        tasks = registry.list_tasks()
        assert [task.name for task in tasks] == ["first", "second"]
        assert tasks[1].reference_task == "first"
        assert all(job.state == "succeeded" for job in registry.list_jobs())
        assert registry.verify() == []
