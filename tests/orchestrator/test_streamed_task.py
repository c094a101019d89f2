"""An image-folder task end to end: decoded a batch at a time by 2 loader workers inside the
Ray training task, committed with its class names; an image whose body is cut short fails
the next task with one DataError line and leaves the registry as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from base.errors import DataError
from orchestrator.pipeline import AddTaskOptions, add_task
from registry.store import Registry
from tests.registries import initialised_location
from workers.data import fit_images
from workers.inference import Predictor, read_inputs

TINY = {"width": 1 / 16, "input_size": 32, "epochs": 1, "finetune_epochs": 1, "batch_size": 8}


def _folder(root, names=("ants", "bees", "cats")):
    rng = np.random.default_rng(0)
    for label, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for index in range(8):
            pixels = np.clip(rng.normal(60 + 60 * label, 30, (48, 40, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8), "RGB").save(root / name / f"{index}.png")
    return root


def _predict_crops_like_evaluation(registry, path):
    """``strata predict`` on a 70x50 photo: the task's eval transform (resize + center crop),
    recorded with the task, not a stretch."""
    pixels = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    assert registry.get_task("photos").extra["eval_crop"] is True
    predictor = Predictor(registry)
    _, batch = read_inputs([path], predictor, "photos")
    image = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]
    expected = predictor.view("photos").logits(fit_images(image, 32, 3, crop=True))
    assert torch.equal(predictor.predict("photos", batch).logits, expected)
    stretched = predictor.view("photos").logits(fit_images(image, 32, 3))
    assert not torch.equal(expected, stretched)


def test_streamed_folder_task_commits_and_a_cut_image_changes_nothing(ray_session, tmp_path):
    location = initialised_location(tmp_path)
    spec = f"imagefolder:{_folder(tmp_path / 'photos')}"
    row = add_task(location, AddTaskOptions(name="photos", data=spec, loader_workers=2, **TINY))
    assert row.seq == 1
    cut = _folder(tmp_path / "cut", names=("a", "b"))
    whole = (cut / "b" / "3.png").read_bytes()
    (cut / "b" / "3.png").write_bytes(whole[: len(whole) // 2])
    with Registry.open(location.db_url, location.store_uri) as registry:
        before = [(t.name, t.seq) for t in registry.list_tasks()]
        assert registry.get_task("photos").class_names == ["ants", "bees", "cats"]
        _predict_crops_like_evaluation(registry, tmp_path / "wide.png")
    later = AddTaskOptions(name="cut", data=f"imagefolder:{cut}", loader_workers=2, **TINY)
    with pytest.raises(DataError, match=r"cannot decode image .*3\.png") as caught:
        add_task(location, later)
    assert "\n" not in str(caught.value)
    with Registry.open(location.db_url, location.store_uri) as registry:
        assert [(t.name, t.seq) for t in registry.list_tasks()] == before
        assert registry.verify() == []
