"""Open Inference Protocol v2 (KServe v2) REST routes of the served application.

The routes KServe, Triton and MLServer clients speak, beside Strata's own ``/predict``:
health, model metadata and readiness, and ``POST /v2/models/{task}/infer``. A model is a
task (``auto`` chooses one, as ``/predict/auto`` does); its one input tensor ``input``
holds UINT8 or FP32 pixels of shape (N, H, W), (N, H, W, C) or (N, C, H, W), as JSON data
or through the protocol's binary tensor extension; its outputs are ``label`` (INT64),
``score`` (FP32), ``logits`` (FP32) and ``class`` (BYTES: the task's name for each label).
Errors answer the protocol's ``{"error": "<message>"}``. The deployment class inherits
``OpenInference``; the inputs take the same forward as ``/predict``'s, so logits agree as
``/predict``'s do (docs/serving.md, *Dynamic batching*).
"""

# No ``from __future__ import annotations``: Serve resolves the route signatures elsewhere.
import json
import math
from typing import Any

import numpy as np
import orjson
import torch
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from base.errors import StrataError
from workers.data import checked_pixels
from workers.inference import AUTO, Prediction
from workers.serving.api_models import document_models, schema_ref
from workers.serving.oip_models import (
    INPUT_DATATYPES,
    InferenceErrorResponse,
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ReadyResponse,
    RequestInput,
    ServerMetadataResponse,
)

V2_PREFIX = "/v2"
INPUT_NAME = "input"
OUTPUT_DATATYPES = {"label": "INT64", "score": "FP32", "logits": "FP32", "class": "BYTES"}
HEADER_LENGTH = "inference-header-content-length"
NUMPY_DTYPES = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4"), "INT64": np.dtype("<i8")}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": InferenceErrorResponse, "description": description}
    for status, description in {
        400: "The request is not a valid inference request for this model.",
        404: "No model (task) of that name is served.",
        413: "Body, batch or pixels exceed the limits.",
    }.items()
}
# The body of an infer request: the JSON document, or (binary tensor extension, with the
# Inference-Header-Content-Length header) that document followed by the tensors' bytes.
INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": schema_ref(InferenceRequest)},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}

router = APIRouter(tags=["Open Inference Protocol v2"])


class InferenceError(Exception):
    """A request the protocol answers with ``{"error": ...}`` and this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _as_inference_error(exc: Exception) -> InferenceError:
    if isinstance(exc, InferenceError):
        return exc
    if isinstance(exc, HTTPException):
        return InferenceError(exc.status_code, str(exc.detail))
    return InferenceError(400, str(exc))  # a StrataError: bad pixels


def _document(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The request document and the binary tensor bytes after it (none without the header)."""
    if header_length is None:
        json_part, binary = body, b""
    elif header_length.isdigit() and int(header_length) <= len(body):
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        raise InferenceError(400, "Inference-Header-Content-Length exceeds the body's length")
    try:
        return InferenceRequest.model_validate_json(json_part), binary
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        raise InferenceError(400, f"not an inference request: {where}: {first['msg']}") from None


def _tensor(spec: RequestInput, binary: bytes, max_batch: int, max_pixels: int) -> np.ndarray:
    """The input tensor's checked (N, C, H, W) pixels, in its own dtype (shape checked first)."""
    if spec.datatype not in INPUT_DATATYPES:
        raise InferenceError(
            400, f"input datatype {spec.datatype!r} is not accepted; use UINT8 or FP32"
        )
    shape = spec.shape
    if len(shape) not in (3, 4) or any(size < 1 for size in shape):
        raise InferenceError(
            400, f"input shape {shape} must be (N,H,W), (N,H,W,C) or (N,C,H,W), all positive"
        )
    if shape[0] > max_batch:
        raise InferenceError(413, f"{shape[0]} inputs exceed the largest batch ({max_batch})")
    count = math.prod(shape)
    channels = 1 if len(shape) == 3 else shape[1] if shape[1] in (1, 3) else shape[3]
    if count // channels > max_pixels:
        raise InferenceError(413, f"the input holds over {max_pixels:,} pixels")
    dtype = NUMPY_DTYPES[spec.datatype]
    if spec.data is None:
        if len(binary) != count * dtype.itemsize:
            raise InferenceError(
                400,
                f"the binary input holds {len(binary)} bytes; shape {shape} needs "
                f"{count * dtype.itemsize}",
            )
        array = np.frombuffer(binary, dtype).reshape(shape)
    else:
        array = _json_tensor(spec.data, dtype, count).reshape(shape)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise InferenceError(400, "FP32 inputs must be finite numbers")
    return checked_pixels(array.astype(dtype.newbyteorder("="), copy=False), INPUT_NAME)


