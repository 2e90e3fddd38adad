"""Where a retrained model's error remains: each block restored to the original's values.

A case's retrained file (``label_free.h5``) differs from the original in every clustered
tensor and in what retraining moved (codebooks, batch norm). This scout copies the
original's parameters and buffers of one block at a time back into the retrained
model and measures the label-free signal on images nothing trains, plans or chooses
on (GCompris's 239 photographs) and on the case's held-out pool images (split seed 0):
the KL that block still costs, given the rest as retrained. It reads no ImageNet image.

    python benchmarks/bench_residual_blocks.py --case out/case-effnet-8x \\
        [--start clustered.h5] [--blocks _fc] [--name residual_blocks_8x]

Blocks are the model's top-level module groups (``_conv_stem`` with ``_bn0``, each of
``_blocks.N``, ``_conv_head`` with ``_bn1``, ``_fc``). Writes benchmarks/results/NAME.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import _common

POOL = "natural+tuxpaint-stamps+tuxpaint-stamps:scenes"
JUDGE = "gcompris-photos"
GROUPS = {"_bn0": "_conv_stem", "_bn1": "_conv_head"}  # batch norms travel with their conv


def _group(name: str) -> str:
    """The block a parameter or buffer belongs to: ``_blocks.N`` or a top-level conv."""
    parts = name.split(".")
    top = ".".join(parts[:2]) if parts[0] == "_blocks" else parts[0]
    return GROUPS.get(top, top)


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--case", type=Path, default=Path("out/case-effnet-8x"))
    cli.add_argument("--start", default="label_free.h5", help="the file in --case to restore")
    cli.add_argument("--blocks", nargs="+", help="restore only these blocks (default: each)")
    cli.add_argument("--name", default="residual_blocks_8x")
    args = cli.parse_args()
    machine = _common.Machine()

    import torch

    import qretrain
    from qretrain.data import load_dataset
    from qretrain.metrics.quality import predict
    from qretrain.models import get_arch
    from qretrain.recipe.settings import RecipeSettings
    from qretrain.recipe.split import split

    teacher = qretrain.load_model("efficientnet-lite0")
    contract = get_arch(teacher).contract
    parts = split(load_dataset(POOL, contract), RecipeSettings(target="8x", deploy="coreml"))
    scored = {"gcompris": load_dataset(JUDGE, contract), "pool_held_out": parts.held_out}
    references = {name: predict(teacher, data)[0] for name, data in scored.items()}
    model = qretrain.load(args.case / args.start)
    original = teacher.state_dict()
    retrained = {k: v.clone() for k, v in model.state_dict().items()}
    if retrained.keys() != original.keys():
        raise SystemExit(f"{args.case / args.start}: its tensors are not the original's")
    groups = list(dict.fromkeys(_group(k) for k in original))
    if args.blocks:
        unknown = sorted(set(args.blocks) - set(groups))
        if unknown:
            raise SystemExit(f"--blocks: {', '.join(unknown)} not among {', '.join(groups)}")
        groups = [g for g in groups if g in args.blocks]

    def measure() -> dict:
        return {n: _common.signal(predict(model, d)[0], references[n]) for n, d in scored.items()}

    start = time.perf_counter()
    rows = {"none": measure()}
    print(f"as retrained: GCompris KL {rows['none']['gcompris']['mean_kl']:.4f}", flush=True)
    for group in groups:
        names = [k for k in original if _group(k) == group]
        with torch.no_grad():
            model.load_state_dict({**retrained, **{k: original[k] for k in names}})
        rows[group] = measure()
        print(f"{group} restored: GCompris KL {rows[group]['gcompris']['mean_kl']:.4f}, "
              f"agreement {rows[group]['gcompris']['agreement']:.2%}; pool held-out KL "
              f"{rows[group]['pool_held_out']['mean_kl']:.4f}", flush=True)  # fmt: skip
    model.load_state_dict(retrained)
    record = {"case": str(args.case), "file": args.start, "judge": JUDGE, "rows": rows,
              "seconds": time.perf_counter() - start}  # fmt: skip
    _common.write_result(_common.RESULTS / f"{args.name}.json", record, machine)


if __name__ == "__main__":
    main()
