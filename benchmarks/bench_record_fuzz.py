"""Mutation fuzzing of sweep records, run configs and checkpoints, as docs/SECURITY.md
reports it.

Runs ``qretrain.testing.record_fuzz.fuzz_records`` (the harness of
tests/storage/test_record_fuzz.py) for several seeds, counts the outcomes per kind,
the slowest mutation and the process's peak memory, and writes
benchmarks/results/record_fuzz.json.

    python benchmarks/bench_record_fuzz.py --mutations 300 --seeds 0 1 2
"""

from __future__ import annotations

from _common import RESULTS, fuzz_main

from qretrain.testing.record_fuzz import KINDS, fuzz_records

OUT = RESULTS / "record_fuzz.json"


def main() -> None:
    fuzz_main(__doc__, fuzz_records, KINDS, OUT, mutations=300, seeds=[0, 1, 2])


if __name__ == "__main__":
    main()
