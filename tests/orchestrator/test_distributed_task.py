"""One task trained by two Ray Train workers (DDP over gloo) commits like a one-worker run."""

from __future__ import annotations

import shutil

import pytest
import ray
import torch

from base.errors import StrataError
from orchestrator.options import validate_options
from orchestrator.pipeline import AddTaskOptions, add_task
from registry.store import Registry
from tests.registries import initialised_location
from workers.data import load_data
from workers.inference import Predictor
from workers.loading import load_network, private_from_arrays
from workers.network import TaskView

TINY = {"width": 1 / 16, "epochs": 1, "finetune_epochs": 1, "limit": 96, "batch_size": 32}
FIRST, SECOND = "builtin:mnist?classes=0-4", "builtin:mnist?classes=5-9"


def options(name: str, data: str, **overrides) -> AddTaskOptions:
    return AddTaskOptions(name=name, data=data, **{**TINY, **overrides})


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.int32)


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    """Two registries with the same first task; the second task by one worker in ``single``
    and by two in ``double``. Returns both locations and ``double``'s network before it."""
    assert ray.available_resources().get("CPU", 0) >= 2, "the test Ray instance needs 2 CPUs"
    single_root = tmp_path_factory.mktemp("single")
    single = initialised_location(single_root)
    add_task(single, options("first", FIRST))
    double_root = tmp_path_factory.getbasetemp() / "double"
    shutil.copytree(single_root, double_root)  # the same first task, bit for bit
    double = initialised_location(double_root)
    with Registry.open(double.db_url, double.store_uri) as registry:
        before = load_network(registry)
    add_task(single, options("second", SECOND))
    add_task(double, options("second", SECOND, workers=2))
    return single, double, before


def test_old_task_is_bit_identical_after_a_two_worker_task(runs):
    _, double, before = runs
    with Registry.open(double.db_url, double.store_uri) as registry:
        after = load_network(registry)
        private = private_from_arrays(registry.load_private("first"))
        assert registry.verify() == []
    owned = before.ownership.task_mask(1)
    for layer, mask in owned.items():
        assert torch.equal(bits(after.weights[layer])[mask], bits(before.weights[layer])[mask])
    probe = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    old, new = TaskView(before, 1, private), TaskView(after, 1, private)
    assert torch.equal(old.logits(probe), new.logits(probe))


def test_masks_are_nested_and_the_new_task_took_weights(runs):
    _, double, _ = runs
    with Registry.open(double.db_url, double.store_uri) as registry:
        network = load_network(registry)
    first, second = network.ownership.task_mask(1), network.ownership.task_mask(2)
    assert all(bool((first[layer] & ~second[layer]).sum() == 0) for layer in first)
    assert sum(int(second[layer].sum() - first[layer].sum()) for layer in first) > 0


def test_the_task_predicts_its_recorded_validation_accuracy(runs):
    _, double, _ = runs
    data = load_data(SECOND, image_size=32, channels=1, limit=TINY["limit"])
    with Registry.open(double.db_url, double.store_uri) as registry:
        prediction = Predictor(registry).predict("second", data.x_val)
        recorded = registry.get_task("second").val_accuracy
    assert prediction.logits.shape == (len(data.y_val), 5)
    accuracy = float((prediction.logits.argmax(1) == data.y_val).float().mean())
    assert accuracy == pytest.approx(recorded, abs=1.5 / len(data.y_val))


def test_registry_rows_are_like_a_single_worker_run(runs):
    single, double, _ = runs
    rows, layers, jobs = {}, {}, {}
    for key, location in (("single", single), ("double", double)):
        with Registry.open(location.db_url, location.store_uri) as registry:
            rows[key] = registry.get_task("second")
            layers[key] = registry.task_layers("second")
            jobs[key] = registry.list_jobs()[-1]
    assert layers["single"] == layers["double"]  # rates, trained, freed, owned per layer
    for field in ("seq", "status", "reference_task", "rate"):
        assert getattr(rows["single"], field) == getattr(rows["double"], field), field
    assert rows["double"].reference_jsd == pytest.approx(rows["single"].reference_jsd)
    assert rows["double"].kept in ("pruned", "finetuned")
    assert jobs["double"].state == "succeeded"
    assert jobs["double"].progress["phase"] == "finetune"  # rank 0 reported its epochs


def test_more_workers_than_the_cluster_has_fail_before_a_job(runs):
    _, double, _ = runs
    with Registry.open(double.db_url, double.store_uri) as registry:
        head, jobs = registry.head().id, len(registry.list_jobs())
    with pytest.raises(StrataError, match="--workers 99 needs 99 CPUs"):
        add_task(double, options("third", FIRST, workers=99))
    with Registry.open(double.db_url, double.store_uri) as registry:
        assert registry.head().id == head and len(registry.list_jobs()) == jobs
        assert not registry.task_exists("third")


@pytest.mark.parametrize("workers", [0, -1, 10**6])
def test_a_worker_count_out_of_range_is_refused_before_ray(workers):
    with pytest.raises(StrataError, match="--workers must be"):
        validate_options(options("third", FIRST, workers=workers))
