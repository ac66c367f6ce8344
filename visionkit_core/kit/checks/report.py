"""The results of ``visionkit plugins check``: one :class:`CheckResult` per check, a :class:`CheckReport`."""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "FAIL", "skip"]


@dataclass
class CheckResult:
    """One check of one component: ``ok``, ``FAIL`` or ``skip``, and what it found."""

    plugin: str
    kind: str  # backbone | task | dataset | callback | logger | plugin
    name: str  # the qualified component name (``acme:tinynet``), or the plugin's name
    check: str  # import | options | contract | smoke:<phase>
    status: Status
    message: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

    def line(self) -> str:
        return f"{self.status} {self.plugin} {self.kind} {self.name}: {self.check}: {self.message}"


@dataclass
class CheckReport:
    """Every check of a ``plugins check`` run; ``ok`` when none failed."""

    plugins: list[str]
    results: list[CheckResult] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "FAIL"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        count = {s: sum(r.status == s for r in self.results) for s in ("ok", "FAIL", "skip")}
        verdict = "all passed" if self.ok else f"{count['FAIL']} FAILED"
        return (
            f"{len(self.results)} checks of {len(self.plugins)} plugin(s) ({', '.join(self.plugins)}): "
            f"{count['ok']} ok, {count['FAIL']} failed, {count['skip']} skipped "
            f"in {self.wall_s:.1f} s: {verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "plugins": self.plugins,
            "wall_s": round(self.wall_s, 3),
            "results": [asdict(r) for r in self.results],
        }


def describe_error(err: BaseException) -> str:
    """``Type: first line (at file:line)``, the frame named being the deepest outside torch/Lightning."""
    first = (str(err).strip().splitlines() or [""])[0]
    text = f"{type(err).__name__}: {first}".rstrip(": ")
    frames = [
        f
        for f in traceback.extract_tb(err.__traceback__)
        if not any(part in f.filename for part in ("/torch/", "/lightning/", "/pluggy/", "/importlib/"))
    ]
    if frames:
        text += f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})"
    return text
