"""The Lite0 7x case planned from the fast signal: the recipe with `--signal fisher`
(each sweep cell's KL predicted from its Fisher-weighted clustering error; the plan
still verified by measurement), next to the same recipe's measured sweep as
bench_case_api.py recorded it (benchmarks/results/case_api.json).

    qretrain compress efficientnet-lite0 --data natural+tuxpaint-stamps+tuxpaint-stamps:scenes \\
        --target 7x --signal fisher -o out/case-fisher/lite0-7x-fisher.h5

No ImageNet image is read until the final scores. Writes
benchmarks/results/case_signal.json.

    python benchmarks/bench_case_signal.py --imagenet ../shared/imagenet-sample-dev
"""

from __future__ import annotations

import json
from pathlib import Path

import _common

POOL = "natural+tuxpaint-stamps+tuxpaint-stamps:scenes"
OUT = Path("out/case-fisher")


def main() -> None:
    cli = _common.parser(__doc__, imagenet=True)
    cli.add_argument("--skip-run", action="store_true",
                     help="score the file an earlier run left in out/case-fisher")  # fmt: skip
    args = cli.parse_args()
    machine = _common.Machine()
    output = OUT / "lite0-7x-fisher.h5"
    seconds = None
    if not args.skip_run:
        seconds = _common.run_qretrain(
            ["compress", "efficientnet-lite0", "--data", POOL, "--target", "7x", "--signal",
             "fisher", "--work", str(OUT / "work"), "-o", str(output), "--overwrite"])  # fmt: skip

    import qretrain

    imagenet = _common.ImageNet(args.imagenet, qretrain.load_model("efficientnet-lite0"))
    logits = imagenet.logits(qretrain.load(output))
    compressed = json.loads(output.with_suffix(".json").read_text())
    measured = _common.read_json(_common.RESULTS / "case_api.json", {})
    record = {
        "fisher": {**imagenet.scores(logits), **_common.signal(logits, imagenet.reference),
                   "file_bytes": output.stat().st_size, "kept": compressed["kept"],
                   "held_out": compressed["quality"], "stage_seconds": compressed["seconds"],
                   "wall_seconds": seconds},
        "measured": {**measured.get("python", {}),
                     "stage_seconds": measured.get("stage_seconds")},
    }  # fmt: skip
    _common.write_result(_common.RESULTS / "case_signal.json", record, machine)
    for name, row in record.items():
        print(name, {k: v for k, v in row.items() if k != "held_out"})


if __name__ == "__main__":
    main()
