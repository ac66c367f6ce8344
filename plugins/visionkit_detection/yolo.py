"""The YOLO (Ultralytics) layout: ``data.yaml`` with ``images/<split>/`` and ``labels/<split>/<stem>.txt``.

Standard library and PyYAML only. Boxes stay normalised xyxy until the image is decoded; every
malformed or out-of-range label line is a :class:`~visionkit_detection.layouts.Problem` naming
the label file and the line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from visionkit_core import UsageError
from visionkit_detection.layouts import (
    IMAGE_EXTENSIONS,
    NORMALISED_TOLERANCE,
    SPLIT_NAMES,
    DetLayout,
    Problem,
    Sample,
    outside,
)


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
