"""Training that moves only the weights a phase may move.

Owned weights must stay bit-identical, so each phase builds a fresh optimizer, masks the
gradient of every shared weight to its trainable positions and applies weight decay only
there (an optimizer's own decay would pull frozen weights towards zero). With a zero
gradient and fresh moment estimates, SGD-momentum and Adam steps are exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from base import defaults
from workers.backbone import prunable_layers
from workers.batches import batches, read
from workers.data.spec import Images
from workers.data.stream import StreamedImages

Phase = Literal["train", "finetune"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig(defaults.Training):
    """Everything training reads: the user's options plus what the method and policy add."""

    finetune_lr: float = defaults.FINETUNE_LR
    weight_decay: float = defaults.WEIGHT_DECAY
    # Re-draw the weights a task is about to train (free weights hold 0 and train poorly).
    reinit_free: bool = False
    # Raise each stage's rate up the ladder while validation accuracy of the pruned model
    # stays within this many points (a fraction) of the un-pruned model (None: off).
    accuracy_budget: float | None = None
    budget_rates: tuple[float, ...] = (0.75, 0.9, 0.95)


@dataclass(frozen=True)
class EpochReport:
    phase: Phase
    epoch: int
    epochs: int
    loss: float
    val_accuracy: float


ProgressFn = Callable[[EpochReport], None]


class LabelledSplits(Protocol):
    """What the method needs of a data set (``workers.data.TaskData`` has it)."""

    x_train: Images
    y_train: torch.Tensor
    x_val: Images
    y_val: torch.Tensor
    num_classes: int


class MaskedGradients:
    """Restricts the shared weights' updates to their trainable positions."""

    def __init__(self, model: nn.Module, trainable: dict[str, torch.Tensor], weight_decay: float):
        self.weight_decay = weight_decay
        self.pairs: list[tuple[nn.Parameter, torch.Tensor]] = []
        for name, layer in prunable_layers(model).items():
            mask = trainable[name]
            layer.weight.requires_grad_(bool(mask.any()))
            if layer.weight.requires_grad:
                self.pairs.append((layer.weight, mask.to(layer.weight.device, torch.float32)))

    @property
    def parameters(self) -> list[nn.Parameter]:
        return [weight for weight, _ in self.pairs]

    def apply(self) -> None:
        """Call between ``backward()`` and ``optimizer.step()``."""
        for weight, mask in self.pairs:
            weight.grad.mul_(mask).addcmul_(weight.detach(), mask, value=self.weight_decay)


def private_parameters(model: nn.Module) -> list[nn.Parameter]:
    shared = {id(layer.weight) for layer in prunable_layers(model).values()}
    return [p for p in model.parameters() if id(p) not in shared]


def make_step(
    model: nn.Module, trainable: dict[str, torch.Tensor], lr: float, weight_decay: float
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """A fresh optimizer and a closure doing one masked training step on a batch."""
    masked = MaskedGradients(model, trainable, weight_decay)
    optimizer = torch.optim.Adam(
        [
            {"params": masked.parameters, "weight_decay": 0.0},
            {"params": private_parameters(model), "weight_decay": weight_decay},
        ],
        lr=lr,
    )
    loss_fn = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=False)
        loss = loss_fn(model(x), y)
        loss.backward()
        masked.apply()
        optimizer.step()
        return float(loss.detach())

    return step


def accuracy_of_logits(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1).cpu() == y).float().mean()) if len(y) else float("nan")


@torch.no_grad()
def accuracy(
    model: nn.Module, x: Images, y: torch.Tensor, batch_size: int = 256, workers: int = 0
) -> float:
    if len(y) == 0:
        return float("nan")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for xb, yb in read(batches(x, y, batch_size, workers=workers)):
        correct += int((model(xb.to(device)).argmax(1).cpu() == yb).sum())
    model.train(was_training)
    return correct / len(y)


def train_phase(
    model: nn.Module,
    trainable: dict[str, torch.Tensor],
    data: LabelledSplits,
    *,
    phase: Phase,
    epochs: int,
    lr: float,
    config: TrainConfig,
    progress: ProgressFn | None = None,
) -> None:
    """Train ``model`` for ``epochs`` epochs, moving only ``trainable`` shared weights."""
    device = next(model.parameters()).device
    step = make_step(model, trainable, lr, config.weight_decay)
    x_train = data.x_train.training() if isinstance(data.x_train, StreamedImages) else data.x_train
    loader = batches(
        x_train, data.y_train, config.batch_size,
        generator=torch.Generator().manual_seed(config.seed), workers=config.loader_workers,
    )  # fmt: skip
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = 0.0, 0
        for xb, yb in read(loader):
            total += step(xb.to(device), yb.to(device))
            count += 1
        if progress is not None:
            val = accuracy(model, data.x_val, data.y_val, workers=config.loader_workers)
            progress(EpochReport(phase, epoch, epochs, total / max(count, 1), val))
