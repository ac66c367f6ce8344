"""Instances: objects with a box and a mask or keypoints, for instance segmentation and keypoint tasks.

What both R-CNN-family tasks need, read as the data is and checked per annotation:

- **layouts**: COCO (``DIR/annotations/<prefix>_<split>.json``, images in ``DIR/<split>/``; polygon
  or RLE ``segmentation``, ``iscrowd``, ``keypoints`` with the names and ``skeleton`` of the
  categories) and YOLO (``data.yaml`` + ``labels/<split>/*.txt``: ``class x1 y1 x2 y2 ...``
  polygons, or ``class cx cy w h x y [v] ...`` pose rows with ``kpt_shape`` and ``flip_idx``).
  :func:`scan` reads either into an :class:`InstanceLayout`; every unusable annotation (a polygon
  outside the image or with fewer than 3 points, a keypoint count that does not match, a
  visibility flag not 0/1/2, an unknown category, a missing image) is a :class:`Problem`
  naming its file and annotation id or line, and the image it spoils is left out.
- **data**: :class:`InstanceDataset` (uint8 image, target with ``tv_tensors.BoundingBoxes``,
  ``Mask`` and ``KeyPoints`` moved together by :class:`InstanceTransform`) and
  :class:`InstanceDataModule`, the datamodule base (evaluation sharded so each image counts once).
- **models**: :func:`build_rcnn`: torchvision's Mask R-CNN / Keypoint R-CNN by name, or their
  heads over any registered feature backbone under an FPN; :class:`RCNNTask`, the task base.
- **evaluation**: :class:`CocoEvaluation`, COCO evaluation (``bbox``, ``segm``, ``keypoints``)
  with faster_coco_eval over every process's images, each image counted once.
- :func:`check_tree`: ``visionkit data check`` for these layouts.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionkit_core import BadSample, DataInfo, DataSpec, TaskSpec, UsageError
from visionkit_core.kit.check import DataReport, inspect_all
from visionkit_core.kit.data import PredictImages, SeededDataModule, SeededDataset
from visionkit_core.kit.data import ShardedEval as ShardedEval  # importable from here too
from visionkit_core.kit.data import decode_image as kit_decode
from visionkit_core.kit.objects import Objects, ObjectTask
from visionkit_core.kit.objects import as_float as as_float  # importable from here too
from visionkit_core.kit.objects import to_original as to_original
from visionkit_core.kit.skips import DECODE_ERRORS, UnusableSample, error_text
from visionkit_core.kit.splits import seeded_split

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_NAMES = ("train", "val", "test")
YAML_NAMES = ("data.yaml", "dataset.yaml")
#: Coordinates may overshoot the image by this much (exporters round) and are then clipped.
PIXEL_TOLERANCE = 1.0
NORMALISED_TOLERANCE = 1e-3
#: What each kind of data needs per annotation, and its COCO annotation file prefix.
PREFIX = {"segm": "instances", "keypoints": "person_keypoints"}


# -- annotations ---------------------------------------------------------------------------------


@dataclass
class Instance:
    """One object: class index, xyxy box, and its polygons / RLE and/or flat ``x, y, v`` keypoints.

    Coordinates are pixels, or in ``[0, 1]`` while the record is ``normalised`` (YOLO).
    """

    label: int
    box: list[float]
    polygons: list[list[float]] | None = None
    rle: dict[str, Any] | None = None
    keypoints: list[float] | None = None
    crowd: bool = False
    ref: int | None = None  # annotation id (COCO) or line number (YOLO)


@dataclass
class ImageRecord:
    """One image and its instances; ``size`` is the ``(h, w)`` the annotations declare (COCO)."""

    image: str
    instances: list[Instance] = field(default_factory=list)
    size: tuple[int, int] | None = None
    normalised: bool = False
    source: str = ""  # the annotation file


@dataclass(frozen=True)
class Problem:
    """What is wrong with one annotation (or file): where, why, and which image it spoils."""

    file: str
    reason: str
    ref: int | None = None
    image: str | None = None

    def as_bad_sample(self) -> BadSample:
        """For ``data check``: the annotation file and id/line."""
        return BadSample(self.file, self.reason, self.ref)

    def skipped(self) -> BadSample:
        """For training: the image left out (or the file), with where the problem is."""
        where = f"{self.file}:{self.ref}" if self.ref is not None else self.file
        return BadSample(
            self.image or self.file, f"{self.reason} ({where})", None if self.image else self.ref
        )


@dataclass
class InstanceLayout:
    """Every split's records, the class names, keypoint names/skeleton/flip, and every problem."""

    root: Path
    kind: str  # "coco" or "yolo"
    need: str  # "segm" or "keypoints"
    class_names: list[str]
    splits: dict[str, list[ImageRecord]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    keypoint_names: list[str] = field(default_factory=list)
    skeleton: list[list[int]] = field(default_factory=list)  # 0-based index pairs
    flip_idx: list[int] | None = None

    def bad_images(self) -> set[str]:
        return {p.image for p in self.problems if p.image}

    def usable(self, split: str) -> list[ImageRecord]:
        bad = self.bad_images()
        return [r for r in self.splits.get(split, []) if r.image not in bad]

    def train_val(self, val_split: float, seed: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """Usable train and val records: the data's own val split, else a seeded share of train."""
        train = self.usable("train")
        if not train:
            raise UsageError(f"{str(self.root)!r} has no usable training images")
        if self.splits.get("val"):
            return train, self.usable("val")
        return seeded_split(train, val_split, seed, "images")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _outside(xs: Sequence[float], ys: Sequence[float], w: float, h: float, tol: float) -> bool:
    return min(xs) < -tol or min(ys) < -tol or max(xs) > w + tol or max(ys) > h + tol


def coco_files(root: Path, prefix: str) -> dict[str, Path]:
    """``{split: DIR/annotations/<prefix>_<split>*.json}`` (``train2017`` counts as ``train``)."""
    folder = root / "annotations"
    try:
        names = sorted(os.listdir(folder)) if folder.is_dir() else []
    except OSError:
        return {}
    found: dict[str, Path] = {}
    for name in names:
        if name.startswith(f"{prefix}_") and name.endswith(".json"):
            split = next((s for s in SPLIT_NAMES if name[len(prefix) + 1 :].startswith(s)), None)
            if split is not None:
                found.setdefault(split, folder / name)
    return found


def find_yaml(path: Path) -> Path | None:
    """The YOLO ``data.yaml`` that ``path`` is or holds (stat calls only)."""
    if path.is_file():
        return path if path.suffix.lower() in (".yaml", ".yml") else None
    return next((path / n for n in YAML_NAMES if (path / n).is_file()), None) if path.is_dir() else None


def detect_layout(path: Path, need: str) -> str | None:
    """``"coco"`` or ``"yolo"`` when ``path`` holds that layout (stat calls only), else None."""
    if path.is_dir() and "train" in coco_files(path, PREFIX[need]):
        return "coco"
    return "yolo" if find_yaml(path) is not None else None


def scan(path: Path, need: str, strict_json: bool = True) -> InstanceLayout:
    """Read every split of ``path`` (COCO or YOLO) for ``need`` (``"segm"`` or ``"keypoints"``)."""
    kind = detect_layout(path, need)
    if kind == "coco":
        return scan_coco(path, need, strict_json)
    if kind == "yolo":
        return scan_yolo(find_yaml(path), need)  # type: ignore[arg-type]
    what = "polygons: class x1 y1 x2 y2 ..." if need == "segm" else "pose rows and kpt_shape"
    raise UsageError(
        f"{str(path)!r} is not a {'instance segmentation' if need == 'segm' else 'keypoint'} dataset: "
        "expected "
        f"COCO's annotations/{PREFIX[need]}_train.json (+ _val.json) with images in train/ and val/, or a "
        f"YOLO data.yaml with images/<split>/ and labels/<split>/ ({what})"
    )


# -- COCO --------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    """The parsed COCO file; a UsageError when it is not JSON or has no images/annotations/categories."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    missing = [
        k
        for k in ("images", "annotations", "categories")
        if not isinstance(data, dict) or not isinstance(data.get(k), list)
    ]
    if missing:
        raise UsageError(f"{path}: not a COCO annotation file (no {', '.join(map(repr, missing))} list)")
    return data  # type: ignore[no-any-return]


def scan_coco(root: Path, need: str, strict_json: bool = True) -> InstanceLayout:
    """Read ``root/annotations/<prefix>_*.json``; ``strict_json=False`` reports a bad file as a problem."""
    files = coco_files(root, PREFIX[need])
    data: dict[str, dict[str, Any]] = {}
    layout = InstanceLayout(root, "coco", need, [])
    for split, path in files.items():
        try:
            data[split] = read_json(path)
        except UsageError as err:
            if strict_json:
                raise
            layout.problems.append(Problem(str(path), str(err).removeprefix(f"{path}: ")))
    cats: dict[int, dict[str, Any]] = {}
    for split, content in data.items():
        for cat in content["categories"]:
            if not (isinstance(cat, dict) and isinstance(cat.get("id"), int) and "name" in cat):
                raise UsageError(f"{files[split]}: category {cat!r} needs an integer 'id' and a 'name'")
            cats.setdefault(int(cat["id"]), cat)
    cats = dict(sorted(cats.items()))
    layout.class_names = [str(c["name"]) for c in cats.values()]
    if len(set(layout.class_names)) != len(cats):
        raise UsageError(f"{files.get('train')}: two category ids share one name: {layout.class_names}")
    kpt_counts: dict[int, int] = {}
    if need == "keypoints":
        for cid, cat in cats.items():
            if isinstance(cat.get("keypoints"), list) and cat["keypoints"]:
                kpt_counts[cid] = len(cat["keypoints"])
                if not layout.keypoint_names:
                    layout.keypoint_names = [str(n) for n in cat["keypoints"]]
                    layout.skeleton = [[int(a) - 1, int(b) - 1] for a, b in cat.get("skeleton") or []]
        if len(set(kpt_counts.values())) > 1:
            raise UsageError(
                f"{files.get('train')}: categories declare different keypoint counts {kpt_counts}"
            )
        if not kpt_counts:
            raise UsageError(f"{files.get('train')}: no category declares its 'keypoints' names")
    index = {cid: i for i, cid in enumerate(cats)}
    for split, content in data.items():
        folder = root / files[split].stem[len(PREFIX[need]) + 1 :]
        layout.files[split] = str(files[split])
        layout.splits[split] = _coco_split(files[split], content, folder, root, index, kpt_counts, layout)
    return layout


def _coco_image_path(folder: Path, root: Path, file_name: str) -> Path:
    for candidate in (folder / file_name, root / file_name, root / "images" / folder.name / file_name):
        if candidate.is_file():
            return candidate
    return folder / file_name


def _coco_split(
    path: Path,
    content: dict[str, Any],
    folder: Path,
    root: Path,
    index: dict[int, int],
    kpt_counts: dict[int, int],
    layout: InstanceLayout,
) -> list[ImageRecord]:
    source, problems = str(path), layout.problems
    records: dict[Any, ImageRecord] = {}
    for number, entry in enumerate(content["images"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), int) and entry.get("file_name")):
            problems.append(Problem(source, f"images[{number}] needs an integer 'id' and a 'file_name'"))
            continue
        image = _coco_image_path(folder, root, str(entry["file_name"]))
        h: Any = entry.get("height")
        w: Any = entry.get("width")
        size = (int(h), int(w)) if _number(h) and _number(w) and h > 0 and w > 0 else None
        records[entry["id"]] = ImageRecord(str(image), size=size, source=source)
        if not image.is_file():
            problems.append(
                Problem(source, f"image id {entry['id']}: file {str(image)!r} not found", None, str(image))
            )
    for number, ann in enumerate(content["annotations"]):
        ref = ann.get("id", number) if isinstance(ann, dict) and isinstance(ann.get("id"), int) else number
        record = records.get(ann.get("image_id")) if isinstance(ann, dict) else None
        if record is None:
            problems.append(Problem(source, f"annotation id {ref} names an image id not in 'images'", ref))
            continue
        reason, instance = coco_instance(ann, record.size, index, kpt_counts, layout.need)
        if instance is None:
            name = Path(record.image).name
            problems.append(Problem(source, f"annotation id {ref} ({name}): {reason}", ref, record.image))
            continue
        instance.ref = ref
        record.instances.append(instance)
    return list(records.values())


