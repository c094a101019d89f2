import json

import numpy as np
import pytest
from safetensors.numpy import load

from registry.codecs import (
    decode_arrays,
    encode_arrays,
    mask_nbytes,
    pack_mask,
    safetensors_spans,
    unpack_mask,
)
from registry.deltas import encode_values, flat_values
from registry.errors import BlobCorrupted


def _random_masks(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "conv1_1": rng.random((3, 1, 3, 3)) < 0.5,  # 27
        "conv1_2": rng.random((5, 3, 3, 3)) < 0.3,  # 135
        "fc6": rng.random((7, 11)) < 0.9,  # 77
        "empty": np.zeros((0, 4), dtype=bool),
    }


def test_mask_round_trip_is_exact_with_odd_numel() -> None:
    masks = _random_masks(np.random.default_rng(0))
    data, meta = pack_mask(masks)
    numel = 27 + 135 + 77
    assert numel % 8 != 0
    assert meta["numel"] == numel and meta["bitorder"] == "little"
    assert len(data) == mask_nbytes(numel) == (numel + 7) // 8
    assert meta["layers"] == [[name, list(m.shape)] for name, m in masks.items()]
    out = unpack_mask(data, meta)
    assert list(out) == list(masks)
    for name, mask in masks.items():
        assert out[name].dtype == np.bool_ and out[name].shape == mask.shape
        assert np.array_equal(out[name], mask)


def test_mask_bit_order_is_little_endian_within_a_byte() -> None:
    mask = np.zeros(10, dtype=bool)
    mask[0] = mask[9] = True
    data, _ = pack_mask({"l": mask})
    assert data == bytes([0b0000_0001, 0b0000_0010])


def test_unpack_rejects_bytes_that_do_not_match_the_layout() -> None:
    data, meta = pack_mask({"l": np.ones(9, dtype=bool)})
    with pytest.raises(BlobCorrupted):
        unpack_mask(data[:-1], meta)
    with pytest.raises(BlobCorrupted):
        unpack_mask(data, {**meta, "layers": [["l", [8]]]})


def test_safetensors_round_trip_keeps_dtypes_and_shapes() -> None:
    arrays = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4).T,  # non-contiguous input
        "owner": np.array([[0, 1], [2, 0]], dtype=np.int32),
        "flag": np.array([True, False]),
        "scalar": np.array(3.5, dtype=np.float64),
    }
    out = decode_arrays(encode_arrays(arrays, {"note": "x"}))
    assert set(out) == set(arrays)
    for name, array in arrays.items():
        assert out[name].dtype == array.dtype
        assert np.array_equal(out[name], array)


def test_decode_garbage_is_reported_as_corruption() -> None:
    with pytest.raises(BlobCorrupted):
        decode_arrays(b"\x00not safetensors")


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "weight.b": rng.random(5).astype(np.float32),
        "weight.a": np.zeros(0, np.float32),
        "counts": rng.integers(-9, 9, (2, 3)),
        "mask": rng.random(7) < 0.5,
        "weight.z": np.zeros(0, np.float32),
        "half": rng.random((3, 1)).astype(np.float16),
    }


def test_spans_view_exactly_what_the_library_decodes() -> None:
    data = encode_arrays(_arrays(), metadata={"kind": "test"})
    spans = safetensors_spans(data)
    assert [span.begin for span in spans] == sorted(span.begin for span in spans)
    views = {span.name: span.view(data) for span in spans}
    decoded = decode_arrays(data)
    assert views.keys() == decoded.keys()
    for name, array in decoded.items():
        assert views[name].dtype == array.dtype and views[name].shape == array.shape
        assert views[name].tobytes() == array.tobytes()
        assert not views[name].flags.writeable  # a view of the blob's bytes, not a copy


def _header(entries: dict[str, object], body: bytes) -> bytes:
    header = json.dumps(entries).encode()
    return len(header).to_bytes(8, "little") + header + body


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x10\x00\x00\x00\x00\x00\x00\x00{}",  # header longer than the payload
        b"\x02\x00\x00\x00\x00\x00\x00\x00[]",  # a header that is not an object
        _header({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 7),
        _header({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 9),
        _header({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
        _header({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        _header({"x": {"dtype": "X32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
        _header({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b""),
        _header({"x": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}, b"\0" * 4),
        _header(
            {
                "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            b"\0" * 8,
        ),
        _header({"x": {"dtype": "F32", "shape": [1]}}, b"\0" * 4),
    ],
)
def test_spans_refuse_what_the_library_refuses(data: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the library's own error type
        load(data)
    with pytest.raises(BlobCorrupted, match="not a valid safetensors payload"):
        safetensors_spans(data)


@pytest.mark.parametrize("layers", [["a", "b", "c"], ["c", "a", "b"]])
def test_flat_values_in_layer_order_whatever_order_the_blob_holds(layers: list[str]) -> None:
    """Layer names that sort in network order give a view of the blob; others a copy."""
    rng = np.random.default_rng(2)
    values = {
        name: rng.random(size).astype(np.float32)
        for name, size in zip(layers, (3, 0, 4), strict=True)
    }
    data = encode_values(values)
    flat, sizes = flat_values(data, layers)
    assert flat.tobytes() == np.concatenate([values[name] for name in layers]).tobytes()
    assert sizes == [values[name].size for name in layers]
    assert flat.flags.owndata is (layers != sorted(layers))
    with pytest.raises(BlobCorrupted, match="the values blob holds"):
        flat_values(data, [*layers, "d"])
