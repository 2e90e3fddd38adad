"""How soon the command line answers: `qretrain --help`, the refusal of a bad run
config, and `import qretrain` next to `import torch`, each a fresh process, median
of 5 after one warm-up run (which fills the file cache).

    python benchmarks/bench_startup.py      # -> benchmarks/results/startup.json
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

RUNS = 5


def median_seconds(command: list[str], expect_code: int) -> float:
    """The median wall time of ``command`` over RUNS runs, after one warm-up; each
    must exit with ``expect_code``."""
    times = []
    for run in range(RUNS + 1):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True)
        seconds = time.perf_counter() - start
        if done.returncode != expect_code:
            raise SystemExit(f"{command} exited {done.returncode}, not {expect_code}: "
                             f"{done.stderr.decode()[-300:]}")  # fmt: skip
        if run:
            times.append(seconds)
    return statistics.median(times)


def main() -> None:
    _common.parser(__doc__).parse_args()
    machine = _common.Machine()
    python = [sys.executable]
    with tempfile.TemporaryDirectory() as scratch:
        bad = Path(scratch) / "bad.yaml"
        bad.write_text("output: out/x\nmodel: teacher:vgg\nbogus: 1\n")
        seconds = {
            "qretrain --help": median_seconds([*python, "-m", "qretrain", "--help"], 0),
            "qretrain run BAD.yaml (refused)": median_seconds(
                [*python, "-m", "qretrain", "run", str(bad)], 2),
            "import torch": median_seconds([*python, "-c", "import torch"], 0),
            "import qretrain": median_seconds([*python, "-c", "import qretrain"], 0),
            "import torch, qretrain": median_seconds([*python, "-c", "import torch, qretrain"], 0),
        }  # fmt: skip
    record = {"runs": RUNS, "seconds": seconds,
              "import_qretrain_beyond_torch": seconds["import torch, qretrain"]
              - seconds["import torch"]}  # fmt: skip
    _common.write_result(_common.RESULTS / "startup.json", record, machine)
    for name, value in seconds.items():
        print(f"{name:>34}: {value:.3f} s")


if __name__ == "__main__":
    main()
