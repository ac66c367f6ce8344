"""The COCO layout: ``DIR/annotations/instances_<split>.json`` with images in ``DIR/<split>/``.

Standard library only. Boxes become xyxy pixels; every unusable annotation is a
:class:`~visionkit_detection.layouts.Problem` naming the JSON file and the annotation id.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from visionkit_core import UsageError
from visionkit_detection.layouts import PIXEL_TOLERANCE, DetLayout, Problem, Sample, coco_files, fmt, outside


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
        return f"zero-area box (bbox {fmt(bbox)}: width {w:g}, height {h:g})", None
    box = [x, y, x + w, y + h]
    if size is not None:
        why = outside(box, size[1], size[0], PIXEL_TOLERANCE)
        if why:
            return f"box {fmt(bbox)} (xywh) {why} the {size[1]}x{size[0]} image", None
    return None, box
