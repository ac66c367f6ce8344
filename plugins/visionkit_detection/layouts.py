"""Read detection annotations as they are: the COCO and YOLO (Ultralytics) layouts.

Standard library and PyYAML only (no torch, no image decoding), so ``visionkit_claim_data``
and ``data check`` can call it cheaply. COCO::

    DIR/annotations/instances_{train,val[,test]}.json    images in DIR/{train,val,test}/
    (instances_train2017.json -> DIR/train2017/; ``file_name`` is relative to that folder)

YOLO::

    DIR/data.yaml   path, train, val[, test], names (a dict {0: name} or a list)
    images in <path>/images/<split>/, labels in <path>/labels/<split>/<stem>.txt
    one object per line: ``cls cx cy w h`` normalised to [0, 1] (or ``cls x1 y1 x2 y2 ...``, a polygon)

Every box becomes ``[x0, y0, x1, y1]``: pixels for COCO, normalised for YOLO (scaled once the
image is decoded). A problem in an annotation (a box outside the image, a zero-area box, an
unknown category id, an annotation naming a missing image, a malformed line) is a
:class:`Problem` naming its file and annotation id or line; the image it belongs to is left
out of training (an object without its box would teach the model that it is background).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core import BadSample, UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_NAMES = ("train", "val", "test")
YAML_NAMES = ("data.yaml", "dataset.yaml")
#: Boxes may overshoot the image by this much (rounding in exporters) and are then clipped.
PIXEL_TOLERANCE = 1.0
NORMALISED_TOLERANCE = 1e-3


@dataclass
class Sample:
    """One image and its objects. ``boxes`` are xyxy, in pixels or (``normalised``) in [0, 1]."""

    image: str
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # class indices into the class names
    crowd: list[bool] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (height, width) the annotations declare (COCO)
    normalised: bool = False
    source: str = ""  # the annotation file
    refs: list[int] = field(default_factory=list)  # annotation id (COCO) or line number (YOLO) per box


@dataclass(frozen=True)
class Problem:
    """What is wrong with one annotation (or a whole file): where, why, and which image it spoils."""

    file: str
    reason: str
    ref: int | None = None  # annotation id (COCO) or line number (YOLO)
    image: str | None = None  # the image left out because of it (None: nothing to leave out)

    def as_bad_sample(self) -> BadSample:
        """For ``data check``: the annotation file and id/line."""
        return BadSample(self.file, self.reason, self.ref)

    def skipped(self) -> BadSample:
        """For training: the image left out (or the annotation file), with where the problem is."""
        where = f"{self.file}:{self.ref}" if self.ref is not None else self.file
        return BadSample(
            self.image or self.file, f"{self.reason} ({where})", None if self.image else self.ref
        )


@dataclass
class DetLayout:
    """The usable samples of each split, the class names, and every problem found while reading."""

    root: Path
    kind: str  # "coco" or "yolo"
    class_names: list[str]
    splits: dict[str, list[Sample]]
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # split -> annotation file or image folder

    def bad_images(self) -> set[str]:
        return {p.image for p in self.problems if p.image}


def find_yaml(path: Path) -> Path | None:
    """The YOLO ``data.yaml`` that ``path`` is or holds, else None (stat calls only)."""
    try:
        if path.is_file():
            return path if path.suffix.lower() in (".yaml", ".yml") else None
        if path.is_dir():
            return next((path / n for n in YAML_NAMES if (path / n).is_file()), None)
    except OSError:
        return None
    return None


def coco_files(root: Path) -> dict[str, Path]:
    """``{split: DIR/annotations/instances_<split>*.json}`` (``train2017`` counts as ``train``)."""
    folder = root / "annotations"
    found: dict[str, Path] = {}
    try:
        names = sorted(os.listdir(folder)) if folder.is_dir() else []
    except OSError:
        return {}
    for name in names:
        if not (name.startswith("instances_") and name.endswith(".json")):
            continue
        stem = name[len("instances_") : -len(".json")]
        split = next((s for s in SPLIT_NAMES if stem.startswith(s)), None)
        if split is not None and split not in found:
            found[split] = folder / name
    return found


def detect(path: Path) -> str | None:
    """``"coco"`` or ``"yolo"`` for a folder (or YOLO yaml file) in that layout, else None."""
    if path.is_dir() and "train" in coco_files(path):
        return "coco"
    if find_yaml(path) is not None:
        return "yolo"
    return None


def scan(path: Path) -> DetLayout:
    """Read every split of ``path`` (either layout); unusable annotations become problems."""
    kind = detect(path)
    if kind == "coco":
        return scan_coco(path)
    if kind == "yolo":
        yaml_file = find_yaml(path)
        assert yaml_file is not None
        return scan_yolo(yaml_file)
    raise UsageError(
        f"{str(path)!r} is not a detection dataset: expected COCO's annotations/instances_train.json "
        "(+ instances_val.json) with images in train/ and val/, or a YOLO data.yaml "
        "(path, train, val, names) with images/<split>/ and labels/<split>/"
    )


# -- COCO ------------------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_coco_json(path: Path) -> dict[str, Any]:
    """The parsed file; a UsageError when it is not JSON or not a COCO instances file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a COCO instances file (the top level is a {type(data).__name__})")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise UsageError(
            f"{path}: not a COCO instances file (no {', '.join(repr(k) for k in missing)} list; "
            "expected {'images': [...], 'annotations': [...], 'categories': [...]})"
        )
    return data


