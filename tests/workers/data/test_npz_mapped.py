"""Large uncompressed npz arrays are memory-mapped and read a batch at a time: same pixels as
a whole decode, pickled by location (never by value), compressed archives still decoded."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from workers.batches import batches, read
from workers.data import load_data, npz
from workers.data.stream import MappedImages

SIZE = 32


@pytest.fixture
def mapped_from_zero(monkeypatch):
    monkeypatch.setattr(npz, "MAP_ABOVE_BYTES", 0)  # every stored pixel array is "large"


def _write(path, *, compressed=False, dtype=np.uint8, layout="NHWC"):
    rng = np.random.default_rng(1)
    shape = (30, 24, 20, 3) if layout == "NHWC" else (30, 3, 24, 20)
    x = (rng.random(shape) * 200).astype(dtype)
    save = np.savez_compressed if compressed else np.savez
    save(path, x=x, y=np.arange(30) % 3, x_test=x[:6], y_test=np.arange(6) % 3)
    return f"npz:{path}"


@pytest.mark.parametrize(
    ("dtype", "layout"), [(np.uint8, "NHWC"), (np.float32, "NCHW"), (np.int16, "NHWC")]
)
def test_mapped_splits_read_the_same_pixels_as_a_whole_decode(tmp_path, monkeypatch, dtype, layout):
    spec = _write(tmp_path / "big.npz", dtype=dtype, layout=layout)
    whole = load_data(spec, image_size=SIZE, channels=3, seed=4)
    monkeypatch.setattr(npz, "MAP_ABOVE_BYTES", 0)
    mapped = load_data(spec, image_size=SIZE, channels=3, seed=4)
    for split in ("x_train", "x_val", "x_test"):
        streamed = getattr(mapped, split)
        assert isinstance(streamed, MappedImages) and isinstance(streamed.stored(), np.memmap)
        assert torch.equal(streamed[:], getattr(whole, split)), split
    assert torch.equal(mapped.y_train, whole.y_train) and mapped.class_names == ("0", "1", "2")


def test_mapped_split_pickles_as_its_location(tmp_path, mapped_from_zero):
    data = load_data(_write(tmp_path / "big.npz"), image_size=SIZE, channels=3)
    stored_bytes = data.x_train.stored().nbytes
    assert len(pickle.dumps(data.x_train)) < stored_bytes / 10  # rows and a path, no pixels
    loaded = list(read(batches(data.x_train, data.y_train, 7, workers=2)))
    assert torch.equal(torch.cat([x for x, _ in loaded]), data.x_train[:])


def test_compressed_and_small_archives_are_decoded_whole(tmp_path, monkeypatch):
    compressed = _write(tmp_path / "small.npz", compressed=True)
    assert isinstance(load_data(compressed, image_size=SIZE, channels=3).x_train, torch.Tensor)
    plain = _write(tmp_path / "plain.npz")
    assert isinstance(load_data(plain, image_size=SIZE, channels=3).x_train, torch.Tensor)
    monkeypatch.setattr(npz, "MAP_ABOVE_BYTES", 0)
    assert isinstance(load_data(compressed, image_size=SIZE, channels=3).x_train, torch.Tensor)
