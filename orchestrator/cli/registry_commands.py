"""Commands that read or maintain the registry: init, tasks, show, capacity, jobs, verify, gc."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from base.location import RegistryLocation, masked_url
from orchestrator.cli.app import app
from orchestrator.cli.output import JsonFlag, ago, console, cut, emit, jsd, pct, table
from registry.db import upgrade
from registry.garbage import collect_garbage
from registry.pages import task_document


@app.command()
def init(ctx: typer.Context) -> None:
    """Create or upgrade the registry (Alembic upgrade head)."""
    location: RegistryLocation = ctx.obj.location
    upgrade(location.db_url, store_uri=location.store_uri)
    console.print(
        f"registry ready at {masked_url(location.db_url)} (blobs: {location.store_uri})",
        soft_wrap=True,
    )


@app.command("tasks")
def list_tasks(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the registered tasks."""
    with ctx.obj.registry() as registry:
        tasks = registry.list_tasks()
    if as_json:
        emit([task.to_dict() for task in tasks])
        return
    seqs = {t.name: t.seq for t in tasks}
    table(
        "tasks (ref: the reference task's seq)",
        ["seq", "name", "ref", "JSD", "rate", "val acc", "kept"],
        [
            [
                t.seq,
                t.name,
                seqs.get(t.reference_task or ""),
                jsd(t.reference_jsd),
                pct(t.rate),
                pct(t.measured_accuracy),
                t.kept,
            ]
            for t in tasks
        ],
        wrap=("name",),
    )


@app.command()
def show(ctx: typer.Context, name: str, as_json: JsonFlag = False) -> None:
    """One task: rates per layer, reference task, JSD, mask, accuracy."""
    with ctx.obj.registry() as registry:
        task = registry.get_task(name)
        document = task_document(registry, name)
    if as_json:
        emit(document)
        return
    stored = document["stored"]
    console.print(
        f"[bold]{task.name}[/bold] (seq {task.seq}, {task.status}) data {task.data_spec}\n"
        f"reference {task.reference_task or '-'} JSD {jsd(task.reference_jsd) or '-'}; "
        f"rate {pct(task.rate)}; val accuracy {pct(task.measured_accuracy) or 'not measured'}; "
        f"kept {task.kept}\n"
        f"mask {task.mask.sha256[:12]}… {task.mask.size_bytes} bytes for {task.mask.numel} "
        f"weights\nstored {stored['bytes']} bytes: mask {stored['mask']}, values of the weights "
        f"it took {stored['values']}, private {stored['private']}"
    )
    table(
        "layers",
        ["layer", "rate", "free before", "trained", "freed", "owned"],
        [
            [
                layer["name"],
                pct(layer["rate"]),
                layer["free_before"],
                layer["trained"],
                layer["freed"],
                layer["owned"],
            ]
            for layer in document["layers"]
        ],
    )


@app.command()
def capacity(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Free and owned weights per layer."""
    with ctx.obj.registry() as registry:
        document = registry.capacity()
    if as_json:
        emit(document)
        return
    stored, dense = document["stored_bytes"], document["dense_bytes"]
    ratio = f" ({stored / dense:.2f}× one dense float32 network)" if dense else ""
    console.print(f"stored {stored} bytes for {len(document['tasks'])} tasks{ratio}")
    table(
        f"capacity (free {pct(document['free_fraction'])})",
        ["layer", "weights", "free", "owned"],
        [
            [layer["name"], layer["numel"], layer["free"], layer["owned"]]
            for layer in document["layers"]
        ],
    )


@app.command()
def jobs(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Add-task jobs: state (lost: silent 6 heartbeats), last sign of life, progress."""
    with ctx.obj.registry() as registry:
        rows = registry.list_jobs()
    if as_json:
        emit([job.to_dict() for job in rows])
        return
    table(
        "jobs",
        ["id", "task", "state", "beat", "progress", "error"],
        [
            [
                j.id[:8],
                j.task_name,
                j.state,
                ago(j.heartbeat_at or j.created_at),
                _progress(j.progress),
                cut(j.error, 20),
            ]
            for j in rows
        ],
        wrap=("task",),
    )


def _progress(progress: dict[str, Any] | None) -> str | None:
    """``train 3/4``: the phase and epoch of the last report."""
    if not progress:
        return None
    return f"{progress.get('phase', '')} {progress.get('epoch', '?')}/{progress.get('epochs', '?')}"


@app.command()
def verify(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Integrity: every blob present with its hash, the task deltas tile the network."""
    with ctx.obj.registry() as registry:
        problems = registry.verify()
    if as_json:
        emit({"ok": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            console.print(f"[red]problem[/red] {problem}")
    else:
        console.print("registry ok")
    if problems:
        raise typer.Exit(1)


@app.command()
def gc(
    ctx: typer.Context,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove the ones older than --min-age.")
    ] = False,
    min_age: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Spare objects younger than SECONDS. Jobs block --delete until they end or "
            "are lost (silent 6 heartbeats, 60 s by default).",
        ),
    ] = 3600.0,
    as_json: JsonFlag = False,
) -> None:
    """Blob-store objects no task points to (failed add-tasks leave them behind)."""
    with ctx.obj.registry() as registry:
        garbage = collect_garbage(registry, min_age, delete)
    document = garbage.to_dict(deleted=delete)
    if as_json:
        emit(document)
        return
    table(
        "unreferenced objects",
        ["uri", "bytes", "age (s)"],
        [[item["uri"], item["bytes"], item["age_s"]] for item in document["orphans"]],
    )
    action = "deleted" if delete else f"--delete would remove (older than {min_age:g} s)"
    console.print(
        f"{len(garbage.orphans)} unreferenced, {document['bytes']} bytes; "
        f"{action}: {len(garbage.old)}"
    )
