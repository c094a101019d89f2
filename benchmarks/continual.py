"""Continual-learning benchmark: Strata's rate policies against PackNet, fine-tuning and
independent networks on one stream of offline tasks, same backbone and epochs for all.

Methods: the policy presets (``recommended``, ``patent-5a``, ``patent-5b``), the ablations of
``benchmarks/continual_ablations.py``, ``packnet-50`` / ``-75`` / ``-75-reinit``,
``avalanche-packnet-75`` (Avalanche's own PackNet, ``pip install -e '.[bench]'``; needs
``--no-batch-norm``), ``finetune``, ``independent``; ``NAME@filter`` for filter granularity.
With ``independent`` among the methods the output also holds the long-stream analysis of
``benchmarks/continual_scale.py`` (how many tasks fit at good accuracy).

Strata runs in-process exactly as ``orchestrator/pipeline.py`` does it, minus Ray and the
registry: JSD of the new task's training data against every earlier task's stored summary
(``workers.summary.summarize_task`` at commit), smallest wins, rates from the policy, the
reference task's private parameters as the starting point, ``workers.method.learn_task``.

    .venv/bin/python -m benchmarks.continual            # the full run (see RESULTS.md)
    .venv/bin/python -m benchmarks.continual --quick    # smoke run: 2 seeds, 4 tasks
    .venv/bin/python -m benchmarks.continual --tasks 30 # the 30-task stream
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from base import defaults
from benchmarks.continual_ablations import ABLATIONS, ablation, uniform_policy
from benchmarks.continual_scale import first_full, scale_summary, scale_table, write_scale_plot
from orchestrator.rates import RatePolicy, load_policy, preset_names
from registry.ownership import owner_stats
from workers.backbone import BackboneConfig, head_key
from workers.data import TaskData, load_data
from workers.method import learn_task
from workers.network import PrivateParams, SharedNetwork, TaskView
from workers.ownership import Ownership
from workers.similarity import jsd_to_task
from workers.summary import summarize_task
from workers.training import TrainConfig, accuracy

STREAM = (
    "builtin:mnist?classes=0-4",
    "builtin:mnist?classes=5-9",
    "builtin:mnist?permute=1",
    "builtin:mnist?rotate=90",
    "builtin:mnist?invert=1",
    "builtin:digits",
    "builtin:mnist?permute=2",
    "builtin:mnist?rotate=180",
    "builtin:mnist?classes=0-4&invert=1",
    "builtin:digits?invert=1",
    "builtin:mnist?classes=5-9&rotate=270",
    "builtin:mnist?permute=3",
    # Tasks 13-30 (the long stream): noise levels, more splits and combinations.
    "builtin:mnist?noise=0.3",
    "builtin:digits?rotate=90",
    "builtin:mnist?classes=0,2,4,6,8",
    "builtin:mnist?permute=4",
    "builtin:mnist?rotate=270&invert=1",
    "builtin:digits?classes=0-4",
    "builtin:mnist?noise=0.6",
    "builtin:mnist?classes=1,3,5,7,9&rotate=180",
    "builtin:digits?permute=1",
    "builtin:mnist?permute=5&invert=1",
    "builtin:mnist?classes=0-2,7",
    "builtin:digits?rotate=180&invert=1",
    "builtin:mnist?noise=0.45&rotate=90",
    "builtin:mnist?permute=6",
    "builtin:digits?classes=5-9&rotate=270",
    "builtin:mnist?classes=3-8&noise=0.3",
    "builtin:mnist?rotate=90&invert=1",
    "builtin:digits?noise=0.3",
)
METHODS = (
    "patent-5a",
    "recommended",
    "packnet-50",
    "packnet-75",
    "packnet-75-reinit",
    "finetune",
    "independent",
)
HERE = Path(__file__).parent
UNPROTECTED = ("finetune", "independent")
PACKNETS = {"packnet-50": 0.5, "packnet-75": 0.75}
AVALANCHE = {"avalanche-packnet-75": 0.75}
# name: (limit, width, epochs, finetune_epochs, tasks, seeds); None keeps the CLI's value.
PROFILES = {
    "quick": (96, None, 1, 1, 4, 2),
    "strong": (2000, 0.25, 6, 3, 10, 3),
}


@dataclass
class Run:
    """One method on one seed: everything measured along the stream."""

    method: str
    seed: int
    after: list[float] = field(default_factory=list)  # test accuracy right after learning
    matrix: list[list[float]] = field(default_factory=list)  # [after task i][task j <= i]
    owned: list[int] = field(default_factory=list)  # weights each task took
    free: list[dict[str, float]] = field(default_factory=list)  # free fraction per layer
    free_total: list[float] = field(default_factory=list)  # free fraction of all weights
    rates: list[dict[str, float]] = field(default_factory=list)
    reference: list[tuple[int | None, float | None]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final(self) -> list[float]:
        return self.matrix[-1]

    @property
    def forgetting(self) -> list[float]:
        return [a - f for a, f in zip(self.after, self.final, strict=True)]


def test_accuracy(network: SharedNetwork, seq: int, private: PrivateParams, task: TaskData):
    """Test accuracy of task ``seq`` as served: everything outside its mask counts as 0."""
    logits = TaskView(network, seq, private).logits(task.x_test)
    return float((logits.argmax(1) == task.y_test).float().mean())


def record_capacity(run: Run, ownership: Ownership) -> None:
    capacity = owner_stats({name: owner.numpy() for name, owner in ownership.owners.items()})
    run.free.append({c["name"]: c["free"] / c["numel"] for c in capacity})
    run.free_total.append(sum(c["free"] for c in capacity) / sum(c["numel"] for c in capacity))


def run_strata(
    method: str,
    policy: RatePolicy,
    tasks: list[TaskData],
    config: BackboneConfig,
    train,
    device: str = "cpu",
) -> Run:
    run = Run(method, train.seed)
    network = SharedNetwork.fresh(config, seed=train.seed)
    train = policy.train_config(train)
    privates: list[PrivateParams] = []
    summaries: list[dict] = []
    # PackNet has no similarity: no summaries, no reference task. Every other policy (the
    # ablations too, even with one JSD bucket) picks its reference task like recommended.
    similar = not method.startswith("packnet")
    start = time.perf_counter()
    for task in tasks:
        found = sorted(
            (jsd_to_task(TaskView(network, s + 1, privates[s]), summary, task.x_train), s + 1)
            for s, summary in enumerate(summaries)
        )
        jsd, reference = found[0] if found else (None, None)
        if not similar and privates:
            jsd = 0.0
        rates = policy.rates(network.layers, jsd, config.name)
        base = privates[reference - 1] if reference is not None else None
        outcome = learn_task(network, task, rates, train, base_private=base, device=device)
        network = outcome.network
        privates.append(outcome.private)
        if similar:
            view = TaskView(network, outcome.seq, outcome.private)
            summaries.append(summarize_task(view, task.x_train))
        run.after.append(test_accuracy(network, outcome.seq, outcome.private, task))
        run.matrix.append(
            [test_accuracy(network, s + 1, privates[s], tasks[s]) for s in range(len(privates))]
        )
        run.owned.append(sum(layer.owned for layer in outcome.layers))
        record_capacity(run, network.ownership)
        run.rates.append({layer.name: layer.rate for layer in outcome.layers})
        run.reference.append((reference, jsd))
    run.seconds = time.perf_counter() - start
    return run


def run_unprotected(
    method: str, tasks: list[TaskData], config: BackboneConfig, train, device: str = "cpu"
) -> Run:
    """``finetune``: one network, every weight trained on every task (per-task heads, biases
    and norms kept). ``independent``: a fresh network per task. Both train exactly like
    Strata (train, then fine-tune, the better kept) at rate 0."""
    run = Run(method, train.seed)
    network = SharedNetwork.fresh(config, seed=train.seed)
    zero = dict.fromkeys(network.layers, 0.0)
    weights: list[dict[str, torch.Tensor]] = []
    privates: list[PrivateParams] = []
    start = time.perf_counter()
    for index, task in enumerate(tasks):
        if method == "independent":
            network = SharedNetwork.fresh(config, seed=train.seed * 1000 + index)
        else:  # all weights free again: nothing is protected
            shapes = {name: w.shape for name, w in network.weights.items()}
            network = SharedNetwork(config, network.weights, Ownership.all_free(shapes))
        base = privates[-1] if privates and method == "finetune" else None
        outcome = learn_task(network, task, zero, train, base_private=base, device=device)
        network = outcome.network
        weights.append(network.weights)
        privates.append(outcome.private)
        now = [
            _plain_accuracy(
                weights[s] if method == "independent" else network.weights,
                privates[s],
                tasks[s],
                config,
            )
            for s in range(len(privates))
        ]
        run.after.append(now[-1])
        run.matrix.append(now)
        run.owned.append(sum(w.numel() for w in network.weights.values()))
        record_capacity(run, network.ownership)
        run.rates.append(zero)
        run.reference.append((None, None))
    run.seconds = time.perf_counter() - start
    return run


def _plain_accuracy(weights, private: PrivateParams, task: TaskData, config: BackboneConfig):
    classes = int(private[head_key(config) + "weight"].shape[0])
    model = SharedNetwork(config, weights, Ownership({})).build_module(private, classes)
    return accuracy(model, task.x_test, task.y_test)


def summarise(runs: list[Run], layers: list[str]) -> dict:
    mean = statistics.fmean
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    averages = [mean(r.final) for r in runs]
    total = runs[0].free[-1]
    return {
        "avg_final_accuracy": mean(averages),
        "avg_final_accuracy_sd": sd(averages),
        "final_accuracy_per_task": [
            mean(r.final[t] for r in runs) for t in range(len(runs[0].final))
        ],
        "avg_forgetting": mean(mean(r.forgetting) for r in runs),
        "max_forgetting": max(max(r.forgetting) for r in runs),
        "owned_per_task": [mean(r.owned[t] for r in runs) for t in range(len(runs[0].owned))],
        "free_per_layer": [
            {layer: mean(r.free[t][layer] for r in runs) for layer in layers}
            for t in range(len(runs[0].free))
        ],
        "free_fraction_final": mean(r.free_total[-1] for r in runs),
        "min_layer_free_final": mean(min(r.free[-1].values()) for r in runs),
        "tasks_until_full": [first_full(r.free) for r in runs],
        "seconds": mean(r.seconds for r in runs),
        "seconds_per_task": mean(r.seconds / len(r.after) for r in runs),
        "layers": list(total),
    }


def _headline(summary: dict) -> dict:
    """The scalar metrics of a method (the per-layer lists stay in the JSON file)."""
    return {k: v for k, v in summary.items() if k not in ("free_per_layer", "layers")}


def _scalars(scale: dict) -> dict:
    """A method's long-stream counts (the per-task curves stay in the JSON file)."""
    return {
        k: v
        for k, v in scale.items()
        if k not in ("after_per_task", "gap_per_task", "free_total_per_task", "per_seed")
    }


