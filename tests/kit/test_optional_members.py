"""The contract declares every optional member; ``plugins check`` checks the ones a component has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit_core.kit.checks.conformance import check_optional_members
from visionkit_core.plugin.contract import OPTIONAL_MEMBERS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


class GoodData:
    default_epochs = 30

    @classmethod
    def predict_dataset(cls, files: list[str], preprocessing: dict[str, Any]) -> list[Any]:
        return []


class BadData:
    default_epochs = "30"  # a string from a config file, say
    visionkit_claims = ("coco",)  # not in the contract: a typo or an undocumented lookup

    @classmethod
    def predict_dataset(cls, files: list[str]) -> list[Any]:  # preprocessing missing
        return []


class Task:
    def media_samples(self, batch: Any, limit: int) -> list[Any]:
        return []


def test_declared_members_that_fit_pass_and_are_named() -> None:
    result = check_optional_members("p", "dataset", "p:good", GoodData)
    assert (result.status, result.message) == ("ok", "predict_dataset, default_epochs")
    assert check_optional_members("p", "task", "p:task", Task).message == "media_samples"
    assert check_optional_members("p", "dataset", "p:plain", object).message == "none"


def test_each_misfit_and_each_undeclared_visionkit_attribute_is_named() -> None:
    result = check_optional_members("p", "dataset", "p:bad", BadData)
    assert result.status == "FAIL" and result.check == "optional"
    assert "default_epochs must be a positive int, got '30'" in result.message
    assert "predict_dataset takes 1 arguments, not 2" in result.message
    assert "visionkit_claims is not part of the contract" in result.message


def test_every_optional_member_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("### Optional members", 1)[1].split("\n## ", 1)[0]
    for kind, members in OPTIONAL_MEMBERS.items():
        for member in members:
            assert f"`{member.name}`" in section, (kind, member.name)
