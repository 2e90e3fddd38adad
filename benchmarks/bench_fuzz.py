"""Mutation fuzzing of qretrain model files, as docs/SECURITY.md reports it.

Runs ``qretrain.testing.file_fuzz.fuzz`` (the same harness as tests/storage/test_fuzz.py)
for several seeds and many mutations, counts what each kind of mutation raised, the
slowest load and the process's peak memory, and writes benchmarks/results/fuzz.json.

    python benchmarks/bench_fuzz.py --mutations 6000 --seeds 0 1 2 3 4
"""

from __future__ import annotations

from _common import RESULTS, fuzz_main

from qretrain.testing.file_fuzz import KINDS, fuzz

OUT = RESULTS / "fuzz.json"


def main() -> None:
    fuzz_main(__doc__, fuzz, KINDS, OUT, mutations=6000, seeds=[0, 1, 2, 3, 4])


if __name__ == "__main__":
    main()
