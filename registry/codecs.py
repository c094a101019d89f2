"""Byte encodings of the registry's arrays: safetensors for tensors, bit-packing for masks.

No pickle anywhere: safetensors files are a JSON header plus raw little-endian buffers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from registry.errors import BlobCorrupted

MASK_BITORDER = "little"


def encode_arrays(
    arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """safetensors bytes of ``arrays`` (C-contiguous copies where needed; key order is not kept)."""
    tensors = {name: np.asarray(array, order="C") for name, array in arrays.items()}
    return save(tensors, metadata=dict(metadata) if metadata else None)


def tensor_meta(arrays: Mapping[str, np.ndarray]) -> list[list[Any]]:
    """``[name, dtype, shape]`` per array: a blob row's record of what its bytes hold."""
    return [[name, str(a.dtype), list(a.shape)] for name, a in arrays.items()]


def decode_arrays(data: bytes) -> dict[str, np.ndarray]:
    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError on bad headers
        raise BlobCorrupted(f"not a valid safetensors payload: {exc}") from exc


def mask_nbytes(numel: int) -> int:
    return (numel + 7) // 8


def pack_mask(layers: Mapping[str, np.ndarray]) -> tuple[bytes, dict[str, Any]]:
    """Bit-pack boolean masks, 8 weights per byte, layers concatenated in the given order.

    Returns the bytes (exactly ceil(numel / 8)) and the meta needed to unpack them.
    """
    flat = [np.asarray(mask, dtype=bool).ravel() for mask in layers.values()]
    bits = np.concatenate(flat) if flat else np.zeros(0, dtype=bool)
    meta = {
        "bitorder": MASK_BITORDER,
        "numel": int(bits.size),
        "layers": [[name, list(np.shape(mask))] for name, mask in layers.items()],
    }
    return np.packbits(bits, bitorder=MASK_BITORDER).tobytes(), meta


def unpack_mask(data: bytes, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Exact inverse of :func:`pack_mask`; raises BlobCorrupted if bytes and meta disagree."""
    numel = int(meta["numel"])
    shapes = [(name, tuple(shape)) for name, shape in meta["layers"]]
    sizes = [math.prod(shape) for _, shape in shapes]
    if len(data) != mask_nbytes(numel) or sum(sizes) != numel:
        raise BlobCorrupted(
            f"mask has {len(data)} bytes and layers of {sum(sizes)} weights, "
            f"expected {mask_nbytes(numel)} bytes for {numel} weights"
        )
    bitorder = meta.get("bitorder", MASK_BITORDER)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=numel, bitorder=bitorder)
    bits = bits.view(bool)  # 0/1 bytes: a valid bool array, without a copy
    out: dict[str, np.ndarray] = {}
    start = 0
    for (name, shape), size in zip(shapes, sizes, strict=True):
        out[name] = bits[start : start + size].reshape(shape)
        start += size
    return out
