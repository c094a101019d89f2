"""``strata import-base``: a pretrained network with its own head becomes task 1."""

from __future__ import annotations

import pytest
import torch
import torchvision

from base.errors import StrataError
from base.location import RegistryLocation
from orchestrator.pipeline import AddTaskOptions, add_task
from registry.store import Registry
from tests.registries import initialised_location
from workers.backbone import weight_key
from workers.loading import backbone_of, load_network, load_task_view
from workers.summary import SUMMARY_KIND

DATA = "builtin:mnist?classes=0-2"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(2)
    state = torchvision.models.mobilenet_v3_large(weights=None, width_mult=0.125, num_classes=10)
    root = tmp_path_factory.mktemp("import")
    torch.save(state.state_dict(), root / "base.pth")
    (root / "classes.txt").write_text("".join(f"class {i}\n" for i in range(10)))
    (root / "short.txt").write_text("a\nb\n")
    return root, state.state_dict()


@pytest.fixture(scope="module")
def location(tmp_path_factory) -> RegistryLocation:
    return initialised_location(tmp_path_factory.mktemp("imported"))


def options(root, name="imagenet", **extra) -> AddTaskOptions:
    given = {
        "data": DATA,
        "backbone": "mobilenet_v3_large",
        "width": 0.125,
        "weights": str(root / "base.pth"),
        "classes": str(root / "classes.txt"),
        "import_head": True,
        "finetune_epochs": 0,
        "limit": 48,
        "batch_size": 32,
    }
    return AddTaskOptions(name=name, **(given | extra))


def test_bad_requests_are_refused_first(ray_session, location, files):
    root, _ = files
    with pytest.raises(StrataError, match="names 2 classes; the head has 10"):
        add_task(location, options(root, classes=str(root / "short.txt")))
    with pytest.raises(StrataError, match="--data has 10 classes but the imported head has"):
        add_task(location, options(root, data="builtin:mnist", weights=str(_five(root))))
    with Registry.open(location.db_url, location.store_uri) as registry:
        assert registry.list_tasks() == []


def _five(root):
    model = torchvision.models.mobilenet_v3_large(weights=None, width_mult=0.125, num_classes=5)
    torch.save(model.state_dict(), root / "five.pth")
    return root / "five.pth"


def test_the_imported_network_keeps_its_head_and_frees_its_smallest_weights(location, files):
    root, state = files
    row = add_task(location, options(root), explicit=["backbone", "width"])
    assert (row.seq, row.num_classes, row.kept) == (1, 10, "pruned")
    assert row.class_names == [f"class {i}" for i in range(10)]
    with Registry.open(location.db_url, location.store_uri) as registry:
        config = backbone_of(registry)
        network = load_network(registry)
        view = load_task_view(registry, "imagenet", network)
        layers = {layer.name: layer for layer in registry.task_layers("imagenet")}
    for key in ("classifier.3.weight", "features.0.1.running_mean"):  # head and BN: the file's
        assert torch.equal(view.private[key], state[key])
    for name in network.layers:
        start = state[weight_key(config, name)]
        owned = network.ownership.task_mask(1)[name]
        assert torch.equal(network.weights[name][owned], start[owned])  # no training
        assert layers[name].freed == round(layers[name].rate * start.numel())
        if layers[name].freed:  # by magnitude: every freed weight is at most every kept one
            assert start[~owned].abs().max() <= start[owned].abs().min()
    assert layers["features.0.0"].rate == 0.0 and layers["classifier.0"].rate == 0.5


def test_import_without_data_then_a_later_task_keeps_it_bit_identical(ray_session, tmp_path):
    torch.manual_seed(5)
    model = torchvision.models.resnet18(weights=None, num_classes=6)
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    (tmp_path / "classes.txt").write_text("".join(f"kind {i}\n" for i in range(6)))
    location = initialised_location(tmp_path / "registry")
    imported = AddTaskOptions(
        name="base", data="", backbone="resnet18", input_size=32, import_head=True,
        weights=str(tmp_path / "resnet18.pth"), classes=str(tmp_path / "classes.txt"),
    )  # fmt: skip
    row = add_task(location, imported, explicit=["backbone"])
    assert (row.seq, row.num_classes, row.kept, row.data_spec) == (1, 6, "pruned", "")
    assert row.class_names == [f"kind {i}" for i in range(6)]
    assert row.measured_accuracy is None and row.to_dict()["val_accuracy"] is None  # not measured
    state = model.state_dict()
    with Registry.open(location.db_url, location.store_uri) as registry:
        config = backbone_of(registry)
        before = load_network(registry)
        assert registry.load_summaries(["base"], kind=SUMMARY_KIND) == {}  # none to compare
    assert config.mean is not None and config.input_size == 32  # normalisation recorded
    owned_by_one = before.ownership.task_mask(1)
    for name in before.layers:
        start, owned = state[weight_key(config, name)], owned_by_one[name]
        assert torch.equal(before.weights[name][owned], start[owned])
        if (~owned).any():
            assert start[~owned].abs().max() <= start[owned].abs().min()
    later = AddTaskOptions(name="digits", data=DATA, epochs=1, finetune_epochs=0, limit=48)
    second = add_task(location, later)
    assert second.seq == 2 and second.reference_task is None
    with Registry.open(location.db_url, location.store_uri) as registry:
        after = load_network(registry)
        assert registry.verify() == []
    for name in before.layers:
        owned = owned_by_one[name]
        assert torch.equal(after.weights[name][owned], before.weights[name][owned])