def coco_instance(
    ann: dict[str, Any],
    size: tuple[int, int] | None,
    index: dict[int, int],
    kpt_counts: dict[int, int],
    need: str,
) -> tuple[str, Instance | None]:
    """``("", instance)`` for a usable COCO annotation, else ``(why not, None)``."""
    cid = ann.get("category_id")
    if not isinstance(cid, int) or cid not in index:
        return (
            f"unknown category id {cid!r} (the categories are {', '.join(map(str, list(index)[:20]))})",
            None,
        )
    crowd = bool(ann.get("iscrowd", 0))
    inst = Instance(index[cid], [], crowd=crowd)
    xs: list[float] = []
    ys: list[float] = []
    h, w = size if size is not None else (math.inf, math.inf)
    if need == "segm":
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            if not ("counts" in seg and isinstance(seg.get("size"), list) and len(seg["size"]) == 2):
                return "RLE segmentation needs 'size' [h, w] and 'counts'", None
            if size is not None and tuple(seg["size"]) != size:
                return f"RLE size {seg['size']} is not the image's [{size[0]}, {size[1]}]", None
            inst.rle = seg
        elif isinstance(seg, list) and seg:
            for k, poly in enumerate(seg):
                if not (isinstance(poly, list) and all(_number(v) for v in poly) and len(poly) % 2 == 0):
                    return f"polygon {k} is not a flat list of x, y numbers", None
                if len(poly) < 6:
                    return f"polygon {k} has {len(poly) // 2} points (a polygon needs at least 3)", None
                xs += poly[0::2]
                ys += poly[1::2]
            if _outside(xs, ys, w, h, PIXEL_TOLERANCE):
                return f"polygon extends outside the {size[1]}x{size[0]} image", None  # type: ignore[index]
            inst.polygons = [[float(v) for v in p] for p in seg]
        else:
            return "no segmentation (a polygon list or an RLE object)", None
    else:
        want = kpt_counts.get(cid)
        kp = ann.get("keypoints")
        if want is None:
            return f"category id {cid} declares no keypoints", None
        if not (isinstance(kp, list) and all(_number(v) for v in kp)) or len(kp) != 3 * want:
            got = len(kp) // 3 if isinstance(kp, list) else 0
            return (
                f"{got} keypoints, but the category has {want} (keypoints must be {want} x [x, y, v])",
                None,
            )
        flags = kp[2::3]
        bad = [i for i, v in enumerate(flags) if v not in (0, 1, 2)]
        if bad:
            return f"keypoint {bad[0]} has visibility {flags[bad[0]]!r} (must be 0, 1 or 2)", None
        seen = [i for i, v in enumerate(flags) if v > 0]
        if seen and _outside([kp[3 * i] for i in seen], [kp[3 * i + 1] for i in seen], w, h, PIXEL_TOLERANCE):
            return f"a visible keypoint lies outside the {size[1]}x{size[0]} image", None  # type: ignore[index]
        inst.keypoints = [float(v) for v in kp]
        xs, ys = [kp[3 * i] for i in seen], [kp[3 * i + 1] for i in seen]
    bbox = ann.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox):
        x, y, bw, bh = (float(v) for v in bbox)
        inst.box = [x, y, x + bw, y + bh]
    elif xs:
        inst.box = [min(xs), min(ys), max(xs), max(ys)]
    elif inst.rle is None:
        return f"bbox {bbox!r} is not [x, y, width, height]", None
    if inst.box and (inst.box[2] <= inst.box[0] or inst.box[3] <= inst.box[1]) and not crowd:
        return f"zero-area box {inst.box}", None
    return "", inst


