"""The add-task method on one shared network: train → initialize → fine-tune → keep the better.

This is the whole learning side of JP7600768B2 in plain PyTorch, one step per module: S20
training (``training``), S30 initialization (``initialization``), S40 / S90 fine-tuning and
S100 the better candidate (``finetuning``), with the rates each layer really uses decided in
``effective_rates``. Choosing the policy's rates (depth and similarity) and persisting the
outcome are the orchestrator's and the registry's jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from base.records import Kept, LayerStats
from workers.backbone import build_backbone, head_key, prunable_layers
from workers.effective_rates import budget_rates, effective_rates
from workers.finetuning import finetune_and_choose
from workers.initialization import initialize
from workers.network import PrivateParams, SharedNetwork, head_classes, private_state
from workers.training import LabelledSplits, ProgressFn, TrainConfig, memory_format, train_phase


@dataclass
class TaskOutcome:
    seq: int
    network: SharedNetwork
    private: PrivateParams
    layers: list[LayerStats]
    val_accuracy: float
    kept: Kept
    candidate_accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Fraction of the weights this task trained that it handed back as free."""
        trained = sum(layer.trained for layer in self.layers)
        return sum(layer.freed for layer in self.layers) / trained if trained else 0.0


def reinitialise(model: nn.Module, trainable: dict[str, torch.Tensor]) -> None:
    """Give the positions a task may train fresh values drawn like a new backbone's.

    Free weights hold 0 after a commit; training a layer's free part up from exact zeros
    is slow and leaves many of them tiny. Owned positions are not touched.
    """
    fresh = prunable_layers(build_backbone(model.config, 1))
    with torch.no_grad():
        for name, layer in prunable_layers(model).items():
            mask = trainable[name].to(layer.weight.device)
            layer.weight[mask] = fresh[name].weight.to(layer.weight.device)[mask]


def learn_task(
    network: SharedNetwork,
    data: LabelledSplits,
    rates: dict[str, float],
    config: TrainConfig,
    *,
    base_private: PrivateParams | None = None,
    keep_head: bool = False,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> TaskOutcome:
    """Learn one task on the free weights of ``network`` and return the network after it.

    ``base_private`` seeds the task's biases and normalisation state (e.g. from the reference
    task); the head is new unless ``keep_head`` (an imported network's own head, whose
    outputs the data's labels index). ``network`` itself is not modified.
    """
    seq = network.ownership.last_seq + 1
    rates = effective_rates(network, rates)
    torch.manual_seed(config.seed)
    keep_head = keep_head and base_private is not None
    classes = head_classes(base_private, network.config) if keep_head else data.num_classes
    device = torch.device(device)
    model = network.build_module(None, classes).to(device, memory_format=memory_format(device))
    if base_private is not None:
        head = head_key(network.config)
        inherited = {k: v for k, v in base_private.items() if keep_head or not k.startswith(head)}
        model.load_state_dict(inherited, strict=False)
    free = {layer: network.ownership.free(layer) for layer in network.layers}
    trainable = {layer: free[layer] & (rates[layer] < 1.0) for layer in network.layers}
    if config.reinit_free:
        reinitialise(model, trainable)

    # S20: train the free weights the rates leave trainable.
    train_phase(
        model, trainable, data, phase="train", epochs=config.epochs, lr=config.lr, config=config,
        progress=progress,
    )  # fmt: skip
    if config.accuracy_budget is not None:
        rates = budget_rates(model, trainable, rates, data, config)
    owned, freed_count = initialize(model, trainable, rates, config.granularity)  # S30
    kept, candidates = finetune_and_choose(model, owned, data, config, progress)  # S40-S100

    model = model.to("cpu", memory_format=torch.contiguous_format)
    weights = {
        name: layer.weight.detach().clone() for name, layer in prunable_layers(model).items()
    }
    after = SharedNetwork(network.config, weights, network.ownership.assign(seq, owned))
    layers = [
        LayerStats(
            name=name,
            numel=free[name].numel(),
            rate=rates[name],
            free_before=int(free[name].sum()),
            trained=int(trainable[name].sum()),
            freed=freed_count[name],
            owned=int(owned[name].sum()),
        )
        for name in network.layers
    ]
    return TaskOutcome(seq, after, private_state(model), layers, candidates[kept], kept, candidates)
