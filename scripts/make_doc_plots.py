"""Make the plots the classification guide shows, from a real (tiny) `visionkit train` run.

    python scripts/make_doc_plots.py              # ~1-2 minutes on a laptop CPU
    python scripts/make_doc_plots.py --keep RUN   # also keep the run directory at RUN

Trains the built-in resnet18 on the embedded digits data (the `visionkit train` demo, fewer
epochs), with the built-in plugins only, then copies the PNGs of ``RUN/plots/`` into
``docs/assets/classification/``, scaled down to at most ``--width`` pixels and saved as
palette PNGs so that the repository stays small. It prints the run's summary so the guide's
numbers can be checked against it. Rerun it when the plots change.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "docs" / "assets" / "classification"
PLOTS = ("training_curves.png", "confusion_matrix.png", "per_class_metrics.png", "misclassified.png")
#: The command of the guide's "complete command" section, on the digits demo.
COMMAND = ["train", "--data", "digits", "--epochs", "8", "--seed", "0", "--num-workers", "0"]


def shrink(src: Path, dst: Path, width: int) -> None:
    """Copy ``src`` to ``dst``: at most ``width`` pixels wide, 256-colour palette PNG."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=900, help="maximum width of a plot in pixels")
    parser.add_argument("--keep", type=Path, help="keep the run directory here (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="visionkit-doc-plots-") as tmp:
        run_dir = args.keep or Path(tmp) / "run"
        env = {**os.environ, "VISIONKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
        cmd = [sys.executable, "-m", "visionkit_core", *COMMAND, "--run-dir", str(run_dir)]
        print("$ visionkit " + " ".join([*COMMAND, "--run-dir", str(run_dir)]), flush=True)
        subprocess.run(cmd, check=True, env=env, cwd=tmp)
        ASSETS.mkdir(parents=True, exist_ok=True)
        for name in PLOTS:
            src = run_dir / "plots" / name
            if not src.is_file():
                print(f"missing {src}", file=sys.stderr)
                return 1
            dst = ASSETS / name
            shrink(src, dst, args.width)
            print(f"wrote {dst.relative_to(ROOT)} ({dst.stat().st_size // 1024} KiB)")
        summary = json.loads((run_dir / "summary.json").read_text())
        print(json.dumps({k: summary.get(k) for k in ("metrics", "epochs", "wall_s", "train_images_per_s")}))
        if args.keep is None:
            shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
