"""Avalanche's PackNet (``avalanche-lib``, the optional ``bench`` extra) as a peer on the
stream of ``benchmarks/continual.py``: same tasks, samples, epochs, batch size, learning rate
and backbone (the BN-free VGG16 layout: Avalanche's ``PackNetModel`` refuses BatchNorm).

What is Avalanche's own and kept as it is: ``PackNetModel`` wraps every Conv2d / Linear
(the head too: one shared 10-way head, pruned like the rest; a task scores on its first
``num_classes`` outputs), the ``PackNet`` strategy trains ``epochs + finetune_epochs``
epochs with one Adam learning rate, prunes ``rate`` of the task's weights by magnitude at
epoch ``epochs`` and fine-tunes the rest, and freezes biases after the first task. Nothing
of Strata's (validation choice, private biases, reference tasks) is used.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from workers.backbone import BackboneConfig, build_backbone, prunable_layers
from workers.data import TaskData


def _tensor_dataset(x: torch.Tensor, y: torch.Tensor, task: int):
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset,  # 0.6.0's public tensor constructor
    )

    return _make_taskaware_tensor_classification_dataset(x, y, task_labels=task, targets=y)


def _free_per_layer(originals: dict[str, nn.Module], model: nn.Module) -> dict[str, float]:
    """Fraction of each shared layer's weights no task has frozen yet."""
    wrappers = {id(m.wrappee): m for m in model.modules() if hasattr(m, "task_index")}
    free = {}
    for name, layer in originals.items():
        wrapper = wrappers[id(layer)]
        free[name] = float(wrapper.task_index.ge(wrapper.task_count).float().mean())
    return free


@torch.no_grad()
def _accuracy(model: nn.Module, task: TaskData, index: int, device: str) -> float:
    model.eval()
    x = task.x_test.to(device)
    labels = torch.full((len(x),), index, dtype=torch.long, device=device)
    logits = model(x, labels)[:, : task.num_classes]
    return float((logits.argmax(1).cpu() == task.y_test).float().mean())


def run_avalanche_packnet(run, tasks: list[TaskData], config: BackboneConfig, train, rate, device):
    """Fill ``run`` (a ``benchmarks.continual.Run``) with Avalanche PackNet at ``rate``."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    from avalanche.models.packnet import PackNetModel
    from avalanche.training import PackNet
    from avalanche.training.plugins import EvaluationPlugin

    if config.batch_norm:
        raise ValueError("Avalanche's PackNet refuses BatchNorm: use a BN-free backbone")
    torch.manual_seed(train.seed)
    network = build_backbone(config, max(t.num_classes for t in tasks))
    originals = prunable_layers(network)
    model = PackNetModel(network)
    datasets = [_tensor_dataset(t.x_train, t.y_train, i) for i, t in enumerate(tasks)]
    stream = with_classes_timeline(with_task_labels(benchmark_from_datasets(train=datasets)))
    stream = stream.train_stream
    strategy = PackNet(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=train.lr),
        post_prune_epochs=train.finetune_epochs,
        prune_proportion=rate,
        train_mb_size=train.batch_size,
        train_epochs=train.epochs + train.finetune_epochs,
        device=device,
        evaluator=EvaluationPlugin(loggers=[]),
    )
    start = time.perf_counter()
    for index, experience in enumerate(stream):
        strategy.train(experience, eval_streams=[])
        now = [_accuracy(model, tasks[s], s, device) for s in range(index + 1)]
        run.after.append(now[-1])
        run.matrix.append(now)
        run.free.append(_free_per_layer(originals, model))
        sizes = {name: layer.weight.numel() for name, layer in originals.items()}
        run.free_total.append(sum(run.free[-1][n] * sizes[n] for n in sizes) / sum(sizes.values()))
        previous = run.free_total[-2] if index else 1.0
        run.owned.append(round((previous - run.free_total[-1]) * sum(sizes.values())))
        run.rates.append(dict.fromkeys(originals, rate))
        run.reference.append((None, None))
    run.seconds = time.perf_counter() - start
    return run
