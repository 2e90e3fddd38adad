"""Open a report.html in headless Chromium: screenshot it and check every image loaded.

    python benchmarks/check_report_render.py out/demo/report.html [--screenshot out.png]

The page's own script writes "loaded/total" into ``data-images-loaded`` on the body
once the load event fired; Chromium's --dump-dom prints the DOM after that. Exit
status 0 only when every image decoded. Needs Debian's chromium (`make render-check`
installs it when missing).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check(page: Path, screenshot: Path, timeout: float = 120) -> tuple[int, int]:
    """(images loaded, images) of ``page``; writes a full-width screenshot."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed: apt-get install -y chromium")
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [exe, *FLAGS, "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
    match = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    if match is None:
        raise RuntimeError(f"{page}: the page's image check did not run")
    subprocess.run([exe, *FLAGS, f"--screenshot={screenshot.resolve()}", "--window-size=1280,2400",
                    url], capture_output=True, timeout=timeout, check=True)  # fmt: skip
    return int(match[1]), int(match[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    shot = args.screenshot or args.page.with_name("report-screenshot.png")
    loaded, total = check(args.page, shot)
    print(f"{args.page}: {loaded}/{total} images loaded; screenshot {shot} "
          f"({shot.stat().st_size:,} bytes)")  # fmt: skip
    return 0 if loaded == total and total > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
