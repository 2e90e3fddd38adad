"""Mutation fuzzing of qretrain model files, as docs/SECURITY.md reports it.

Runs ``qretrain.testing.file_fuzz.fuzz`` (the same harness as tests/storage/test_fuzz.py)
for several seeds and many mutations, counts what each kind of mutation raised, the
slowest load and the process's peak memory, and writes benchmarks/results/fuzz.json.

    python benchmarks/bench_fuzz.py --mutations 6000 --seeds 0 1 2 3 4
"""

from __future__ import annotations

from _common import RESULTS, Machine, fuzz_record, parser, write_result

from qretrain.testing.file_fuzz import KINDS, fuzz

OUT = RESULTS / "fuzz.json"


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--mutations", type=int, default=6000, help="per seed")
    cli.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = cli.parse_args()
    machine = Machine()
    record = fuzz_record(fuzz, args.mutations, args.seeds, KINDS)
    print(f"wrote {write_result(OUT, record, machine)}")


if __name__ == "__main__":
    main()
