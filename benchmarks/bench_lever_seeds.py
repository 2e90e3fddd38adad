"""Whether the recipe adopts a lever: its held-out KL against today's recipe, seed by seed.

A lever that changes what retraining computes (a speed lever that trains on less, or
a quality lever) is judged without labels and without ImageNet: each seed's run of
the recipe with the lever against the run without it at the same seed (so the same
images are held out, planned on and retrained on), by the guard's KL on the held-out
images. One seed cannot decide it: float rounding alone moves the retrained model's
held-out KL by several percent (a change that computes the same function in another
order moved it by 7%), so the rule, fixed before any run it judges, is

    adopted if the mean over the seeds of (KL with the lever / KL without it) <= 1.05

and ImageNet, with ``--imagenet``, is scored only afterwards, for the record. Between
two adopted levers for the same thing, the recipe takes the one with the lower mean
ratio, unless the other's blocks take at most 0.9 times as long. Each
folder is what `bench_case_api.py --phase python --seed N --out FOLDER` wrote (the
recipe's five lines, target 7x) in a worktree of the commit named.

    python benchmarks/bench_lever_seeds.py --name block_values \\
        --anchor 0=COMMIT:out/a0 1=COMMIT:out/a1 2=COMMIT:out/a2 \\
        --lever 0=COMMIT:out/b0 1=COMMIT:out/b1 2=COMMIT:out/b2 \\
        [--imagenet ../shared/imagenet-sample-dev]

Writes benchmarks/results/lever_NAME.json.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import _common

RULE = 1.05  # the largest mean ratio of held-out KL the recipe accepts


def _sittings(values: list[str]) -> dict[int, tuple[str, Path]]:
    """SEED=COMMIT:FOLDER arguments as seed -> (commit, folder)."""
    out = {}
    for value in values:
        seed, _, rest = value.partition("=")
        commit, _, folder = rest.partition(":")
        out[int(seed)] = (commit, Path(folder))
    return out


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--name", required=True, help="the lever's name (the record's file name)")
    cli.add_argument("--anchor", nargs="+", required=True, metavar="SEED=COMMIT:FOLDER")
    cli.add_argument("--lever", nargs="+", required=True, metavar="SEED=COMMIT:FOLDER")
    cli.add_argument("--imagenet", type=Path, help="score every kept file there, afterwards")
    args = cli.parse_args()
    machine = _common.Machine()
    anchor, lever = _sittings(args.anchor), _sittings(args.lever)
    if set(anchor) != set(lever):
        cli.error(f"the same seeds on both sides, please: {sorted(anchor)} and {sorted(lever)}")
    rows = {}
    for seed in sorted(anchor):
        row = {}
        for side, (commit, folder) in (("anchor", anchor[seed]), ("lever", lever[seed])):
            result = json.loads((folder / "lite0-7x.json").read_text())
            final = result["quality"]["retrained" if result["kept"] == "retrained" else "clustered"]
            row[side] = {"commit": commit, "folder": str(folder), "kept": result["kept"],
                         "held_out_kl": final["kl"], "held_out_agreement": final["agreement"],
                         "seconds": result["seconds"]}  # fmt: skip
        row["kl_ratio"] = row["lever"]["held_out_kl"] / row["anchor"]["held_out_kl"]
        rows[seed] = row
    ratio = statistics.mean(r["kl_ratio"] for r in rows.values())
    record = {"lever": args.name, "rule": f"mean held-out KL ratio <= {RULE}",
              "mean_kl_ratio": ratio, "adopted": ratio <= RULE, "seeds": rows}  # fmt: skip
    if args.imagenet is not None:
        import qretrain

        imagenet = _common.ImageNet(args.imagenet, qretrain.load_model("efficientnet-lite0"))
        for row in rows.values():
            for side in ("anchor", "lever"):
                logits = imagenet.logits(qretrain.load(Path(row[side]["folder"]) / "lite0-7x.h5"))
                row[side]["imagenet"] = {**imagenet.scores(logits),
                                         **_common.signal(logits, imagenet.reference)}  # fmt: skip
    _common.write_result(_common.RESULTS / f"lever_{args.name}.json", record, machine)
    print(json.dumps({k: record[k] for k in ("mean_kl_ratio", "adopted")}))


if __name__ == "__main__":
    main()
