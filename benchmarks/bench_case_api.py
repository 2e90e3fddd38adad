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
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import _common

CONFIG = _common.ROOT / "examples" / "case-effnet.yaml"
POOL = "natural+tuxpaint-stamps+tuxpaint-stamps:scenes"


def main() -> None:
    cli = _common.parser(__doc__, imagenet=True)
    cli.add_argument("--out", type=Path, default=Path("out/case-api"))
    cli.add_argument("--skip-run", action="store_true",
                     help="use the config's finished run folder (out/case-effnet) as it is")
    args = cli.parse_args()
    machine = _common.Machine()
    seconds = {}
    if not args.skip_run:
        seconds["qretrain run"] = _common.run_qretrain(["run", str(CONFIG), "--overwrite"])
    run = Path("out/case-effnet")  # the config's output, relative to where it runs
    evaluation = json.loads((run / "evaluate.json").read_text())

    import qretrain

    start = time.perf_counter()
    model = qretrain.load_model("efficientnet-lite0")
    result = qretrain.compress(model, POOL, target="7x")
    args.out.mkdir(parents=True, exist_ok=True)
    result.save(args.out / "lite0-7x.h5")
    print(result.summary())
    seconds["qretrain.compress"] = time.perf_counter() - start

    imagenet = _common.ImageNet(args.imagenet, model)
    logits = imagenet.logits(qretrain.load(args.out / "lite0-7x.h5"))
    kept = run / ("label_free.h5" if result.kept == "retrained" else "clustered.h5")
    record = {
        "python": {**imagenet.scores(logits), **_common.signal(logits, imagenet.reference),
                   "file_bytes": len(result.file_data), "kept": result.kept,
                   "held_out": {k: vars(q) for k, q in result.quality.items()}},
        "run": evaluation["models"]["label_free"],
        "same_file": kept.read_bytes() == result.file_data,
        "seconds": seconds, "stage_seconds": result.seconds,
    }  # fmt: skip
    _common.write_result(_common.RESULTS / "case_api.json", record, machine)
    print(json.dumps({k: record[k] for k in ("same_file", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
