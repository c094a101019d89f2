"""The Ray Serve application end to end over loopback HTTP, against real tiny tasks."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from ray import serve
from typer.testing import CliRunner

from base.errors import StrataError
from base.location import RegistryLocation
from base.ports import ensure_port_free
from orchestrator.cli import app as cli
from registry.errors import TaskNotFound
from tests.workers.serving.serving_support import MAX_BATCH, TASKS
from workers.inference import Predictor, read_inputs
from workers.serving import APP_NAME, MODELS, NPY_CONTENT_TYPE, ServeOptions, run_app

pytestmark = pytest.mark.ray


def _logits(answer: httpx.Response) -> torch.Tensor:
    assert answer.status_code == 200, answer.text
    return torch.tensor(answer.json()["logits"], dtype=torch.float32)


def _predict(client: httpx.Client, task: str, x: torch.Tensor) -> httpx.Response:
    return client.post(f"/predict/{task}?logits=1", json={"inputs": x[:, 0].tolist()})


def test_health_and_task_list(server: httpx.Client) -> None:
    assert server.get("/healthz").json()["ok"] is True
    assert server.get("/tasks").json()["tasks"] == list(TASKS)


def test_the_dashboard_is_served_under_ui(server: httpx.Client) -> None:
    """``/ui`` is the same app as ``strata ui``, reading the served registry."""
    page = server.get("/ui", follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert all(f">{task}</a>" in page.text for task in TASKS)
    listed = server.get("/ui/api/tasks").json()["tasks"]
    assert [(t["name"], t["num_classes"]) for t in listed] == list(TASKS.items())
    assert server.get("/ui/static/style.css").status_code == 200
    missing = server.get("/ui/tasks/nope")
    assert missing.status_code == 404 and "no task named &#39;nope&#39;" in missing.text


def test_every_task_answers_with_the_in_process_logits(
    server: httpx.Client, predictor: Predictor, probe: torch.Tensor
) -> None:
    for task, classes in TASKS.items():
        answer = _predict(server, task, probe)
        expected = predictor.predict(task, probe)
        assert torch.equal(_logits(answer), expected.logits), task
        document = answer.json()
        assert document["task"] == task and _logits(answer).shape == (len(probe), classes)
        names = [f"inputs[{i}]" for i in range(len(probe))]
        assert document["predictions"] == expected.to_dict(names)["predictions"]
    without = server.post(f"/predict/{task}", json={"inputs": probe[:, 0].tolist()}).json()
    assert "logits" not in without and len(without["predictions"]) == len(probe)


def test_npy_bodies_answer_like_json(
    server: httpx.Client, predictor: Predictor, probe: torch.Tensor
) -> None:
    buffer = io.BytesIO()
    np.save(buffer, probe[:, 0].numpy())
    answer = server.post(
        "/predict/alpha?logits=1",
        content=buffer.getvalue(),
        headers={"content-type": NPY_CONTENT_TYPE},
    )
    assert torch.equal(_logits(answer), predictor.predict("alpha", probe).logits)
    assert answer.json()["predictions"] == _predict(server, "alpha", probe).json()["predictions"]


def test_image_files_answer_like_strata_predict(
    server: httpx.Client,
    predictor: Predictor,
    served_location: RegistryLocation,
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(1)
    paths = []
    # Runs of equal sizes travel as one array: fitted together, they must match file by file.
    shapes = [(32, 32), (40, 28), (40, 28), (40, 28, 3), (40, 28, 3), (32, 32)]
    for index, shape in enumerate(shapes):
        path = tmp_path / f"image{index}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    answer = server.post("/predict/beta?logits=1", files=files)
    names, batch = read_inputs(paths, predictor)
    assert torch.equal(_logits(answer), predictor.predict("beta", batch).logits)

    args = ["--db", served_location.db_url, "--store", served_location.store_uri]
    result = CliRunner().invoke(cli, [*args, "predict", "beta", *map(str, paths), "--json"])
    assert result.exit_code == 0, result.output
    local = json.loads(result.stdout)["predictions"]
    served = answer.json()["predictions"]
    assert [p["input"] for p in served] == [p.name for p in paths]
    assert [(p["label"], p["score"]) for p in served] == [(p["label"], p["score"]) for p in local]
    # A task committed without class names is named by its labels, in both answers.
    assert (
        [p["class"] for p in served]
        == [p["class"] for p in local]
        == [str(p["label"]) for p in local]
    )


def test_a_large_jpeg_decodes_like_strata_predict(
    server: httpx.Client, predictor: Predictor, tmp_path: Path
) -> None:
    """Above 4 Mi pixels a JPEG may decode at reduced scale for the small backbone: the
    replica does it as ``strata predict`` does, so the logits still agree bit for bit."""
    stripes = np.add.outer(np.arange(2400), 2 * np.arange(2400)) % 256
    path = tmp_path / "large.jpg"
    Image.fromarray(np.stack([stripes] * 3, axis=-1).astype(np.uint8)).save(path, quality=80)
    answer = server.post(
        "/predict/gamma?logits=1", files=[("files", (path.name, path.read_bytes(), "image/jpeg"))]
    )
    _, batch = read_inputs([path], predictor)
    assert torch.equal(_logits(answer), predictor.predict("gamma", batch).logits)


def test_auto_names_the_task_it_chose(
    server: httpx.Client, predictor: Predictor, probe: torch.Tensor
) -> None:
    answer = _predict(server, "auto", probe)
    expected = predictor.predict("auto", probe)
    document = answer.json()
    assert document["task"] == expected.task and document["task"] in TASKS
    assert document["auto"]["jsd"] == pytest.approx(expected.jsd)
    assert torch.equal(_logits(answer), expected.logits)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_REQUESTS = [
    ("unknown task", "/predict/nope", {"json": {"inputs": [[[0.0]]]}}, 404),
    ("not json", "/predict/alpha", {"content": b"{oops"}, 400),
    ("no inputs", "/predict/alpha", {"json": {"images": []}}, 422),
    ("ragged", "/predict/alpha", {"json": {"inputs": [[[0.0, 1.0], [1.0]]]}}, 422),
    ("bad layout", "/predict/alpha", {"json": {"inputs": np.zeros((1, 2, 5, 5)).tolist()}}, 400),
    (
        "oversized batch",
        "/predict/alpha",
        {"json": {"inputs": np.zeros((MAX_BATCH + 1, 4, 4)).tolist()}},
        413,
    ),
    ("corrupt image", "/predict/alpha", {"files": [("f", ("x.png", b"nope", "image/png"))]}, 400),
    ("too many files", "/predict/alpha", {"files": [("f", ("x.png", _png()))] * 9}, 413),
    (
        "not an npy array",
        "/predict/alpha",
        {"content": b"oops", "headers": {"content-type": "application/x-npy"}},
        400,
    ),
    ("bad query", "/predict/alpha?logits=maybe", {"json": {"inputs": [[[0.0]]]}}, 422),
]


def test_bad_requests_get_json_details_and_serving_goes_on(
    server: httpx.Client, predictor: Predictor, probe: torch.Tensor
) -> None:
    for label, path, request, status in BAD_REQUESTS:
        answer = server.post(path, **request)
        assert answer.status_code == status, (label, answer.text)
        assert answer.json()["detail"], label
    assert torch.equal(
        _logits(_predict(server, "gamma", probe)), predictor.predict("gamma", probe).logits
    )


def test_a_second_server_on_the_port_is_refused(server: httpx.Client, port: int) -> None:
    """Serve listens with SO_REUSEPORT: a second server there would share the traffic."""
    for host in ("127.0.0.1", "0.0.0.0"):
        with pytest.raises(StrataError, match=f"port {port} on {host} is already in use"):
            ensure_port_free(host, port)
    assert server.get("/healthz").json()["ok"] is True


def test_a_replica_refuses_unknown_tasks_itself(server: httpx.Client) -> None:
    """Called by handle (another Serve app composing this one), not only over HTTP."""
    handle = serve.get_deployment_handle(MODELS, APP_NAME)
    with pytest.raises(TaskNotFound, match="not served"):
        handle.forward.remote("nope", []).result()


def test_lru_eviction_with_one_task_per_replica(
    served_location: RegistryLocation,
    port: int,
    server: httpx.Client,
    predictor: Predictor,
    probe: torch.Tensor,
) -> None:
    """Redeployed with room for one task: every switch evicts, every answer stays exact."""
    options = ServeOptions(port=port, min_replicas=1, max_replicas=1, max_tasks=1)
    run_app(served_location, options, blocking=False)
    handle = serve.get_deployment_handle(MODELS, APP_NAME)
    for task in ["alpha", "beta", "alpha", "gamma", "beta"]:
        answer = _predict(server, task, probe)
        assert torch.equal(_logits(answer), predictor.predict(task, probe).logits), task
        assert handle.loaded.remote().result() == [task]


def _running_model_replicas() -> int:
    deployment = serve.status().applications[APP_NAME].deployments[MODELS]
    return deployment.replica_states.get("RUNNING", 0)


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes (autoscaling is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def test_the_model_pool_scales_out_under_load_and_back_in(
    served_location: RegistryLocation,
    port: int,
    server: httpx.Client,
    predictor: Predictor,
    probe: torch.Tensor,
) -> None:
    """Sustained load beyond the target adds a replica; once idle, the pool shrinks again."""
    options = ServeOptions(
        port=port, min_replicas=1, max_replicas=2, max_tasks=3, target_ongoing=1,
        upscale_delay_s=0.5, downscale_delay_s=2.0,
    )  # fmt: skip
    run_app(served_location, options, blocking=False)
    assert _running_model_replicas() == 1
    stop, statuses = threading.Event(), []

    def client() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as session:
            while not stop.is_set():
                statuses.append(_predict(session, "alpha", probe).status_code)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        scaled_out = _wait_until(lambda: _running_model_replicas() == 2, timeout_s=90)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert scaled_out, serve.status().applications[APP_NAME].deployments[MODELS]
    assert statuses and set(statuses) == {200}
    assert _wait_until(lambda: _running_model_replicas() == 1, timeout_s=90)
    answer = _predict(server, "beta", probe)
    assert torch.equal(_logits(answer), predictor.predict("beta", probe).logits)
