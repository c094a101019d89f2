"""A generated RGB ImageFolder (or uncompressed npz): peak RSS of an add-task's learning at a
small vs a large set, and training images/s of Strata's masked loop vs a plain torchvision loop.

Prints one JSON document. Targets: RSS(large) / RSS(small) < 1.10; masked / plain ≥ 0.95.
The folder (JPEGs of smooth coloured noise, 10 classes) is written under --root, not
checked in; ``--source npz`` writes the same images as one ``numpy.savez`` archive (uint8,
uncompressed: memory-mapped and read per batch). Each RSS figure comes from a fresh child
process running ``load_data`` and ``learn_task`` (train, prune, fine-tune, choose) exactly
as the Ray training task does, counting the child's own peak RSS plus its DataLoader
workers'. The throughput loops share
the model (same seed), the loader (``workers.batches``, the same workers and augmentation),
the batch size and the torch threads; only the step differs (masked vs ``torch.optim.Adam``
over every parameter; a third loop gives that plain step the fused Adam Strata's step uses).
Each loop reports wall-clock images/s and images per CPU second of the training process
(``time.process_time``, which other processes' load on a shared machine does not inflate;
the loader workers' decoding is the same for every loop). Run:
  .venv/bin/python -m benchmarks.real_data --root /tmp/real_data [--sizes 1000 4000]
      [--pixels 224] [--input-size 64] [--backbone resnet18] [--loader-workers 2]
      [--source imagefolder|npz] [--parts rss throughput]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLASSES = 10


def make_folder(root: Path, count: int, pixels: int) -> Path:
    """``count`` JPEGs, ``pixels`` px square, a class per mean colour; reused when present."""
    folder = root / f"rgb{count}_{pixels}"
    if (folder / "done").exists():
        return folder
    rng = np.random.default_rng(count)
    colours = rng.uniform(40, 215, (CLASSES, 3))
    for index in range(count):
        label = index % CLASSES
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        small = rng.normal(colours[label], 40, (pixels // 8, pixels // 8, 3)).clip(0, 255)
        image = Image.fromarray(small.astype(np.uint8), "RGB").resize((pixels, pixels))
        image.save(folder / f"c{label}" / f"{index}.jpg", quality=90)
    (folder / "done").write_text("")
    return folder


def make_npz(root: Path, count: int, pixels: int) -> Path:
    """The folder's images as x (N, H, W, 3) uint8 and y, stored uncompressed; reused."""
    path = root / f"rgb{count}_{pixels}.npz"
    if path.exists():
        return path
    folder = make_folder(root, count, pixels)
    files = sorted(folder.glob("c*/*.jpg"))
    x = np.lib.format.open_memmap(root / "x.npy", "w+", np.uint8, (count, pixels, pixels, 3))
    for row, file in enumerate(files):
        x[row] = np.asarray(Image.open(file).convert("RGB"))
    labels = np.array([int(file.parent.name[1:]) for file in files])
    np.savez(root / "partial.npz", x=x, y=labels)
    (root / "partial.npz").rename(path)
    (root / "x.npy").unlink()
    return path


def _config(args):
    from workers.backbone import BackboneConfig
    from workers.training import TrainConfig

    backbone = BackboneConfig(
        name=args.backbone, width=args.width, input_size=args.input_size, in_channels=3
    )
    train = TrainConfig(
        epochs=1, finetune_epochs=1, batch_size=args.batch, loader_workers=args.loader_workers
    )
    return backbone, train


def child_rss(args) -> dict:
    """In a fresh process: one task learned from the folder; peak RSS of it and its workers."""
    from workers.data import load_data
    from workers.method import learn_task
    from workers.network import SharedNetwork

    backbone, train = _config(args)
    started = time.perf_counter()
    data = load_data(f"{args.source}:{args.folder}", image_size=args.input_size, channels=3)
    network = SharedNetwork.fresh(backbone)
    outcome = learn_task(network, data, dict.fromkeys(network.layers, 0.5), train)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "images": len(data.y_train) + len(data.y_val),
        "peak_rss_mib": round(own, 1),
        "loader_worker_peak_rss_mib": round(workers, 1),
        "val_accuracy": round(outcome.val_accuracy, 3),
        "seconds": round(time.perf_counter() - started, 1),
    }


