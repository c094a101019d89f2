"""How many tasks fit: the long-stream analysis of a ``benchmarks/continual.py`` document.

The patent's promise is the number of tasks that can still be added at good accuracy. For
every protected method, against the independent networks of the same seed:

- ``tasks_fit``: tasks learned before a new task's accuracy (right after learning it) first
  falls more than ``FALLOFF`` below the independent network's (the stream length if never);
  per seed, and on the seeds' mean curves;
- ``first_full``: the task after which some layer first had no free weight left (from then
  on that layer is reused at rate 0), and the new tasks' accuracy and gap to independent
  networks before and after that task;
- ``at_10``: the average final accuracy and free fraction after the first 10 tasks (the
  10-task table read off the same runs: nothing after task 10 changes them).
"""

from __future__ import annotations

import statistics
from pathlib import Path

FALLOFF = 0.05
UNPROTECTED = ("finetune", "independent")


def tasks_fit(after: list[float], reference: list[float]) -> int:
    """Tasks learned before one falls more than ``FALLOFF`` below ``reference``."""
    for index, (mine, theirs) in enumerate(zip(after, reference, strict=True)):
        if theirs - mine > FALLOFF:
            return index
    return len(after)


def first_full(free: list[dict[str, float]]) -> int | None:
    """1-based task after which some layer first had no free weight (None: never)."""
    return next((k for k, layers in enumerate(free, start=1) if min(layers.values()) == 0), None)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _curve(runs: list[dict], key: str) -> list[float]:
    return [statistics.fmean(r[key][k] for r in runs) for k in range(len(runs[0][key]))]


def _method_scale(runs: list[dict], independent: dict[int, dict]) -> dict:
    per_seed = []
    for run in runs:
        reference = independent[run["seed"]]["after"]
        gaps = [theirs - mine for mine, theirs in zip(run["after"], reference, strict=True)]
        full = first_full(run["free"])
        split = full if full is not None else len(gaps)
        per_seed.append(
            {
                "seed": run["seed"],
                "tasks_fit": tasks_fit(run["after"], reference),
                "first_full": full,
                "tasks_over_falloff": sum(gap > FALLOFF for gap in gaps),
                "new_acc_before_full": _mean(run["after"][:split]),
                "new_acc_after_full": _mean(run["after"][split:]),
                "gap_before_full": _mean(gaps[:split]),
                "gap_after_full": _mean(gaps[split:]),
            }
        )
    after = _curve(runs, "after")
    mean_reference = _curve(list(independent.values()), "after")
    summary = {
        "tasks_fit_mean_curve": tasks_fit(after, mean_reference),
        "tasks_fit_per_seed": [s["tasks_fit"] for s in per_seed],
        "first_full_per_seed": [s["first_full"] for s in per_seed],
        "after_per_task": after,
        "gap_per_task": [t - m for m, t in zip(after, mean_reference, strict=True)],
        "free_total_per_task": _curve(runs, "free_total"),
        "per_seed": per_seed,
    }
    if len(runs[0]["matrix"]) >= 10:
        summary["at_10"] = {
            "avg_accuracy": statistics.fmean(statistics.fmean(r["matrix"][9]) for r in runs),
            "free_total": statistics.fmean(r["free_total"][9] for r in runs),
        }
    return summary


def scale_summary(document: dict) -> dict:
    """The analysis of every protected method in ``document`` (needs ``independent`` runs)."""
    independent = {run["seed"]: run for run in document["runs"]["independent"]}
    scale = {
        method: _method_scale(runs, independent)
        for method, runs in document["runs"].items()
        if method not in UNPROTECTED and all(r["seed"] in independent for r in runs)
    }
    scale["independent"] = {"after_per_task": _curve(list(independent.values()), "after")}
    return scale


def scale_table(scale: dict) -> str:
    """Markdown: one row per method."""
    rows = [
        "| method | tasks fit (mean curve; per seed) | first layer full after task (per seed) "
        "| new-task acc before / after full | gap to independent before / after full "
        "| avg acc / free after 10 tasks |",
        "|---|---|---|---|---|---|",
    ]

    def pair(values: list[float | None]) -> str:
        return " / ".join("–" if v is None else f"{v:.3f}" for v in values)

    for method, s in scale.items():
        if method == "independent":
            continue
        mean = lambda key, seeds=s["per_seed"]: _mean(  # noqa: E731
            [x[key] for x in seeds if x[key] is not None]
        )
        full = ", ".join("never" if f is None else str(f) for f in s["first_full_per_seed"])
        at_10 = s.get("at_10")
        ten = f"{at_10['avg_accuracy']:.3f} / {at_10['free_total']:.1%}" if at_10 else "–"
        rows.append(
            f"| {method} | {s['tasks_fit_mean_curve']}; "
            f"{', '.join(map(str, s['tasks_fit_per_seed']))} | {full} "
            f"| {pair([mean('new_acc_before_full'), mean('new_acc_after_full')])} "
            f"| {pair([mean('gap_before_full'), mean('gap_after_full')])} | {ten} |"
        )
    return "\n".join(rows)


def write_scale_plot(scale: dict, path: Path) -> None:
    """New-task accuracy and total free fraction against the number of tasks learned."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    FigureCanvasAgg(fig)
    accuracy, free = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for method, s in scale.items():
        steps = range(1, len(s["after_per_task"]) + 1)
        accuracy.plot(steps, s["after_per_task"], label=method, linewidth=1)
        if "free_total_per_task" in s:
            free.plot(steps, s["free_total_per_task"], label=method, linewidth=1)
    accuracy.set(xlabel="task k", ylabel="test acc right after learning k", ylim=(0, 1))
    free.set(xlabel="tasks learned", ylabel="free fraction of all weights", ylim=(0, 1))
    accuracy.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
