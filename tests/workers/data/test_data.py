"""Data specs: every scheme, the splits, resizing/channel adaptation and every DataError."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from base.errors import DataError
from workers.data import (
    DataInfo,
    DataSpec,
    TaskData,
    fit_images,
    load_data,
    parse_spec,
    peek_spec,
)


def _rows(x: torch.Tensor) -> set[bytes]:
    """Images as hashable rows, to check that splits do not share samples."""
    return {row.numpy().tobytes() for row in x.flatten(1)}


def _check_task(data, *, n_classes: int, shape: tuple[int, int, int]) -> None:
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
        assert len(x) == len(y) > 0
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == shape
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert int(y.min()) >= 0 and int(y.max()) < n_classes
    assert data.num_classes == n_classes
    assert data.x_test.dtype == torch.float32 and data.y_test.dtype == torch.int64
    assert tuple(data.x_test.shape[1:]) == shape


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


# ---------------------------------------------------------------------------- spec parsing


def test_parse_spec_accepts_each_scheme():
    assert parse_spec("npz:/tmp/a.npz") == DataSpec("npz", "/tmp/a.npz")
    assert parse_spec("imagefolder:~/imgs") == DataSpec("imagefolder", "~/imgs")
    spec = parse_spec("builtin:mnist?classes=0-4&permute=3&rotate=90&invert=1&n=100")
    assert spec.scheme == "builtin" and spec.target == "mnist"
    assert dict(spec.options) == {
        "classes": "0-4",
        "permute": "3",
        "rotate": "90",
        "invert": "1",
        "n": "100",
    }
    assert parse_spec("builtin:digits").options == ()


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("", "empty data spec"),
        ("mnist", "has no scheme"),
        ("csv:/tmp/a.csv", "accepted schemes: npz:PATH, imagefolder:PATH, wds:PATTERN, builtin"),
        ("npz:", "names no path"),
        ("builtin:", "names no data set"),
        ("builtin:cifar", "unknown builtin data set 'cifar'; available: mnist, digits, noise"),
        ("builtin:mnist?colour=1", "has no option 'colour'; accepted: classes, invert, n"),
        ("builtin:mnist?rotate=45", "option rotate=45: expected one of 0, 90, 180, 270"),
        ("builtin:mnist?invert=yes", "option invert=yes: expected one of 0, 1"),
        ("builtin:mnist?n=0", "option n=0: expected a sample count between 1"),
        ("builtin:mnist?n=lots", "option n=lots: expected a sample count (an integer)"),
        ("builtin:mnist?permute=-1", "option permute=-1: expected a seed"),
        ("builtin:mnist?classes=5-3", "range 5-3 selects nothing"),
        ("builtin:mnist?classes=3,12", "option classes=3,12: labels must lie in 0..9"),
        ("builtin:mnist?classes=4", "option classes=4: selects a single class"),
        ("builtin:digits?classes=a-b", "expected labels such as 0-4 or 1,3,5"),
        ("builtin:mnist?classes", "'classes' in 'builtin:mnist?classes' is not of the form"),
        ("builtin:mnist?n=5&n=6", "option 'n' is given twice"),
        ("builtin:noise?channels=2", "option channels=2: expected one of 1, 3"),
        ("builtin:noise?classes=1", "option classes=1: expected a class count between 2"),
        ("builtin:noise?rotate=90", "builtin:noise has no option 'rotate'"),
        ("builtin:noise?n=100000&size=100", "too large"),
    ],
)
def test_parse_spec_rejects_bad_specs(spec, needle):
    with pytest.raises(DataError) as info:
        parse_spec(spec)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


# ---------------------------------------------------------------------------- builtin


def test_mnist_loads_with_disjoint_deterministic_splits():
    data = load_data("builtin:mnist", image_size=28, channels=1)
    _check_task(data, n_classes=10, shape=(1, 28, 28))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (3200, 800, 1000)
    assert data.class_names == tuple("0123456789")
    train, val, test = _rows(data.x_train), _rows(data.x_val), _rows(data.x_test)
    assert not train & val and not train & test and not val & test

    again = load_data("builtin:mnist", image_size=28, channels=1)
    assert torch.equal(again.x_val, data.x_val) and torch.equal(again.y_train, data.y_train)
    other = load_data("builtin:mnist", image_size=28, channels=1, seed=1)
    assert not torch.equal(other.x_val, data.x_val)
    assert torch.equal(other.x_test, data.x_test)  # the test part ignores the seed
    assert _rows(other.x_train) | _rows(other.x_val) == train | val


def test_mnist_class_subset_is_reindexed_and_keeps_the_same_test_images():
    full = load_data("builtin:mnist", image_size=28, channels=1)
    data = load_data("builtin:mnist?classes=3,5-6", image_size=28, channels=1)
    _check_task(data, n_classes=3, shape=(1, 28, 28))
    assert data.class_names == ("3", "5", "6")
    assert set(data.y_train.tolist()) == {0, 1, 2}
    assert "classes 3,5-6" in data.name
    for new, old in enumerate((3, 5, 6)):
        subset_test = _rows(data.x_test[data.y_test == new])
        assert subset_test == _rows(full.x_test[full.y_test == old])
        assert _rows(data.x_train[data.y_train == new]) <= _rows(
            torch.cat([full.x_train[full.y_train == old], full.x_val[full.y_val == old]])
        )


def test_mnist_transforms_are_fixed_functions_of_the_options():
    spec = "builtin:mnist?n=300"
    base = load_data(spec, image_size=28, channels=1)
    inverted = load_data(spec + "&invert=1", image_size=28, channels=1)
    assert torch.allclose(inverted.x_train, 1 - base.x_train)
    rotated = load_data(spec + "&rotate=90", image_size=28, channels=1)
    assert torch.equal(rotated.x_test, torch.rot90(base.x_test, 1, dims=(2, 3)))
    assert torch.equal(rotated.y_test, base.y_test)

    permuted = load_data(spec + "&permute=7", image_size=28, channels=1)
    assert not torch.equal(permuted.x_train, base.x_train)
    flat_base, flat_perm = base.x_train.flatten(1), permuted.x_train.flatten(1)
    assert torch.equal(flat_perm.sort(dim=1).values, flat_base.sort(dim=1).values)
    # One permutation for every image: each permuted pixel matches one base pixel column.
    perm = [int((flat_base == flat_perm[:, [j]]).all(0).nonzero()[0]) for j in range(0, 784, 97)]
    assert torch.equal(flat_perm[:, 0:784:97], flat_base[:, perm])
    again = load_data(spec + "&permute=7", image_size=28, channels=1)
    assert torch.equal(again.x_train, permuted.x_train)
    other = load_data(spec + "&permute=8", image_size=28, channels=1)
    assert not torch.equal(other.x_train, permuted.x_train)


def test_mnist_n_caps_samples_and_limit_caps_each_split():
    data = load_data("builtin:mnist?n=500", image_size=28, channels=1)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (320, 80, 100)
    small = load_data("builtin:mnist", image_size=28, channels=1, limit=50)
    assert (len(small.y_train), len(small.y_val), len(small.y_test)) == (50, 50, 50)


def test_digits_loads_and_resizes_to_rgb():
    data = load_data("builtin:digits?classes=0-4&invert=1&rotate=180", image_size=16, channels=3)
    _check_task(data, n_classes=5, shape=(3, 16, 16))
    assert torch.equal(data.x_train[:, 0], data.x_train[:, 2])
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 901  # digits 0..4
    assert peek_spec("builtin:digits?classes=0-4") == DataInfo(5, (1, 8, 8))


def test_noise_is_deterministic_and_configurable():
    spec = "builtin:noise?n=200&classes=4&size=12&channels=3&seed=5"
    data = load_data(spec, image_size=12, channels=3)
    _check_task(data, n_classes=4, shape=(3, 12, 12))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (128, 32, 40)
    assert torch.equal(load_data(spec, image_size=12, channels=3).x_train, data.x_train)
    reseeded = load_data(spec.replace("seed=5", "seed=6"), image_size=12, channels=3)
    assert not torch.equal(reseeded.x_train, data.x_train)
    assert peek_spec(spec) == DataInfo(4, (3, 12, 12))
    assert peek_spec("builtin:noise") == DataInfo(10, (1, 28, 28))


def test_peek_mnist_subset():
    assert peek_spec("builtin:mnist?classes=1,3,5") == DataInfo(3, (1, 28, 28))


# ---------------------------------------------------------------------------- npz


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_npz_grey_uint8_nhw(tmp_path, rng):
    x = rng.integers(0, 256, (40, 10, 10), dtype=np.uint8)
    y = np.arange(40) % 4
    spec = _npz(tmp_path / "d.npz", x=x, y=y)
    data = load_data(spec, image_size=10, channels=1, val_fraction=0.25)
    _check_task(data, n_classes=4, shape=(1, 10, 10))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (30, 10, 0)
    everything = torch.cat([data.x_train, data.x_val])[:, 0]
    assert _rows(everything) == _rows(torch.from_numpy(x / np.float32(255)))
    assert peek_spec(spec) == DataInfo(4, (1, 10, 10))
    assert data.spec == spec and data.class_names == ("0", "1", "2", "3")


def test_npz_channels_last_and_first_give_the_same_images(tmp_path, rng):
    x = rng.integers(0, 256, (12, 3, 8, 6), dtype=np.uint8)
    y = np.arange(12) % 2
    first = _npz(tmp_path / "first.npz", x=x, y=y)
    last = _npz(tmp_path / "last.npz", x=x.transpose(0, 2, 3, 1), y=y)
    a = load_data(first, image_size=8, channels=3)
    b = load_data(last, image_size=8, channels=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert peek_spec(first) == peek_spec(last) == DataInfo(2, (3, 8, 6))
    single = _npz(tmp_path / "single.npz", x=x[:, :1].transpose(0, 2, 3, 1), y=y)
    assert peek_spec(single) == DataInfo(2, (1, 8, 6))


@pytest.mark.parametrize(
    ("scale", "offset", "dtype"),
    [(1.0, 0.0, np.float32), (255.0, 0.0, np.float64), (16.0, 0.0, np.int64), (2.0, -1.0, None)],
)
def test_npz_float_and_integer_pixels_are_rescaled(tmp_path, scale, offset, dtype):
    base = np.linspace(0, 1, 2 * 25 * 16).reshape(2 * 25, 1, 4, 4)
    x = base * scale + offset
    x = np.round(x).astype(dtype) if dtype is np.int64 else x.astype(dtype or np.float32)
    spec = _npz(tmp_path / "d.npz", x=x, y=np.arange(50) % 2)
    data = load_data(spec, image_size=4, channels=1)
    expected = torch.from_numpy(np.round(base * scale) / scale if dtype is np.int64 else base)
    got = torch.cat([data.x_train, data.x_val])
    assert torch.allclose(got.sort(0).values, expected.float().sort(0).values, atol=1e-6)
    assert float(got.min()) == 0.0 and float(got.max()) == pytest.approx(1.0)


def test_npz_explicit_validation_and_test_splits(tmp_path, rng):
    def part(n):
        return rng.random((n, 6, 6), dtype=np.float32), np.arange(n) % 3

    (x, y), (xv, yv), (xt, yt) = part(30), part(9), part(6)
    spec = _npz(tmp_path / "d.npz", x=x, y=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    data = load_data(spec, image_size=6, channels=1, val_fraction=0.5)
    assert torch.equal(data.x_train[:, 0], torch.from_numpy(x))
    assert torch.equal(data.x_val[:, 0], torch.from_numpy(xv))
    assert torch.equal(data.x_test[:, 0], torch.from_numpy(xt))
    assert data.y_test.tolist() == yt.tolist()


def test_npz_integer_valued_float_labels_are_accepted(tmp_path, rng):
    x = rng.random((10, 5, 5))
    spec = _npz(tmp_path / "d.npz", x=x, y=(np.arange(10) % 2).astype(np.float64))
    assert load_data(spec, image_size=5, channels=1).y_train.dtype == torch.int64


def test_split_is_deterministic_and_disjoint(tmp_path, rng):
    x = rng.integers(0, 256, (100, 5, 5), dtype=np.uint8)
    x[:, 0, 0] = np.arange(100)  # every image distinct
    spec = _npz(tmp_path / "d.npz", x=x, y=np.arange(100) % 5)
    a = load_data(spec, image_size=5, channels=1, seed=3)
    b = load_data(spec, image_size=5, channels=1, seed=3)
    c = load_data(spec, image_size=5, channels=1, seed=4)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_val, c.x_val)
    assert not _rows(a.x_train) & _rows(a.x_val)
    assert len(_rows(a.x_train) | _rows(a.x_val)) == 100 and len(a.y_val) == 20


# ---------------------------------------------------------------------------- resize / channels


def test_fit_images_resizes_and_adapts_channels():
    grey = torch.rand(3, 1, 28, 28)
    rgb = fit_images(grey, 14, 3)
    assert rgb.shape == (3, 3, 14, 14)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])
    expected = F.interpolate(grey, size=(14, 14), mode="bilinear", antialias=True)
    assert torch.allclose(rgb[:, :1], expected.clamp(0, 1))

    colour = torch.rand(2, 3, 8, 8)
    assert torch.allclose(fit_images(colour, 8, 1), colour.mean(1, keepdim=True))
    up = fit_images(torch.full((2, 1, 8, 8), 0.25), 32, 1)
    assert up.shape == (2, 1, 32, 32) and torch.allclose(up, torch.tensor(0.25))
    assert fit_images(grey, 28, 1) is grey
    assert fit_images(torch.rand(1, 1, 5, 9), 7, 1).shape == (1, 1, 7, 7)


def test_load_data_fits_every_split(tmp_path, rng):
    x = rng.integers(0, 256, (20, 12, 12, 3), dtype=np.uint8)
    spec = _npz(tmp_path / "d.npz", x=x, y=np.arange(20) % 2, x_test=x[:4], y_test=np.ones(4))
    data = load_data(spec, image_size=32, channels=1)
    _check_task(data, n_classes=2, shape=(1, 32, 32))
    assert data.x_test.shape == (4, 1, 32, 32)


# ---------------------------------------------------------------------------- imagefolder


def _image(path: Path, mode: str, size=(10, 8), value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 0)
    Image.new(mode, size, colour).save(path)


def _decoded(data: TaskData) -> TaskData:
    """A folder's splits decoded whole (training reads them a batch at a time)."""
    return replace(data, x_train=data.x_train[:], x_val=data.x_val[:], x_test=data.x_test[:])