def markdown_table(results: dict[str, dict]) -> str:
    """The RESULTS.md table: one row per method, means over seeds."""
    rows = [
        "| method | avg final acc (± sd over seeds) | forgetting (mean / max) "
        "| free after last task (all weights / emptiest layer) | tasks before a layer is full "
        "| s per run |",
        "|---|---|---|---|---|---|",
    ]
    for method, r in results.items():
        full = ", ".join("never" if t is None else str(t) for t in r["tasks_until_full"])
        rows.append(
            f"| {method} | {r['avg_final_accuracy']:.3f} ± {r['avg_final_accuracy_sd']:.3f} "
            f"| {r['avg_forgetting']:+.3f} / {r['max_forgetting']:+.3f} "
            f"| {r['free_fraction_final']:.1%} / {r['min_layer_free_final']:.1%} "
            f"| {full} | {r['seconds']:.0f} |"
        )
    return "\n".join(rows)


def write_plots(document: dict, folder: Path, stem: str = "continual") -> None:
    """Accuracy matrix per method (seed 0) and free capacity per layer over tasks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    methods = list(document["methods"])
    fig = Figure(figsize=(3.2 * len(methods), 3.2))
    FigureCanvasAgg(fig)
    for index, method in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), index + 1)
        rows = document["runs"][method][0]["matrix"]
        grid = [
            [row[j] if j < len(row) else float("nan") for j in range(len(rows))] for row in rows
        ]
        ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("task evaluated", fontsize=8)
        ax.set_ylabel("after learning task", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / f"{stem}_accuracy.png", dpi=70)

    strata = [m for m in methods if document["methods"][m]["free_per_layer"][0]]
    strata = [m for m in strata if m not in ("finetune", "independent")]
    fig = Figure(figsize=(3.4 * max(len(strata), 1), 3.2))
    FigureCanvasAgg(fig)
    for index, method in enumerate(strata):
        ax = fig.add_subplot(1, len(strata), index + 1)
        free = document["methods"][method]["free_per_layer"]
        steps = range(1, len(free) + 1)
        for layer in free[0]:
            ax.plot(steps, [f[layer] for f in free], label=layer, linewidth=1)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("tasks learned", fontsize=8)
        ax.set_ylabel("free fraction", fontsize=8)
        ax.set_ylim(0, 1)
    if strata:
        fig.axes[-1].legend(fontsize=5, ncol=2)
    fig.tight_layout()
    fig.savefig(folder / f"{stem}_capacity.png", dpi=70)
    if "scale" in document:
        write_scale_plot(document["scale"], folder / f"{stem}_scale.png")


def strata_policies(methods: list[str], layers: list[str], backbone: str, spec: str) -> dict:
    """The rate policy of every Strata method in ``methods`` (``@filter`` stripped)."""
    recommended = load_policy(spec, layers, backbone)
    policies: dict[str, RatePolicy] = {}
    for method in {m.split("@")[0] for m in methods}:
        if method == "recommended":
            policies[method] = recommended
        elif method in preset_names():
            policies[method] = load_policy(method, layers, backbone)
        elif method in ABLATIONS:
            policies[method] = ablation(method, recommended)
        elif method in PACKNETS:
            policies[method] = uniform_policy(method, PACKNETS[method])
        elif method == "packnet-75-reinit":
            policies[method] = uniform_policy(method, 0.75, reinit_free=True)
        elif method not in (*UNPROTECTED, *AVALANCHE):
            raise SystemExit(f"error: unknown method {method!r}")
    return policies


def run_method(method: str, policies: dict, tasks, config, train, device: str) -> Run:
    """One method on one seed's tasks."""
    name, _, granularity = method.partition("@")
    if granularity:
        train = replace(train, granularity=granularity)
    if name in UNPROTECTED:
        return run_unprotected(method, tasks, config, train, device)
    if name in AVALANCHE:
        from benchmarks.continual_avalanche import run_avalanche_packnet  # optional extra

        return run_avalanche_packnet(Run(method, train.seed), tasks, config, train,
                                     AVALANCHE[name], device)  # fmt: skip
    return run_strata(method, policies[name], tasks, config, train, device)


