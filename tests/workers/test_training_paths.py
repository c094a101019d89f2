"""The training step's paths: fused gradient masking, mixed precision (exercised on the CPU
through the internal ``precision`` setting) and the data-parallel batch shards."""

from __future__ import annotations

import pytest
import torch

from tests.synthetic import TINY_BACKBONE, synthetic_task
from workers.backbone import build_backbone, prunable_layers
from workers.batches import batches
from workers.method import learn_task
from workers.network import SharedNetwork
from workers.training import MaskedGradients, TrainConfig, default_precision

FIRST = TrainConfig(epochs=1, finetune_epochs=0, batch_size=32)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.int32)


def test_masked_gradients_are_zero_outside_the_mask_and_decayed_inside():
    torch.manual_seed(0)
    model = build_backbone(TINY_BACKBONE, 3)
    layers = prunable_layers(model)
    trainable = {name: torch.rand(layer.weight.shape) < 0.5 for name, layer in layers.items()}
    trainable["fc7"][:] = False  # nothing trainable: the layer gets no gradient at all
    masked = MaskedGradients(model, trainable, weight_decay=0.1)
    assert not layers["fc7"].weight.requires_grad
    grads = {}
    for weight in masked.parameters:
        weight.grad = torch.randn_like(weight)
        grads[id(weight)] = weight.grad.clone()
    masked.apply()
    for name, layer in layers.items():
        if name == "fc7":
            continue
        mask, weight = trainable[name], layer.weight
        expected = grads[id(weight)] + 0.1 * weight.detach()
        assert torch.equal(weight.grad[~mask], torch.zeros_like(weight.grad[~mask]))
        torch.testing.assert_close(weight.grad[mask], expected[mask])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_owned_weights_bit_identical(precision):
    """The autocast and gradient-scaler path a GPU takes, here on the CPU."""
    fresh = SharedNetwork.fresh(TINY_BACKBONE)
    half = dict.fromkeys(fresh.layers, 0.5)
    before = learn_task(fresh, synthetic_task(0), half, FIRST).network
    config = TrainConfig(epochs=1, finetune_epochs=0, batch_size=32, precision=precision)
    after = learn_task(before, synthetic_task(1), half, config).network
    owned, moved = before.ownership.task_mask(1), 0
    for layer, mask in owned.items():
        assert torch.equal(bits(after.weights[layer])[mask], bits(before.weights[layer])[mask])
        moved += int((after.weights[layer] != before.weights[layer])[~mask].sum())
    assert moved > 0  # the free weights did train


def test_default_precision_is_full_on_the_cpu():
    assert default_precision(torch.device("cpu")) == "fp32"


def test_shards_split_every_batch_between_workers():
    x, y = torch.arange(10).float(), torch.arange(10)
    whole = [yb for _, yb in batches(x, y, 4, generator=torch.Generator().manual_seed(1))]
    parts = [
        [yb for _, yb in batches(x, y, 4, generator=torch.Generator().manual_seed(1), shard=(r, 2))]
        for r in range(2)
    ]
    assert [len(batch) for batch in parts[0]] == [2, 2, 1] == [len(b) for b in parts[1]]
    for batch, left, right in zip(whole, *parts, strict=True):
        if len(batch) >= 2:
            assert sorted(torch.cat([left, right]).tolist()) == sorted(batch.tolist())
        else:  # a batch smaller than the group: every worker still takes a step
            assert left.tolist() == right.tolist() == batch.tolist()
