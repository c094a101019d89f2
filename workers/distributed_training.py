"""One task on many workers: Ray Train's ``TorchTrainer`` runs ``learn_task`` on each.

Every worker builds the same model from the same seed and runs the whole method (train,
initialize, fine-tune, choose); ``workers.training`` sees the process group Ray Train set
up (gloo on CPU, nccl on GPU), reads its own slice of each batch and masks the gradients
after DDP's all-reduce, so all workers hold the same weights and make the same choices.
Rank 0 reports progress and hands its ``TrainedTask`` back through a small actor; the
pipeline then commits it exactly like a single-worker run.
"""

from __future__ import annotations

import tempfile

import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, get_device

from workers.network import PrivateParams, SharedNetwork
from workers.training import TrainConfig
from workers.training_ray import (
    JobHeartbeat,
    TrainedTask,
    learn_reporting,
    trained_task,
    worker_resource,
)


@ray.remote(num_cpus=0)
class _Outbox:
    """Holds rank 0's result until the driver of the trainer collects it."""

    def __init__(self) -> None:
        self.item: TrainedTask | None = None

    def put(self, item: TrainedTask) -> None:
        self.item = item

    def take(self) -> TrainedTask | None:
        return self.item


def _per_worker(config: dict) -> None:
    network, data, rates, train, base_private, job, keep_head = ray.get(config["inputs"])
    rank = ray.train.get_context().get_world_rank()
    device = str(get_device())
    outcome = learn_reporting(  # rank 0 alone reports progress
        network,
        data,
        rates,
        train,
        base_private,
        job if rank == 0 else None,
        keep_head=keep_head,
        device=device,
    )
    if rank == 0:
        ray.get(config["outbox"].put.remote(trained_task(outcome, data, device)))


@ray.remote(num_cpus=0, max_retries=0)
def train_task_on_workers(
    workers: int,
    network: SharedNetwork,
    data,
    rates: dict[str, float],
    config: TrainConfig,
    base_private: PrivateParams | None,
    job: JobHeartbeat | None = None,
    *,
    keep_head: bool = False,
) -> TrainedTask:
    """``workers.training_ray.train_task`` on ``workers`` data-parallel workers (this task only
    coordinates: it takes no CPU of its own)."""
    outbox = _Outbox.remote()
    inputs = ray.put((network, data, rates, config, base_private, job, keep_head))
    with tempfile.TemporaryDirectory(prefix="strata-train-") as storage:
        trainer = TorchTrainer(
            _per_worker,
            train_loop_config={"inputs": inputs, "outbox": outbox},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=worker_resource() == "GPU"),
            run_config=RunConfig(storage_path=storage, name="task"),
        )
        trainer.fit()
    trained = ray.get(outbox.take.remote())
    ray.kill(outbox)
    if trained is None:
        raise RuntimeError("distributed training ended without rank 0's outcome")
    return trained
