"""Mutation fuzzing of sweep records, run configs and checkpoints, as docs/SECURITY.md
reports it.

Runs ``qretrain.testing.record_fuzz.fuzz_records`` (the harness of
tests/storage/test_record_fuzz.py) for several seeds, counts the outcomes per kind,
the slowest mutation and the process's peak memory, and writes
benchmarks/results/record_fuzz.json.

    python benchmarks/bench_record_fuzz.py --mutations 300 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

from qretrain.testing.record_fuzz import KINDS, fuzz_records

RESULTS = Path(__file__).parent / "results" / "record_fuzz.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=300, help="per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    outcomes, failures, slowest, start = Counter(), [], 0.0, time.perf_counter()
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            report = fuzz_records(Path(folder), args.mutations, seed)
        outcomes.update(report.outcomes)
        failures += report.failures
        slowest = max(slowest, report.slowest)
        print(f"seed {seed}: {sum(report.outcomes.values())} mutations, "
              f"{len(report.failures)} broke the contract")  # fmt: skip
    table = {kind: {o: n for (k, o), n in sorted(outcomes.items()) if k == kind}
             for kind in KINDS}  # fmt: skip
    record = {
        "mutations_per_seed": args.mutations,
        "seeds": args.seeds,
        "outcomes": table,
        "failures": failures,
        "slowest_seconds": slowest,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_seconds": time.perf_counter() - start,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    for kind, counts in table.items():
        print(f"{kind:11s} {counts}")
    print(f"slowest {slowest:.3f} s; peak RSS {record['peak_rss_mib']:.0f} MiB; wrote {RESULTS}")


if __name__ == "__main__":
    main()