# -- YOLO ----------------------------------------------------------------------------------------------


def scan_yolo(yaml_file: Path, need: str) -> InstanceLayout:
    """Read a YOLO-seg or YOLO-pose dataset; every malformed or out-of-range line becomes a problem."""
    import yaml

    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"{yaml_file}: cannot read: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or "train" not in data or "names" not in data:
        raise UsageError(f"{yaml_file}: not a YOLO data.yaml (needs 'train', 'val' and 'names')")
    names = data["names"]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not isinstance(names, list) or not names:
        raise UsageError(f"{yaml_file}: 'names' must be a non-empty list or {{0: name, ...}}")
    base = yaml_file.parent
    root = Path(str(data.get("path") or base)).expanduser()
    root = root if root.is_absolute() else (base / root if (base / root).is_dir() else base)
    layout = InstanceLayout(root, "yolo", need, [str(n) for n in names])
    shape: tuple[int, int] = (0, 0)
    if need == "keypoints":
        kpt = data.get("kpt_shape")
        if not (isinstance(kpt, list) and len(kpt) == 2 and kpt[0] > 0 and kpt[1] in (2, 3)):
            raise UsageError(f"{yaml_file}: a YOLO-pose data.yaml needs kpt_shape: [K, 2 or 3], got {kpt!r}")
        shape = (int(kpt[0]), int(kpt[1]))
        named = data.get("kpt_names")  # Ultralytics: {class: [names]}; a plain list works too
        named = next(iter(named.values()), None) if isinstance(named, dict) else named
        layout.keypoint_names = [str(n) for n in named or [f"kp{i}" for i in range(shape[0])]]
        if len(layout.keypoint_names) != shape[0]:
            raise UsageError(
                f"{yaml_file}: kpt_names lists {len(layout.keypoint_names)} names, kpt_shape {shape[0]}"
            )
        flip = data.get("flip_idx")
        if flip is not None and sorted(flip) != list(range(shape[0])):
            raise UsageError(f"{yaml_file}: flip_idx must be a permutation of 0..{shape[0] - 1}, got {flip}")
        layout.flip_idx = list(flip) if flip is not None else None
        layout.skeleton = [[int(a), int(b)] for a, b in data.get("skeleton") or []]
    for split in SPLIT_NAMES:
        if not data.get(split):
            continue
        layout.files[split] = str(data[split])
        layout.splits[split] = []
        for image in _yolo_images(root, data[split]):
            labels = _label_path(image)
            record = ImageRecord(str(image), normalised=True, source=str(labels))
            if not image.is_file():
                layout.problems.append(Problem(str(image), "image file not found", image=str(image)))
                continue
            _yolo_labels(labels, record, len(names), shape, layout.problems)
            layout.splits[split].append(record)
    return layout


def _yolo_images(root: Path, entry: Any) -> list[Path]:
    found: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        p = Path(str(item)).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file() and p.suffix == ".txt":
            lines = [q.strip() for q in p.read_text(encoding="utf-8").splitlines() if q.strip()]
            found += [Path(q) if Path(q).is_absolute() else p.parent / q for q in lines]
        else:
            raise UsageError(f"YOLO split {str(item)!r}: no folder or .txt list at {str(p)!r}")
    return found


def _label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _yolo_labels(
    path: Path, record: ImageRecord, num_classes: int, shape: tuple[int, int], problems: list[Problem]
) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return  # no label file: an image without objects
    except (OSError, UnicodeDecodeError) as err:
        problems.append(Problem(str(path), f"cannot read: {err}", image=record.image))
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.split():
            continue
        reason, inst = yolo_instance(line.split(), num_classes, shape)
        if inst is None:
            problems.append(
                Problem(str(path), f"line {number} {line.strip()[:60]!r}: {reason}", number, record.image)
            )
            continue
        inst.ref = number
        record.instances.append(inst)


def yolo_instance(fields: list[str], num_classes: int, shape: tuple[int, int]) -> tuple[str, Instance | None]:
    """``("", instance)`` for a usable YOLO line (a polygon when ``shape`` is ``(0, 0)``, else a pose row)."""
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return "values must be numbers", None
    if not all(math.isfinite(v) for v in values):
        return "values must be finite numbers", None
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < num_classes:
        return (
            f"unknown class id {fields[0]} (data.yaml names {num_classes} classes: 0..{num_classes - 1})",
            None,
        )
    k, d = shape
    if k == 0:
        if len(values) == 5:
            return "a box (class cx cy w h), not a polygon: write 'class x1 y1 x2 y2 x3 y3 ...'", None
        if len(values) % 2 == 0:
            return f"a polygon needs x, y pairs after the class, got {len(values) - 1} values", None
        if len(values) < 7:
            return f"polygon has {(len(values) - 1) // 2} points (a polygon needs at least 3)", None
        xs, ys = values[1::2], values[2::2]
        if _outside(xs, ys, 1.0, 1.0, NORMALISED_TOLERANCE):
            return "polygon extends outside the image (coordinates must be normalised to [0, 1])", None
        return "", Instance(int(cls), [min(xs), min(ys), max(xs), max(ys)], polygons=[values[1:]])
    if len(values) != 5 + k * d:
        return f"expected 5 + {k}x{d} values (class cx cy w h, then {k} keypoints), got {len(values)}", None
    cx, cy, bw, bh = values[1:5]
    if bw <= 0 or bh <= 0:
        return f"zero-area box (width {bw:g}, height {bh:g})", None
    pts = np.asarray(values[5:]).reshape(k, d)
    if d == 3:
        bad = [i for i, v in enumerate(pts[:, 2]) if v not in (0, 1, 2)]
        if bad:
            return f"keypoint {bad[0]} has visibility {pts[bad[0], 2]:g} (must be 0, 1 or 2)", None
        flags = pts[:, 2]
    else:
        flags = np.where((pts[:, 0] > 0) | (pts[:, 1] > 0), 2.0, 0.0)
    box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
    if _outside(box[0::2], box[1::2], 1.0, 1.0, NORMALISED_TOLERANCE):
        return "box extends outside the image (coordinates must be normalised to [0, 1])", None
    kp = np.stack([pts[:, 0], pts[:, 1], flags], 1).reshape(-1).tolist()
    return "", Instance(int(cls), box, keypoints=[float(v) for v in kp])


# -- data --------------------------------------------------------------------------------------------------


class BadImage(UnusableSample):
    """An image that cannot be used (unreadable, or not the size its annotations declare)."""


def read_image(path: str, declared: tuple[int, int] | None = None) -> Tensor:
    """The ``(3, H, W)`` uint8 image; :class:`BadImage` saying why not."""
    try:
        image = kit_decode(path)
    except DECODE_ERRORS as err:
        raise BadImage(path, f"cannot read image: {error_text(err)}") from None
    if declared is not None and declared != tuple(image.shape[1:]):
        h, w = image.shape[1:]
        raise BadImage(path, f"image is {w}x{h} but its annotations declare {declared[1]}x{declared[0]}")
    return image


