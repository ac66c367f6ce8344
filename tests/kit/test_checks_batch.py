"""``plugins check``'s smoke:batch: a tuple batch is ``(images, Sample)`` or ``(images, list[Sample])``."""

from __future__ import annotations

import torch

from visionkit_core.kit.checks.smoke import _truth_kind


def test_a_sample_or_a_list_passes_a_bare_tensor_is_deprecated_and_a_tasks_own_truth_noted() -> None:
    assert _truth_kind({"label": torch.zeros(4)}) == "truth Sample {label}"
    assert _truth_kind([{"boxes": torch.zeros(0, 4)}] * 2) == "truth 2 Samples"
    assert "deprecated, give (images, Sample) batches" in _truth_kind(torch.zeros(4))
    assert _truth_kind("cat") == "truth a str: not a Sample (the task's own; docs/plugins.md)"