def _coco_categories(files: dict[str, Path], data: dict[str, dict[str, Any]]) -> dict[int, str]:
    """Category id -> name over every split's file; one id with two names is an error."""
    cats: dict[int, tuple[str, str]] = {}
    for split, content in data.items():
        for cat in content["categories"]:
            if not (isinstance(cat, dict) and isinstance(cat.get("id"), int) and "name" in cat):
                raise UsageError(f"{files[split]}: category {cat!r} needs an integer 'id' and a 'name'")
            cid, name = int(cat["id"]), str(cat["name"])
            if cid in cats and cats[cid][0] != name:
                raise UsageError(
                    f"category id {cid} is {cats[cid][0]!r} in {cats[cid][1]} but {name!r} in {files[split]}"
                )
            cats.setdefault(cid, (name, str(files[split])))
    names = [n for n, _ in cats.values()]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(f"{files['train']}: two category ids share the name {', '.join(map(repr, dupes))}")
    return {cid: name for cid, (name, _) in sorted(cats.items())}


def scan_coco(root: Path, strict_json: bool = True) -> DetLayout:
    """Read ``root/annotations/instances_*.json``. A file that is not COCO raises a UsageError unless
    ``strict_json`` is False (``data check``), where it becomes a problem of its own."""
    files = coco_files(root)
    data: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    for split, path in files.items():
        try:
            data[split] = read_coco_json(path)
        except UsageError as err:
            if strict_json:
                raise
            problems.append(Problem(str(path), str(err).removeprefix(f"{path}: ")))
    categories = _coco_categories(files, data) if data else {}
    index = {cid: i for i, cid in enumerate(categories)}
    layout = DetLayout(root, "coco", list(categories.values()), {}, problems)
    for split, content in data.items():
        folder = root / files[split].stem[len("instances_") :]
        layout.files[split] = str(files[split])
        layout.splits[split] = _coco_split(files[split], content, folder, root, index, layout.problems)
    return layout


def _coco_image_path(folder: Path, root: Path, file_name: str) -> Path:
    """``folder/file_name``; exporters that write ``train/x.jpg`` or ``images/x.jpg`` work too."""
    direct = folder / file_name
    if direct.is_file():
        return direct
    for alt in (root / file_name, root / "images" / folder.name / file_name, root / "images" / file_name):
        if alt.is_file():
            return alt
    return direct


