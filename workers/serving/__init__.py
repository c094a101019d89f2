"""The Ray Serve application behind ``strata serve`` (docs/design.md §4, §5).

One deployment, ``TaskModels``: the HTTP ingress (FastAPI) and the model replica in one, so
that Serve's proxy hands each request straight to the process that runs its forward. A
replica parses and checks requests (JSON arrays, one ``.npy`` array sent as
``application/x-npy``, or multipart image files), answers bad ones itself (400 / 404 / 413 /
422, each a JSON ``{"detail": "<one line>"}``, as the OpenAPI document declares) and runs the
good ones. A request decodes at most ``max_pixels`` pixels, all inputs together: image files
are measured from their headers before any is decoded. Each replica holds the shared weights
of ONE model version once (a ``workers.inference.Predictor``) and loads task views on demand
through ``serve.multiplexed`` (model id = task name), at most ``max_tasks`` of them (LRU). A
task view is only the task's private parameters plus its seq: loading one never re-reads the
weights. Concurrent requests share forwards per task (dynamic batching, ``--batch-wait-ms``).

Every replica pins the model version that was the head when the app was deployed, so
autoscaled replicas serve the same tasks with the same weights; ``strata serve`` checks the
registry every few seconds and redeploys, in place, once tasks were added. The replicas run
exactly the code of ``strata predict``, so logits agree bit for bit on the same device
(``?logits=1`` returns them) for a request that runs alone, within 1e-6 when batched.

The parts: ``requests`` (reading request bodies), ``responses`` (JSON or ``.npy`` answers),
``deployments`` (the deployment and its HTTP API) and ``app`` (building, running and
following the application); what ``strata serve`` accepts is ``workers.serve_options``.
``workers.serving:app_builder`` is the import path of Serve config files
(``deploy/kuberay/rayservice.yaml``).
"""

from workers.serve_options import ServeOptions
from workers.serving.app import (
    APP_NAME,
    app_builder,
    build_app,
    follow_head,
    redeploy_if_head_moved,
    run_app,
)
from workers.serving.deployments import MODELS, TaskModels, api
from workers.serving.requests import NPY_CONTENT_TYPE

__all__ = [
    "APP_NAME",
    "MODELS",
    "NPY_CONTENT_TYPE",
    "ServeOptions",
    "TaskModels",
    "api",
    "app_builder",
    "build_app",
    "follow_head",
    "redeploy_if_head_moved",
    "run_app",
]
