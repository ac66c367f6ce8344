"""Moved to :mod:`visionkit_core.kit.media`; this path warns, and goes in a later release."""

import warnings

from visionkit_core.kit.media import *  # noqa: F403
from visionkit_core.kit.media import __all__ as __all__

warnings.warn(f"{__name__} moved to visionkit_core.kit.media; import from there", DeprecationWarning, 2)
