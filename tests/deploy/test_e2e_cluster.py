"""End to end on one machine: two Ray nodes, PostgreSQL registry, S3 blobs, HTTP serving;
training lands on the GPU node and similarity fans out on the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.orchestrator.ray_head import free_port

REPO = Path(__file__).resolve().parents[2]


def test_three_tasks_two_served_on_postgres_and_s3():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # Cluster() provisions no auth token
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.deploy.e2e_run", str(free_port()), str(free_port())],
        capture_output=True, text=True, timeout=900, env=env, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("E2E-REPORT "))
    report = json.loads(line.removeprefix("E2E-REPORT "))
    assert report["tasks"] == ["zero-four", "five-nine", "digits"]
    assert report["nodes"] == 2
    assert report["training_nodes"] == [report["gpu_node"]] * 3
    assert report["devices"] == ["cpu"] * 3  # a fake GPU: torch sees no CUDA, so CPU it is
    # Tasks 2 and 3 compare with 1 and 2 candidates: 3 similarity Ray tasks on the cluster.
    # (They are submitted with SPREAD, but Ray keeps CPU-only work off GPU nodes when it
    # can, so which node each lands on is Ray's call and is not asserted.)
    assert len(report["similarity_nodes"]) == 3
    assert report["haproxy_processes"] >= 1  # HTTP came in through HAProxy, not the proxy
    # strata-haproxy put the stats page and metrics exporter on loopback only.
    listeners = report["haproxy_other_listeners"]
    assert listeners and all(address.startswith("127.0.0.1:") for address in listeners), listeners
    # Worker nodes reach blobs only through the store URL: every blob lives in the bucket.
    assert all(uri.startswith("s3://strata/blobs/") for uri in report["blob_uris"])
    assert report["status"] == {"zero-four": 200, "digits": 200, "no-such-task": 404}
    assert report["served"] == {"zero-four": "zero-four", "digits": "digits"}
    assert report["predictions"] == {"zero-four": 4, "digits": 4}
    assert report["verify"] == []
