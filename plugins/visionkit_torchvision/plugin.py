"""Hook implementations of the built-in visionkit_torchvision plugin."""

from __future__ import annotations

from visionkit_core import hookimpl  # noqa: F401