def build_document(command: str, settings: dict, runs: dict[str, list[Run]], layers) -> dict:
    """The JSON written after every run (so a run cut short still leaves its rows)."""
    done = {m: rs for m, rs in runs.items() if rs}
    results = {method: summarise(rs, layers) for method, rs in done.items()}
    document = {
        "command": command,
        "settings": settings,
        "methods": results,
        "runs": {m: [asdict(r) for r in rs] for m, rs in done.items()},
    }
    if "independent" in done:
        document["scale"] = scale_summary(document)
    return document


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 4 tasks")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="quick or strong baselines")
    parser.add_argument("--tasks", type=int, default=10, help=f"1..{len(STREAM)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=600, help="samples per split")
    parser.add_argument("--width", type=float, default=1 / 8)
    parser.add_argument("--backbone", default="vgg16", help="vgg16, resnet18, …")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--no-batch-norm", action="store_true", help="BN-free vgg16")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=defaults.WEIGHT_DECAY)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--policy", default="recommended", help="preset or file for 'recommended'")
    parser.add_argument("--out", default=str(HERE / "results" / "continual.json"))
    parser.add_argument("--plots", default=str(HERE / "plots"))
    parser.add_argument(
        "--merge", nargs="+", metavar="JSON", help="combine the runs of earlier outputs (seeds)"
    )
    args = parser.parse_args(argv)
    profile = "quick" if args.quick else args.profile
    if profile:  # the profile's values as defaults: options given on the command line win
        keys = ("limit", "width", "epochs", "finetune_epochs", "tasks", "seeds")
        values = zip(keys, PROFILES[profile], strict=True)
        parser.set_defaults(**{key: value for key, value in values if value is not None})
        args = parser.parse_args(argv)
    if not 1 <= args.tasks <= len(STREAM):
        raise SystemExit(f"error: --tasks must lie in 1..{len(STREAM)}")
    torch.set_num_threads(1)
    width = args.width if args.backbone in ("vgg16", "mobilenet_v3_large") else 1.0
    config = BackboneConfig(
        name=args.backbone,
        width=width,
        input_size=args.input_size,
        in_channels=1,
        batch_norm=not args.no_batch_norm,
    )
    layers = SharedNetwork.fresh(config).layers
    methods = args.methods.split(",")
    policies = strata_policies(methods, layers, config.name, args.policy)
    specs = STREAM[: args.tasks]
    command = "python -m benchmarks.continual " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    settings = {
        "tasks": list(specs),
        "seeds": args.seeds,
        "limit": args.limit,
        "backbone": config.to_dict(),
        "width": width,
        "input_size": args.input_size,
        "device": args.device,
        "epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "finetune_lr": args.lr / 3,
        "weight_decay": args.weight_decay,
        "policy": load_policy(args.policy, layers, config.name).to_dict(),
    }
    runs: dict[str, list[Run]] = {m: [] for m in methods}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.first_seed, args.first_seed + (0 if args.merge else args.seeds)):
        tasks = [
            load_data(s, image_size=args.input_size, channels=1, seed=seed, limit=args.limit)
            for s in specs
        ]
        train = TrainConfig(
            epochs=args.epochs,
            finetune_epochs=args.finetune_epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            finetune_lr=args.lr / 3,
            weight_decay=args.weight_decay,
            seed=seed,
        )
        for method in methods:
            run = run_method(method, policies, tasks, config, train, args.device)
            runs[method].append(run)
            print(
                f"seed {seed} {method:12s} avg {statistics.fmean(run.final):.3f} "
                f"free {run.free_total[-1]:.3f} {run.seconds:.0f}s",
                file=sys.stderr,
                flush=True,
            )
            out.write_text(json.dumps(build_document(command, settings, runs, layers), indent=1))
    if args.merge:
        # Parts may hold other seeds, other methods or both (one process per method and seed).
        parts = [json.loads(Path(path).read_text()) for path in args.merge]
        methods = list(dict.fromkeys(m for p in parts for m in p["runs"]))
        runs = {m: [Run(**r) for p in parts for r in p["runs"].get(m, [])] for m in methods}
        settings = parts[0]["settings"] | {"seeds": max(len(r) for r in runs.values())}
    document = build_document(command, settings, runs, layers)
    out.write_text(json.dumps(document, indent=1))
    if args.plots:
        write_plots(document, Path(args.plots), out.stem)
    print(markdown_table(document["methods"]), file=sys.stderr)
    if "scale" in document:
        print(scale_table(document["scale"]), file=sys.stderr)
    headline = {"command": command, "settings": settings}
    headline["methods"] = {m: _headline(v) for m, v in document["methods"].items()}
    if "scale" in document:
        headline["scale"] = {m: _scalars(v) for m, v in document["scale"].items()}
    print(json.dumps(headline))
    return document


if __name__ == "__main__":
    main()
