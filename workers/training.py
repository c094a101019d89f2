"""Training that moves only the weights a phase may move.

Owned weights must stay bit-identical, so each phase builds a fresh optimizer, masks the
gradient of every shared weight to its trainable positions and applies weight decay only
there (an optimizer's own decay would pull frozen weights towards zero). With a zero
gradient and fresh moment estimates, SGD-momentum and Adam steps are exactly zero.

On a GPU the forward pass runs under autocast (bf16 where supported, else fp16 with a
gradient scaler) on channels-last tensors read from pinned memory; the gradients are
unscaled before masking, so masking, decay and the optimizer see fp32 values exactly as on
the CPU (a step the scaler skips moves nothing). In a ``torch.distributed`` group the model
is DDP-wrapped and the mask applies after the all-reduce (``workers.data_parallel``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from base import defaults
from workers.backbone import prunable_layers
from workers.batches import batches, read
from workers.data.spec import Images
from workers.data.stream import StreamedImages
from workers.data_parallel import data_parallel, sync_buffers, world

Phase = Literal["train", "finetune"]
# "fp32": no autocast; "bf16" / "fp16": autocast to that type (fp16 with a gradient scaler).
Precision = Literal["fp32", "bf16", "fp16"]
FUSED_ADAM_DEVICES = ("cpu", "cuda")


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
    # None: the device's default (``default_precision``); set to exercise AMP on a CPU.
    precision: Precision | None = None


def default_precision(device: torch.device) -> Precision:
    """Mixed precision on a GPU (bf16 where it has it, else fp16), full precision on a CPU."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on a GPU (faster convolutions under AMP), the default layout elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


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
    """Restricts the shared weights' updates to their trainable positions.

    A layer with nothing trainable gets no gradient at all; the others' float masks (in the
    weight's memory format) are built once per phase and applied with two fused
    multi-tensor operations per step.
    """

    def __init__(self, model: nn.Module, trainable: dict[str, torch.Tensor], weight_decay: float):
        self.weight_decay = weight_decay
        self.parameters: list[nn.Parameter] = []
        self.masks: list[torch.Tensor] = []
        for name, layer in prunable_layers(model).items():
            weight, mask = layer.weight, trainable[name]
            weight.requires_grad_(bool(mask.any()))
            if weight.requires_grad:
                self.parameters.append(weight)
                self.masks.append(torch.empty_like(weight).copy_(mask))
        self.values = [weight.detach() for weight in self.parameters]

    def apply(self) -> None:
        """Call between ``backward()`` (and unscaling) and ``optimizer.step()``:
        ``grad = (grad + decay * weight) * mask``, exactly 0 where the mask is 0."""
        grads = [weight.grad for weight in self.parameters]
        if self.weight_decay:
            torch._foreach_add_(grads, self.values, alpha=self.weight_decay)
        torch._foreach_mul_(grads, self.masks)


def private_parameters(model: nn.Module) -> list[nn.Parameter]:
    shared = {id(layer.weight) for layer in prunable_layers(model).values()}
    return [p for p in model.parameters() if id(p) not in shared]


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")


def make_step(
    model: nn.Module,
    trainable: dict[str, torch.Tensor],
    lr: float,
    weight_decay: float,
    *,
    precision: Precision = "fp32",
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """A fresh optimizer and a closure doing one masked training step on a batch."""
    masked = MaskedGradients(model, trainable, weight_decay)
    forward = data_parallel(model)  # after MaskedGradients decided what needs a gradient
    device = next(model.parameters()).device
    # The fused kernel updates each tensor in one vectorised pass (about 6x faster than the
    # per-tensor loop on a CPU); a zero gradient with zero moments still moves nothing.
    optimizer = torch.optim.Adam(
        [
            {"params": masked.parameters, "weight_decay": 0.0},
            {"params": private_parameters(model), "weight_decay": weight_decay},
        ],
        lr=lr,
        fused=device.type in FUSED_ADAM_DEVICES,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=False)
        with autocast(device, precision):
            loss = loss_fn(forward(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # true fp32 gradients before masking and decay
        masked.apply()
        scaler.step(optimizer)  # skipped (nothing moves) when a gradient is not finite
        scaler.update()
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
    precision = config.precision or default_precision(device)
    step = make_step(model, trainable, lr, config.weight_decay, precision=precision)
    x_train = data.x_train.training() if isinstance(data.x_train, StreamedImages) else data.x_train
    loader = batches(
        x_train, data.y_train, config.batch_size,
        generator=torch.Generator().manual_seed(config.seed), workers=config.loader_workers,
        shard=world(), pin_memory=device.type == "cuda",
    )  # fmt: skip
    layout = memory_format(device)
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = 0.0, 0
        for xb, yb in read(loader):
            xb = xb.to(device, non_blocking=True, memory_format=layout)
            total += step(xb, yb.to(device, non_blocking=True))
            count += 1
        sync_buffers(model)
        if progress is not None:
            val = accuracy(model, data.x_val, data.y_val, workers=config.loader_workers)
            progress(EpochReport(phase, epoch, epochs, total / max(count, 1), val))
