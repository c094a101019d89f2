"""The training Ray task: learn one task where Ray put it, on the device Ray assigned.

It asks for a GPU only when the cluster has one; inside, the device follows the GPU ids Ray
actually granted, so the same code runs on a CPU laptop and a GPU worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import ray
import torch

from base.errors import StrataError
from registry.liveness import tolerant
from registry.store import Registry
from workers.method import TaskOutcome, learn_task
from workers.network import PrivateParams, SharedNetwork, TaskView
from workers.summary import summarize_task
from workers.training import EpochReport, TrainConfig


@dataclass(frozen=True)
class JobHeartbeat:
    """Where the training task records per-epoch progress: the job's row.

    Liveness is the driver's (``orchestrator.pipeline`` beats for the whole job); a failed
    progress write (a short database outage) is logged, never fatal to the training.
    """

    db_url: str
    store_uri: str
    job_id: str

    @contextmanager
    def reporting(self) -> Iterator[Callable[[EpochReport], None]]:
        """The per-epoch progress reporter, on a registry open while the block runs."""
        where = {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}
        with Registry.open(self.db_url, self.store_uri) as registry:
            beat = tolerant(registry.heartbeat)

            def report(epoch: EpochReport) -> None:
                beat(self.job_id, {**asdict(epoch), **where})

            yield report


@dataclass
class TrainedTask:
    outcome: TaskOutcome
    summary: dict[str, np.ndarray]
    device: str
    node: str


def assigned_device() -> str:
    """``cuda`` if Ray granted this task a GPU (and torch sees one), else ``cpu``."""
    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def worker_resource() -> str:
    """What each worker takes: a GPU when the cluster has any, else a CPU."""
    return "GPU" if ray.cluster_resources().get("GPU", 0) >= 1 else "CPU"


def check_placement(workers: int) -> None:
    """Refuse more data-parallel workers (``workers.distributed_training``) than the cluster
    has of the resource each one needs. One worker is the plain training task, which waits
    for an autoscaler to add a node as it always did."""
    if workers == 1:
        return
    resource = worker_resource()
    available = int(ray.cluster_resources().get(resource, 0))
    if workers > available:
        raise StrataError(
            f"--workers {workers} needs {workers} {resource}s; the cluster has {available}"
        )


def gpu_request() -> float:
    """One GPU per training task when the cluster advertises any, otherwise none."""
    return 1.0 if worker_resource() == "GPU" else 0.0


@ray.remote(max_retries=1)
def train_task(
    network: SharedNetwork,
    data,
    rates: dict[str, float],
    config: TrainConfig,
    base_private: PrivateParams | None,
    job: JobHeartbeat | None = None,
    *,
    keep_head: bool = False,
) -> TrainedTask:
    """Learn the task, then summarise its training data in its own feature space."""
    device = assigned_device()
    outcome = learn_reporting(
        network, data, rates, config, base_private, job, keep_head=keep_head, device=device
    )
    return trained_task(outcome, data, device)


def learn_reporting(
    network: SharedNetwork,
    data,
    rates: dict[str, float],
    config: TrainConfig,
    base_private: PrivateParams | None,
    job: JobHeartbeat | None,
    *,
    keep_head: bool,
    device: str,
) -> TaskOutcome:
    """``learn_task``, reporting its progress to the job's heartbeat when there is one."""
    with job.reporting() if job is not None else nullcontext(None) as progress:
        return learn_task(
            network,
            data,
            rates,
            config,
            base_private=base_private,
            keep_head=keep_head,
            device=device,
            progress=progress,
        )


def trained_task(outcome: TaskOutcome, data, device: str) -> TrainedTask:
    """The outcome with its training data's summary in its own feature space, where it ran."""
    view = TaskView(outcome.network, outcome.seq, outcome.private)
    node = ray.get_runtime_context().get_node_id()
    return TrainedTask(outcome, summarize_task(view, data.x_train), device, node)
