"""What an export sidecar says about the model's input: one description for every task.

Every built-in task exports a graph that takes float RGB images in ``[0, 1]``, NCHW, with
the normalisation inside the model; :func:`image_input` writes that part of the sidecar so a
server (``visionkit serve``, or anyone reading the JSON) reads it the same way for every task.
Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def image_input(preprocessing: Mapping[str, Any], name: str = "images", **resize: Any) -> dict[str, Any]:
    """The sidecar's ``input``: float32 RGB NCHW images in ``[0, 1]`` named ``name``, normalised
    inside the model with ``preprocessing``'s mean and std; ``resize`` adds how images are
    brought to the model's size (``resize=``, ``shape=``, ``center_crop=``...), in that order."""
    return {
        "name": name,
        "layout": "NCHW",
        "dtype": "float32",
        "channels": "RGB",
        "value_range": [0.0, 1.0],
        **resize,
        "normalization": "inside the model",
        "mean": [float(v) for v in preprocessing["mean"]],
        "std": [float(v) for v in preprocessing["std"]],
    }
