"""One block-wise training step of each of EfficientNet-Lite0's blocks, with its frozen
batch norms as modules of their own and computed inside the convolutions
(``retrain.fuse``), side by side in one process.

The student is the 7x case's clustered start (out/case-effnet/clustered.h5, from
`qretrain run examples/case-effnet.yaml`), channels-last as block-wise retraining
holds it; a step is the recipe's: a batch of 32, forward, mean squared error to a
target, backward. Each block's step is timed ``--repeats`` times per variant,
alternating, and the medians compared; random inputs (a step's time does not depend
on the values). Writes benchmarks/results/fuse.json.

    qretrain run examples/case-effnet.yaml      # once: out/case-effnet
    python benchmarks/bench_fuse.py
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import _common

RUN = Path("out/case-effnet")


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--repeats", type=int, default=5)
    cli.add_argument("--batch", type=int, default=32)
    args = cli.parse_args()
    machine = _common.Machine()

    import torch

    import qretrain
    from qretrain.retrain.blocks import plan_blocks
    from qretrain.retrain.fuse import fuse_frozen

    teacher = qretrain.load_model("efficientnet-lite0").eval()
    student = qretrain.load(RUN / "clustered.h5").eval()
    for model in (student, teacher):
        model.to(memory_format=torch.channels_last)
    plan = plan_blocks(student, teacher)
    for p in student.parameters():
        p.requires_grad_(True)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    rows = []
    for block, segment in zip(plan.blocks, plan.student):
        fused = fuse_frozen(segment)
        with torch.no_grad():
            y = segment(x)
        target = torch.randn_like(y)
        times = {"modules": [], "fused": []}
        for _ in range(args.repeats + 1):  # the first of each is a warm-up, dropped
            for name, run in (("modules", segment), ("fused", fused)):
                start = time.perf_counter()
                torch.nn.functional.mse_loss(run(x), target).backward()
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t[1:]) for name, t in times.items()}
        rows.append({"block": block.name, "input": list(x.shape), **median,
                     "speedup": median["modules"] / median["fused"]})  # fmt: skip
        x = y
    total = {name: sum(r[name] for r in rows) for name in ("modules", "fused")}
    record = {"batch": args.batch, "repeats": args.repeats, "blocks": rows,
              "sum_of_steps": total, "speedup": total["modules"] / total["fused"]}  # fmt: skip
    _common.write_result(_common.RESULTS / "fuse.json", record, machine)
    print(json.dumps({r["block"]: round(r["speedup"], 2) for r in rows}))
    print(json.dumps({"sum_of_steps": total, "speedup": record["speedup"]}))


if __name__ == "__main__":
    main()
