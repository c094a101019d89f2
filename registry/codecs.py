"""Byte encodings of the registry's arrays: safetensors for tensors, bit-packing for masks.

No pickle anywhere: safetensors files are a JSON header plus raw little-endian buffers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from operator import attrgetter
from typing import Any, NamedTuple

import numpy as np
from safetensors.numpy import load, save

from registry.errors import BlobCorrupted

MASK_BITORDER = "little"
# safetensors dtype codes with a numpy dtype (little-endian), as its numpy loader has them.
_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER = 100_000_000  # the safetensors library's limit


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


class TensorSpan(NamedTuple):
    """Where one tensor of safetensors bytes lies: ``data[begin:end]``."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    def view(self, data: bytes) -> np.ndarray:
        """The tensor as a read-only view of ``data`` (no copy)."""
        count = (self.end - self.begin) // self.dtype.itemsize
        return np.frombuffer(data, self.dtype, count, self.begin).reshape(self.shape)


def safetensors_spans(data: bytes) -> list[TensorSpan]:
    """The tensors of safetensors bytes, in the order their bytes lie, without reading or
    copying them (the library's ``load`` copies every tensor; loading a model version reads
    a values blob per task). Checked as strictly as the library: a JSON header of known
    dtypes and shapes whose byte ranges tile the data exactly; BlobCorrupted otherwise."""
    try:
        if len(data) < 8:
            raise ValueError("shorter than its header size")
        size = int.from_bytes(data[:8], "little")
        if size > min(_MAX_HEADER, len(data) - 8):
            raise ValueError(f"header of {size} bytes does not fit")
        header = json.loads(data[8 : 8 + size])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        header.pop("__metadata__", None)
        spans = sorted(
            (_span(name, info, 8 + size) for name, info in header.items()),
            key=attrgetter("begin", "end"),
        )
    except (ValueError, TypeError, KeyError) as exc:  # json's errors are ValueErrors
        raise BlobCorrupted(f"not a valid safetensors payload: {exc}") from exc
    end = 8 + size
    for span in spans:
        if span.begin != end:
            raise BlobCorrupted(f"not a valid safetensors payload: {span.name} is misplaced")
        end = span.end
    if end != len(data):
        raise BlobCorrupted("not a valid safetensors payload: its tensors do not tile its data")
    return spans


def _span(name: str, info: dict[str, Any], body: int) -> TensorSpan:
    """One header entry, checked, its offsets made absolute (``body``: where data starts)."""
    dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None:
        raise ValueError(f"{name}: dtype {info['dtype']!r} has no numpy dtype")
    shape, (begin, end) = tuple(info["shape"]), info["data_offsets"]
    for number in (*shape, begin, end):  # a loop: this runs per tensor of every delta read
        if type(number) is not int or number < 0:
            raise ValueError(f"{name}: bad shape {shape} or offsets {[begin, end]}")
    if end - begin != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{name}: {end - begin} bytes for shape {shape}")
    return TensorSpan(name, dtype, shape, body + begin, body + end)


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
