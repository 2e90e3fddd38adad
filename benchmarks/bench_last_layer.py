"""The classifier of a retrained case, clustered and retrained alone in several ways.

bench_residual_blocks.py shows where a retrained file's error remains; in the Lite0 8x
case it is the classifier (`_fc`, 1,280 x 1,000 weights at k = 4): restoring it alone
halves the KL. This scout keeps the case's retrained body (`label_free.h5`) and
gives its classifier other clusterings, each retrained as the recipe's last block
would be (codebook, bias and learned assignments, the recipe's rounding term, passes,
batch and learning rate; the mean squared error of the logits, or the KL), on the
body's features of the case's retraining images (split seed 0) against the original's
logits. Each is scored on GCompris's photographs and the held-out pool images, which
nothing trains on. No ImageNet image is read.

    python benchmarks/bench_last_layer.py --case out/case-effnet-8x   # -> last_layer_8x.json

The training loop is a short copy of retrain.blocks' pass for one linear block (the
same optimizer groups, schedule and choice between learned and nearest assignments),
so that a variant retrains in seconds on stored features instead of a whole case.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import _common

POOL = "natural+tuxpaint-stamps+tuxpaint-stamps:scenes"
JUDGE = "gcompris-photos"
# name -> (k, one codebook per output channel, loss, passes); k None: the case's own
VARIANTS = {
    "retrained, the case's k": (None, False, "mse", 8),
    "retrained, 16 passes": (None, False, "mse", 16),
    "retrained, KL loss": (None, False, "kl", 8),
    "per channel, the case's k": ("case", True, "mse", 8),
    "k = 8": (8, False, "mse", 8),
    "k = 16": (16, False, "mse", 8),
}
CHOICE_IMAGES = 256


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--case", type=Path, default=Path("out/case-effnet-8x"))
    cli.add_argument("--name", default="last_layer_8x")
    args = cli.parse_args()
    machine = _common.Machine()

    import torch

    import qretrain
    from qretrain.cluster.state import CLUSTERS_ATTR, clusters_of
    from qretrain.cluster.tensor import cluster_tensor
    from qretrain.data import load_dataset
    from qretrain.metrics.quality import predict
    from qretrain.models import get_arch
    from qretrain.recipe.settings import RecipeSettings
    from qretrain.recipe.split import split
    from qretrain.retrain.centroids import CentroidTuner
    from qretrain.retrain.rounding import LR as ROUNDING_LR
    from qretrain.retrain.rounding import LearnedAssignments

    settings = RecipeSettings(target="8x", deploy="coreml", epochs=8)
    config = settings.retrain_config()
    teacher = qretrain.load_model("efficientnet-lite0").eval()
    contract = get_arch(teacher).contract
    parts = split(load_dataset(POOL, contract), settings)
    sets = {"retrain": parts.retrain, "gcompris": load_dataset(JUDGE, contract),
            "pool_held_out": parts.held_out}  # fmt: skip
    body = qretrain.load(args.case / "label_free.h5").eval()
    start = qretrain.load(args.case / "clustered.h5").eval()
    name = "_fc.weight"
    case_k = clusters_of(start)[name].k

    features, reference = {}, {}
    for part, data in sets.items():
        seen = []
        hook = body._fc.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
        predict(body, data)
        hook.remove()
        features[part], reference[part] = torch.cat(seen), predict(teacher, data)[0]

    def score(fc) -> dict:
        with torch.no_grad():
            return {p: _common.signal(fc(features[p]), reference[p])
                    for p in ("gcompris", "pool_held_out")}  # fmt: skip

    def clustered(k, channel: bool):
        holder = torch.nn.Module()
        holder._fc = copy.deepcopy(start._fc)
        found = clusters_of(start)[name]
        if k is not None:
            found = cluster_tensor(teacher._fc.weight.detach(), case_k if k == "case" else k,
                                   granularity="channel" if channel else "tensor",
                                   seed=config.seed)  # fmt: skip
            with torch.no_grad():
                holder._fc.weight.copy_(found.decode())
        object.__setattr__(holder, CLUSTERS_ATTR, {name: found})
        return holder, found

    def loss_of(kind: str, out, target):
        if kind == "mse":
            return torch.nn.functional.mse_loss(out, target)
        return torch.nn.functional.kl_div(out.log_softmax(1), target.log_softmax(1),
                                          log_target=True, reduction="batchmean")  # fmt: skip

    def retrain(holder, kind: str, passes: int):
        fc, tuner = holder._fc, CentroidTuner(holder)
        x, y = features["retrain"], reference["retrain"]
        batches = -(-len(x) // config.batch_size)
        soft = passes - 1
        rounding = LearnedAssignments(tuner, [name], {name: teacher._fc.weight}, soft * batches,
                                      y.shape[1], config.rounding_lambda)  # fmt: skip
        params = [fc.bias, tuner.codebooks[name]]
        fc.weight.requires_grad_(True)
        fc.bias.requires_grad_(True)
        optimizer = torch.optim.Adam([{"params": params},
                                      {"params": rounding.parameters(), "lr": ROUNDING_LR}],
                                     config.lr)  # fmt: skip
        for epoch in range(passes):
            active = epoch < soft
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
            if active:
                rounding.write()
            for index in order.split(config.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss_of(kind, fc(x[index]), y[index]).backward()
                if active:
                    rounding.collect_grads()
                else:
                    tuner.collect_grads([name])
                optimizer.step()
                if active:
                    rounding.write()
                else:
                    tuner.apply([name])
            if active and epoch + 1 == soft:  # learned or nearest, as retrain.blocks chooses
                errors = {}
                with torch.no_grad():
                    for learned in (True, False):
                        rounding.use(learned)
                        errors[learned] = loss_of("mse", fc(x[:CHOICE_IMAGES]),
                                                  y[:CHOICE_IMAGES]).item()  # fmt: skip
                rounding.use(errors[True] < errors[False])
                optimizer = torch.optim.Adam(params, config.lr)
        fc.requires_grad_(False)
        return fc

    rows = {"as retrained": score(body._fc), "original classifier": score(teacher._fc),
            "clustered start": score(start._fc)}  # fmt: skip
    for variant, (k, channel, kind, passes) in VARIANTS.items():
        began = time.perf_counter()
        holder, found = clustered(k, channel)
        before = score(holder._fc)
        rows[variant] = {**score(retrain(holder, kind, passes)), "before": before,
                         "k": found.k, "granularity": found.granularity.value,
                         "packed_bytes": found.packed_nbytes(), "loss": kind, "passes": passes,
                         "seconds": time.perf_counter() - began}  # fmt: skip
    for variant, row in rows.items():
        print(f"{variant}: GCompris KL {row['gcompris']['mean_kl']:.4f}, agreement "
              f"{row['gcompris']['agreement']:.2%}; pool held-out KL "
              f"{row['pool_held_out']['mean_kl']:.4f}", flush=True)  # fmt: skip
    record = {"case": str(args.case), "judge": JUDGE, "case_k": case_k, "rows": rows}
    _common.write_result(_common.RESULTS / f"{args.name}.json", record, machine)


if __name__ == "__main__":
    main()
