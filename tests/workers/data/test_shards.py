"""``wds:`` tar shards: indexed once (labels checked, nothing decoded), images read per batch,
from a local folder or S3 (a moto server), with one clear error for a sample without label."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from PIL import Image

from base.errors import DataError
from tests.registry.test_registry_blobstore import bucket, moto_endpoint  # noqa: F401
from workers.data import fit_images, load_data, peek_spec
from workers.data.shards import expand_braces
from workers.data.stream import FolderImages

SIZE = 32


def _png(label: int, index: int) -> bytes:
    rng = np.random.default_rng(10 * label + index)
    pixels = np.clip(rng.normal(60 + 60 * label, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="png")
    return out.getvalue()


def _shard(samples: list[tuple[str, int | None]]) -> bytes:
    """A WebDataset tar: KEY.png (+ KEY.cls unless the label is None) per sample."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for index, (key, label) in enumerate(samples):
            parts = {f"{key}.png": _png(label or 0, index)}
            if label is not None:
                parts[f"{key}.cls"] = str(label).encode()
            for name, data in parts.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _shards(labels_per_shard: list[list[int | None]]) -> dict[str, bytes]:
    return {
        f"train-{number:03d}.tar": _shard([(f"s{number}_{i}", lab) for i, lab in enumerate(labels)])
        for number, labels in enumerate(labels_per_shard)
    }


LABELS = [[0, 1, 2, 0, 1, 2], [2, 1, 0, 2, 1, 0]]


def _write(root: Path, shards: dict[str, bytes]) -> Path:
    for name, data in shards.items():
        (root / name).write_bytes(data)
    return root


def test_braces_expand_like_webdataset():
    assert expand_braces("a-{008..011}.tar") == [f"a-{n:03d}.tar" for n in range(8, 12)]
    assert expand_braces("{x,y}/{0..1}") == ["x/0", "x/1", "y/0", "y/1"]
    with pytest.raises(DataError, match="empty or too long"):
        expand_braces("a-{3..1}.tar")


def test_local_shards_stream_decoded_images_with_their_labels(tmp_path):
    root = _write(tmp_path, _shards(LABELS))
    (root / "classes.json").write_text(json.dumps(["ant", "bee", "cat"]))
    spec = f"wds:{root}/train-{{000..001}}.tar"
    assert peek_spec(spec).num_classes == 3 and peek_spec(spec).shape == (3, 40, 48)
    data = load_data(spec, image_size=SIZE, channels=3)
    assert isinstance(data.x_train, FolderImages) and data.x_train.augment
    assert data.class_names == ("ant", "bee", "cat")
    assert len(data.y_train) + len(data.y_val) == 12
    assert sorted([*data.y_train.tolist(), *data.y_val.tolist()]) == sorted(sum(LABELS, []))
    member = data.x_train.paths[0]
    pixels = np.asarray(Image.open(member.open()), np.float32) / np.float32(255)
    assert member.name.endswith(".png") and data.x_train[[0]].shape == (1, 3, SIZE, SIZE)
    expected = fit_images(torch.from_numpy(pixels).permute(2, 0, 1)[None], SIZE, 3, crop=True)
    assert data.eval_crop and torch.equal(data.x_train[[0]], expected)


def test_a_sample_without_label_is_one_error(tmp_path):
    root = _write(tmp_path, _shards([[0, 1, 2], [1, None, 0]]))
    with pytest.raises(DataError, match=r"train-001\.tar: sample 's1_1' has no \.cls label"):
        load_data(f"wds:{root}/train-{{000..001}}.tar", image_size=SIZE, channels=3)
    with pytest.raises(DataError, match=r"shard not found: .*train-002\.tar"):
        load_data(f"wds:{root}/train-{{000,002}}.tar", image_size=SIZE, channels=3)
    with pytest.raises(DataError, match="unknown option 'size'"):
        load_data(f"wds:{root}/train-000.tar?size=3", image_size=SIZE, channels=3)


def test_shards_on_s3(moto_endpoint, bucket, tmp_path):  # noqa: F811
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    for name, data in _shards(LABELS).items():
        s3.put_object(Bucket=bucket, Key=f"shards/{name}", Body=data)
    s3.put_object(Bucket=bucket, Key="shards/classes.txt", Body=b"ant\nbee\ncat\n")
    spec = f"wds:s3://{bucket}/shards/train-{{000..001}}.tar?endpoint_url={moto_endpoint}"
    remote = load_data(spec, image_size=SIZE, channels=3)
    local = _write(tmp_path, _shards(LABELS))
    here = load_data(f"wds:{local}/train-{{000..001}}.tar", image_size=SIZE, channels=3)
    assert remote.class_names == ("ant", "bee", "cat")
    assert torch.equal(remote.y_train, here.y_train)
    assert torch.equal(remote.x_train[:], here.x_train[:])
