"""The scale-out path on one machine, run by test_e2e_cluster in its own process.

A two-node ``ray.cluster_utils.Cluster`` (the head with 2 CPUs; a node with 1 CPU and a fake
GPU), the registry on the real PostgreSQL (a fresh schema), blobs in S3 (a moto server on
loopback): three tasks are added, two are served over HTTP through Serve's HAProxy ingress, as
a cluster started with ``RAY_SERVE_ENABLE_HA_PROXY=1`` and the ``strata-haproxy`` wrapper serves
them (docs/serving.md), and the registry verifies.
Prints one JSON report, which also says where training and similarity tasks ran (one cluster
start serves both the deployment and the placement checks).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import boto3
import httpx
import psutil
import ray
from moto.server import ThreadedMotoServer
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.state import list_tasks
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from base.location import RegistryLocation
from orchestrator.haproxy_loopback import BINARY_ENV
from orchestrator.pipeline import AddTaskOptions, add_task
from orchestrator.ray_runtime import HAPROXY_ENV, private_directory, private_haproxy_files
from registry.db import upgrade
from registry.store import Registry
from tests.haproxy_sockets import haproxy_processes, listening_addresses
from tests.synthetic import synthetic_task
from workers.serving import ServeOptions, run_app

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TINY = {"width": 1 / 16, "epochs": 1, "finetune_epochs": 0, "limit": 160, "batch_size": 32}
TASKS = [
    ("zero-four", "builtin:mnist?classes=0-4"),
    ("five-nine", "builtin:mnist?classes=5-9"),
    ("digits", "builtin:digits?classes=0-4"),
]


def start_s3() -> tuple[ThreadedMotoServer, str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({  # inherited by every Ray node started below
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "STRATA_S3_ENDPOINT": endpoint,
        "NO_PROXY": "127.0.0.1",
    })  # fmt: skip
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="strata")
    return server, endpoint


def finished_task_nodes(name: str, expected: int, timeout_s: float = 60.0) -> list[str]:
    """Nodes of the finished Ray tasks called ``name``.

    Ray's state API sees task events only after workers flush them (about once a second),
    so it is polled until ``expected`` tasks show up or the deadline passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = list_tasks(filters=[("name", "=", name), ("state", "=", "FINISHED")], detail=True)
        if len(tasks) >= expected or time.monotonic() > deadline:
            return [task.node_id for task in tasks]
        time.sleep(0.5)


def main(http_port: int, dashboard_port: int) -> None:
    s3, _ = start_s3()
    schema = f"strata_e2e_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    db_url = (
        make_url(PG_URL)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    location = RegistryLocation.resolve(db_url, "s3://strata/blobs")
    # The cluster's settings as docs/serving.md gives them: every node inherits them.
    os.environ.update(HAPROXY_ENV)
    os.environ[BINARY_ENV] = str(Path(sys.executable).with_name("strata-haproxy"))
    private_haproxy_files(private_directory())
    head_args = {"num_cpus": 2, "include_dashboard": True, "dashboard_port": dashboard_port}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        upgrade(location.db_url)
        for name, spec in TASKS:
            add_task(location, AddTaskOptions(name=name, data=spec, **TINY))
        url = run_app(location, ServeOptions(port=http_port, max_replicas=1), blocking=False)
        inputs = synthetic_task(5).x_val[:4, 0].tolist()
        answers = {
            name: httpx.post(f"{url}/predict/{name}", json={"inputs": inputs}, timeout=60)
            for name in ("zero-four", "digits", "no-such-task")
        }
        with Registry.open(location.db_url, location.store_uri) as registry:
            tasks = registry.list_tasks()
            report = {
                "tasks": [task.name for task in tasks],
                "blob_uris": [task.mask.uri for task in tasks] + [t.private.uri for t in tasks],
                "nodes": len([node for node in ray.nodes() if node["Alive"]]),
                "gpu_node": gpu_node.node_id,
                "training_nodes": [task.extra["node"] for task in tasks],
                "devices": [task.extra["device"] for task in tasks],
                "similarity_nodes": finished_task_nodes("_candidate_jsd_task", expected=3),
                "haproxy_processes": len(haproxy_processes(psutil.Process())),
                "haproxy_other_listeners": haproxy_listeners(except_port=http_port),
                "status": {name: answer.status_code for name, answer in answers.items()},
                "served": {
                    name: answer.json().get("task") for name, answer in answers.items()
                    if answer.status_code == 200
                },
                "predictions": {
                    name: len(answer.json()["predictions"]) for name, answer in answers.items()
                    if answer.status_code == 200
                },
                "verify": registry.verify(),
            }  # fmt: skip
        print("E2E-REPORT " + json.dumps(report), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        s3.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def haproxy_listeners(except_port: int) -> list[str]:
    """``ip:port`` of every socket the cluster's HAProxy listens on, but ``except_port``."""
    cluster = haproxy_processes(psutil.Process())  # this process's descendants
    listening = listening_addresses(cluster)
    return sorted(f"{ip}:{port}" for ip, port in listening if port != except_port)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
