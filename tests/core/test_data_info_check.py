"""validate/test compare every data-derived value the task needs with the checkpoint's, not only classes."""

from __future__ import annotations

import pytest

from visionkit_core.errors import UsageError
from visionkit_core.plugin.contract import DataInfo
from visionkit_core.workflows.inference import check_data_info

NAMES = ["nose", "left_eye", "right_eye"]


def test_the_same_values_pass_and_data_set_sizes_may_differ() -> None:
    ckpt = DataInfo(extra={"keypoint_names": NAMES, "train_images": 100})
    check_data_info(
        ckpt, DataInfo(extra={"keypoint_names": list(NAMES), "train_images": 7}), ["keypoint_names"], "d"
    )


def test_other_keypoint_names_are_refused_naming_both() -> None:
    ckpt = DataInfo(extra={"keypoint_names": NAMES})
    with pytest.raises(UsageError, match="keypoint_names of 'd' differ") as err:
        check_data_info(ckpt, DataInfo(extra={"keypoint_names": NAMES[:2]}), ["keypoint_names"], "d")
    assert "right_eye" in str(err.value)
    with pytest.raises(UsageError, match="keypoint_names"):  # missing altogether
        check_data_info(ckpt, DataInfo(), ["keypoint_names"], "d")


def test_classes_ignore_index_and_label_map_are_compared() -> None:
    ckpt = DataInfo(class_names=["bg", "cat"], ignore_index=255, label_map={"bg": 0, "cat": 1})
    with pytest.raises(UsageError, match="classes of 'd' differ"):
        check_data_info(ckpt, DataInfo(class_names=["bg", "dog"], ignore_index=255), [], "d")
    with pytest.raises(UsageError, match="ignore_index"):
        check_data_info(ckpt, DataInfo(class_names=["bg", "cat"], ignore_index=0), ["class_names"], "d")
    with pytest.raises(UsageError, match="label_map"):
        check_data_info(
            ckpt,
            DataInfo(class_names=["bg", "cat"], ignore_index=255, label_map={"bg": 1, "cat": 0}),
            [],
            "d",
        )
    same = DataInfo(class_names=["bg", "cat"], ignore_index=255, label_map={"bg": 0, "cat": 1})
    check_data_info(ckpt, same, ["class_names"], "d")
