"""The predict route's answers: JSON encoded by orjson, or the logits as one ``.npy`` array.

A client that sends ``Accept: application/x-npy`` gets the raw logits (float32, one row per
input): no text to write or parse, whatever the batch. Both answers name the task in the
``Strata-Task`` header. JSON answers are the same documents as before, written by orjson
in one pass.
"""

from __future__ import annotations

import io

import numpy as np
import orjson
from fastapi.responses import Response

from workers.inference import Prediction
from workers.serving.requests import NPY_CONTENT_TYPE

TASK_HEADER = "Strata-Task"
# How many inputs the forward that answered held: more than the request's when dynamic
# batching joined it with others (docs/serving.md). Absent for ``auto``.
BATCH_HEADER = "Strata-Batch"
# The 200 answers /openapi.json declares beside the JSON document.
NPY_ANSWER = {
    "description": "Predictions as JSON; with `Accept: application/x-npy` the logits as one "
    "float32 .npy array (N, classes), the task in the Strata-Task header.",
    "content": {NPY_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
}


def wants_npy(accept: str) -> bool:
    """Whether an ``Accept`` header asks for the ``.npy`` answer."""
    return NPY_CONTENT_TYPE in accept


def _headers(prediction: Prediction) -> dict[str, str]:
    batch = {BATCH_HEADER: str(prediction.forward_inputs)} if prediction.forward_inputs else {}
    return {TASK_HEADER: prediction.task, **batch}


def npy_response(prediction: Prediction) -> Response:
    """The logits as ``numpy.save`` writes them (no pickle: ``numpy.load`` reads it plainly)."""
    buffer = io.BytesIO()
    np.save(buffer, prediction.logits.numpy(), allow_pickle=False)
    return Response(buffer.getvalue(), media_type=NPY_CONTENT_TYPE, headers=_headers(prediction))


def json_response(prediction: Prediction, inputs: list[str], with_logits: bool) -> Response:
    """The predictions document (``?logits=1`` adds the logits, as float64 text like before)."""
    document = prediction.to_dict(inputs)
    if with_logits:
        document["logits"] = prediction.logits.numpy().astype(np.float64)
    body = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, media_type="application/json", headers=_headers(prediction))