def throughput(args, folder: Path) -> dict:
    """Images/s over one epoch after its first batch, masked vs plain, alternated
    ``--repeats`` times (medians; wall clock and the training process's CPU time)."""
    from benchmarks.train_overhead import plain_step
    from workers.backbone import build_backbone, prunable_layers
    from workers.batches import batches, read
    from workers.data import load_data
    from workers.training import make_step

    backbone, train = _config(args)
    data = load_data(f"{args.source}:{folder}", image_size=args.input_size, channels=3)
    x, y = data.x_train.training(), data.y_train

    def run(kind: str) -> tuple[float, float]:
        torch.manual_seed(0)
        model = build_backbone(backbone, CLASSES).train()
        if kind == "masked":  # half of every shared layer trainable, as for a later task
            trainable = {
                name: torch.rand(layer.weight.shape) < 0.5
                for name, layer in prunable_layers(model).items()
            }
            step = make_step(model, trainable, 1e-3, train.weight_decay)
        else:  # torch.optim.Adam's default loop, or its fused kernel as Strata's step uses
            step = plain_step(model, 1e-3, train.weight_decay, fused=kind == "plain_fused")
        loader = batches(x, y, args.batch, generator=torch.Generator().manual_seed(0),
                         workers=args.loader_workers)  # fmt: skip
        start = cpu_start = 0.0
        seen = 0
        for xb, yb in read(loader):
            step(xb, yb)
            if not start:  # the clock starts once the workers are up and one step is done
                start, cpu_start = time.perf_counter(), time.process_time()
            else:
                seen += len(yb)
        return seen / (time.perf_counter() - start), seen / (time.process_time() - cpu_start)

    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "plain_fused": [], "masked": []}
    for _ in range(args.repeats):
        for kind, done in runs.items():
            done.append(run(kind))

    def median(kind: str, clock: int) -> float:
        return statistics.median(run[clock] for run in runs[kind])

    wall = {kind: median(kind, 0) for kind in runs}
    cpu = {kind: median(kind, 1) for kind in runs}
    return {
        "images": len(y) - args.batch,
        "masked_images_per_s": round(wall["masked"], 1),
        "plain_images_per_s": round(wall["plain"], 1),
        "ratio": round(wall["masked"] / wall["plain"], 3),
        "masked_images_per_cpu_s": round(cpu["masked"], 1),
        "plain_images_per_cpu_s": round(cpu["plain"], 1),
        "cpu_ratio": round(cpu["masked"] / cpu["plain"], 3),
        # Against a plain loop that also uses fused Adam: the masking's own cost.
        "plain_fused_images_per_cpu_s": round(cpu["plain_fused"], 1),
        "cpu_ratio_vs_plain_fused": round(cpu["masked"] / cpu["plain_fused"], 3),
        "runs": {kind: [[round(v, 1) for v in run] for run in done] for kind, done in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/strata_real_data"))
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 4000])
    parser.add_argument("--pixels", type=int, default=224)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", choices=("imagefolder", "npz"), default="imagefolder")
    parser.add_argument("--parts", nargs="+", choices=("rss", "throughput"),
                        default=["rss", "throughput"])  # fmt: skip
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # a folder: RSS run
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        args.folder = args.child
        print(json.dumps(child_rss(args)))
        return
    make = make_npz if args.source == "npz" else make_folder
    folders = [make(args.root, count, args.pixels) for count in args.sizes]
    report: dict = {"settings": {k: str(v) for k, v in vars(args).items() if k != "child"}}
    if "rss" in args.parts:
        skip = ("root", "sizes", "child", "parts")
        shared = {k: v for k, v in vars(args).items() if k not in skip}
        flags = [f"--{key.replace('_', '-')}={value}" for key, value in shared.items()]
        rss = []
        for folder in folders:
            command = [sys.executable, "-m", "benchmarks.real_data", *flags, f"--child={folder}"]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rss.append(json.loads(done.stdout.strip().splitlines()[-1]))
        report["rss"] = rss
        report["rss_growth"] = round(rss[1]["peak_rss_mib"] / rss[0]["peak_rss_mib"] - 1, 3)
    if "throughput" in args.parts:
        report["throughput"] = throughput(args, folders[0])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
