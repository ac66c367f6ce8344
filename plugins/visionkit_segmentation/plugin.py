"""Hook implementations of the built-in visionkit_segmentation plugin (filled in as the plugin lands)."""

from __future__ import annotations
