"""Mutation fuzzing of sweep records, run configs and checkpoints, as docs/SECURITY.md
reports it.

Runs ``qretrain.testing.record_fuzz.fuzz_records`` (the harness of
tests/storage/test_record_fuzz.py) for several seeds, counts the outcomes per kind,
the slowest mutation and the process's peak memory, and writes
benchmarks/results/record_fuzz.json.

    python benchmarks/bench_record_fuzz.py --mutations 300 --seeds 0 1 2
"""

from __future__ import annotations

from _common import RESULTS, Machine, fuzz_record, parser, write_result

from qretrain.testing.record_fuzz import KINDS, fuzz_records

OUT = RESULTS / "record_fuzz.json"


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--mutations", type=int, default=300, help="per seed")
    cli.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = cli.parse_args()
    machine = Machine()
    record = fuzz_record(fuzz_records, args.mutations, args.seeds, KINDS)
    print(f"wrote {write_result(OUT, record, machine)}")


if __name__ == "__main__":
    main()