def _coco_split(
    path: Path,
    content: dict[str, Any],
    folder: Path,
    root: Path,
    index: dict[int, int],
    problems: list[Problem],
) -> list[Sample]:
    source = str(path)
    samples: dict[int, Sample] = {}
    for number, entry in enumerate(content["images"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), int) and entry.get("file_name")):
            problems.append(Problem(source, f"images[{number}] needs an integer 'id' and a 'file_name'"))
            continue
        image = _coco_image_path(folder, root, str(entry["file_name"]))
        h, w = entry.get("height"), entry.get("width")
        size = (int(h), int(w)) if _number(h) and _number(w) and h > 0 and w > 0 else None
        if entry["id"] in samples:
            problems.append(Problem(source, f"image id {entry['id']} is listed twice", image=str(image)))
            continue
        samples[entry["id"]] = Sample(str(image), size=size, source=source)
        if not image.is_file():
            problems.append(
                Problem(source, f"image id {entry['id']}: file {str(image)!r} not found", image=str(image))
            )
    for number, ann in enumerate(content["annotations"]):
        ann_id = ann.get("id", number) if isinstance(ann, dict) else number
        ref = ann_id if isinstance(ann_id, int) else number
        if not isinstance(ann, dict):
            problems.append(Problem(source, f"annotations[{number}] is not an object", ref))
            continue
        sample = samples.get(ann.get("image_id"))  # type: ignore[arg-type]
        if sample is None:
            problems.append(
                Problem(
                    source,
                    f"annotation id {ref} names image id {ann.get('image_id')!r}, which is not in 'images'",
                    ref,
                )
            )
            continue
        reason, box = _coco_box(ann, sample.size, index)
        if reason is not None:
            problems.append(
                Problem(
                    source, f"annotation id {ref} ({Path(sample.image).name}): {reason}", ref, sample.image
                )
            )
            continue
        assert box is not None
        sample.boxes.append(box)
        sample.labels.append(index[int(ann["category_id"])])
        sample.crowd.append(bool(ann.get("iscrowd", 0)))
        sample.refs.append(ref)
    return list(samples.values())


def _coco_box(
    ann: dict[str, Any], size: tuple[int, int] | None, index: dict[int, int]
) -> tuple[str | None, list[float] | None]:
    """(why the annotation is unusable, None) or (None, its xyxy box in pixels)."""
    cid = ann.get("category_id")
    if not isinstance(cid, int) or cid not in index:
        known = ", ".join(str(c) for c in list(index)[:20])
        return f"unknown category id {cid!r} (the categories are {known})", None
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        return f"bbox {bbox!r} is not [x, y, width, height]", None
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return f"zero-area box (bbox {_fmt(bbox)}: width {w:g}, height {h:g})", None
    box = [x, y, x + w, y + h]
    if size is not None:
        why = outside(box, size[1], size[0], PIXEL_TOLERANCE)
        if why:
            return f"box {_fmt(bbox)} (xywh) {why} the {size[1]}x{size[0]} image", None
    return None, box


def outside(box: list[float], width: float, height: float, tolerance: float) -> str | None:
    """How ``box`` (xyxy) leaves a ``width`` x ``height`` image beyond ``tolerance``, else None."""
    x0, y0, x1, y1 = box
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return "lies entirely outside"
    if x0 < -tolerance or y0 < -tolerance or x1 > width + tolerance or y1 > height + tolerance:
        return "extends outside"
    return None


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


# -- YOLO ------------------------------------------------------------------------------------


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read: {err}") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or "train" not in data or "names" not in data:
        raise UsageError(f"{path}: not a YOLO data.yaml (needs 'train', 'val' and 'names' keys)")
    return data


def yolo_names(path: Path, names: Any) -> list[str]:
    """Class names from ``names``: a list, or a dict ``{0: name, 1: name}`` with indices 0..K-1."""
    if isinstance(names, list) and names:
        out = [str(n) for n in names]
    elif isinstance(names, dict) and names:
        try:
            keyed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise UsageError(f"{path}: 'names' keys must be class indices 0, 1, ...") from None
        if sorted(keyed) != list(range(len(keyed))):
            raise UsageError(
                f"{path}: 'names' must number the classes 0..{len(keyed) - 1}, got {sorted(keyed)}"
            )
        out = [keyed[i] for i in range(len(keyed))]
    else:
        raise UsageError(f"{path}: 'names' must be a non-empty list or dict of class names")
    if len(set(out)) != len(out):
        raise UsageError(
            f"{path}: 'names' lists a class twice: {sorted({n for n in out if out.count(n) > 1})}"
        )
    return out


def yolo_root(yaml_file: Path, data: dict[str, Any]) -> Path:
    """The dataset root: ``path`` (relative to the yaml's folder), else the yaml's folder."""
    base = yaml_file.parent
    value = data.get("path")
    if not value:
        return base
    candidate = Path(str(value)).expanduser()
    if candidate.is_absolute():
        return candidate
    return base / candidate if (base / candidate).is_dir() else base


