"""The headline case's recipe at two commits, side by side: wall time and quality.

Each sitting runs the five lines of `bench_case_api.py` (qretrain.compress on the
case's unlabeled images, target 7x, seed 0) in a worktree of its commit, alone and
one after the other, each into a folder of its own. This script then reads the
folders, scores each kept file on the ImageNet evaluation set (agreement and KL with
the original, top-1 with its paired 95% interval; read by nothing else) and writes
benchmarks/results/case_speed.json with the time ratio against the first folder.

    git worktree add ../base BASE && (cd ../base && python benchmarks/bench_case_api.py \\
        --imagenet ../shared/imagenet-sample-dev --phase python --out out/sitting-base)
    python benchmarks/bench_case_api.py --imagenet ../shared/imagenet-sample-dev \\
        --phase python --out out/sitting-new
    python benchmarks/bench_case_speed.py --imagenet ../shared/imagenet-sample-dev \\
        base=BASE:out/sitting-base new=HEAD:out/sitting-new
"""

from __future__ import annotations

import json
from pathlib import Path

import _common


def main() -> None:
    cli = _common.parser(__doc__, imagenet=True)
    cli.add_argument("sittings", nargs="+", metavar="NAME=COMMIT:FOLDER",
                     help="a sitting's name, the commit it ran and the folder it wrote; the "
                     "first is the anchor of the time ratios")  # fmt: skip
    args = cli.parse_args()
    machine = _common.Machine()

    import qretrain

    imagenet = _common.ImageNet(args.imagenet, qretrain.load_model("efficientnet-lite0"))
    rows, anchor = {}, None
    for sitting in args.sittings:
        name, _, rest = sitting.partition("=")
        commit, _, folder = rest.partition(":")
        result = json.loads((Path(folder) / "lite0-7x.json").read_text())
        logits = imagenet.logits(qretrain.load(Path(folder) / "lite0-7x.h5"))
        seconds = result["wall_seconds"]
        anchor = seconds if anchor is None else anchor
        rows[name] = {"commit": commit, "folder": folder, "wall_seconds": seconds,
                      "ratio": seconds / anchor, "stage_seconds": result["seconds"],
                      "kept": result["kept"], "held_out": result["quality"],
                      "imagenet": {**imagenet.scores(logits),
                                   **_common.signal(logits, imagenet.reference)}}  # fmt: skip
    record = {"original_top1": imagenet.original_top1, "sittings": rows}
    _common.write_result(_common.RESULTS / "case_speed.json", record, machine)
    print(json.dumps({n: {k: r[k] for k in ("wall_seconds", "ratio", "stage_seconds")}
                      for n, r in rows.items()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