def test_imagefolder_flat_layout(tmp_path):
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(5):
            _image(tmp_path / cls / f"{i}.png", "L", value=value + i)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    spec = f"imagefolder:{tmp_path}"
    assert peek_spec(spec) == DataInfo(2, (1, 8, 10))
    data = _decoded(load_data(spec, image_size=8, channels=1, val_fraction=0.2))
    _check_task(data, n_classes=2, shape=(1, 8, 8))
    assert data.class_names == ("cat", "dog")
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (8, 2, 0)
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
        means = x.mean(dim=(1, 2, 3))
        assert torch.equal(y, (means > 0.5).long())  # dog images are the bright ones


def test_imagefolder_split_folders_and_majority_mode(tmp_path):
    for split, count in (("train", 4), ("val", 2), ("test", 1)):
        for cls in ("a", "b", "c"):
            for i in range(count):
                _image(tmp_path / split / cls / f"{i}.png", "RGB", size=(6, 6))
    _image(tmp_path / "train" / "a" / "grey.png", "L", size=(6, 6))
    spec = f"imagefolder:{tmp_path}"
    assert peek_spec(spec) == DataInfo(3, (3, 6, 6))
    data = _decoded(load_data(spec, image_size=6, channels=3))
    _check_task(data, n_classes=3, shape=(3, 6, 6))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (13, 6, 3)
    assert data.y_val.tolist() == [0, 0, 1, 1, 2, 2]
    pixel = data.x_val[0, :, 0, 0]
    assert torch.allclose(pixel, torch.tensor([100, 155, 0]) / 255)


