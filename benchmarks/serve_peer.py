"""The peer of ``benchmarks/serve_load.py``: the server a user would otherwise write.

A minimal FastAPI app under uvicorn that answers ``POST /predict`` for ONE task with the same
forward as Strata (``workers.inference.Predictor``, loaded once), reading one uint8 ``.npy``
array and answering the same JSON predictions document. No batching, no Ray. The benchmark
starts it on loopback (``uvicorn benchmarks.serve_peer:app --workers N``) with the registry
and the task in ``STRATA_DB`` / ``STRATA_STORE`` / ``PEER_TASK`` and torch on one thread per
worker, as a Strata model replica runs.
"""

from __future__ import annotations

import io
import os

import numpy as np
import orjson
import torch
from fastapi import FastAPI, Request, Response

from base.location import RegistryLocation
from registry.store import Registry
from workers.data import as_images
from workers.inference import Predictor

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "1")))
_location = RegistryLocation.resolve()
_predictor = Predictor(Registry.open(_location.db_url, _location.store_uri), max_tasks=1)
_task = os.environ["PEER_TASK"]
_predictor.view(_task)  # loaded before the first request, as a replica's warm-up does
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    pixels = np.load(io.BytesIO(await request.body()), allow_pickle=False)
    prediction = _predictor.predict(_task, as_images(pixels, "input"))
    names = [str(index) for index in range(len(pixels))]
    return Response(orjson.dumps(prediction.to_dict(names)), media_type="application/json")
