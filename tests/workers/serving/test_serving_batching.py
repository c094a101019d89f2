"""Dynamic batching in the model replica, the ``.npy`` logits answer and the v2 ``class`` output.

One live server per batching mode (one replica, so concurrent requests meet): with batching
off every answer is ``strata predict``'s logits bit for bit; with it on, concurrent requests
of different sizes for one and for different tasks share forwards (the ``Strata-Batch``
header says how many inputs a forward held) and each still gets its own rows, of its own task,
within 1e-6 of ``strata predict``'s (docs/serving.md, *Dynamic batching*).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from ray import serve

from base.location import RegistryLocation
from tests.workers.serving.serving_support import TASKS, free_port
from workers.inference import AUTO, Prediction, Predictor
from workers.serving import NPY_CONTENT_TYPE, ServeOptions, run_app
from workers.serving.oip import _answer
from workers.serving.oip_models import InferenceRequest
from workers.serving.responses import BATCH_HEADER, TASK_HEADER

pytestmark = pytest.mark.ray

# Long enough that a burst of concurrent requests reaches the replica within one wait.
BATCH_WAIT_MS = {"off": 0.0, "on": 500.0}
# (task, inputs) of one burst: different sizes, the same task several times, every task.
BURST = [("alpha", 1), ("alpha", 3), ("beta", 2), ("alpha", 5), ("gamma", 8), ("beta", 1),
         ("alpha", 7), ("gamma", 4), ("beta", 6), ("alpha", 2)]  # fmt: skip
BATCHED_TOLERANCE = 1e-6
# Serve routes on it and splits its batches by it; the URL's task must decide all the same.
MODEL_ID_HEADER = "serve_multiplexed_model_id"


@pytest.fixture(scope="module", params=list(BATCH_WAIT_MS))
def mode_server(
    request: pytest.FixtureRequest, ray_session, served_location: RegistryLocation
) -> Iterator[tuple[str, httpx.Client]]:
    """One replica holding every task, batching off or on; shut down after its tests."""
    options = ServeOptions(
        port=free_port(),
        min_replicas=1,
        max_replicas=1,
        max_tasks=len(TASKS),
        target_ongoing=len(BURST),
        batch_wait_ms=BATCH_WAIT_MS[request.param],
    )
    try:
        url = run_app(served_location, options, blocking=False)
        with httpx.Client(base_url=url, timeout=60) as client:
            yield request.param, client
    finally:
        serve.shutdown()


def _npy(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    return buffer.getvalue()


def _post(url: str, task: str, pixels: np.ndarray, model_id: str = "") -> httpx.Response:
    """One request; ``model_id`` also names a task in Serve's multiplexed-model header."""
    headers = {"content-type": NPY_CONTENT_TYPE}
    if model_id:
        headers[MODEL_ID_HEADER] = model_id
    with httpx.Client(base_url=url, timeout=60) as client:  # one connection per request
        return client.post(f"/predict/{task}?logits=1", content=_npy(pixels), headers=headers)


def _logits(answer: httpx.Response) -> torch.Tensor:
    assert answer.status_code == 200, answer.text
    return torch.tensor(answer.json()["logits"], dtype=torch.float32)