def test_imagefolder_val_may_miss_a_class(tmp_path):
    for cls in ("a", "b"):
        for i in range(2):
            _image(tmp_path / "train" / cls / f"{i}.png", "L")
    _image(tmp_path / "val" / "b" / "0.png", "L")
    data = load_data(f"imagefolder:{tmp_path}", image_size=4, channels=1)
    assert data.y_val.tolist() == [1] and data.num_classes == 2


def _folder_errors(tmp_path: Path):
    bad_class = tmp_path / "bad_class"
    for cls in ("a", "b"):
        _image(bad_class / "train" / cls / "0.png", "L")
    _image(bad_class / "val" / "zebra" / "0.png", "L")
    empty_class = tmp_path / "empty_class"
    _image(empty_class / "a" / "0.png", "L")
    (empty_class / "b").mkdir()
    no_classes = tmp_path / "no_classes"
    no_classes.mkdir()
    empty_val = tmp_path / "empty_val"
    for cls in ("a", "b"):
        _image(empty_val / "train" / cls / "0.png", "L")
        (empty_val / "val" / cls).mkdir(parents=True)
    corrupt = tmp_path / "corrupt"
    _image(corrupt / "a" / "0.png", "L")
    (corrupt / "b").mkdir()
    (corrupt / "b" / "0.png").write_bytes(b"not a png")
    single = tmp_path / "single"
    _image(single / "only" / "0.png", "L")
    _image(single / "only" / "1.png", "L")
    (tmp_path / "file.txt").write_text("x")
    return [
        (bad_class, "zebra is not a class of"),
        (empty_class, "class folder"),
        (no_classes, "has no class sub-folders"),
        (empty_val, "holds no images"),
        (corrupt, "cannot read image"),
        (single, "has a single class"),
        (tmp_path / "missing", "image folder not found"),
        (tmp_path / "file.txt", "is not a directory"),
    ]


