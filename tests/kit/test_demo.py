"""The kit's demo-tree publisher: atomic, complete or absent, concurrent writers keep one tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from visionkit_core.kit.demo import MARKER, DemoTree, cache_root, demo_options, is_complete, publish_tree


def _build(tmp: Path) -> dict[str, str]:
    (tmp / "a").mkdir()
    (tmp / "a" / "x.txt").write_text("x", encoding="utf-8")
    return {"source": "test"}


def test_publish_writes_the_tree_with_its_marker(tmp_path: Path) -> None:
    tree = publish_tree(tmp_path / "demo-v1", _build, "test tree")
    assert is_complete(tree) and (tree / "a" / "x.txt").read_text(encoding="utf-8") == "x"
    assert json.loads((tree / MARKER).read_text(encoding="utf-8")) == {"source": "test"}
    assert [p.name for p in tmp_path.iterdir()] == ["demo-v1"]  # no temporary folder left behind


def test_a_complete_tree_is_never_rebuilt(tmp_path: Path) -> None:
    tree = publish_tree(tmp_path / "demo", _build)

    def fail(tmp: Path) -> dict[str, str]:
        raise AssertionError("rebuilt")

    assert publish_tree(tree, fail) == tree


def test_a_failing_build_leaves_nothing(tmp_path: Path) -> None:
    def broken(tmp: Path) -> dict[str, str]:
        (tmp / "half").write_text("", encoding="utf-8")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        publish_tree(tmp_path / "demo", broken)
    assert list(tmp_path.iterdir()) == []


def test_an_incomplete_tree_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "stale.txt").write_text("", encoding="utf-8")
    tree = publish_tree(tmp_path / "demo", _build)
    assert is_complete(tree) and not (tree / "stale.txt").exists()


def test_concurrent_writers_end_with_one_complete_tree(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from visionkit_core.kit.demo import publish_tree\n"
        "def build(tmp):\n"
        "    time.sleep(0.3); (tmp / 'f').write_text(sys.argv[1]); return {'by': sys.argv[1]}\n"
        "publish_tree(Path(sys.argv[2]), build)\n"
    )
    tree = tmp_path / "demo"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i), str(tree)]) for i in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    assert is_complete(tree) and [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_cache_root_follows_argument_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("VISIONKIT_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "visionkit"


class Listing:
    """Stands for a datamodule base: ``layout()`` lists the tree."""

    def __init__(self, root: Path, flips: bool = True) -> None:
        self.root, self.flips = root, flips

    def layout(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())


class Demo(DemoTree, Listing):
    demo_classes = ("a", "b")
    materialise = staticmethod(lambda tree: publish_tree(tree, _build))

    def __init__(self, cache_dir: str, flips: bool = False) -> None:
        super().__init__(root=Path(cache_dir) / "demo-v1", **demo_options(locals()))


def test_a_demo_datamodule_writes_its_tree_when_first_needed(tmp_path: Path) -> None:
    demo = Demo(str(tmp_path))
    assert demo.flips is False and demo.class_names() == ["a", "b"]
    assert not (tmp_path / "demo-v1").exists()  # the names need no disk
    assert demo.layout() == [MARKER, "a"] and is_complete(tmp_path / "demo-v1")


class Base:
    """A datamodule stand-in: options with defaults, ``root`` where the data is."""

    def __init__(
        self, root: Path | None = None, batch_size: int = 8, val_split: float = 0.2, flips: bool = True
    ):
        self.root, self.batch_size, self.val_split, self.flips = root, batch_size, val_split, flips

    def layout(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())  # type: ignore[union-attr]


class Generated(DemoTree, Base):
    demo_classes = ("a",)
    demo_dirname = "generated-v1"
    demo_defaults = {"batch_size": 16}
    materialise = staticmethod(lambda tree: publish_tree(tree, _build))


def test_a_demo_without_init_takes_its_bases_options_with_its_defaults(tmp_path: Path) -> None:
    import inspect
    import typing

    params = inspect.signature(Generated).parameters
    assert list(params) == ["batch_size", "flips", "cache_dir"]  # no root, no val_split
    assert params["batch_size"].default == 16 and params["flips"].default is True
    assert typing.get_type_hints(Generated.__init__)["batch_size"] is int
    demo = Generated(cache_dir=str(tmp_path), flips=False)
    assert (demo.root, demo.batch_size, demo.flips) == (tmp_path / "generated-v1", 16, False)
    with pytest.raises(TypeError):
        Generated(val_split=0.5)


def test_coco_demo_writes_every_split_with_ids_and_distinct_seeds(tmp_path: Path) -> None:
    import numpy as np

    from visionkit_core.kit.demo import VAL_SEED_OFFSET, coco_demo

    seen: list[int] = []

    def render(seed: int, size: int) -> tuple[np.ndarray, list[dict[str, object]]]:
        seen.append(seed)
        return np.full((size, size, 3), seed % 200, np.uint8), [{"category_id": 1, "bbox": [1, 1, 2, 2]}] * 2

    cats = [{"id": 1, "name": "dot"}]
    tree = coco_demo(tmp_path / "dots-v1", render, cats, {"train": 2, "val": 1}, 8, "test")
    assert seen == [0, 1, VAL_SEED_OFFSET] and is_complete(tree)
    doc = json.loads((tree / "annotations" / "instances_train.json").read_text())
    assert [a["id"] for a in doc["annotations"]] == [1, 2, 3, 4]
    assert [a["image_id"] for a in doc["annotations"]] == [1, 1, 2, 2] and doc["annotations"][0][
        "iscrowd"
    ] == 0
    assert doc["categories"] == cats and (tree / "val" / "00000.png").is_file()
    assert json.loads((tree / MARKER).read_text()) == {
        "source": "test",
        "size": 8,
        "counts": {"train": 2, "val": 1},
    }