def instance_mask(inst: Instance, h: int, w: int) -> np.ndarray:
    """The ``(h, w)`` uint8 mask of an instance's polygons (pixels) or RLE."""
    from faster_coco_eval import mask as mask_utils

    if inst.rle is not None:
        rle = inst.rle
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, h, w)
        return np.asarray(mask_utils.decode(rle), dtype=np.uint8)
    if not inst.polygons:
        return np.zeros((h, w), dtype=np.uint8)
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in inst.polygons], h, w)
    return np.asarray(mask_utils.decode(mask_utils.merge(rles)), dtype=np.uint8)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a binary ``(h, w)`` mask: ``{"size": [h, w], "counts": str}`` (JSON-ready)."""
    from faster_coco_eval import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = rle["counts"]
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def record_target(record: ImageRecord, h: int, w: int, masks: bool) -> dict[str, Any]:
    """The untransformed target of ``record`` on an ``h`` x ``w`` image (tv_tensors, pixels)."""
    insts = record.instances
    scale = np.array([w, h, w, h], dtype=np.float64) if record.normalised else np.ones(4)
    boxes = np.asarray([i.box for i in insts], dtype=np.float64).reshape(-1, 4) * scale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    target: dict[str, Any] = {
        "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes).float(), format="XYXY", canvas_size=(h, w)),
        "labels": torch.tensor([i.label for i in insts], dtype=torch.int64),
        "iscrowd": torch.tensor([int(i.crowd) for i in insts], dtype=torch.int64),
    }
    if masks:
        sx, sy = (w, h) if record.normalised else (1, 1)
        arrays = []
        for inst in insts:
            if inst.polygons is not None and record.normalised:
                polys = [[v * (sx if j % 2 == 0 else sy) for j, v in enumerate(p)] for p in inst.polygons]
                inst = Instance(inst.label, inst.box, polygons=polys)
            arrays.append(instance_mask(inst, h, w))
        stacked = np.stack(arrays) if arrays else np.zeros((0, h, w), dtype=np.uint8)
        target["masks"] = tv_tensors.Mask(torch.from_numpy(stacked))
    kps = [i.keypoints for i in insts if i.keypoints is not None]
    if kps and len(kps) == len(insts):
        arr = np.asarray(kps, dtype=np.float64).reshape(len(insts), -1, 3)
        if record.normalised:
            arr[..., 0] *= w
            arr[..., 1] *= h
        target["keypoints"] = tv_tensors.KeyPoints(torch.from_numpy(arr[..., :2]).float(), canvas_size=(h, w))
        target["visibility"] = torch.from_numpy(arr[..., 2]).to(torch.int64)
    return target


def _spatial(value: Any) -> bool:
    return isinstance(value, (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.KeyPoints))


def letterbox_all(image: Tensor, target: dict[str, Any], size: int) -> tuple[Tensor, dict[str, Any]]:
    """Longer side to ``size`` (aspect kept), padded right/bottom to a square; the target moves along."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    pad = [0, 0, size - nw, size - nh]
    out = {}
    for key, value in target.items():
        if _spatial(value):
            value = v2.functional.pad(v2.functional.resize(value, [nh, nw]), pad)
        out[key] = value
    image = v2.functional.pad(v2.functional.resize(image, [nh, nw], antialias=True), pad)
    return image, out


def letterbox(image: Tensor, size: int) -> Tensor:
    """:func:`letterbox_all` for an image alone (predict)."""
    return letterbox_all(image, {}, size)[0]


class InstanceTransform:
    """Joint transforms of an image and its instances, then tidy (clip; drop instances left empty).

    Training: a horizontal flip (left/right keypoints swapped by ``flip_idx``), scale jitter and a
    random crop/pad to the ``size`` square. Evaluation: letterbox to ``size``.
    """

    def __init__(
        self,
        size: int,
        train: bool,
        hflip: bool = True,
        scale_range: tuple[float, float] = (0.75, 1.25),
        flip_idx: Sequence[int] | None = None,
    ) -> None:
        self.size, self.train, self.hflip = int(size), train, hflip
        self.flip_idx = list(flip_idx) if flip_idx is not None else None
        s = self.size
        self.jitter = v2.Compose(
            [
                v2.ScaleJitter((s, s), scale_range=scale_range, antialias=True),
                v2.RandomCrop((s, s), pad_if_needed=True, fill=0),
            ]
        )

    def __call__(self, image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        if self.train:
            if self.hflip and bool(torch.rand(()) < 0.5):
                image, target = self.flip(image, target)
            image, target = self.jitter(tv_tensors.Image(image), target)
            image = image.as_subclass(Tensor)
        else:
            image, target = letterbox_all(image, target, self.size)
        return image, tidy(target, image.shape[-2:])

    def flip(self, image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        from visionkit_core.kit.keypoints import hflip_keypoints

        out = {k: v2.functional.horizontal_flip(v) if _spatial(v) else v for k, v in target.items()}
        if "keypoints" in out:  # x -> W - x as boxes flip (torchvision's is W - 1 - x); sides swapped
            kp = target["keypoints"]
            index = self.flip_idx if self.flip_idx is not None else list(range(kp.shape[1]))
            flipped = hflip_keypoints(kp.as_subclass(Tensor), kp.canvas_size[1], index)
            out["keypoints"] = tv_tensors.wrap(flipped, like=kp)
            out["visibility"] = out["visibility"][:, index]
        return v2.functional.horizontal_flip(image), out


def tidy(target: dict[str, Any], size: Sequence[int]) -> dict[str, Tensor]:
    """Plain tensors: boxes clipped (from the masks where there are masks), keypoints off the image
    made invisible, and instances left without area (or mask) dropped."""
    h, w = int(size[0]), int(size[1])
    boxes = target["boxes"].as_subclass(Tensor).float().reshape(-1, 4).clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    out = {k: v.as_subclass(Tensor) for k, v in target.items()}
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    if "masks" in out:
        from torchvision.ops import masks_to_boxes

        masks = out["masks"]
        has = masks.flatten(1).any(1).bool()
        crowd = out["iscrowd"].bool()
        tight = masks_to_boxes(masks[has]) + torch.tensor([0, 0, 1, 1]) if bool(has.any()) else boxes[has]
        boxes[has & ~crowd] = tight[~crowd[has]]
        keep &= has
    if "keypoints" in out:
        kp = out["keypoints"]
        inside = (kp[..., 0] >= 0) & (kp[..., 0] < w) & (kp[..., 1] >= 0) & (kp[..., 1] < h)
        out["visibility"] = torch.where(inside, out["visibility"], torch.zeros_like(out["visibility"]))
        keep &= (out["visibility"] > 0).any(1) | out["iscrowd"].bool()
    out["boxes"] = boxes
    return {k: v[keep] for k, v in out.items()}


class InstanceDataset(SeededDataset):
    """Records decoded on access; a bad image is replaced by the next good one (or raises under error)."""

    def __init__(
        self, records: Sequence[ImageRecord], transform: Any, on_bad_image: str = "skip", masks: bool = True
    ) -> None:
        super().__init__(records, on_bad_image)
        self.transform, self.masks = transform, masks

    @property
    def targets(self) -> list[tuple[int, ...]]:
        """Per image, a multi-hot tuple of its classes (``--sampler balanced``)."""
        n = 1 + max((i.label for r in self.samples for i in r.instances), default=-1)
        return [tuple(int(c in {i.label for i in r.instances}) for c in range(n)) for r in self.samples]

    def read(self, record: ImageRecord) -> tuple[Tensor, dict[str, Any]]:
        image = read_image(record.image, record.size)
        return image, record_target(record, int(image.shape[1]), int(image.shape[2]), self.masks)

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.transform(*self.read(self.samples[index]))
        target["image_id"] = torch.tensor(index)  # the metric counts each image once
        return image, target


def collate_instances(items: Sequence[Any]) -> tuple[list[Tensor], list[dict[str, Tensor]], list[Any]]:
    """``(images, targets, skipped)``, lists with one entry per image."""
    return [it[0] for it in items], [it[1] for it in items], [s for it in items for s in it[2]]


class InstanceDataModule(SeededDataModule):
    """The datamodule base over :func:`scan` layouts; a subclass sets :attr:`need`.

    Args: ``root`` (``--data``), ``batch_size``, ``image_size`` (the square side; letterboxed),
    ``val_split``, ``seed``, ``num_workers``, ``on_bad_image`` (``skip`` or ``error``),
    ``scale_min``/``scale_max`` (training scale jitter), ``hflip``, ``sampler``.
    """

    need = "segm"
    default_image_size = 320
    min_image_size = 32
    collate = staticmethod(collate_instances)
    shard_eval = True  # COCO evaluation counts each image once

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        batch_size: int = 8,
        image_size: int | None = None,
        val_split: float = 0.2,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        scale_min: float = 0.75,
        scale_max: float = 1.25,
        hflip: bool = True,
        sampler: str = "default",
    ) -> None:
        super().__init__()
        bad = f"data.scale_min/scale_max must satisfy 0 < min <= max, got {scale_min}, {scale_max}"
        self.configure(locals(), [] if 0.0 < scale_min <= scale_max else [bad])
        self.scale_range, self.hflip = (float(scale_min), float(scale_max)), hflip
        self._layout: InstanceLayout | None = None

    def layout(self) -> InstanceLayout:
        if self._layout is None:
            if self.root is None or not self.root.exists():
                raise UsageError(f"data folder {str(self.root)!r} not found (--data DIR)")
            self._layout = scan(self.root, self.need)
        return self._layout

    def class_names(self) -> list[str]:
        return list(self.layout().class_names)

    def data_info(self) -> DataInfo:
        return DataInfo(class_names=self.class_names(), train_size=self.train_size())

    def train_size(self) -> int | None:
        """Training images after the val split (``DataInfo.train_size``); None when the data has none."""
        try:
            return len(self.layout().train_val(self.val_split, self.seed)[0])
        except UsageError:  # evaluation data without a training split
            return None

    def data_spec(self) -> DataSpec:
        splits = ["train", "val"] + [s for s in ("test",) if self.layout().splits.get(s)]
        return DataSpec(splits=tuple(splits), batch="tuple", image_key=0)

    def preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "resize": "letterbox", "pad": "bottom-right", "pad_value": 0}

    def bad_samples(self) -> list[BadSample]:
        listed = [p.skipped() for p in self.layout().problems] if self.root and self.root.exists() else []
        seen = {(b.path, b.reason) for b in listed}
        return listed + [b for b in super().bad_samples() if (b.path, b.reason) not in seen]

    @classmethod
    def predict_dataset(cls, files: list[Path], preprocessing: dict[str, Any]) -> PredictImages:
        size = int(preprocessing.get("image_size") or cls.default_image_size)
        return PredictImages(files, size, lambda im: letterbox(im, size), False, read_image)

    def transform(self, train: bool) -> InstanceTransform:
        from visionkit_core.kit.keypoints import flip_index

        layout = self.layout()  # keypoints swap sides on a flip: flip_idx (YOLO), else from the names
        flip = flip_index(layout.keypoint_names, layout.flip_idx) if layout.keypoint_names else None
        return InstanceTransform(self.image_size, train, self.hflip, self.scale_range, flip)

    def setup(self, stage: str | None = None) -> None:
        layout, masks = self.layout(), self.need == "segm"
        if stage in ("fit", "validate", None):
            train, val = layout.train_val(self.val_split, self.seed)
            if self.on_bad_image == "error" and stage in ("fit", None):
                self.refuse_bad(train + val)
            self.warn_left_out(len(layout.bad_images()))
            if stage in ("fit", None):
                self.datasets["train"] = InstanceDataset(
                    train, self.transform(True), self.on_bad_image, masks
                )
            self.datasets["val"] = InstanceDataset(val, self.transform(False), self.on_bad_image, masks)
        if stage == "test" or (stage is None and layout.splits.get("test")):
            if not layout.splits.get("test"):
                raise UsageError(f"data {str(layout.root)!r} has no test split")
            test = layout.usable("test")
            self.datasets["test"] = InstanceDataset(test, self.transform(False), self.on_bad_image, masks)

    def refuse_bad(self, records: list[ImageRecord]) -> None:
        """``--on-bad-image error``: one UsageError listing every problem of these records."""
        problems = [p.as_bad_sample() for p in self.layout().problems]
        problems += [
            BadSample(r.image, why) for r, why in zip(records, inspect_images(records), strict=True) if why
        ]
        self.refuse_bad_samples(problems)