def test_imagefolder_errors(tmp_path):
    for folder, needle in _folder_errors(tmp_path):
        with pytest.raises(DataError, match=needle):
            load_data(f"imagefolder:{folder}", image_size=8, channels=1)


# ---------------------------------------------------------------------------- errors


def _good(n: int = 10) -> dict[str, np.ndarray]:
    return {"x": np.zeros((n, 4, 4), dtype=np.uint8), "y": np.arange(n) % 2}


NPZ_ERRORS = [
    ({"y": np.arange(4)}, "has no array 'x' (arrays found: y)"),
    ({"x": np.zeros((4, 4, 4))}, "has no array 'y'"),
    ({**_good(), "x_val": np.zeros((2, 4, 4))}, "has 'x_val' but no 'y_val'"),
    ({**_good(), "y_test": np.zeros(2, int)}, "has 'y_test' but no 'x_test'"),
    ({"x": np.zeros((9, 4, 4)), "y": np.arange(10) % 2}, "x has 9 samples but y has 10"),
    ({"x": np.zeros((4, 4, 4)), "y": np.array([0, 1, -1, 1])}, "y has negative label -1"),
    ({**_good(), "x_val": np.zeros((2, 4, 4)), "y_val": np.array([0, 2])}, "y_val has label 2"),
    ({"x": np.zeros((0, 4, 4)), "y": np.zeros(0, int)}, "x is empty"),
    ({**_good(), "x_test": np.zeros((0, 4, 4)), "y_test": np.zeros(0, int)}, "x_test is empty"),
    ({"x": np.full((4, 4, 4), np.nan), "y": np.arange(4) % 2}, "x contains NaN or infinite"),
    ({"x": np.full((4, 4, 4), np.inf), "y": np.arange(4) % 2}, "x contains NaN or infinite"),
    ({"x": np.zeros((4, 16)), "y": np.arange(4) % 2}, "x has shape (4, 16); expected (N,H,W)"),
    ({"x": np.zeros((4, 1, 4, 4, 1)), "y": np.arange(4) % 2}, "x has shape (4, 1, 4, 4, 1)"),
    ({"x": np.zeros((4, 5, 5, 4)), "y": np.arange(4) % 2}, "C = 1 or 3"),
    ({"x": np.zeros((4, 3, 5, 3)), "y": np.arange(4) % 2}, "cannot tell channels-first"),
    ({"x": np.zeros((4, 4, 4), bool), "y": np.arange(4) % 2}, "x has dtype bool"),
    ({"x": np.zeros((4, 4, 4)), "y": np.array([0, 1, 0.5, 1])}, "y holds non-integer labels"),
    ({"x": np.zeros((4, 4, 4)), "y": np.array(["a", "b", "a", "b"])}, "y has dtype <U1"),
    ({"x": np.zeros((4, 4, 4)), "y": np.zeros((4, 1), int)}, "y has shape (4, 1); expected (N,)"),
    ({"x": np.zeros((4, 4, 4)), "y": np.zeros(4, int)}, "has a single class"),
    ({"x": np.zeros((1, 4, 4)), "y": np.array([1])}, "too few to carve a validation split"),
]


