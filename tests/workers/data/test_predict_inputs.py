"""``strata predict`` inputs (issue #12 item 10): every bad file is one DataError naming it."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from base.errors import DataError, StrataError
from registry import db
from registry.errors import TaskNotFound
from registry.store import Registry
from workers.data import MAX_IMAGE_SIZE, as_images, fit_images, load_data, read_batch, read_npy
from workers.inference import Predictor, read_inputs

SIZE = 32


def _predictor(channels: int = 1) -> SimpleNamespace:
    """Just what ``read_inputs`` uses of a Predictor: the backbone's input and ``fit``."""
    config = SimpleNamespace(input_size=SIZE, in_channels=channels)
    return SimpleNamespace(
        network=SimpleNamespace(config=config), fit=lambda x, task: fit_images(x, SIZE, channels)
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _lying_npy() -> bytes:
    """A valid .npy of 10 float64 whose header claims 10^12 elements (same header length)."""
    honest = _npy_bytes(np.zeros(10))
    lying = honest.replace(b"'shape': (10,), ", b"'shape': (1000000000000,), ")
    # keep the header length field right: drop as many padding spaces as were added
    grown = len(lying) - len(honest)
    return lying.replace(b" " * grown + b"\n", b"\n", 1)


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _claim_size(path: Path, member: str, size: int) -> Path:
    """Patch the central directory so that ``member`` claims ``size`` uncompressed bytes."""
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46 : entry + 46 + len(member)] != member.encode():
        entry = data.index(b"PK\x01\x02", entry + 4)
    struct.pack_into("<I", data, entry + 24, size)
    path.write_bytes(bytes(data))
    return path


def _png(path: Path, size=(12, 10), mode: str = "L") -> Path:
    rng = np.random.default_rng(1)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _bad_inputs(tmp: Path) -> list[tuple[Path, str]]:
    png = _png(tmp / "ok.png").read_bytes()
    (tmp / "cut.png").write_bytes(png[: len(png) // 2])
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "empty.npz").write_bytes(b"")
    (tmp / "empty.npy").write_bytes(b"")
    (tmp / "text.npz").write_bytes(b"not a zip archive")
    (tmp / "text.npy").write_bytes(b"not an array at all")
    (tmp / "lie.npy").write_bytes(_lying_npy())
    (tmp / "folder").mkdir()
    np.savez(tmp / "no_x.npz", images=np.zeros((2, 8, 8)))
    np.savez(tmp / "strings.npz", x=np.array([["a"] * 8] * 8 * 2).reshape(2, 8, 8))
    np.savez(tmp / "flat.npz", x=np.zeros((2, 64)))
    np.savez(tmp / "objects.npz", x=np.array([None, 1], dtype=object))
    np.save(tmp / "objects.npy", np.array([None, 1], dtype=object))
    np.save(tmp / "nan.npy", np.full((2, 8, 8), np.nan))
    (tmp / "single.npz").write_bytes(_npy_bytes(np.zeros((2, 8, 8))))  # .npy under .npz name
    _zip(tmp / "lie.npz", {"x.npy": _lying_npy()})
    good = _npy_bytes(np.zeros((2, 8, 8), dtype=np.uint8))
    _claim_size(_zip(tmp / "dir.npz", {"x.npy": good}), "x.npy", 10**9)
    _zip(tmp / "bz.npz", {"x.npy": good}, zipfile.ZIP_BZIP2)
    return [
        (tmp / "missing.png", "does not exist"),
        (tmp / "folder", "is a directory"),
        (tmp / "cut.png", "cannot decode image"),
        (tmp / "empty.png", "not a complete image in a format Pillow reads"),
        (tmp / "empty.npz", "as an .npz archive"),
        (tmp / "empty.npy", "not a .npy array"),
        (tmp / "text.npz", "as an .npz archive: File is not a zip file"),
        (tmp / "text.npy", "not a .npy array (no NUMPY magic bytes)"),
        (tmp / "lie.npy", "claims shape (1000000000000,) of float64"),
        (tmp / "lie.npz", "claims shape (1000000000000,) of float64"),
        (tmp / "dir.npz", "the zip directory claims 1,000,000,000 bytes from"),
        (tmp / "bz.npz", "zip compression method 12 is not supported"),
        (tmp / "no_x.npz", "has no array 'x' (arrays found: images)"),
        (tmp / "strings.npz", "has dtype <U1; expected uint8 or float pixels"),
        (tmp / "flat.npz", "has shape (2, 64); expected (N,H,W)"),
        (tmp / "objects.npz", "holds Python objects"),
        (tmp / "objects.npy", "holds Python objects"),
        (tmp / "nan.npy", "contains NaN or infinite values"),
        (tmp / "single.npz", "holds a single array, not an .npz archive"),
    ]


def test_every_bad_input_is_one_data_error_naming_the_file(tmp_path):
    cases = _bad_inputs(tmp_path)
    for path, needle in cases:
        with pytest.raises(DataError) as info:
            read_inputs([tmp_path / "ok.png", path], _predictor())
        message = str(info.value)
        assert isinstance(info.value, StrataError), path
        assert needle in message, (path, message)
        assert str(path) in message and "\n" not in message, message
        assert "object at 0x" not in message


def test_no_input_is_an_error():
    with pytest.raises(DataError, match="no input given"):
        read_inputs([], _predictor())


def test_npy_batches_are_read_like_npz_batches(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 20, 20), dtype=np.uint8)
    np.save(tmp_path / "batch.npy", x)
    np.savez(tmp_path / "batch.npz", x=x)
    names, batch = read_inputs([tmp_path / "batch.npy", tmp_path / "batch.npz"], _predictor())
    assert names[:3] == [f"{tmp_path / 'batch.npy'}[{i}]" for i in range(3)]
    assert names[3:] == [f"{tmp_path / 'batch.npz'}[{i}]" for i in range(3)]
    assert batch.shape == (6, 1, SIZE, SIZE)
    expected = fit_images(as_images(x), SIZE, 1)
    assert torch.equal(batch[:3], expected) and torch.equal(batch[3:], expected)


