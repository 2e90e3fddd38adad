"""The Fisher sweep's memory and time: passes sized by what they record, against whole batches.

The sweep's Fisher signal records every module's input, output and output gradient
of a pass. It used to run one pass per batch of 64 images; it now runs one image,
measures what that recorded, and runs passes of as many images as
``qretrain.analysis.fisher.RECORD_BYTES`` hold. Each model's sweep (the recipe's: weights,
every k, the Fisher signal, float32, 256 ``natural`` images, seed 0) runs twice, each in a
process of its own so that its peak resident memory is its own: once as it was (the budget
set so large that every batch is one pass) and once as it is. Recorded: wall seconds of
the sweep, seconds of the Fisher passes (the sweep's own log line), peak RSS, the passes'
size, and the largest relative difference between the two sides' predicted KLs.

    python benchmarks/bench_fisher_passes.py   # -> benchmarks/results/fisher_passes.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

MODELS = ("efficientnet-lite0", "efficientnet-lite1")
IMAGES = 256
WHOLE_BATCHES = 1 << 62  # a budget no batch reaches: one pass per batch, as before


def child(model_name: str, budget: int, out: Path) -> None:
    """One sweep in this process; writes its figures to ``out``."""
    import logging

    import qretrain
    from qretrain.analysis import AnalyzeSettings, fisher

    fisher.RECORD_BYTES = budget
    passes = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            passes.append(record.getMessage())

    logging.getLogger("qretrain.analysis.fisher").addHandler(Seen())
    logging.getLogger("qretrain.analysis.fisher").setLevel(logging.DEBUG)
    model = qretrain.load_model(model_name).eval()
    contract = qretrain.models.get_arch(model).contract
    data = qretrain.load_dataset("natural", contract, limit=IMAGES, seed=0)
    settings = AnalyzeSettings(kinds=("weight",), signal="fisher", seed=0)
    start = time.perf_counter()
    sweep = qretrain.analyze(model, data, settings=settings, progress=False, plots=False)
    seconds = time.perf_counter() - start
    _common.write_json(out, {
        "sweep_seconds": round(seconds, 1),
        "log": passes,
        "peak_rss_mib": round(_common.peak_rss_mib()),
        "kl": {f"{c.unit}/{c.k}": c.kl for c in sweep.cells},
    })  # fmt: skip


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--models", nargs="+", default=list(MODELS))
    cli.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # one side, in its own process
    args = cli.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]))
        return
    machine = _common.Machine()
    from qretrain.analysis.fisher import RECORD_BYTES

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            sides = {}
            for side, budget in (("whole batches", WHOLE_BATCHES), ("budgeted", RECORD_BYTES)):
                out = Path(tmp) / f"{model}-{budget}.json"
                print(f"{model}: {side}", flush=True)
                subprocess.run([sys.executable, __file__, "--child", model, str(budget),
                                str(out)], check=True)  # fmt: skip
                sides[side] = json.loads(out.read_text())
            whole, budgeted = sides["whole batches"], sides["budgeted"]
            worst = max(abs(budgeted["kl"][k] - v) / max(abs(v), 1e-12)
                        for k, v in whole["kl"].items())  # fmt: skip
            row = {
                "model": model,
                "images": IMAGES,
                "cells": len(whole["kl"]),
                **{f"{side} {key}": s[key] for side, s in sides.items()
                   for key in ("sweep_seconds", "peak_rss_mib", "log")},
                "peak_rss_ratio": round(budgeted["peak_rss_mib"] / whole["peak_rss_mib"], 3),
                "time_ratio": round(budgeted["sweep_seconds"] / whole["sweep_seconds"], 3),
                "largest_relative_kl_difference": worst,
            }  # fmt: skip
            print(json.dumps(row, indent=1), flush=True)
            rows.append(row)
    record = {"record_bytes": RECORD_BYTES, "rows": rows}
    print(f"wrote {_common.write_result(_common.RESULTS / 'fisher_passes.json', record, machine)}")


if __name__ == "__main__":
    main()
