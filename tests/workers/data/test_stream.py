"""Image folders streamed a batch at a time: same pixels as a whole decode, same training on
0 or 2 loader workers, the tensor path unchanged, augmentation, and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from base.errors import DataError
from workers.backbone import BackboneConfig, build_backbone, prunable_layers
from workers.batches import batches, read
from workers.data import fit_images, load_data
from workers.data.stream import FolderImages
from workers.summary import subsample
from workers.training import TrainConfig, make_step, train_phase

SIZE = 32
TINY = BackboneConfig(width=1 / 16, input_size=SIZE, in_channels=3)


def _folder(root: Path, *, mode: str = "RGB", per_class: int = 8) -> Path:
    """Three classes of 40x48 noise images, each class with its own mean colour."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("ants", "bees", "cats")):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            shape = (48, 40, 3) if mode == "RGB" else (48, 40)
            pixels = np.clip(rng.normal(60 + 60 * label, 30, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{index}.png")
    return root


def _decoded(path: str, channels: int, *, crop: bool = False) -> torch.Tensor:
    pixels = np.asarray(Image.open(path).convert("RGB"), np.float32) / np.float32(255)
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    return fit_images(image, SIZE, channels, crop=crop)[0]


def test_folder_splits_hold_paths_and_decode_like_a_whole_decode(tmp_path):
    data = load_data(f"imagefolder:{_folder(tmp_path)}", image_size=SIZE, channels=3)
    assert isinstance(data.x_train, FolderImages) and isinstance(data.x_val, FolderImages)
    assert data.x_train.augment  # RGB photos; only the training loader's view augments
    assert not data.x_train.augmenting and not data.x_val.augmenting
    assert data.x_train.shape == (len(data.y_train), 3, SIZE, SIZE)
    assert len(data.x_test) == 0
    batch = data.x_train[torch.tensor([0, 3])]
    for row, position in enumerate((0, 3)):
        assert torch.equal(batch[row], _decoded(data.x_train.paths[position], 3, crop=True))


def test_augmentation_is_configurable_and_off_for_grey(tmp_path):
    rgb = _folder(tmp_path / "rgb")
    grey = _folder(tmp_path / "grey", mode="L")
    plain = load_data(f"imagefolder:{rgb}?augment=0", image_size=SIZE, channels=3)
    assert not plain.x_train.augment
    assert not load_data(f"imagefolder:{grey}", image_size=SIZE, channels=1).x_train.augment
    assert load_data(f"imagefolder:{grey}?augment=1", image_size=SIZE, channels=1).x_train.augment
    torch.manual_seed(0)
    augmented = load_data(f"imagefolder:{rgb}", image_size=SIZE, channels=3).x_train.training()
    crops = augmented[torch.arange(4)]
    assert crops.shape == (4, 3, SIZE, SIZE) and 0 <= crops.min() <= crops.max() <= 1
    assert not torch.equal(crops, augmented.subset(torch.arange(4))[:])  # eval view: plain fit
    with pytest.raises(DataError, match="augment must be 0 or 1"):
        load_data(f"imagefolder:{rgb}?augment=yes", image_size=SIZE, channels=3)


def test_summary_sample_decodes_only_the_sample(tmp_path, monkeypatch):
    data = load_data(f"imagefolder:{_folder(tmp_path)}", image_size=SIZE, channels=3)
    decoded = []
    original = FolderImages._image
    monkeypatch.setattr(
        FolderImages, "_image", lambda self, p: decoded.append(p) or original(self, p)
    )
    sample = subsample(data.x_train, 5, seed=0)
    assert sample.shape == (5, 3, SIZE, SIZE) and len(decoded) == 5


def _trained(data, workers: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_backbone(TINY, 3)
    trainable = {
        n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in prunable_layers(model).items()
    }
    config = TrainConfig(batch_size=5, loader_workers=workers, seed=3)
    train_phase(model, trainable, data, phase="train", epochs=2, lr=1e-3, config=config)
    return model.state_dict()


def test_two_loader_workers_train_exactly_like_none(tmp_path):
    data = load_data(f"imagefolder:{_folder(tmp_path)}?augment=0", image_size=SIZE, channels=3)
    alone, pooled = _trained(data, 0), _trained(data, 2)
    assert all(torch.equal(alone[key], pooled[key]) for key in alone)


def test_in_memory_training_keeps_the_seeded_order_of_plain_indexing():
    """The loader reproduces the loop it replaced: randperm per epoch, x[index] per batch."""
    x, y = torch.rand(23, 3, SIZE, SIZE), torch.arange(23) % 3
    data = type("D", (), {"x_train": x, "y_train": y, "x_val": x[:4], "y_val": y[:4]})
    streamed = _trained(data, 2)
    torch.manual_seed(0)
    model = build_backbone(TINY, 3)
    trainable = {
        n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in prunable_layers(model).items()
    }
    step = make_step(model, trainable, 1e-3, TrainConfig().weight_decay)
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), 5):
            step(x[order[start : start + 5]], y[order[start : start + 5]])
    assert all(torch.equal(streamed[k], v) for k, v in model.state_dict().items())


def test_non_image_file_fails_the_task_before_training(tmp_path):
    root = _folder(tmp_path, per_class=3)
    (root / "bees" / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"cannot read image .*notes\.png") as caught:
        load_data(f"imagefolder:{root}", image_size=SIZE, channels=3)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_body_is_one_error_line_from_any_worker(tmp_path, workers):
    root = _folder(tmp_path, per_class=3)
    whole = (root / "bees" / "0.png").read_bytes()
    (root / "bees" / "0.png").write_bytes(whole[: len(whole) // 2])  # header intact
    data = load_data(f"imagefolder:{root}?augment=0", image_size=SIZE, channels=3, val_fraction=0.5)
    x = FolderImages(data.x_train.paths + data.x_val.paths, "RGB", SIZE, 3)
    y = torch.zeros(len(x), dtype=torch.long)
    with pytest.raises(DataError, match=r"cannot decode image .*0\.png") as caught:
        list(read(batches(x, y, 4, workers=workers)))
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_eval_crop_is_torchvisions_resize_and_center_crop():
    from torchvision.transforms import v2

    wide = torch.rand(2, 3, 40, 70)
    eval_transform = v2.Compose([v2.Resize(SIZE, antialias=True), v2.CenterCrop(SIZE)])
    assert torch.equal(fit_images(wide, SIZE, 3, crop=True), eval_transform(wide).clamp(0, 1))
    square = torch.rand(2, 3, 48, 48)  # a square image: crop or stretch, the same pixels
    assert torch.equal(fit_images(square, SIZE, 3, crop=True), fit_images(square, SIZE, 3))