@pytest.mark.parametrize(("arrays", "needle"), NPZ_ERRORS)
def test_npz_errors(tmp_path, arrays, needle):
    spec = _npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_data(spec, image_size=4, channels=1)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_npz_file_errors(tmp_path):
    (tmp_path / "garbage.npz").write_bytes(b"definitely not a zip archive")
    np.save(tmp_path / "single.npy", np.zeros(3))
    np.savez(tmp_path / "objects.npz", x=np.array([None] * 4, dtype=object), y=np.arange(4))
    cases = [
        (tmp_path / "missing.npz", "npz file not found"),
        (tmp_path, "is not a file"),
        (tmp_path / "garbage.npz", "cannot read"),
        (tmp_path / "single.npy", "holds a single array, not an .npz archive"),
        (tmp_path / "objects.npz", "cannot read array 'x'"),
    ]
    for path, needle in cases:
        with pytest.raises(DataError, match=needle):
            load_data(f"npz:{path}", image_size=4, channels=1)
    with pytest.raises(DataError, match="npz file not found"):
        peek_spec(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(DataError, match="has no array 'x'"):
        peek_spec(_npz(tmp_path / "no_x.npz", y=np.arange(3)))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"val_fraction": 0.0}, "val_fraction must lie strictly between 0 and 1, got 0.0"),
        ({"val_fraction": 1.0}, "val_fraction must lie strictly between 0 and 1"),
        ({"val_fraction": float("nan")}, "val_fraction must lie strictly between 0 and 1"),
        ({"image_size": 0}, "image size must be a positive integer"),
        ({"channels": 2}, "channels must be 1 or 3, got 2"),
        ({"limit": 0}, "limit must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs, needle):
    arguments = {"image_size": 8, "channels": 1, **kwargs}
    with pytest.raises(DataError, match=needle.replace("(", r"\(")):
        load_data("builtin:digits", **arguments)


def test_tiny_builtin_subset_cannot_be_split():
    with pytest.raises(DataError, match="too few to carve a validation split"):
        load_data("builtin:digits?n=1", image_size=8, channels=1)
