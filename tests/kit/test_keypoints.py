"""The kit's keypoint parts: left/right swaps, flips, OKS sigmas, skeletons, drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionkit_core import UsageError
from visionkit_core.kit.keypoints import (
    COCO_PERSON_KEYPOINTS,
    COCO_PERSON_SIGMAS,
    check_skeleton,
    draw_skeleton,
    flip_index,
    hflip_keypoints,
    mirror_name,
    oks_sigmas,
)


@pytest.mark.parametrize(
    ("name", "mirror"),
    [
        ("left_eye", "right_eye"),
        ("Right Wrist", "Left Wrist"),
        ("l_hand", "r_hand"),
        ("LeftFoot", "RightFoot"),
        ("R_KNEE", "L_KNEE"),
        ("ear_left", "ear_right"),
        ("nose", "nose"),
        ("lower_lip", "lower_lip"),  # "l" inside a word is no side
    ],
)
def test_mirror_name_swaps_whole_side_tokens(name: str, mirror: str) -> None:
    assert mirror_name(name) == mirror


def test_flip_index_from_coco_names_pairs_left_and_right() -> None:
    index = flip_index(COCO_PERSON_KEYPOINTS)
    assert index[:5] == [0, 2, 1, 4, 3] and index[15:] == [16, 15]
    assert flip_index(["head", "tail", "l_fin", "r_fin"]) == [0, 1, 3, 2]
    assert flip_index(["head", "left_only"]) == [0, 1]  # no partner present: stays itself


def test_flip_index_checks_a_given_flip_idx() -> None:
    assert flip_index(["a", "b", "c"], [0, 2, 1]) == [0, 2, 1]
    with pytest.raises(UsageError, match="each of the 3 keypoints"):
        flip_index(["a", "b", "c"], [0, 1, 1])
    with pytest.raises(UsageError, match="in pairs"):
        flip_index(["a", "b", "c"], [1, 2, 0])  # a rotation: flipping twice would not undo it


def test_hflip_keypoints_mirrors_x_and_swaps_sides_keeping_visibility() -> None:
    kp = torch.tensor([[[2.0, 3.0, 2.0], [7.0, 4.0, 1.0], [5.0, 5.0, 0.0]]])  # left, right, middle
    out = hflip_keypoints(kp, 10, [1, 0, 2])
    assert out.tolist() == [[[3.0, 4.0, 1.0], [8.0, 3.0, 2.0], [5.0, 5.0, 0.0]]]
    assert kp[0, 0, 0] == 2.0  # the input is untouched
    twice = hflip_keypoints(out, 10, [1, 0, 2])
    assert torch.equal(twice, kp)
    assert hflip_keypoints(kp.numpy(), 10, [1, 0, 2]).tolist() == out.tolist()  # numpy too
    assert isinstance(hflip_keypoints(np.zeros((1, 3, 2)), 4, [1, 0, 2]), np.ndarray)


def test_oks_sigmas_coco_person_default_and_given() -> None:
    assert oks_sigmas(COCO_PERSON_KEYPOINTS) == list(COCO_PERSON_SIGMAS)
    assert oks_sigmas([f"k{i}" for i in range(17)], category="person") == list(COCO_PERSON_SIGMAS)
    assert oks_sigmas(["head", "tail"]) == [0.05, 0.05]
    assert oks_sigmas(["head", "tail"], given=0.1) == [0.1, 0.1]
    assert oks_sigmas(["head", "tail"], given=[0.1, 0.2]) == [0.1, 0.2]
    with pytest.raises(UsageError, match="one per keypoint: head, tail"):
        oks_sigmas(["head", "tail"], given=[0.1])
    with pytest.raises(UsageError, match="positive"):
        oks_sigmas(["head"], given=[0.0])


def test_check_skeleton_makes_edges_zero_based_and_names_a_bad_one() -> None:
    assert check_skeleton([[1, 2], [2, 3]], 3, one_based=True) == [[0, 1], [1, 2]]
    assert check_skeleton([(0, 2)], 3, one_based=False) == [[0, 2]]
    with pytest.raises(UsageError, match=r"\[1, 4\].*1\.\.3"):
        check_skeleton([[1, 4]], 3, one_based=True)


def test_draw_skeleton_draws_points_and_edges_but_not_hidden_ones() -> None:
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    kp = torch.tensor([[[5.0, 5.0], [30.0, 5.0], [30.0, 30.0]]])
    drawn = draw_skeleton(image, kp, [[0, 1], [1, 2]])
    assert drawn[:, 5, 17].sum() > 0 and drawn[:, 17, 30].sum() > 0  # on both edges
    hidden = draw_skeleton(image, kp, [[0, 1], [1, 2]], visible=torch.tensor([[True, True, False]]))
    assert hidden[:, 5, 17].sum() > 0 and hidden[:, 17, 30].sum() == 0 and hidden[:, 30, 30].sum() == 0
    assert torch.equal(draw_skeleton(image, torch.zeros(0, 3, 2)), image)


def test_instance_transform_flip_moves_keypoints_like_boxes_and_swaps_sides() -> None:
    from torchvision import tv_tensors

    from visionkit_core.kit.instances import InstanceTransform

    image = torch.zeros(3, 10, 20, dtype=torch.uint8)
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[2.0, 1.0, 8.0, 9.0]]), format="XYXY", canvas_size=(10, 20)
        ),
        "keypoints": tv_tensors.KeyPoints(torch.tensor([[[3.0, 2.0], [7.0, 2.0]]]), canvas_size=(10, 20)),
        "visibility": torch.tensor([[2, 1]]),
    }
    _, out = InstanceTransform(10, train=True, flip_idx=[1, 0]).flip(image, target)
    assert out["boxes"].tolist() == [[12.0, 1.0, 18.0, 9.0]]  # x -> 20 - x
    # the left point (3, 2) lands at x = 17 and becomes the right one; the other swaps the other way
    assert out["keypoints"].tolist() == [[[13.0, 2.0], [17.0, 2.0]]]
    assert out["visibility"].tolist() == [[1, 2]]
