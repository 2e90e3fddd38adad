"""Whether a planning lever wins at 8x as deployed: whole cases with and without it.

A lever that changes the plan (what is clustered, and how) changes the clustered start
as well as what retraining makes of it, so each side is a whole case: `qretrain run`
of the 8x config (examples/case-effnet-8x.yaml) at a seed, once as committed (the
anchor) and once with the lever in its `recipe:` section, the same seed (so the same
images are held out, swept, verified and retrained on). Each side's kept model
(label_free.h5) and its clustered start (clustered.h5) are scored against the original.

The label-free judge is a data set no run trains, plans or chooses on and that is not
ImageNet: GCompris's 239 photographs of single objects (`gcompris-photos`). The rule,
written before any run it judges, is bench_lever_8x.py's:

    the lever is kept if, over the seeds, the mean of (its GCompris KL / the anchor's
    at the same seed) is at most 0.97 and its mean GCompris agreement is no lower.

ImageNet (``--imagenet``) is scored afterwards, for the record only.

    python benchmarks/bench_lever_case.py --name channel \\
        --anchor 0=out/case-effnet-8x 1=out/a1 --lever 0=out/l0 1=out/l1 \\
        [--imagenet ../shared/imagenet-sample-dev]

Writes benchmarks/results/lever_case_NAME.json.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import _common

JUDGE = "gcompris-photos"
RATIO = 0.97  # the largest mean GCompris KL ratio a kept lever may have
FILES = ("label_free", "clustered")  # the kept model, and the clustered start


def _folders(values: list[str]) -> dict[int, Path]:
    """SEED=FOLDER arguments as seed -> folder."""
    return {int(seed): Path(folder) for seed, _, folder in (v.partition("=") for v in values)}


def _size(folder: Path) -> dict:
    """What the case's plan measured: the artifact's bytes and how many of its cells
    have a codebook per channel, or of pairs."""
    plan = _common.read_json(folder / "plan.json", {})
    rules = (folder / "plan.yaml").read_text()
    return {
        "plan_bytes": plan.get("file_bytes"),
        "channel_rules": rules.count("granularity: channel"),
        "pairs_rules": rules.count("granularity: pairs"),
    }


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--name", required=True, help="the lever's name (the record's file name)")
    cli.add_argument("--anchor", nargs="+", required=True, metavar="SEED=FOLDER")
    cli.add_argument("--lever", nargs="+", required=True, metavar="SEED=FOLDER")
    cli.add_argument("--imagenet", type=Path, help="score every file there, afterwards")
    args = cli.parse_args()
    machine = _common.Machine()
    anchor, lever = _folders(args.anchor), _folders(args.lever)
    if set(anchor) != set(lever):
        cli.error(f"the same seeds on both sides, please: {sorted(anchor)} and {sorted(lever)}")

    import qretrain
    from qretrain.data import load_dataset
    from qretrain.metrics.quality import predict
    from qretrain.models import get_arch

    original = qretrain.load_model("efficientnet-lite0")
    judge = load_dataset(JUDGE, get_arch(original).contract)
    reference = predict(original, judge)[0]
    runs = {}
    for side, folders in (("anchor", anchor), ("lever", lever)):
        for seed, folder in sorted(folders.items()):
            run = {"folder": str(folder), **_size(folder)}
            for name in FILES:
                model = qretrain.load(folder / f"{name}.h5")
                run[name] = {"gcompris": _common.signal(predict(model, judge)[0], reference)}
            runs[side, seed] = run
            print(f"{side} seed {seed}: GCompris KL {run['label_free']['gcompris']['mean_kl']:.4f}, "
                  f"agreement {run['label_free']['gcompris']['agreement']:.2%} (start KL "
                  f"{run['clustered']['gcompris']['mean_kl']:.4f}); {run['channel_rules']} "
                  f"rules per channel, {run['pairs_rules']} of pairs", flush=True)  # fmt: skip
    seeds = sorted(anchor)

    def judged(side: str, seed: int, key: str) -> float:
        return runs[side, seed]["label_free"]["gcompris"][key]

    ratios = [judged("lever", s, "mean_kl") / judged("anchor", s, "mean_kl") for s in seeds]
    agree = statistics.mean(judged("lever", s, "agreement") for s in seeds)
    anchor_agree = statistics.mean(judged("anchor", s, "agreement") for s in seeds)
    kept = statistics.mean(ratios) <= RATIO and agree >= anchor_agree
    print(f"{args.name}: mean GCompris KL ratio {statistics.mean(ratios):.3f} "
          f"({', '.join(f'{r:.3f}' for r in ratios)}), agreement {agree:.2%} against "
          f"{anchor_agree:.2%}: {'kept' if kept else 'not kept'}")  # fmt: skip
    record = {"rule": f"mean GCompris KL ratio <= {RATIO} and mean GCompris agreement >= the "
                      "anchor's", "judge": JUDGE, "seeds": seeds, "kl_ratios": ratios,
              "mean_kl_ratio": statistics.mean(ratios), "mean_agreement": agree,
              "anchor_mean_agreement": anchor_agree, "kept": kept,
              "runs": {f"{side}-s{seed}": run for (side, seed), run in runs.items()}}  # fmt: skip
    if args.imagenet is not None:  # for the record, after the decision
        imagenet = _common.ImageNet(args.imagenet, original)
        for name, run in record["runs"].items():
            for file in FILES:
                logits = imagenet.logits(qretrain.load(Path(run["folder"]) / f"{file}.h5"))
                run[file]["imagenet"] = {**imagenet.scores(logits),
                                         **_common.signal(logits, imagenet.reference)}  # fmt: skip
            scored = run["label_free"]["imagenet"]
            print(f"{name}: ImageNet agreement {scored['agreement']:.2%}, KL "
                  f"{scored['mean_kl']:.4f}, top-1 {scored['top1']:.2%}")  # fmt: skip
    _common.write_result(_common.RESULTS / f"lever_case_{args.name}.json", record, machine)


if __name__ == "__main__":
    main()
