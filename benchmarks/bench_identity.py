"""Behaviour unchanged across code versions: the EfficientNet-Lite0 7x case's plan
clustered by this checkout and by the code at an earlier commit, byte for byte.

Both run `qretrain compress efficientnet-lite0 --plan PLAN -o FILE` in a process of
their own; the earlier code comes from a temporary git worktree at REV, put first on
PYTHONPATH (the same interpreter and packages, only qretrain differs). Clustering is
seeded by the plan (seed 0), so any byte that differs is a change of behaviour.
Writes benchmarks/results/identity.json.

    python benchmarks/bench_identity.py --against 80323ec
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

PLAN = _common.ROOT / "benchmarks" / "results" / "case_effnet" / "plan.yaml"


def cluster(src: Path, folder: Path, name: str) -> str:
    """Cluster the case's plan with the qretrain found in ``src``; the file's sha256."""
    output = folder / f"{name}.h5"
    environment = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "qretrain", "compress", "efficientnet-lite0",
               "--plan", str(PLAN), "-o", str(output)]  # fmt: skip
    subprocess.run(command, check=True, env=environment, cwd=folder,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return hashlib.sha256(output.read_bytes()).hexdigest()


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--against", required=True, metavar="REV",
                     help="the earlier commit whose code clusters the same plan")  # fmt: skip
    args = cli.parse_args()
    machine = _common.Machine()
    root = _common.ROOT
    revision = subprocess.run(["git", "-C", str(root), "rev-parse", args.against],
                              check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        earlier = folder / "earlier"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q",
                        str(earlier), revision], check=True)  # fmt: skip
        try:
            digests = {"earlier": cluster(earlier / "src", folder, "earlier"),
                       "this": cluster(root / "src", folder, "this")}  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force",
                            str(earlier)], check=True)  # fmt: skip
    record = {"plan": str(PLAN.relative_to(root)), "earlier": revision, "this": head,
              "sha256": digests, "identical": digests["earlier"] == digests["this"]}  # fmt: skip
    _common.write_result(_common.RESULTS / "identity.json", record, machine)
    print(f"{'identical' if record['identical'] else 'DIFFERENT'}: {digests}")
    sys.exit(0 if record["identical"] else 1)


if __name__ == "__main__":
    main()
