"""Screenshot of a study's ``report.html`` in headless Chromium, for the docs.

Runs ``autoprune demo`` into a temporary folder (or takes an existing report), opens its ``report.html`` in
Debian's ``chromium`` without a display, and writes a PNG small enough to commit (palette-quantised when
the full-colour one is over ``--max-kb``).

    apt-get install -y chromium
    python docs/screenshot_report.py                      # demo with 8 trials -> docs/report-screenshot.png
    python docs/screenshot_report.py --report artifacts/digits-resnet/report/report.html -o /tmp/shot.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).resolve().parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    """The path of an installed Chromium, or exit with how to install one."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no Chromium found: install Debian's package with 'apt-get install -y chromium'")


def demo_report(folder: Path, trials: int) -> Path:
    """Run ``autoprune demo`` into ``folder`` and return its report.html."""
    cmd = [sys.executable, "-c", "from autoprune.cli import main; main()", "demo", "--out", str(folder),
           "--trials", str(trials), "--quiet"]
    subprocess.run(cmd, check=True)
    reports = sorted(folder.glob("artifacts/*/report/report.html"))
    if not reports:
        sys.exit(f"the demo wrote no report.html under {folder}")
    return reports[0]


def screenshot(report: Path, out: Path, width: int, height: int) -> None:
    """Render ``report`` at ``width`` x ``height`` CSS pixels into ``out`` with headless Chromium."""
    with tempfile.TemporaryDirectory(prefix="autoprune-chromium-") as profile:
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={out}",
               report.resolve().as_uri()]
        subprocess.run(cmd, check=True, timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not out.is_file():
        sys.exit(f"chromium wrote no screenshot at {out}")


def shrink(path: Path, max_kb: int) -> None:
    """Quantise the PNG to a 256-colour palette when it is larger than ``max_kb`` (text and plots stay sharp)."""
    if path.stat().st_size <= max_kb * 1024:
        return
    Image.open(path).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="An existing report.html (default: run the demo).")
    parser.add_argument("--trials", type=int, default=8, help="Search trials of the demo run.")
    parser.add_argument("-o", "--output", type=Path, default=DOCS / "report-screenshot.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--max-kb", type=int, default=500, help="Quantise above this size.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autoprune-screenshot-") as tmp:
        report = args.report or demo_report(Path(tmp) / "demo", args.trials)
        screenshot(report, args.output, args.width, args.height)
    shrink(args.output, args.max_kb)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB) from {report}")


if __name__ == "__main__":
    main()
