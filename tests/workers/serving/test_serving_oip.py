"""The Open Inference Protocol v2 routes, spoken by a client nobody here wrote (tritonclient),
the typed OpenAPI document checked by schemathesis, and the Prometheus metrics of one server."""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
import pytest
import schemathesis
import torch
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.workers.serving.serving_support import MAX_BATCH, TASKS
from workers.data import as_images
from workers.inference import AUTO, Predictor
from workers.serving.metrics import route_and_task

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def triton_client(server: httpx.Client) -> triton.InferenceServerClient:
    client = triton.InferenceServerClient(url=server.base_url.netloc.decode(), network_timeout=60)
    yield client
    client.close()


def _infer(
    client: triton.InferenceServerClient, task: str, pixels: np.ndarray, datatype: str
) -> triton.InferResult:
    tensor = triton.InferInput("input", list(pixels.shape), datatype)
    tensor.set_data_from_numpy(pixels)
    outputs = [triton.InferRequestedOutput(name) for name in ("label", "score", "logits")]
    return client.infer(task, [tensor], outputs=outputs)


def test_health_and_metadata_over_v2(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    for task in [*TASKS, AUTO]:
        assert triton_client.is_model_ready(task)
        metadata = triton_client.get_model_metadata(task)
        assert metadata["name"] == task
        assert [o["name"] for o in metadata["outputs"]] == ["label", "score", "logits", "class"]
    assert not triton_client.is_model_ready("nope")


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_v2_logits_equal_strata_predict_bit_for_bit(
    triton_client: triton.InferenceServerClient,
    predictor: Predictor,
    probe: torch.Tensor,
    datatype: str,
) -> None:
    grey = probe[:, 0].numpy()  # (N, H, W)
    pixels = grey if datatype == "FP32" else (grey * 255).round().astype(np.uint8)
    images = torch.from_numpy(pixels)[:, None] if datatype == "FP32" else as_images(pixels)
    for task in [*TASKS, AUTO]:
        expected = predictor.predict(task, images)
        result = _infer(triton_client, task, pixels, datatype)
        logits = result.as_numpy("logits")
        assert logits.dtype == np.float32
        assert torch.equal(torch.from_numpy(logits), expected.logits), task
        assert result.get_response()["parameters"]["task"] == expected.task
        probabilities = torch.softmax(expected.logits, dim=1)
        assert result.as_numpy("label").tolist() == probabilities.argmax(dim=1).tolist()
        assert np.array_equal(result.as_numpy("score"), probabilities.max(dim=1).values.numpy())


def test_json_tensors_answer_json(server: httpx.Client, probe: torch.Tensor) -> None:
    """JSON data in, JSON data out: the logits of ``/predict`` on the same pixels (both run
    in the replica; in-process logits can differ in the last bit with another thread count)."""
    pixels = (probe[:2, 0].numpy() * 255).round().astype(np.uint8)[..., None]  # (N, H, W, 1)
    request = {"inputs": [{"name": "input", "shape": [2, 32, 32, 1], "datatype": "UINT8",
                           "data": pixels.ravel().tolist()}],
               "outputs": [{"name": "logits"}], "id": "r1"}  # fmt: skip
    answer = server.post("/v2/models/beta/infer", json=request)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["id"] == "r1" and document["model_name"] == "beta"
    (logits,) = document["outputs"]
    assert logits["shape"] == [2, TASKS["beta"]] and logits["datatype"] == "FP32"
    ours = server.post("/predict/beta?logits=1", json={"inputs": pixels.tolist()}).json()
    assert torch.equal(
        torch.tensor(logits["data"], dtype=torch.float32).view(2, -1),
        torch.tensor(ours["logits"], dtype=torch.float32),
    )


def _tensor(shape: list[int], datatype: str = "FP32", data: list | None = None, **extra) -> dict:
    count = int(np.prod(shape)) if shape else 0
    values = data if data is not None else [0.5] * count
    return {"name": "input", "shape": shape, "datatype": datatype, "data": values, **extra}


BAD_V2 = [
    ("unknown model", "nope", {"inputs": [_tensor([1, 4, 4])]}, 404),
    ("wrong datatype", "alpha", {"inputs": [_tensor([1, 4, 4], "FP64")]}, 400),
    ("shape mismatch", "alpha", {"inputs": [_tensor([1, 4, 4], data=[0.5] * 15)]}, 400),
    ("shape of 2 dims", "alpha", {"inputs": [_tensor([4, 4])]}, 400),
    ("negative shape", "alpha", {"inputs": [_tensor([1, -4, 4], data=[])]}, 400),
    ("missing input", "alpha", {"inputs": []}, 400),
    ("extra input", "alpha", {"inputs": [_tensor([1, 4, 4]), _tensor([1, 4, 4])]}, 400),
    ("wrong input name", "alpha", {"inputs": [_tensor([1, 4, 4]) | {"name": "x"}]}, 400),
    ("oversized batch", "alpha", {"inputs": [_tensor([MAX_BATCH + 1, 4, 4])]}, 413),
    ("huge claimed shape", "alpha", {"inputs": [_tensor([1, 10**9, 10**9], data=[])]}, 413),
    ("non-finite FP32", "alpha", {"inputs": [_tensor([1, 2, 2], data=[0.5, 1e39, 0, 0])]}, 400),
    ("UINT8 out of range", "alpha", {"inputs": [_tensor([1, 2, 2], "UINT8", [0, 1, 2, 256])]}, 400),
    ("text data", "alpha", {"inputs": [_tensor([1, 2, 2], data=["a", "b", "c", "d"])]}, 400),
    ("unknown output", "alpha", {"inputs": [_tensor([1, 4, 4])], "outputs": [{"name": "x"}]}, 400),
    ("no inputs field", "alpha", {"id": "x"}, 400),
    ("unknown field", "alpha", {"inputs": [_tensor([1, 4, 4])], "extra": 1}, 400),
]


@pytest.mark.parametrize("label, model, document, status", BAD_V2, ids=[b[0] for b in BAD_V2])
def test_bad_v2_requests_get_the_protocols_error(
    server: httpx.Client, label: str, model: str, document: dict, status: int
) -> None:
    answer = server.post(f"/v2/models/{model}/infer", json=document)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert set(error) == {"error"} and isinstance(error["error"], str) and error["error"]
    assert "Traceback" not in error["error"]


@pytest.mark.parametrize(
    "content, headers",
    [
        (b"{not json", {}),
        (b'{"inputs": []}', {"inference-header-content-length": "999"}),
        (
            b'{"inputs": [{"name": "input", "shape": [1, 2, 2], "datatype": "FP32"}]}\x00',
            {"inference-header-content-length": "71"},
        ),  # fmt: skip
    ],
)
def test_unreadable_v2_bodies(server: httpx.Client, content: bytes, headers: dict) -> None:
    answer = server.post("/v2/models/alpha/infer", content=content, headers=headers)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"error"}