# -- data check ------------------------------------------------------------------------------------------


def _inspect(args: tuple[str, tuple[int, int] | None]) -> str | None:
    try:
        read_image(*args)
    except BadImage as err:
        return err.reason
    return None


def inspect_images(records: Sequence[ImageRecord], workers: int | None = None) -> list[str | None]:
    """Why each record's image cannot be used (None: fine), decoded as training would."""
    return inspect_all(_inspect, [(r.image, r.size) for r in records], workers)


@dataclass
class InstanceReport(DataReport):
    """``visionkit data check`` for instance data: usable images and instances per split, problems."""

    images: dict[str, int] = field(default_factory=dict)
    instances: dict[str, list[int]] = field(default_factory=dict)
    bad_heading = "problems"
    nothing_usable = "no usable training images found"

    def usable(self) -> bool:
        return self.images.get("train", 0) > 0

    def counts(self) -> dict[str, Any]:
        return {"images": dict(self.images), "instances": {k: list(v) for k, v in self.instances.items()}}

    def split_lines(self) -> list[str]:
        return [
            f"  {split}: {n} images; instances: "
            + ", ".join(
                f"{c} {name}" for name, c in zip(self.class_names, self.instances[split], strict=False)
            )
            for split, n in self.images.items()
        ]


def check_tree(
    root: Path, need: str, workers: int | None = None, progress: Callable[[int], Any] | None = None
) -> InstanceReport:
    """Every annotation and image problem of ``root`` for ``need``, with usable counts per split."""
    layout = scan(Path(root), need, strict_json=False)
    report = InstanceReport(
        str(root),
        f"{layout.kind} ({'polygons/RLE' if need == 'segm' else 'keypoints'})",
        list(layout.class_names),
    )
    report.bad = [p.as_bad_sample() for p in layout.problems]
    spoiled = layout.bad_images()
    present = [r for recs in layout.splits.values() for r in recs if Path(r.image).is_file()]
    reasons = dict(zip((r.image for r in present), inspect_images(present, workers), strict=True))
    for split, records in layout.splits.items():
        counts, good = [0] * len(layout.class_names), 0
        for record in records:
            if reasons.get(record.image):
                report.bad.append(BadSample(record.image, str(reasons[record.image])))
            elif record.image not in spoiled and record.image in reasons:
                good += 1
                for inst in record.instances:
                    counts[inst.label] += 1
        report.images[split], report.instances[split] = good, counts
        if progress is not None:
            progress(len(records))
    return report


# -- COCO evaluation -----------------------------------------------------------------------------------------


