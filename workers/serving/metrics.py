"""Prometheus metrics of the serving application, per task and route (``ray.serve.metrics``).

Ray exports them with its own metrics (each node's metrics export port, where KubeRay's
PodMonitor scrapes); Serve adds the deployment, replica and application tags. The ingress
counts requests, errors and latency per route and task (an ASGI middleware, so every route
and every error answer is counted, and nothing is buffered); the same replicas record the
batch sizes they run and the task views they load and evict.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import cache
from typing import Any

from ray.serve.metrics import Counter, Histogram

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]
LATENCY_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
# (path segments before the task, route label): /predict/{task}, /v2/models/{task}[/...]
ROUTES = {
    ("predict",): "predict",
    ("v2", "models"): "v2_model",
}
V2_ACTIONS = {"infer": "v2_infer", "ready": "v2_model_ready"}
DASHBOARD = "ui"  # the registry dashboard mounted at /ui (workers/dashboard)


@cache
def _metrics() -> dict[str, Counter | Histogram]:
    """Created on first use, in the replica that records them."""
    return {
        "requests": Counter(
            "strata_requests",
            description="HTTP requests answered, by route, task and status.",
            tag_keys=("route", "task", "status"),
        ),
        "errors": Counter(
            "strata_request_errors",
            description="HTTP requests answered with a 4xx or 5xx, by route, task and status.",
            tag_keys=("route", "task", "status"),
        ),
        "latency": Histogram(
            "strata_request_latency_ms",
            description="Time from request to the end of the answer, in milliseconds.",
            boundaries=LATENCY_MS,
            tag_keys=("route", "task"),
        ),
        "batch": Histogram(
            "strata_batch_size",
            description="Inputs per forward pass in a model replica.",
            boundaries=BATCH_SIZES,
            tag_keys=("task",),
        ),
        "loads": Counter(
            "strata_model_loads",
            description="Task views loaded into a model replica.",
            tag_keys=("task",),
        ),
        "evictions": Counter(
            "strata_model_evictions",
            description="Task views evicted from a model replica's cache.",
            tag_keys=("task",),
        ),
    }


def route_and_task(path: str) -> tuple[str, str]:
    """The route label and the task a request path names ('' when it names none)."""
    parts = path.strip("/").split("/")
    if parts[0] == DASHBOARD:  # one label for the dashboard: its paths name every task
        return DASHBOARD, ""
    for prefix, route in ROUTES.items():
        n = len(prefix)
        if tuple(parts[:n]) == prefix and len(parts) > n:
            action = parts[n + 1] if len(parts) == n + 2 else ""
            return V2_ACTIONS.get(action, route), parts[n]
    return "/" + "/".join(parts), ""


class MetricsMiddleware:
    """Counts every HTTP answer of the app it wraps (pure ASGI: no body is buffered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._record(scope["path"], status[0], time.perf_counter() - start)

    @staticmethod
    def _record(path: str, status: int, seconds: float) -> None:
        route, task = route_and_task(path)
        if status == 404:  # unknown names would grow the label set without bound
            task = ""
        if not route.startswith(("predict", "v2_")) and status == 404:
            route = "unrouted"
        metrics = _metrics()
        tags = {"route": route, "task": task, "status": str(status)}
        metrics["requests"].inc(tags=tags)
        if status >= 400:
            metrics["errors"].inc(tags=tags)
        metrics["latency"].observe(seconds * 1000, tags={"route": route, "task": task})


def record_batch(task: str, size: int) -> None:
    _metrics()["batch"].observe(size, tags={"task": task})


def record_loads(task: str, before: list[str], after: list[str]) -> None:
    """A task view load and the views it evicted (``before``/``after``: the loaded views)."""
    metrics = _metrics()
    if task not in before:
        metrics["loads"].inc(tags={"task": task})
    for evicted in set(before) - set(after):
        metrics["evictions"].inc(tags={"task": evicted})
