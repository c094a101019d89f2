"""Registry storage with deltas against revision 0002's full version blobs, in the same run.

Trains tiny tasks into a temporary registry (deltas: each commit stores the values of the
weights its task took and a 1-bit mask of them), copies it and downgrades the copy to
revision 0002 (one blob per version of every weight as float32 plus an int32 owner map,
and each task's effective mask), then reports:

- stored bytes after 1, 5 and 10 tasks ÷ one dense float32 network (every prunable weight
  as float32), with and without the tasks' private parameters (biases, norms, heads);
- the time to load the head version as a replica does (deltas: materialise them into the
  weights and owner bit planes, ``load_serving_network``; 0002: read and decode one full
  blob, as that code's ``load_network`` did), the two measured alternately so that a busy
  machine slows both alike (``load_version_vs_0002``: the median of the rounds' ratios; the
  same for the CPU time of all threads, ``load_version_cpu_vs_0002``, since the deltas are
  read on a thread pool);
  and, for information, the load with a dense owner map that training and commits use
  (``load_network``);
- the task-switch time of a replica's ``Predictor`` (``view(task).tensors()``, every task
  loaded) with owner bit planes against 0002's int32 maps;
- the bytes a replica holding every task keeps ÷ one dense float32 network, split into the
  shared part (weights + owners) and the tasks' private parameters (and of those, the
  classifier heads).
Targets: stored ≤ 1 + N/32 + 0.05 at N = 10 (private parameters aside); load and switch no
slower than 0002; resident ≤ 1.2.

Run from the repository root:
    .venv/bin/python -m benchmarks.storage [--tasks 10] [--width 0.0625] [--threads 1]
        [--load-threads 4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from base.layers import prunable_layer_names
from base.location import RegistryLocation
from benchmarks.task_switch import median_ms
from registry import db, versions
from registry.blobstore import BlobStore
from registry.codecs import decode_arrays
from registry.models import Task
from registry.records import TaskRow
from registry.store import Registry
from tests.registries import build_registry
from tests.synthetic import synthetic_task
from tests.workers.serving.serving_support import resident_bytes, unique_bytes
from workers.backbone import BackboneConfig, head_key
from workers.inference import Predictor
from workers.loading import (
    OWNER_PREFIX,
    WEIGHT_PREFIX,
    load_network,
    load_serving_network,
)
from workers.network import SharedNetwork
from workers.ownership import Ownership

CHECKPOINTS = (1, 5, 10)
FIRST_TASK_0002 = (
    TaskRow.query()
    .with_only_columns(*(c for c in TaskRow.query().selected_columns if c.name != "class_names"))
    .order_by(Task.seq)
    .limit(1)
)


def location_in(folder: Path) -> RegistryLocation:
    return RegistryLocation.resolve(f"sqlite:///{folder / 'registry.db'}", str(folder / "blobs"))


def stored_after(registry: Registry, dense: int, tasks: int) -> dict[str, float]:
    """Bytes the first ``tasks`` commits stored ÷ ``dense``, with and without private ones."""
    rows = registry.stored_bytes()[:tasks]
    shared = sum(row["mask"] + row["values"] for row in rows)
    return {
        "shared": round(shared / dense, 4),
        "with_private": round(sum(row["bytes"] for row in rows) / dense, 4),
    }


def load_full_version(registry: Registry) -> SharedNetwork:
    """Revision 0002's ``load_network``: the backbone and head rows, one blob of every weight
    and an int32 owner map read and decoded, its arrays copied into tensors, owners kept
    int32 (0002's ``Ownership`` converted nothing)."""
    with registry.engine.connect() as conn:  # first_task's query, less 0004's column
        row = conn.execute(FIRST_TASK_0002).mappings().first()
        config = BackboneConfig.from_dict(row["backbone"])
    assert (head := registry.head()) is not None
    arrays = decode_arrays(registry.read_blob(head.weights))
    layers = [layer for layer in prunable_layer_names() if WEIGHT_PREFIX + layer in arrays]
    ownership = object.__new__(Ownership)
    ownership.owners = {
        layer: torch.from_numpy(arrays[OWNER_PREFIX + layer].copy()) for layer in layers
    }
    weights = {layer: torch.from_numpy(arrays[WEIGHT_PREFIX + layer].copy()) for layer in layers}
    return SharedNetwork(config, weights, ownership)


def alternating(
    actions: dict[str, Callable[[], object]], repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU times (every thread of the process) of each action in milliseconds, the
    actions called in turn (a busy machine then slows them alike, and each round's ratio
    compares like with like)."""
    wall: dict[str, list[float]] = {name: [] for name in actions}
    cpu: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeat):
        for name, action in actions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            action()
            wall[name].append(1000 * (time.perf_counter() - start))
            cpu[name].append(1000 * (time.process_time() - start_cpu))
    return wall, cpu


def median_ratio(times: dict[str, list[float]], name: str, baseline: str) -> float:
    """The median over the rounds of ``name``'s time ÷ ``baseline``'s."""
    rounds = zip(times[name], times[baseline], strict=True)
    return round(statistics.median(new / old for new, old in rounds), 3)


def private_bytes(predictor: Predictor, prefix: str = "") -> int:
    """Bytes of the loaded tasks' private parameters (those whose key starts with
    ``prefix``)."""
    return unique_bytes(
        tensor
        for task in predictor.loaded
        for key, tensor in predictor.view(task).private.items()
        if key.startswith(prefix)
    )


def switch_ms(predictor: Predictor, names: list[str], repeat: int) -> float:
    cycle = itertools.cycle(names)
    return median_ms(lambda _: predictor.view(next(cycle)).tensors(), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--width", type=float, default=1 / 16)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="1, as in a Serve replica")
    parser.add_argument(
        "--load-threads", type=int, default=versions.WORKERS, help="threads reading deltas"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    versions.WORKERS = args.load_threads

    config = BackboneConfig(width=args.width, input_size=32, in_channels=1)
    names = [f"task{i}" for i in range(args.tasks)]
    with tempfile.TemporaryDirectory() as root:
        deltas, full = location_in(Path(root) / "deltas"), location_in(Path(root) / "full")
        tasks = [(name, synthetic_task(seed)) for seed, name in enumerate(names)]
        build_registry(deltas.db_url, deltas.store_uri, tasks, config)
        shutil.copytree(Path(root) / "deltas", Path(root) / "full")
        db.downgrade(full.db_url, "0002", store_uri=full.store_uri)

        with (
            Registry.open(deltas.db_url, deltas.store_uri) as new,
            Registry(db.make_engine(full.db_url), BlobStore(full.store_uri)) as old,
        ):
            network = load_network(new)
            dense = sum(weight.numel() * 4 for weight in network.weights.values())
            checkpoints = [n for n in CHECKPOINTS if n <= args.tasks]
            stored = {n: stored_after(new, dense, n) for n in checkpoints}
            stored_full = {n: stored_after(old, dense, n) for n in checkpoints}

            loads, loads_cpu = alternating(
                {
                    "replica": lambda: load_serving_network(new),
                    "0002": lambda: load_full_version(old),
                    "owner_map": lambda: load_network(new),
                },
                args.repeat,
            )
            assert all(
                torch.equal(network.weights[n], w)
                for n, w in load_full_version(old).weights.items()
            ), "the two layouts disagree"

            predictor = Predictor(new, max_tasks=len(names))
            predictor_full = Predictor(new, max_tasks=len(names))
            predictor_full.network = load_full_version(old)
            for name in names:
                predictor.view(name)
                predictor_full.view(name)
            switch = switch_ms(predictor, names, args.repeat)
            switch_full = switch_ms(predictor_full, names, args.repeat)
            resident, resident_full = resident_bytes(predictor), resident_bytes(predictor_full)
            private = private_bytes(predictor)
            heads = private_bytes(predictor, head_key(config))

    target = 1 + args.tasks / 32 + 0.05
    print(
        json.dumps(
            {
                "benchmark": "storage",
                "tasks": args.tasks,
                "width": args.width,
                "torch_threads": torch.get_num_threads(),
                "dense_float32_bytes": dense,
                "stored_vs_dense": {str(n): stored[n] for n in checkpoints},
                "stored_vs_dense_0002": {str(n): stored_full[n] for n in checkpoints},
                "target_stored_vs_dense": round(target, 4),
                "load_version_ms": round(statistics.median(loads["replica"]), 3),
                "load_version_0002_ms": round(statistics.median(loads["0002"]), 3),
                "load_version_owner_map_ms": round(statistics.median(loads["owner_map"]), 3),
                "load_version_vs_0002": median_ratio(loads, "replica", "0002"),
                "load_version_cpu_ms": round(statistics.median(loads_cpu["replica"]), 3),
                "load_version_0002_cpu_ms": round(statistics.median(loads_cpu["0002"]), 3),
                "load_version_cpu_vs_0002": median_ratio(loads_cpu, "replica", "0002"),
                "load_threads": versions.WORKERS,
                "switch_ms": round(switch, 4),
                "switch_0002_ms": round(switch_full, 4),
                "resident_vs_dense": round(resident / dense, 4),
                "resident_vs_dense_0002": round(resident_full / dense, 4),
                "resident_shared_vs_dense": round((resident - private) / dense, 4),
                "resident_shared_vs_dense_0002": round((resident_full - private) / dense, 4),
                "resident_private_vs_dense": round(private / dense, 4),
                "resident_private_heads_vs_dense": round(heads / dense, 4),
                "target_resident_vs_dense": 1.2,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
