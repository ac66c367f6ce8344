"""Hook implementations of the built-in visionkit_imagefolder plugin: the imagefolder and digits datasets.

Only names and ``"module:attr"`` strings here: torch, torchvision and scikit-learn are
imported when a datamodule is built, never when plugins are discovered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    from visionkit_core import Registrar


@hookimpl
def visionkit_register_datasets(registry: Registrar) -> None:
    """Register ``imagefolder`` (a folder of class folders) and ``digits`` (the built-in demo)."""
    registry.add(
        "imagefolder",
        "visionkit_imagefolder.datamodule:ImageFolderDataModule",
        description="images in class folders (train/ and val/, or one folder split by --val-split)",
        check="visionkit_imagefolder.check:check_data",
    )
    registry.add(
        "digits",
        "visionkit_imagefolder.digits:DigitsDataModule",
        description="scikit-learn's 1,797 8x8 handwritten digits, cached as an ImageFolder tree",
    )


@hookimpl(trylast=True)
def visionkit_claim_data(path: Path) -> str | None:
    """Any folder is read as an ImageFolder tree: the fallback for folders (``trylast``, so
    plugins that recognise a more specific layout claim theirs first); its scan explains
    what is wrong with a folder that is not one."""
    return "visionkit:imagefolder" if path.is_dir() else None
