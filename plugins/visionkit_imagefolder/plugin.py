"""Hook implementations of the built-in visionkit_imagefolder plugin: imagefolder, csv, digits, litdata:.

Only names and ``"module:attr"`` strings here: torch, torchvision and scikit-learn are
imported when a datamodule is built, never when plugins are discovered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl
from visionkit_core.kit.registration import Entry, Namespace, datasets

if TYPE_CHECKING:
    from pathlib import Path

visionkit_register_datasets = datasets(
    Entry(
        "imagefolder",
        "visionkit_imagefolder.datamodule:ImageFolderDataModule",
        "images in class folders (train/ and val/, or one folder split by --val-split)",
        check="visionkit_imagefolder.check:check_data",
    ),
    Entry(
        "csv",
        "visionkit_imagefolder.manifest_datamodule:ManifestDataModule",
        "a CSV manifest: path, label (or labels: space-separated, multi-label), optional split",
        check="visionkit_imagefolder.manifest_check:check_manifest",
    ),
    Entry(
        "digit-sets",
        "visionkit_imagefolder.digit_sets:DigitSetsDataModule",
        "multi-label demo: 1-3 of scikit-learn's handwritten digits per image, labelled by set",
    ),
    Namespace(
        "litdata",
        "visionkit_imagefolder.streaming:resolve_litdata",
        description="litdata streaming shards made by `visionkit data convert`: litdata:DIR_OR_URL",
    ),
    Entry(
        "digits",
        "visionkit_imagefolder.digits:DigitsDataModule",
        "scikit-learn's 1,797 8x8 handwritten digits, cached as an ImageFolder tree",
    ),
)


#: The file a converted (litdata) dataset folder holds; see visionkit_imagefolder.streaming.
LITDATA_META = "visionkit.json"


@hookimpl(trylast=True)
def visionkit_claim_data(path: Path) -> str | None:
    """``.csv`` files are manifests; a folder made by ``data convert --to litdata`` is streamed;
    any other folder is read as an ImageFolder tree: the fallback for folders (``trylast``, so
    plugins that recognise a more specific layout claim theirs first); its scan explains
    what is wrong with a folder that is not one."""
    if path.is_file():
        return "visionkit:csv" if path.suffix.lower() == ".csv" else None
    if not path.is_dir():
        return None
    if (path / LITDATA_META).is_file() and (path / "train" / "index.json").is_file():
        return f"litdata:{path}"
    return "visionkit:imagefolder"
