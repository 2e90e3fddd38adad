"""Forward passes with freed memory kept on the heap, against glibc's default.

``qretrain._heap.keep_freed_memory`` (what the command line does at its start) has glibc
serve every allocation from the heap and keep what is freed there, where by default an
allocation above 32 MiB gets fresh pages from the kernel each time. Each side runs in a
process of its own (the setting is the process's): EfficientNet-Lite0 and -Lite2 in eval
mode over the same 128 ``natural`` pool images (seed 0), in batches of 64 (the default of
every ``batch_size`` that runs inference) and of 8, one warm-up batch first. Recorded per
run: wall, user and system seconds and minor page faults of the passes, and whether the
logits equal the default side's to the bit. Three rounds, the sides alternating;
medians and the ratio default / kept.

    python benchmarks/bench_heap.py   # -> benchmarks/results/heap.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

MODELS = ("efficientnet-lite0", "efficientnet-lite2")
BATCHES = (64, 8)
IMAGES = 128
ROUNDS = 3


def child(model_name: str, batch: int, keep: bool, out: Path) -> None:
    """One side's passes in this process; writes its figures and logits to ``out``."""
    from qretrain._heap import keep_freed_memory

    kept = keep_freed_memory() if keep else False
    import torch

    import qretrain

    model = qretrain.load_model(model_name).eval()
    contract = qretrain.models.get_arch(model).contract
    data = qretrain.load_dataset("natural", contract, limit=IMAGES, seed=0)
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.inference_mode():
        model(x[:batch])  # warm-up: the first pass also loads kernels
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        logits = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    torch.save(logits, out.with_suffix(".pt"))
    _common.write_json(out, {
        "kept": kept,
        "wall": round(seconds, 2),
        "user": round(after.ru_utime - before.ru_utime, 2),
        "system": round(after.ru_stime - before.ru_stime, 2),
        "minor_faults": after.ru_minflt - before.ru_minflt,
    })  # fmt: skip


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--child", nargs=3, metavar=("MODEL", "BATCH", "KEEP"),
                     help=argparse.SUPPRESS)  # fmt: skip
    cli.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.child:
        model, batch, keep = args.child
        child(model, int(batch), keep == "1", args.out)
        return
    import torch

    machine = _common.Machine()
    # The children start from glibc's defaults, whatever this shell set
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(ROUNDS):
            for model in MODELS:
                for batch in BATCHES:
                    for keep in ("0", "1"):
                        key = f"{model} batch {batch} {'kept' if keep == '1' else 'default'}"
                        out = Path(folder) / f"{model}-{batch}-{keep}-{round_}.json"
                        subprocess.run([sys.executable, __file__, "--child", model, str(batch),
                                        keep, "--out", str(out)], env=env, check=True)  # fmt: skip
                        row = json.loads(out.read_text())
                        if row["kept"] != (keep == "1"):
                            raise SystemExit(f"{key}: glibc did not take the setting")
                        anchor = Path(folder) / f"{model}-{batch}-0-{round_}.pt"
                        row["same_logits"] = bool(torch.equal(
                            torch.load(out.with_suffix(".pt")), torch.load(anchor)))  # fmt: skip
                        runs.setdefault(key, []).append(row)
                        print(key, row, flush=True)
    medians = {key: {f: statistics.median(r[f] for r in rows)
                     for f in ("wall", "user", "system", "minor_faults")}
               for key, rows in runs.items()}  # fmt: skip
    ratios = {}
    for model in MODELS:
        for batch in BATCHES:
            default = medians[f"{model} batch {batch} default"]["wall"]
            kept = medians[f"{model} batch {batch} kept"]["wall"]
            ratios[f"{model} batch {batch}"] = round(default / kept, 2)
            print(f"{model} batch {batch}: {default:.2f} s -> {kept:.2f} s "
                  f"({default / kept:.2f}x)")  # fmt: skip
    same = all(r["same_logits"] for rows in runs.values() for r in rows)
    print(f"logits equal to the default side's in every run: {same}")
    _common.write_result(_common.RESULTS / "heap.json",
                         {"images": IMAGES, "rounds": ROUNDS, "runs": runs, "medians": medians,
                          "speedup": ratios, "same_logits": same}, machine)  # fmt: skip


if __name__ == "__main__":
    main()
