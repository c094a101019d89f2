"""add-task's option checks run before torch is imported, so their bounds are restated there:
they must agree with the modules that enforce them deeper down."""

from __future__ import annotations

from orchestrator.options import MAX_INPUT_SIZE
from workers.data import MAX_IMAGE_SIZE


def test_input_size_bound_matches_the_data_loader():
    assert MAX_INPUT_SIZE == MAX_IMAGE_SIZE
