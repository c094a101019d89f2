"""A first task from pretrained weights: a local torchvision state dict, checked before training.

The file is a ``.safetensors`` file or a ``torch.save``'d state dict (``.pth`` / ``.pt``),
read with ``torch.load(weights_only=True)`` so that no code in it runs; nothing is downloaded.
Every key of the backbone must be there with its shape (the head's only for ``import-base``,
which keeps it), and no other: a file for another architecture is refused with the keys that
differ, before any job row or training exists.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from base.errors import StrataError
from base.records import LayerStats
from workers.backbone import BackboneConfig, build_backbone, head_key, prunable_layers, weight_key
from workers.effective_rates import effective_rates
from workers.initialization import initialize
from workers.method import TaskOutcome
from workers.network import PrivateParams, SharedNetwork, head_classes, private_state
from workers.ownership import Ownership


class BadWeights(StrataError):
    """A weights file that cannot start this backbone."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or ``torch.save`` file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise BadWeights(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many kinds for a bad file
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise BadWeights(f"cannot read weights file {path}: {detail}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise BadWeights(f"weights file {path} holds no state dict (names -> tensors)")
    return state


def _sample(keys: set[str]) -> str:
    shown = sorted(keys)[:3]
    return ", ".join(shown) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def check_state(
    model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, *, need_head: bool
) -> None:
    """Refuse a state dict that does not fit ``model`` key for key and shape for shape."""
    name = model.config.name
    expected = model.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}  # older checkpoints
    if not need_head:
        optional |= {k for k in expected if k.startswith(head_key(model.config))}
    missing = set(expected) - set(state) - optional
    unexpected = set(state) - set(expected)
    if unexpected:
        raise BadWeights(
            f"weights file {path} has {len(unexpected)} key(s) that {name} does not "
            f"({_sample(unexpected)}): weights for another architecture?"
        )
    if missing:
        raise BadWeights(
            f"weights file {path} lacks {len(missing)} key(s) of {name} ({_sample(missing)})"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise BadWeights(
                f"weights file {path}: {key} has shape {tuple(value.shape)}, {name} "
                f"(--input-size, --width) expects {tuple(expected[key].shape)}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise BadWeights(f"weights file {path}: {key} holds values that are not finite")


def pretrained_network(
    config: BackboneConfig, path: str | Path, *, keep_head: bool = False
) -> tuple[SharedNetwork, PrivateParams]:
    """The shared network (every weight still free) and the non-shared state from ``path``.

    Without ``keep_head`` the file's head may be missing and is dropped: the first task brings
    its own. With it, the head's class count is the file's.
    """
    state = read_state_dict(path)
    head = head_key(config)
    classes = state.get(head + "weight")
    with torch.device("meta"):
        model = build_backbone(config, int(classes.shape[0]) if classes is not None else 1)
    check_state(model, state, path, need_head=keep_head)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    for key in set(model.state_dict()) - set(state):  # num_batches_tracked of old files
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
    shared = {layer: state[weight_key(config, layer)] for layer in prunable_layers(model)}
    shared_keys = {weight_key(config, layer) for layer in shared}
    private = {
        k: v.clone()
        for k, v in state.items()
        if k not in shared_keys and (keep_head or not k.startswith(head))
    }
    network = SharedNetwork(
        config,
        {layer: value.clone() for layer, value in shared.items()},
        Ownership.all_free({layer: value.shape for layer, value in shared.items()}),
    )
    return network, private


def imported_outcome(
    network: SharedNetwork, private: PrivateParams, rates: dict[str, float], granularity: str
) -> TaskOutcome:
    """Task 1 as imported, without data: each layer's ``rates`` share of smallest-magnitude
    weights is freed (S30), nothing is trained or fine-tuned (there is nothing to choose on).

    The task owns every other weight at the file's value; its head, biases and normalisation
    state are the file's. No validation accuracy exists (stored as 0, ``kept`` "pruned").
    """
    rates = effective_rates(network, rates)
    model = network.build_module(private, head_classes(private, network.config))
    trainable = {layer: network.ownership.free(layer) for layer in network.layers}
    owned, freed = initialize(model, trainable, rates, granularity)
    weights = {name: m.weight.detach().clone() for name, m in prunable_layers(model).items()}
    layers = [
        LayerStats(
            name=name,
            numel=trainable[name].numel(),
            rate=rates[name],
            free_before=int(trainable[name].sum()),
            trained=int(trainable[name].sum()),
            freed=freed[name],
            owned=int(owned[name].sum()),
        )  # fmt: skip
        for name in network.layers
    ]
    seq = network.ownership.last_seq + 1
    after = SharedNetwork(network.config, weights, network.ownership.assign(seq, owned))
    return TaskOutcome(seq, after, private_state(model), layers, 0.0, "pruned")
