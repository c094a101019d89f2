"""On a CUDA GPU: images/s of Strata's masked AMP step vs a plain torchvision AMP step, GPU
utilisation while the masked loop runs, and bit-identity of owned weights after a task
learned on the GPU.

Prints one JSON document; without a GPU it prints one ``error:`` line and exits 2. Targets:
masked / plain ≥ 0.95, owned weights bit-identical. Both loops use the same model (same
seed), batch, precision (``default_precision``: bf16 where supported, else fp16 with a
gradient scaler), channels-last layout and device-resident synthetic batches; only the step
differs (masked vs ``torch.optim.Adam`` over every parameter). Run:
  .venv/bin/python -m benchmarks.gpu_check [--backbone resnet18] [--input-size 224]
      [--batch 128] [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import torch
from torch import nn

from workers.backbone import BackboneConfig, build_backbone, prunable_layers
from workers.method import learn_task
from workers.network import SharedNetwork
from workers.training import (
    TrainConfig,
    autocast,
    default_precision,
    make_step,
    memory_format,
)

CLASSES = 10


def plain_step(model: nn.Module, device: torch.device, precision: str):
    """What a plain torchvision AMP loop does: Adam over everything, autocast, scaler."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=False)
        with autocast(device, precision):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    return step


def utilisation() -> float | None:
    """Current GPU utilisation in %: torch (needs pynvml), else nvidia-smi, else None."""
    try:
        return float(torch.cuda.utilization())
    except Exception:  # noqa: BLE001 - pynvml missing or the driver refuses: try nvidia-smi
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    done = subprocess.run(query, capture_output=True, text=True, check=False)
    return float(done.stdout.split()[0]) if done.returncode == 0 and done.stdout else None


def images_per_s(kind: str, args, device: torch.device, precision: str, samples: list) -> float:
    torch.manual_seed(0)
    config = BackboneConfig(
        name=args.backbone, width=1.0, input_size=args.input_size, in_channels=3
    )
    model = build_backbone(config, CLASSES).to(device, memory_format=memory_format(device))
    if kind == "masked":  # half of every shared layer trainable, as for a later task
        layers = prunable_layers(model)
        trainable = {name: torch.rand(layer.weight.shape) < 0.5 for name, layer in layers.items()}
        step = make_step(model, trainable, 1e-3, 5e-4, precision=precision)
    else:
        step = plain_step(model, device, precision)
    x = torch.randn(args.batch, 3, args.input_size, args.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(CLASSES, (args.batch,), device=device)
    for _ in range(5):  # warm-up: cuDNN autotuning, allocator
        step(x, y)
    torch.cuda.synchronize()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            value = utilisation()
            if value is not None:
                samples.append(value)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(x, y)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    return args.steps * args.batch / elapsed


def colour_task(seed: int, n: int = 256, size: int = 64) -> SimpleNamespace:
    """A learnable RGB task: a random template per class plus noise (train 3/4, val 1/4)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(CLASSES, (n,), generator=g)
    templates = torch.rand(CLASSES, 3, size, size, generator=g)
    x = templates[y] + 0.3 * torch.rand(n, 3, size, size, generator=g)
    cut = 3 * n // 4
    return SimpleNamespace(
        x_train=x[:cut], y_train=y[:cut], x_val=x[cut:], y_val=y[cut:], num_classes=CLASSES
    )


def owned_bits_identical(device: torch.device) -> dict:
    """Two tasks learned on the GPU with AMP: task 1's owned weights after task 2, bit for bit."""
    config = BackboneConfig(name="resnet18", width=1.0, input_size=64, in_channels=3)
    network = SharedNetwork.fresh(config)
    rates = dict.fromkeys(network.layers, 0.5)
    train = TrainConfig(epochs=1, finetune_epochs=1, batch_size=32)
    first = learn_task(network, colour_task(0), rates, train, device=device).network
    second = learn_task(first, colour_task(1), rates, train, device=device).network
    owned = first.ownership.task_mask(1)
    differing = sum(
        int((second.weights[n].view(torch.int32) != first.weights[n].view(torch.int32))[m].sum())
        for n, m in owned.items()
    )
    return {"owned_weights": sum(int(m.sum()) for m in owned.values()), "differing": differing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.stderr.write("error: no CUDA GPU here; gpu_check measures the GPU path only\n")
        sys.exit(2)
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    precision = default_precision(device)
    rates: dict[str, list[float]] = {"plain": [], "masked": []}
    samples: list[float] = []
    for _ in range(args.repeats):
        for kind in ("plain", "masked"):
            watched = samples if kind == "masked" else []
            rates[kind].append(images_per_s(kind, args, device, precision, watched))
    median = {kind: statistics.median(values) for kind, values in rates.items()}
    report = {
        "device": torch.cuda.get_device_name(),
        "precision": precision,
        "settings": vars(args),
        "masked_images_per_s": round(median["masked"], 1),
        "plain_images_per_s": round(median["plain"], 1),
        "ratio": round(median["masked"] / median["plain"], 3),
        "runs": {kind: [round(v, 1) for v in values] for kind, values in rates.items()},
        "gpu_utilisation_pct": round(statistics.mean(samples), 1) if samples else None,
        "bit_identity": owned_bits_identical(device),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