def test_unrouted_v2_paths_answer_the_protocols_error(server: httpx.Client) -> None:
    answer = server.get("/v2/models/a/b/c")
    assert answer.status_code == 404 and set(answer.json()) == {"error"}
    assert server.get("/nope").json() == {"detail": "Not Found"}  # Strata's own shape stays


# ---- the OpenAPI document, checked against the live server -----------------------------------


def test_the_live_server_keeps_its_openapi_document(server: httpx.Client) -> None:
    """Generated requests to every route (a few each, to a served task: unknown names are
    tested above): no 5xx, no status, content type or body the document does not declare."""
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    statuses: list[int] = []

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            for name in case.path_parameters or {}:  # a served task: the bodies get read
                case.path_parameters[name] = "alpha"
            response = case.call_and_validate(
                base_url=str(server.base_url), checks=checks, timeout=60
            )
            statuses.append(response.status_code)

        check()
    assert len(statuses) > 3 * len(operations) and {200, 400, 422} <= set(statuses)


def test_the_openapi_document_is_typed(server: httpx.Client) -> None:
    document = server.get("/openapi.json").json()
    infer = document["paths"]["/v2/models/{model}/infer"]["post"]
    body = infer["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/InferenceRequest"}
    schemas = document["components"]["schemas"]
    assert {"InferenceRequest", "RequestInput", "InferenceResponse"} <= set(schemas)
    ok = infer["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/InferenceResponse"}


# ---- metrics, after the traffic above ------------------------------------------------------------


def _scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return ""


def test_metrics_are_exported_where_ray_exports_metrics(server: httpx.Client) -> None:
    """Every family, per task and route, on the node's Prometheus export port (Ray pushes
    them every few seconds: polled until they are there, with a deadline)."""
    import ray

    for task in TASKS:  # three tasks through a replica caching two: one eviction at least
        assert server.post(f"/predict/{task}", json={"inputs": [[[0.5]]]}).status_code == 200
    port = ray._private.worker.global_worker.node.metrics_export_port
    wanted = [
        'ray_strata_requests_total{.*route="v2_infer".*status="200".*task="alpha"',
        'ray_strata_requests_total{.*route="predict".*status="200".*task="gamma"',
        'ray_strata_request_errors_total{.*route="v2_infer".*status="400".*task="alpha"',
        'ray_strata_request_latency_ms_bucket{.*route="predict".*task="beta"',
        'ray_strata_batch_size_bucket{.*task="alpha"',
        'ray_strata_model_loads_total{.*task="beta"',
        "ray_strata_model_evictions_total{",
    ]
    deadline = time.monotonic() + 90
    missing = wanted
    while missing and time.monotonic() < deadline:
        text = _scrape(port)
        missing = [pattern for pattern in wanted if not re.search(pattern, text)]
        if missing:
            time.sleep(1)
    assert not missing, missing


@pytest.mark.parametrize(
    "path, route, task",
    [
        ("/predict/alpha", "predict", "alpha"),
        ("/v2/models/beta/infer", "v2_infer", "beta"),
        ("/v2/models/beta/ready", "v2_model_ready", "beta"),
        ("/v2/models/auto", "v2_model", "auto"),
        ("/v2/health/live", "/v2/health/live", ""),
        ("/healthz", "/healthz", ""),
        ("/ui/tasks/alpha", "ui", ""),
        ("/ui/api/jobs", "ui", ""),
    ],
)
def test_metric_tags_name_the_route_and_task(path: str, route: str, task: str) -> None:
    assert route_and_task(path) == (route, task)