def test_fortran_order_and_compressed_archives_round_trip(tmp_path):
    x = np.asfortranarray(np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6))
    np.save(tmp_path / "f.npy", x)
    np.savez_compressed(tmp_path / "c.npz", x=x)
    assert np.array_equal(read_batch(tmp_path / "f.npy"), x)
    assert np.array_equal(read_batch(tmp_path / "c.npz"), x)
    body = _npy_bytes(x)
    assert np.array_equal(read_npy(io.BytesIO(body), len(body), "the body"), x)


def test_read_npy_refuses_a_lying_header_before_allocating():
    body = _lying_npy()
    with pytest.raises(DataError, match=r"the body: its header claims shape \(1000000000000,\)"):
        read_npy(io.BytesIO(body), len(body), "the body")
    with pytest.raises(DataError, match="the body: the data ends after 16 bytes"):
        cut = _npy_bytes(np.zeros(10))[:-64]
        read_npy(io.BytesIO(cut), 10**6, "the body")


@pytest.mark.parametrize("size", [0, -1, MAX_IMAGE_SIZE + 1, 100_000, 2.5, True])
def test_image_size_is_bounded_before_any_allocation(size):
    with pytest.raises(DataError, match=f"at most {MAX_IMAGE_SIZE} pixels per side"):
        load_data("builtin:digits", image_size=size, channels=1)
    with pytest.raises(DataError, match="image size must be a positive integer"):
        fit_images(torch.zeros(1, 1, 4, 4), size, 1)


def test_large_native_images_are_resized_in_small_chunks():
    """Chunking by pixel count keeps results identical to one image at a time."""
    x = torch.rand(3, 1, 300, 200)
    together = fit_images(x, SIZE, 3)
    alone = torch.cat([fit_images(x[i : i + 1], SIZE, 3) for i in range(3)])
    assert torch.equal(together, alone)


def test_a_predictor_on_an_empty_registry_is_a_one_line_error(tmp_path):
    url, store = f"sqlite:///{tmp_path / 'registry.db'}", (tmp_path / "blobs").as_uri()
    db.upgrade(url)
    with Registry.open(url, store) as registry:
        with pytest.raises(TaskNotFound, match="the registry holds no task yet; add one"):
            Predictor(registry)
        assert registry.head() is None and registry.list_tasks() == []
