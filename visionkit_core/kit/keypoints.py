"""Keypoint parts of the kit: left/right swaps for flips, OKS sigmas, skeleton drawing.

- :func:`flip_index` / :func:`mirror_name`: which keypoint a horizontal flip turns each one
  into (``left_eye`` <-> ``right_eye``, ``l_hand`` <-> ``r_hand``, ``LeftFoot`` <->
  ``RightFoot``), from the names or checked from a YOLO ``flip_idx``;
- :func:`hflip_keypoints`: ``(..., K, 2|3)`` keypoints of an image flipped horizontally
  (``x -> width - x``, left and right swapped);
- :func:`oks_sigmas`: the per-keypoint sigmas of the OKS similarity (COCO's 17 person
  sigmas for COCO's person category, 0.05 for every other keypoint; or the user's);
- :func:`draw_skeleton`: keypoints and their skeleton drawn on a uint8 image (torchvision's
  ``draw_keypoints``).

Everything but :func:`draw_skeleton` (torch) and :func:`hflip_keypoints` (torch tensors or
numpy arrays) is plain Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from visionkit_core import UsageError

if TYPE_CHECKING:
    from torch import Tensor

#: COCO's 17 person keypoints, in COCO's order.
COCO_PERSON_KEYPOINTS = (
    "nose left_eye right_eye left_ear right_ear left_shoulder right_shoulder left_elbow right_elbow "
    "left_wrist right_wrist left_hip right_hip left_knee right_knee left_ankle right_ankle"
).split()
#: COCO's per-keypoint OKS sigmas for those 17 (cocoapi's ``kpt_oks_sigmas``).
COCO_PERSON_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
#: The sigma of every keypoint of another category (the width of a "good enough" hit: OKS 0.5 at
#: about 1.2 * 2 * sigma * sqrt(area) pixels).
DEFAULT_SIGMA = 0.05

_SIDES = {"left": "right", "right": "left", "l": "r", "r": "l", "lft": "rgt", "rgt": "lft"}
_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+|[^A-Za-z\d]+")


def mirror_name(name: str) -> str:
    """``name`` with its side swapped (``left_eye`` -> ``right_eye``), or ``name`` when it has none.

    Sides are whole tokens (split at ``_``, ``-``, spaces, dots and camelCase): ``left``/``right``,
    ``l``/``r``, ``lft``/``rgt`` in any case; ``lower`` or ``ear`` are left alone.
    """
    tokens = _TOKEN.findall(name)
    out = []
    for token in tokens:
        other = _SIDES.get(token.lower())
        if other is None:
            out.append(token)
        elif token.isupper() and len(token) > 1:
            out.append(other.upper())
        elif token[0].isupper():
            out.append(other.capitalize() if len(token) > 1 else other.upper())
        else:
            out.append(other)
    return "".join(out)


def flip_index(names: Sequence[str], given: Sequence[int] | None = None) -> list[int]:
    """Where each keypoint goes under a horizontal flip: ``flipped[:, i] = original[:, index[i]]``.

    ``given`` (a YOLO ``flip_idx``) is checked (a permutation of ``range(K)`` that undoes itself);
    otherwise each name is paired with its :func:`mirror_name` when that name is present, and
    stays itself when not (``nose``, ``tail``).
    """
    k = len(names)
    if given is not None:
        index = [int(v) for v in given]
        if sorted(index) != list(range(k)):
            raise UsageError(f"flip_idx {list(given)} must list each of the {k} keypoints 0..{k - 1} once")
        if any(index[index[i]] != i for i in range(k)):
            raise UsageError(
                f"flip_idx {list(given)} must swap keypoints in pairs (flipping twice is no flip)"
            )
        return index
    position = {str(n): i for i, n in enumerate(names)}
    return [position.get(mirror_name(str(n)), i) for i, n in enumerate(names)]


def hflip_keypoints(keypoints: Any, width: float, index: Sequence[int]) -> Any:
    """Keypoints ``(..., K, 2|3)`` (x, y[, visibility]) of an image ``width`` pixels wide, flipped.

    x becomes ``width - x`` (pixel-edge coordinates, as boxes flip) and keypoint ``i`` takes
    keypoint ``index[i]``'s place, so a left eye stays labelled left. Works on torch tensors and
    numpy arrays; returns a new one.
    """
    flipped = keypoints[..., list(index), :]  # advanced indexing copies (torch and numpy)
    flipped[..., 0] = width - flipped[..., 0]
    return flipped


def is_coco_person(names: Sequence[str], category: str | None = None) -> bool:
    """Whether these are COCO's 17 person keypoints (the names, or 17 keypoints of ``person``)."""
    if len(names) != len(COCO_PERSON_KEYPOINTS):
        return False
    return [str(n) for n in names] == COCO_PERSON_KEYPOINTS or (category or "").lower() == "person"