def _json_tensor(data: list[Any], dtype: np.dtype, count: int) -> np.ndarray:
    try:
        flat = np.asarray(data, dtype=np.float64 if dtype.kind == "f" else np.int64).ravel()
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InferenceError(400, "input data must be a list of numbers") from None
    if flat.size != count:
        raise InferenceError(400, f"input data holds {flat.size} elements; its shape {count}")
    if dtype.kind == "u" and (flat.min() < 0 or flat.max() > 255):
        raise InferenceError(400, "UINT8 input data must lie in 0..255")
    return flat.astype(dtype)


def _outputs(document: InferenceRequest) -> list[tuple[str, bool]]:
    """Requested outputs (all three when none are named) and whether each goes binary."""
    default_binary = bool((document.parameters or {}).get("binary_data_output", False))
    if not document.outputs:
        return [(name, default_binary) for name in OUTPUT_DATATYPES]
    chosen = []
    for output in document.outputs:
        if output.name not in OUTPUT_DATATYPES:
            raise InferenceError(
                400, f"unknown output {output.name!r}; outputs are {', '.join(OUTPUT_DATATYPES)}"
            )
        binary = (output.parameters or {}).get("binary_data", default_binary)
        chosen.append((output.name, bool(binary)))
    return chosen


def _answer(
    model: str, version: int, document: InferenceRequest, prediction: Prediction
) -> Response:
    """The inference response; binary outputs follow the JSON (binary tensor extension)."""
    scores, labels = torch.softmax(prediction.logits, dim=1).max(dim=1)
    values = {"label": labels, "score": scores, "logits": prediction.logits}
    outputs, chunks = [], []
    for name, binary in _outputs(document):
        output: dict[str, Any] = {"name": name, "datatype": OUTPUT_DATATYPES[name]}
        if name == "class":
            classes = prediction.classes(labels)
            output["shape"] = [len(classes)]
            payload, data = (_bytes_tensor(classes), None) if binary else (b"", classes)
        else:
            array = values[name].numpy().astype(NUMPY_DTYPES[OUTPUT_DATATYPES[name]], copy=False)
            output["shape"] = list(array.shape)
            payload, data = (array.tobytes(), None) if binary else (b"", array.ravel())
        if binary:
            chunks.append(payload)
            output["parameters"] = {"binary_data_size": len(payload)}
        else:
            output["data"] = data
        outputs.append(output)
    parameters: dict[str, Any] = {"task": prediction.task}
    if prediction.jsd is not None:
        parameters["jsd"] = prediction.jsd
    head = {"model_name": model, "model_version": str(version), "outputs": outputs}
    head |= {"parameters": parameters} | ({"id": document.id} if document.id else {})
    text = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(text, media_type="application/json")
    return Response(
        b"".join([text, *chunks]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )


def _bytes_tensor(strings: list[str]) -> bytes:
    """A BYTES tensor in the binary extension's layout: each element's length (uint32 LE),
    then its UTF-8 bytes."""
    encoded = [text.encode() for text in strings]
    return b"".join(len(item).to_bytes(4, "little") + item for item in encoded)


class OpenInference:
    """The v2 routes, for an ingress with ``version``, ``tasks``, ``options``, ``input_size``,
    ``_body(request)`` (the size-checked body) and ``_forward(task, arrays)``."""

    def _check_model(self, model: str) -> None:
        if model != AUTO and model not in self.tasks:
            raise InferenceError(404, f"no model (task) named {model!r} is served")

    @router.get("/v2", response_model=ServerMetadataResponse)
    def v2_server(self) -> dict:
        return {
            "name": "strata",
            "version": str(self.version),
            "extensions": ["binary_tensor_data"],
        }

    def _refused(self, model: str) -> Response | None:
        """The v2 error answer for a model this server does not serve (None: it does)."""
        try:
            self._check_model(model)
        except InferenceError as exc:
            return error_response(exc.status, str(exc))
        return None

    @router.get("/v2/health/live", response_model=LiveResponse)
    def v2_live(self) -> dict:
        return {"live": True}

    @router.get("/v2/health/ready", response_model=ReadyResponse)
    def v2_ready(self) -> dict:
        return {"ready": True}

    @router.get("/v2/models/{model}", response_model=ModelMetadataResponse, responses=ERRORS)
    def v2_metadata(self, model: str) -> Response | dict:
        if (refused := self._refused(model)) is not None:
            return refused
        size = self.input_size
        return {
            "name": model,
            "versions": [str(self.version)],
            "platform": "strata_masked_vgg",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, -1, size, size]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "score", "datatype": "FP32", "shape": [-1]},
                {"name": "logits", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "class", "datatype": "BYTES", "shape": [-1]},
            ],
        }

    @router.get("/v2/models/{model}/ready", response_model=ModelReadyResponse, responses=ERRORS)
    def v2_model_ready(self, model: str) -> Response | dict:
        if (refused := self._refused(model)) is not None:
            return refused
        return {"name": model, "ready": True}

    @router.post(
        "/v2/models/{model}/infer",
        response_model=InferenceResponse,
        responses=ERRORS,
        openapi_extra={"requestBody": INFER_BODY},
    )
    async def v2_infer(self, model: str, request: Request) -> Response:
        """Run one task (or ``auto``) on one input tensor of pixels."""
        try:
            self._check_model(model)
            body = await self._body(request)
            document, binary = _document(body, request.headers.get(HEADER_LENGTH))
            if [spec.name for spec in document.inputs] != [INPUT_NAME]:
                raise InferenceError(400, f"expected exactly one input, named {INPUT_NAME!r}")
            limits = self.options.max_batch, self.options.max_pixels
            pixels = _tensor(document.inputs[0], binary, *limits)
            _outputs(document)  # unknown outputs are refused before the forward
            prediction = await self._forward(model, [pixels])
        except (InferenceError, HTTPException, StrataError) as exc:
            error = _as_inference_error(exc)
            return error_response(error.status, str(error))
        return _answer(model, self.version, document, prediction)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Starlette's own errors (e.g. a 404 for no matching route) in the protocol's shape
    under ``/v2``, unchanged elsewhere."""
    if request.url.path.startswith(V2_PREFIX + "/") or request.url.path == V2_PREFIX:
        return error_response(exc.status_code, str(exc.detail))
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    """Add the v2 routes to ``app`` and the request document to its OpenAPI components."""
    app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    document_models(app, InferenceRequest)
    base = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI declares a 422 for every route with parameters; a v2 route never answers
        one (its one parameter is any string), so the document says so."""
        document = base()
        for path, operations in document["paths"].items():
            if path.startswith(V2_PREFIX):
                for operation in operations.values():
                    operation["responses"].pop("422", None)
        if "HTTPValidationError" not in json.dumps(document["paths"]):
            for unused in ("HTTPValidationError", "ValidationError"):
                document["components"]["schemas"].pop(unused, None)
        return document

    app.openapi = openapi