def _records(
    preds: Sequence[dict[str, Tensor]],
    targets: Sequence[dict[str, Tensor]],
    iou_types: Sequence[str],
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Per image, plain COCO-ready ``gt``/``dt`` lists (masks as RLE), for :class:`CocoEvaluation`."""
    out = []
    for pred, target in zip(preds, targets, strict=True):
        gt, dt = [], []
        size = [int(v) for v in target["masks"].shape[-2:]] if "masks" in target else None
        for i in range(len(target["labels"])):
            box = [float(v) for v in target["boxes"][i].tolist()]
            ann: dict[str, Any] = {
                "label": int(target["labels"][i]),
                "box": box,
                "crowd": int(target["iscrowd"][i]) if "iscrowd" in target else 0,
            }
            if "segm" in iou_types:
                ann["rle"] = encode_mask(target["masks"][i].cpu().numpy())
            if "keypoints" in iou_types:
                kp = torch.cat([target["keypoints"][i], target["visibility"][i, :, None].float()], 1)
                ann["keypoints"] = [float(v) for v in kp.reshape(-1).tolist()]
            if "area" in target:
                ann["area"] = float(target["area"][i])
            gt.append(ann)
        for i in range(len(pred["labels"])):
            det: dict[str, Any] = {
                "label": int(pred["labels"][i]),
                "score": float(pred["scores"][i]),
                "box": [float(v) for v in pred["boxes"][i].tolist()],
            }
            if "segm" in iou_types:
                m = pred["masks"][i]
                det["rle"] = encode_mask((m.reshape(m.shape[-2:]) > mask_threshold).cpu().numpy())
            if "keypoints" in iou_types:
                det["keypoints"] = [float(v) for v in pred["keypoints"][i].reshape(-1).tolist()]
            dt.append(det)
        image_id = int(target["image_id"]) if "image_id" in target else -1
        out.append({"image_id": image_id, "size": size, "gt": gt, "dt": dt})
    return out


def coco_documents(
    records: Sequence[dict[str, Any]], num_classes: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The COCO ground-truth document and detection list of :class:`CocoEvaluation`'s records.

    Category ids are class index + 1; areas are mask areas where there are masks, else box
    areas (or the ``area`` a target gave). Any COCO evaluator reads these (the tests compare
    pycocotools' COCOeval with this module's faster_coco_eval).
    """
    from faster_coco_eval import mask as mask_utils

    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for rec in records:
        iid = int(rec["image_id"])
        h, w = rec["size"] or (1, 1)
        images.append({"id": iid, "height": h, "width": w})
        for a in rec["gt"]:
            x0, y0, x1, y1 = a["box"]
            ann = {
                "id": len(anns) + 1,
                "image_id": iid,
                "category_id": a["label"] + 1,
                "iscrowd": a["crowd"],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": a.get("area", (x1 - x0) * (y1 - y0)),
            }
            if "rle" in a:
                ann["segmentation"] = a["rle"]
                ann.setdefault("area", float(mask_utils.area(_rle_bytes(a["rle"]))))
                ann["area"] = a.get("area", float(mask_utils.area(_rle_bytes(a["rle"]))))
            if "keypoints" in a:
                ann["keypoints"] = a["keypoints"]
                ann["num_keypoints"] = sum(1 for v in a["keypoints"][2::3] if v > 0)
            anns.append(ann)
        for d in rec["dt"]:
            x0, y0, x1, y1 = d["box"]
            det = {
                "image_id": iid,
                "category_id": d["label"] + 1,
                "score": d["score"],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
            }
            if "rle" in d:
                det["segmentation"] = d["rle"]
            if "keypoints" in d:
                det["keypoints"] = d["keypoints"]
            dets.append(det)
    cats = [{"id": i + 1, "name": str(i)} for i in range(num_classes)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _rle_bytes(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def coco_evaluate(
    gt: dict[str, Any], dets: list[dict[str, Any]], iou_type: str, sigmas: Sequence[float] | None = None
) -> dict[str, Any]:
    """faster_coco_eval on the documents: ``map``, ``map_50``, ``map_75`` (-1: no ground truth) and
    ``per_class`` (AP@[.5:.95] per category, -1 where a category has no ground truth)."""
    from faster_coco_eval import COCO, COCOeval_faster

    num_classes = len(gt["categories"])
    if not gt["annotations"] or not dets:
        value = -1.0 if not gt["annotations"] else 0.0
        present = {a["category_id"] for a in gt["annotations"]}
        per = [0.0 if c["id"] in present else -1.0 for c in gt["categories"]]
        return {"map": value, "map_50": value, "map_75": value, "per_class": per}
    coco_gt = COCO(gt)
    coco_dt = coco_gt.loadRes([dict(d) for d in dets])
    kwargs = {"kpt_oks_sigmas": list(sigmas)} if sigmas is not None else {}
    ev = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=lambda *a: None, **kwargs)
    ev.params.catIds = [c["id"] for c in gt["categories"]]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    precision = np.asarray(ev.eval["precision"])  # [T, R, K, A, M]
    per = []
    for k in range(num_classes):
        p = precision[:, :, k, 0, -1]
        per.append(float(p[p > -1].mean()) if (p > -1).any() else -1.0)
    return {
        "map": float(ev.stats[0]),
        "map_50": float(ev.stats[1]),
        "map_75": float(ev.stats[2]),
        "per_class": per,
    }


class CocoEvaluation(Metric):
    """COCO evaluation (``bbox``, ``segm``, ``keypoints``) with faster_coco_eval, DDP-correct.

    ``update(preds, targets)`` takes the task's detections (``boxes``, ``scores``, ``labels``, and
    ``masks`` ``(N, 1, H, W)`` probabilities / ``keypoints`` ``(N, K, 3)``) and targets (``boxes``,
    ``labels``, ``iscrowd``, ``image_id``, and ``masks`` ``(N, H, W)`` / ``keypoints`` ``(N, K, 2)``
    + ``visibility``), kept per image as plain COCO records (masks as RLE). ``compute`` gathers
    every rank's records as one object, counts each ``image_id`` once and evaluates: ``{iou_type:
    {"map", "map_50", "map_75", "per_class"}}``, the same on every rank.
    """

    full_state_update = False

    def __init__(
        self,
        iou_types: Sequence[str] = ("bbox",),
        num_classes: int = 1,
        sigmas: Sequence[float] | None = None,
    ) -> None:
        super().__init__(sync_on_compute=False)
        self.iou_types, self.num_classes = tuple(iou_types), int(num_classes)
        self.sigmas = list(sigmas) if sigmas is not None else None
        self.add_state("records", default=[], dist_reduce_fx=None)

    def update(self, preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]) -> None:
        self.records.extend(_records(preds, targets, self.iou_types))  # type: ignore[attr-defined, operator]

    def gathered(self) -> list[dict[str, Any]]:
        """Every rank's records, each image once, in image-id order."""
        import torch.distributed as dist

        parts: list[Any] = [list(self.records)]  # type: ignore[attr-defined, call-overload]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, list(self.records))  # type: ignore[attr-defined, call-overload]
        first: dict[int, dict[str, Any]] = {}
        for n, rec in enumerate(r for part in parts for r in part):
            first.setdefault(rec["image_id"] if rec["image_id"] >= 0 else -1 - n, rec)
        return [first[k] for k in sorted(first)]

    def compute(self) -> dict[str, dict[str, Any]]:
        gt, dets = coco_documents(self.gathered(), self.num_classes)
        return {
            t: coco_evaluate(gt, dets, t, self.sigmas if t == "keypoints" else None) for t in self.iou_types
        }


# -- models ------------------------------------------------------------------------------------------------

#: torchvision's R-CNN-family models by name -> kind (``"mask"`` or ``"keypoint"``).
TORCHVISION_RCNN = {
    "maskrcnn_resnet50_fpn": "mask",
    "maskrcnn_resnet50_fpn_v2": "mask",
    "keypointrcnn_resnet50_fpn": "keypoint",
}
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class FeatureFPN(nn.Module):
    """A registered feature backbone's maps (strides 4 to 32, at most 4) under torchvision's FPN."""

    def __init__(
        self, backbone: str, out_channels: int, pretrained: bool, weights: str | None, options: dict[str, Any]
    ) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        from visionkit_core.kit.backbones import build_feature_backbone

        features = build_feature_backbone(backbone, pretrained=pretrained, weights=weights, **options)
        reds = features.reductions
        self.levels = [i for i, r in enumerate(reds) if 4 <= r <= 32][-4:] or list(range(len(reds)))[-3:]
        self.strides = [reds[i] for i in self.levels]
        self.body = features.module
        channels = [features.channels[i] for i in self.levels]
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        self.preprocessing = {k: [float(v) for v in cfg.get(k) or IMAGENET[k]] for k in ("mean", "std")}

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.body(x)
        return self.fpn(OrderedDict((str(n), maps[i]) for n, i in enumerate(self.levels)))  # type: ignore[no-any-return]


def _keep_size_transform(model: nn.Module) -> None:
    """Images arrive letterboxed at the run's size: torchvision's resize goes, its normalisation stays."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class KeepSize(GeneralizedRCNNTransform):
        def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, Any]:
            return image, target

    t = model.transform  # type: ignore[union-attr]
    model.transform = KeepSize(1, 1, list(t.image_mean), list(t.image_std))


def build_rcnn(
    kind: str,
    arch: str,
    backbone: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    fpn_channels: int = 64,
    head_layers: int = 2,
    anchor_scale: float = 4.0,
    num_keypoints: int | None = None,
    backbone_options: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A Mask R-CNN (``kind="mask"``) or Keypoint R-CNN for ``num_classes`` object classes, and its
    ``mean``/``std``.

    ``arch`` is a torchvision model name (:data:`TORCHVISION_RCNN`, ``tv:`` allowed) or ``"rcnn"``:
    the heads over the registered feature ``backbone`` (``timm:resnet18``, ``resnet18``) under an
    FPN of ``fpn_channels``, with ``head_layers`` conv layers in the mask/keypoint head and
    anchors of ``anchor_scale`` x stride. ``options`` go to torchvision's constructor (checked by
    name). Class 0 is background: a task adds 1 to its labels.
    """
    from torchvision.models.detection import KeypointRCNN, MaskRCNN

    cls = MaskRCNN if kind == "mask" else KeypointRCNN
    allowed = set(__import__("inspect").signature(cls.__init__).parameters) - {"self", "backbone", "kwargs"}
    unknown = sorted(set(options or {}) - allowed)
    if unknown:
        raise UsageError(
            f"--set task.rcnn_options: {cls.__name__} takes no {', '.join(unknown)}; it takes: "
            f"{', '.join(sorted(allowed))}"
        )
    extra: dict[str, Any] = {"num_keypoints": num_keypoints} if kind == "keypoint" else {}
    name = arch.removeprefix("tv:")
    if name in TORCHVISION_RCNN:
        if TORCHVISION_RCNN[name] != kind:
            raise UsageError(f"--set task.arch={arch}: a {TORCHVISION_RCNN[name]} model, not a {kind} one")
        if weights:
            raise UsageError(
                f"--weights with task.arch={name}: load weights into the whole model with --init-from"
            )
        model = _torchvision_rcnn(name, num_classes + 1, pretrained, {**extra, **dict(options or {})})
    elif name == "rcnn":
        model = _heads(
            cls,
            kind,
            backbone,
            num_classes + 1,
            pretrained,
            weights,
            fpn_channels,
            head_layers,
            anchor_scale,
            dict(backbone_options or {}),
            {**extra, **dict(options or {})},
        )
    else:
        names = [n for n, k in TORCHVISION_RCNN.items() if k == kind]
        raise UsageError(
            f"--set task.arch={arch}: use 'rcnn' (heads over --backbone) or one of "
            f"torchvision's: {', '.join(names)}"
        )
    t = model.transform  # type: ignore[union-attr]
    pre = {"mean": [float(v) for v in t.image_mean], "std": [float(v) for v in t.image_std]}
    _keep_size_transform(model)
    return model, pre


def _torchvision_rcnn(name: str, num_classes: int, pretrained: bool, options: dict[str, Any]) -> nn.Module:
    import inspect

    import torchvision

    from visionkit_core.kit.weights import torch_hub_file

    builder = torchvision.models.get_model_builder(name)
    kwargs: dict[str, Any] = {
        "weights": None,
        "weights_backbone": None,
        "num_classes": num_classes,
        **options,
    }
    if pretrained:
        default = inspect.signature(builder).parameters["weights_backbone"].default
        torch_hub_file(f"{name} (backbone {default})", str(default.url))
        kwargs["weights_backbone"] = default
    return builder(**kwargs)  # type: ignore[no-any-return]


def _heads(
    cls: Any,
    kind: str,
    backbone: str,
    num_classes: int,
    pretrained: bool,
    weights: str | None,
    channels: int,
    layers: int,
    anchor_scale: float,
    backbone_options: dict[str, Any],
    options: dict[str, Any],
) -> nn.Module:
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    body = FeatureFPN(backbone, channels, pretrained, weights, backbone_options)
    strides = [*body.strides, body.strides[-1] * 2]  # + the pooled level (RPN only)
    names = [str(i) for i in range(len(body.strides))]
    anchors = AnchorGenerator(
        tuple((int(anchor_scale * s),) for s in strides), ((0.5, 1.0, 2.0),) * len(strides)
    )
    width = max(128, 2 * channels)
    common: dict[str, Any] = {
        "min_size": 1,
        "max_size": 1,
        "image_mean": body.preprocessing["mean"],
        "image_std": body.preprocessing["std"],
        "rpn_anchor_generator": anchors,
        "box_roi_pool": MultiScaleRoIAlign(names, 7, 2),
        "box_head": TwoMLPHead(channels * 49, width),
        "box_predictor": FastRCNNPredictor(width, num_classes),
        # sized for small images on CPUs; torchvision's own (2000 proposals, 512 sampled RoIs per
        # image) is for 800 px: 64 RoIs made the 64 px demo's epoch about twice as fast, as accurate
        "rpn_pre_nms_top_n_train": 600,
        "rpn_post_nms_top_n_train": 200,
        "rpn_pre_nms_top_n_test": 300,
        "rpn_post_nms_top_n_test": 100,
        "box_batch_size_per_image": 64,
    }
    if kind == "mask":
        common |= {
            "mask_roi_pool": MultiScaleRoIAlign(names, 14, 2),
            "mask_head": MaskRCNNHeads(channels, [channels] * layers, 1),
            "mask_predictor": MaskRCNNPredictor(channels, channels, num_classes),
        }
    else:
        k = int(options["num_keypoints"])
        common |= {
            "keypoint_roi_pool": MultiScaleRoIAlign(names, 14, 2),
            "keypoint_head": KeypointRCNNHeads(channels, [2 * channels] * layers),
            "keypoint_predictor": KeypointRCNNPredictor(2 * channels, k),
        }
    rest = {k: v for k, v in options.items() if k != "num_keypoints"}  # the predictors carry the counts
    return cls(body, None, **{**common, **rest})  # type: ignore[no-any-return]


#: the backbone of an :class:`RCNNTask` when ``--backbone`` is not given (a tiny timm ResNet).
RCNN_BACKBONE = "timm:test_resnet"


class RCNNTask(ObjectTask):
    """The base of R-CNN-family tasks: the kit's :class:`~visionkit_core.kit.objects.ObjectTask` over
    :func:`build_rcnn`, with COCO evaluation per phase.

    The options every R-CNN task takes (its ``__init__`` arguments, saved as hyperparameters;
    the defaults are the instance segmentation task's):

    - ``backbone``: a registered backbone that gives feature maps (``timm:resnet18``, ``resnet18``),
      under an FPN and the task's heads; unused when ``arch`` names a torchvision model;
    - ``num_classes``, ``class_names``: the object classes (from the annotations; no background);
    - ``lr``, ``weight_decay``: AdamW with a per-step warmup then cosine schedule;
    - ``arch``: ``rcnn`` (heads over ``backbone``) or a torchvision model (:data:`TORCHVISION_RCNN`);
    - ``fpn_channels`` (FPN width over ``backbone``; torchvision's own: 256), ``head_layers``
      (conv layers of the mask or keypoint head), ``anchor_scale`` (RPN anchor side per FPN
      level, in strides: 4 gives 16 px anchors at stride 4);
    - ``score_thresh``, ``nms_thresh``, ``detections_per_img``: the postprocessing (what the metric
      sees; ``predict --threshold`` filters further);
    - ``pretrained``: ImageNet backbone weights (fails fast offline); ``weights``: a local file
      for the backbone;
    - ``backbone_options``: ``--set backbone.*``; ``rcnn_options``: more keyword arguments for
      torchvision's model (over the task's :attr:`rcnn_defaults`); ``preprocessing``: a
      checkpoint's mean and std.

    A subclass takes them as they are (no ``__init__``), or adds its own and hands these on
    (``super().__init__(**rcnn_arguments(locals()))``) with :meth:`head_arguments` for
    :meth:`build`; it sets :attr:`kind`
    (``"mask"``/``"keypoint"``), :attr:`iou_types` and :attr:`metric_names` (iou type -> logged
    name, e.g. ``{"segm": "mask_map", "bbox": "map"}``: ``val/mask_map``, ``val/mask_map_50``,
    ``val/mask_map_75``...), and gives
    :meth:`~visionkit_core.kit.objects.ObjectTask.draw_samples` and
    :meth:`~visionkit_core.kit.objects.ObjectTask.write_objects`.
    """

    kind = "mask"
    iou_types: tuple[str, ...] = ("bbox", "segm")
    metric_names: dict[str, str] = {"bbox": "map", "segm": "mask_map"}
    label_offset = 1  # class 0 is torchvision's background

    #: the least value of each option (:meth:`~visionkit_core.kit.objects.ObjectTask.check_options`).
    at_least: dict[str, float] = {"fpn_channels": 8, "head_layers": 1, "detections_per_img": 1}
    #: torchvision keyword arguments of the task's own, under the user's ``rcnn_options``.
    rcnn_defaults: dict[str, Any] = {}

    def __init__(
        self,
        backbone: str = RCNN_BACKBONE,
        num_classes: int = 1,
        class_names: list[str] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        arch: str = "rcnn",
        fpn_channels: int = 64,
        head_layers: int = 2,
        anchor_scale: float = 4.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 50,
        pretrained: bool = False,
        weights: str | None = None,
        backbone_options: dict[str, Any] | None = None,
        rcnn_options: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # a subclass's own arguments too (Lightning reads its frame)
        self.build(**self.head_arguments())

    def head_arguments(self) -> dict[str, Any]:
        """More keyword arguments for :meth:`build` (the keypoint task: ``sigmas``, ``num_keypoints``)."""
        return {}

    def build(self, sigmas: Sequence[float] | None = None, **kwargs: Any) -> None:
        """Check the saved hyperparameters, then build ``self.model`` (:func:`build_rcnn`) from them
        (``arch``, ``backbone``, ``num_classes``, ``pretrained``, ``weights``, ``fpn_channels``,
        ``head_layers``, ``anchor_scale``, ``score_thresh``, ``nms_thresh``, ``detections_per_img``,
        ``backbone_options``, ``rcnn_options``, ``preprocessing``) and ``kwargs``; the preprocessing
        and one COCO evaluation per phase (``sigmas``: OKS sigmas for keypoints)."""
        self.check_options(self.at_least)
        h = self.hparams
        post = {
            "box_score_thresh": h.score_thresh,
            "box_nms_thresh": h.nms_thresh,
            "box_detections_per_img": h.detections_per_img,
        }
        self.model, pre = build_rcnn(
            self.kind,
            h.arch,
            h.backbone,
            h.num_classes,
            pretrained=h.pretrained,
            weights=None,  # loaded below into the first part it fits (a whole checkpoint or a backbone)
            fpn_channels=h.fpn_channels,
            head_layers=h.head_layers,
            anchor_scale=h.anchor_scale,
            backbone_options=h.backbone_options,
            options={**post, **self.rcnn_defaults, **dict(h.rcnn_options or {})},
            **kwargs,
        )
        if h.weights:  # --weights FILE or --init-from CKPT: the whole model, its backbone, the trunk
            backbone = getattr(self.model, "backbone", None)
            targets = [self.model, *([backbone] if isinstance(backbone, nn.Module) else [])]
            body = getattr(backbone, "body", None)
            targets += [body] if isinstance(body, nn.Module) else []
            self.load_weights_into(targets, h.weights)
        self.use_preprocessing(pre, h.preprocessing, normalize=False)  # the model normalises
        self.set_model_normalization()
        for phase in ("val", "test"):
            setattr(self, f"{phase}_coco", CocoEvaluation(self.iou_types, h.num_classes, sigmas))
        self.last_ap: dict[str, dict[str, float]] = {}
        self.last_eval_output: Any = None

    @property
    def backbone(self) -> nn.Module:
        """The trunk under the FPN (what ``--freeze-backbone`` freezes)."""
        body = self.model.backbone  # type: ignore[union-attr]
        return body.body if isinstance(body.body, nn.Module) else body  # type: ignore[union-attr]

    def model_target(self, target: Objects) -> dict[str, Tensor]:
        """What torchvision trains on: non-crowd instances, labels from 1 (0 is background)."""
        keep = target["iscrowd"] == 0
        out = super().model_target(target)
        if self.kind == "mask":
            out["masks"] = target["masks"][keep]
        else:
            vis = target["visibility"][keep].float().clamp(max=1)[..., None]
            out["keypoints"] = torch.cat([target["keypoints"][keep], vis], -1)
        return out

    def curve_metrics(self) -> tuple[str, ...]:
        """The main metric, at IoU (OKS) .5 too, and the second one: ``val/mask_map``,
        ``val/mask_map_50``, ``val/map``."""
        first, second = list(self.metric_names.values())[:2]
        return f"val/{first}", f"val/{first}_50", f"val/{second}"

    def update_metrics(self, phase: str, preds: list[Objects], targets: Sequence[Objects]) -> None:
        getattr(self, f"{phase}_coco").update(preds, targets)

    def log_metrics(self, phase: str) -> None:
        """Log ``<phase>/<name>``, ``_50``, ``_75`` per iou type; keep per-class AP of the first name."""
        metric: CocoEvaluation = getattr(self, f"{phase}_coco")
        result = metric.compute()
        metric.reset()
        main = next(iter(self.metric_names))
        for iou, name in self.metric_names.items():
            for suffix in ("", "_50", "_75"):
                value = max(float(result[iou][f"map{suffix}"]), 0.0)
                self.log(f"{phase}/{name}{suffix}", value, prog_bar=suffix != "_75" and iou == main)
        per = result[main]["per_class"]
        self.last_ap[phase] = dict(zip(self.class_names, per, strict=False))

    #: the former name of :meth:`log_metrics`.
    log_coco = log_metrics


def rcnn_task_spec(
    name: str, main: str, default_data: str, needs: tuple[str, ...] = ("class_names",)
) -> TaskSpec:
    """The :class:`~visionkit_core.TaskSpec` of an :class:`RCNNTask` judged by ``val/<main>`` (its
    first :attr:`~RCNNTask.metric_names` entry, e.g. ``mask_map``, the higher the better): the
    backbone :data:`RCNN_BACKBONE` by default, ``predict --output`` a .json file or a folder,
    ONNX export, and the metrics ``val/<main>``, ``_50``, ``_75``, the box ``val/map``,
    ``val/map_50`` and ``train/loss``."""
    return TaskSpec(
        name=name,
        monitor=f"val/{main}",
        needs=needs,
        default_data=default_data,
        default_backbone=RCNN_BACKBONE,
        predict_outputs=(".json", "dir"),
        export_formats=("onnx",),
        metrics=(f"val/{main}", f"val/{main}_50", f"val/{main}_75", "val/map", "val/map_50", "train/loss"),
    )


def rcnn_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """:class:`RCNNTask`'s own arguments out of a subclass ``__init__``'s ``locals()``."""
    import inspect

    names = set(inspect.signature(RCNNTask.__init__).parameters) - {"self"}
    return {k: v for k, v in arguments.items() if k in names}