def oks_sigmas(
    names: Sequence[str], category: str | None = None, given: Sequence[float] | float | None = None
) -> list[float]:
    """The per-keypoint OKS sigmas: ``given`` (one value for all, or one per keypoint), else COCO's
    for COCO's person keypoints (:func:`is_coco_person`), else :data:`DEFAULT_SIGMA` for each."""
    k = len(names)
    if given is not None:
        values = [float(given)] * k if isinstance(given, (int, float)) else [float(v) for v in given]
        if len(values) != k or not all(v > 0 for v in values):
            raise UsageError(
                f"--set task.oks_sigmas: need one positive sigma, or {k} (one per keypoint: "
                f"{', '.join(map(str, names))}), got {given!r}"
            )
        return values
    if is_coco_person(names, category):
        return list(COCO_PERSON_SIGMAS)
    return [DEFAULT_SIGMA] * k


def check_skeleton(skeleton: Sequence[Sequence[int]], num_keypoints: int, one_based: bool) -> list[list[int]]:
    """A skeleton's edges as 0-based ``[a, b]`` pairs (COCO's are 1-based); a UsageError naming a bad one."""
    shift = 1 if one_based else 0
    edges = []
    for edge in skeleton:
        pair = list(edge) if isinstance(edge, (list, tuple)) else []
        if len(pair) != 2 or not all(isinstance(v, int) and shift <= v < num_keypoints + shift for v in pair):
            low, high = shift, num_keypoints - 1 + shift
            raise UsageError(f"skeleton edge {edge!r} must be two keypoint numbers in {low}..{high}")
        edges.append([pair[0] - shift, pair[1] - shift])
    return edges


#: Colours of drawn instances (one per instance, cycling).
COLOURS = ((230, 25, 75), (60, 180, 75), (67, 99, 216), (245, 130, 49), (145, 30, 180), (66, 212, 244))


def draw_skeleton(
    image: Tensor,
    keypoints: Tensor,
    skeleton: Sequence[Sequence[int]] = (),
    visible: Tensor | None = None,
    colours: Sequence[tuple[int, int, int]] = COLOURS,
    radius: int | None = None,
) -> Tensor:
    """``image`` (uint8 ``(3, H, W)``) with each instance's keypoints ``(N, K, 2+)`` and skeleton drawn.

    ``visible`` ``(N, K)`` bools hides keypoints (and the edges touching them), e.g. those
    scoring under a threshold or labelled not visible. One colour per instance.
    """
    import torch
    from torchvision.utils import draw_keypoints

    if keypoints.numel() == 0:
        return image
    size = max(int(image.shape[-1]), int(image.shape[-2]))
    radius = radius if radius is not None else max(1, round(size / 80))
    width = max(1, round(size / 120))
    edges = [(int(a), int(b)) for a, b in skeleton] or None
    points = keypoints[..., :2].float()
    shown = visible if visible is not None else torch.ones(points.shape[:2], dtype=torch.bool)
    for i in range(points.shape[0]):
        image = draw_keypoints(
            image,
            points[i : i + 1],
            connectivity=edges,
            colors=tuple(colours[i % len(colours)]),
            radius=radius,
            width=width,
            visibility=shown[i : i + 1].bool(),
        )
    return image


__all__ = [
    "COCO_PERSON_KEYPOINTS",
    "COCO_PERSON_SIGMAS",
    "DEFAULT_SIGMA",
    "check_skeleton",
    "draw_skeleton",
    "flip_index",
    "hflip_keypoints",
    "is_coco_person",
    "mirror_name",
    "oks_sigmas",
]