def yolo_images(root: Path, entry: Any) -> list[Path]:
    """The images of one split entry: a folder (recursive), a .txt list of images, or a list of those."""
    entries = entry if isinstance(entry, list) else [entry]
    found: list[Path] = []
    for item in entries:
        p = Path(str(item)).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            found += sorted(
                f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
            )
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    q = Path(line.strip())
                    found.append(q if q.is_absolute() else (p.parent / q))
        else:
            raise UsageError(f"YOLO split {str(item)!r}: no folder or .txt list at {str(p)!r}")
    return found


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def scan_yolo(yaml_file: Path) -> DetLayout:
    """Read a YOLO dataset; every label line that is malformed or out of range becomes a problem."""
    data = read_yaml(yaml_file)
    names = yolo_names(yaml_file, data["names"])
    root = yolo_root(yaml_file, data)
    layout = DetLayout(root, "yolo", names, {})
    for split in SPLIT_NAMES:
        if not data.get(split):
            continue
        layout.files[split] = str(data[split])
        samples = []
        for image in yolo_images(root, data[split]):
            sample = Sample(str(image), normalised=True, source=str(label_path(image)))
            if not image.is_file():
                layout.problems.append(Problem(str(image), "image file not found", image=str(image)))
                continue
            _yolo_labels(Path(sample.source), sample, len(names), layout.problems)
            samples.append(sample)
        layout.splits[split] = samples
    return layout


def _yolo_labels(path: Path, sample: Sample, num_classes: int, problems: list[Problem]) -> None:
    """Fill ``sample`` from its label file; no file or an empty one: a negative (no objects)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as err:
        problems.append(Problem(str(path), f"cannot read: {err}", image=sample.image))
        return
    seen: set[tuple[str, ...]] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = tuple(line.split())
        if not fields or fields in seen:  # blank lines; Ultralytics drops duplicate lines too
            continue
        seen.add(fields)
        reason, label, box = _yolo_line(fields, num_classes)
        if reason is not None:
            problems.append(
                Problem(str(path), f"line {number} {line.strip()!r}: {reason}", number, sample.image)
            )
            continue
        assert box is not None and label is not None
        sample.boxes.append(box)
        sample.labels.append(label)
        sample.crowd.append(False)
        sample.refs.append(number)


def _yolo_line(
    fields: tuple[str, ...], num_classes: int
) -> tuple[str | None, int | None, list[float] | None]:
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        return f"expected 'class cx cy w h' (5 values) or a polygon, got {len(fields)} values", None, None
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return "values must be numbers", None, None
    if not all(math.isfinite(v) for v in values):
        return "values must be finite numbers", None, None
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < num_classes:
        return (
            f"unknown class id {fields[0]} (data.yaml names {num_classes} classes: 0..{num_classes - 1})",
            None,
            None,
        )
    if len(fields) == 5:
        cx, cy, w, h = values[1:]
        if w <= 0 or h <= 0:
            return f"zero-area box (width {w:g}, height {h:g})", None, None
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    else:
        xs, ys = values[1::2], values[2::2]
        box = [min(xs), min(ys), max(xs), max(ys)]
        if box[2] <= box[0] or box[3] <= box[1]:
            return "zero-area polygon", None, None
    why = outside(box, 1.0, 1.0, NORMALISED_TOLERANCE)
    if why:
        return f"box {why} the image (coordinates must be normalised to [0, 1])", None, None
    return None, int(cls), box


# -- splits ----------------------------------------------------------------------------------


def usable(layout: DetLayout, split: str) -> list[Sample]:
    """The samples of ``split`` whose annotations are all usable."""
    bad = layout.bad_images()
    return [s for s in layout.splits.get(split, []) if s.image not in bad]


def train_val(layout: DetLayout, val_split: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """The usable train and val samples: the dataset's own val split, else a seeded share of train."""
    train = usable(layout, "train")
    if not train:
        raise UsageError(f"{str(layout.root)!r} has no usable training images")
    if layout.splits.get("val"):
        return train, usable(layout, "val")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(train) * val_split))
    if n_val >= len(train):
        raise UsageError(f"{len(train)} training images cannot be split by --val-split {val_split}")
    held = set(order[:n_val])
    return [s for i, s in enumerate(train) if i not in held], [s for i, s in enumerate(train) if i in held]