def test_concurrent_requests_get_their_own_rows(
    mode_server: tuple[str, httpx.Client], predictor: Predictor, probe: torch.Tensor
) -> None:
    """Each request of a concurrent burst against the same request sent alone: bit for bit
    with batching off, within 1e-6 with it on; and against ``strata predict`` in process.
    The burst's requests all name ``alpha`` in Serve's multiplexed-model header, so only the
    replica's own grouping by the URL's task keeps a forward to one task."""
    mode, client = mode_server
    url = str(client.base_url)
    tasks = [task for task, _ in BURST]
    pixels = [probe[torch.arange(size) % len(probe), 0].flip(0).numpy() for _, size in BURST]
    alone = [_post(url, task, x) for task, x in zip(tasks, pixels, strict=True)]
    with ThreadPoolExecutor(len(BURST)) as pool:
        together = list(pool.map(_post, [url] * len(BURST), tasks, pixels, ["alpha"] * len(BURST)))
    forwards = []
    for (task, size), x, single, answer in zip(BURST, pixels, alone, together, strict=True):
        logits, reference = _logits(answer), _logits(single)
        document = answer.json()
        assert document["task"] == task and logits.shape == (size, TASKS[task])
        assert len(document["predictions"]) == size
        if mode == "off":
            assert torch.equal(logits, reference), task
        else:
            assert (logits - reference).abs().max() <= BATCHED_TOLERANCE, task
        in_process = predictor.predict(task, torch.from_numpy(x[:, None])).logits
        assert (logits - in_process).abs().max() <= BATCHED_TOLERANCE, task
        assert int(single.headers[BATCH_HEADER]) == size
        forwards.append(int(answer.headers[BATCH_HEADER]))
    if mode == "off":
        assert forwards == [size for _, size in BURST]
    else:  # requests for one task joined one forward at least once
        assert any(held > size for held, (_, size) in zip(forwards, BURST, strict=True))


def test_npy_answers_carry_the_logits(
    mode_server: tuple[str, httpx.Client], predictor: Predictor, probe: torch.Tensor
) -> None:
    _, client = mode_server
    for task in [*TASKS, AUTO]:
        answer = client.post(
            f"/predict/{task}",
            content=_npy(probe[:, 0].numpy()),
            headers={"content-type": NPY_CONTENT_TYPE, "accept": NPY_CONTENT_TYPE},
        )
        assert answer.status_code == 200 and answer.headers["content-type"] == NPY_CONTENT_TYPE
        logits = np.load(io.BytesIO(answer.content), allow_pickle=False)
        expected = predictor.predict(task, probe)
        assert answer.headers[TASK_HEADER] == expected.task
        assert logits.dtype == np.float32 and torch.equal(torch.from_numpy(logits), expected.logits)
    refused = client.post(
        "/predict/nope", content=b"", headers={"accept": NPY_CONTENT_TYPE}
    )  # errors stay JSON whatever the client accepts
    assert refused.status_code == 404 and "detail" in refused.json()


def test_v2_answers_name_the_classes(
    mode_server: tuple[str, httpx.Client], predictor: Predictor, probe: torch.Tensor
) -> None:
    _, client = mode_server
    triton_client = triton.InferenceServerClient(url=client.base_url.netloc.decode())
    try:
        pixels = (probe[:, 0].numpy() * 255).round().astype(np.uint8)
        tensor = triton.InferInput("input", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        outputs = [triton.InferRequestedOutput(name) for name in ("label", "class")]
        for task in TASKS:
            result = triton_client.infer(task, [tensor], outputs=outputs)
            names = predictor.view(task).class_names
            classes = [item.decode() for item in result.as_numpy("class")]
            assert classes == [names[label] for label in result.as_numpy("label")]
    finally:
        triton_client.close()
    metadata = client.get("/v2/models/alpha").json()
    assert {"name": "class", "datatype": "BYTES", "shape": [-1]} in metadata["outputs"]


def test_v2_class_output_as_json_and_binary() -> None:
    """Named classes in both of the protocol's encodings (no server: the answer itself)."""
    prediction = Prediction("pets", torch.tensor([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0]]),
                            class_names=("cat", "dög", "ibis"))  # fmt: skip
    as_json = InferenceRequest.model_validate({"inputs": [], "outputs": [{"name": "class"}]})
    (output,) = json.loads(_answer("pets", 1, as_json, prediction).body)["outputs"]
    assert output == {"name": "class", "datatype": "BYTES", "shape": [2], "data": ["dög", "cat"]}
    binary = InferenceRequest.model_validate(
        {"inputs": [], "outputs": [{"name": "class", "parameters": {"binary_data": True}}]}
    )
    answer = _answer("pets", 1, binary, prediction)
    tail = answer.body[int(answer.headers["inference-header-content-length"]) :]
    assert tail == b"\x04\x00\x00\x00d\xc3\xb6g\x03\x00\x00\x00cat"
