"""Masked training step vs a plain PyTorch step on the same network, batch and threads.

Prints one JSON document. Target: masked / plain ≤ 1.10.
Run: .venv/bin/python benchmarks/train_overhead.py [--width 0.125] [--batch 64] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from workers.backbone import BackboneConfig
from workers.network import SharedNetwork
from workers.training import make_step


def plain_step(model: nn.Module, lr: float, weight_decay: float, *, fused: bool = False):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    loss_fn = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=False)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def time_steps(step, x, y, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    config = BackboneConfig(width=args.width, input_size=32, in_channels=1)
    network = SharedNetwork.fresh(config, seed=0)
    generator = torch.Generator().manual_seed(0)
    # Half of every layer owned by an earlier task, as after a 50 % first task.
    trainable = {
        name: torch.rand(w.shape, generator=generator) < 0.5 for name, w in network.weights.items()
    }
    x = torch.rand(args.batch, 1, 32, 32, generator=generator)
    y = torch.randint(10, (args.batch,), generator=generator)
    plain_model = network.build_module(None, 10)
    masked_model = network.build_module(None, 10)
    plain = plain_step(plain_model, 1e-3, 5e-4)
    masked = make_step(masked_model, trainable, 1e-3, 5e-4)
    for step in (plain, masked):  # warm-up
        time_steps(step, x, y, 3)
    plain_times, masked_times = [], []
    for _ in range(args.rounds):  # interleaved rounds, so drift hits both alike
        plain_times += time_steps(plain, x, y, args.steps)
        masked_times += time_steps(masked, x, y, args.steps)
    plain_ms = statistics.median(plain_times) * 1e3
    masked_ms = statistics.median(masked_times) * 1e3
    ratio = masked_ms / plain_ms
    print(
        json.dumps(
            {
                "benchmark": "train_overhead",
                "width": args.width,
                "batch": args.batch,
                "threads": torch.get_num_threads(),
                "steps_per_method": args.steps * args.rounds,
                "plain_step_ms": round(plain_ms, 3),
                "masked_step_ms": round(masked_ms, 3),
                "ratio": round(ratio, 4),
                "target": 1.10,
                "pass": ratio <= 1.10,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
