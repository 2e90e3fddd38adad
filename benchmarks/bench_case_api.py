"""The headline case two ways: `qretrain run examples/case-effnet.yaml` and the five
lines of Python below, which run the same recipe (qretrain.compress), side by side.

    import qretrain
    model = qretrain.load_model("efficientnet-lite0")
    result = qretrain.compress(model, "natural+tuxpaint-stamps+tuxpaint-stamps:scenes", target="7x")
    result.save("lite0-7x.h5")
    print(result.summary())

No ImageNet image is used by either, except for the final scores: each kept model on
the ImageNet evaluation set (agreement and KL with the original, top-1 with its
paired 95% interval), and the two files compared byte for byte. Writes
benchmarks/results/case_api.json.

    python benchmarks/bench_case_api.py --imagenet ../shared/imagenet-sample-dev
    # or side by side, then the comparison:
    python benchmarks/bench_case_api.py --imagenet ... --phase run &
    python benchmarks/bench_case_api.py --imagenet ... --phase python; wait
    python benchmarks/bench_case_api.py --imagenet ... --phase score
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import _common

CONFIG = _common.ROOT / "examples" / "case-effnet.yaml"
POOL = "natural+tuxpaint-stamps+tuxpaint-stamps:scenes"


def five_lines(out: Path, seed: int = 0) -> float:
    """The five lines of the docstring, saving into ``out`` (with the result's record
    beside the file); their wall seconds. ``seed`` (0, the recipe's default, in the
    docstring) is passed to ``qretrain.compress``."""
    import qretrain

    start = time.perf_counter()
    model = qretrain.load_model("efficientnet-lite0")
    result = qretrain.compress(model, POOL, target="7x", seed=seed)
    result.save(out / "lite0-7x.h5")
    print(result.summary())
    seconds = time.perf_counter() - start
    _common.write_json(out / "lite0-7x.json", {**result.to_dict(), "wall_seconds": seconds})
    return seconds


def main() -> None:
    cli = _common.parser(__doc__, imagenet=True)
    cli.add_argument("--out", type=Path, default=Path("out/case-api"))
    cli.add_argument("--phase", choices=("all", "run", "python", "score"), default="all",
                     help="run: only `qretrain run`; python: only the five lines; score: "
                     "compare what the two left (the first two can run side by side, each in "
                     "a process of its own)")  # fmt: skip
    cli.add_argument("--seed", type=int, default=0,
                     help="the python phase's seed (default 0, the five lines' own)")  # fmt: skip
    args = cli.parse_args()
    machine = _common.Machine()
    run = Path("out/case-effnet")  # the config's output, relative to where it runs
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase in ("all", "run"):
        wall = _common.run_qretrain(["run", str(CONFIG), "--overwrite"])
        _common.write_json(args.out / "run-seconds.json", {"wall_seconds": wall})
    if args.phase in ("all", "python"):
        five_lines(args.out, args.seed)
    if args.phase not in ("all", "score"):
        return

    import qretrain

    evaluation = json.loads((run / "evaluate.json").read_text())
    python = json.loads((args.out / "lite0-7x.json").read_text())
    data = (args.out / "lite0-7x.h5").read_bytes()
    imagenet = _common.ImageNet(args.imagenet, qretrain.load_model("efficientnet-lite0"))
    logits = imagenet.logits(qretrain.load(args.out / "lite0-7x.h5"))
    kept = run / ("label_free.h5" if python["kept"] == "retrained" else "clustered.h5")
    record = {
        "python": {**imagenet.scores(logits), **_common.signal(logits, imagenet.reference),
                   "file_bytes": len(data), "kept": python["kept"],
                   "held_out": python["quality"]},
        "run": evaluation["models"]["label_free"],
        "same_file": kept.read_bytes() == data,
        "seconds": {"qretrain run": _common.read_json(args.out / "run-seconds.json", {}).get(
                        "wall_seconds"),
                    "qretrain.compress": python["wall_seconds"]},
        "stage_seconds": python["seconds"],
    }  # fmt: skip
    _common.write_result(_common.RESULTS / "case_api.json", record, machine)
    print(json.dumps({k: record[k] for k in ("same_file", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
