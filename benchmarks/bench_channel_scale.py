"""Channel-scaled clustering before building it: what dividing each output channel of a
convolution by a scale of its own before clustering, the batch norm after it taking the
scale back, would buy on the Lite0 8x plan as deployed, at the same bytes.

A convolution whose output only a batch norm reads computes the same function when its
output channel o is divided by s_o > 0 and the batch norm's weight is multiplied by s_o
and its running mean divided by s_o. The file and every export already store that batch
norm as one scale and one shift per channel, so clustering W / s instead of W costs no
byte: one shared codebook, which each channel then uses at its own scale.

For every weight of today's 8x plan (benchmarks/results/case_effnet_8x_last_layer) that
a batch norm follows, the plan's k, one codebook (the exact 1-D k-means of
qretrain.cluster), the whole plan at once, scored by the mean KL to the original on
unlabeled pool images (the recipe's pool, 256 images drawn by seed 0; no ImageNet image):

    as planned   W clustered as it is (what the recipe does)
    max          s_o = max |W_o|: every channel spans [-1, 1]
    rms          s_o = the root mean square of W_o
    folded       s_o = sqrt(var_o + eps) / gamma_o: the weight the batch norm's output
                 sees (W times the batch norm's scale), the error measured where it acts

Decision rule, written before the first run: building channel scales (a function-keeping
step before the sweep, its record, retraining and the exports unchanged) is worth it if
the best of the three scalings lowers the whole plan's KL by at least 20%. Writes
benchmarks/results/channel_scale.json.

    python benchmarks/bench_channel_scale.py
"""

from __future__ import annotations

import _common

PLAN = _common.ROOT / "benchmarks" / "results" / "case_effnet_8x_last_layer" / "plan.yaml"
SCALINGS = ("max", "rms", "folded")


def channel_scale(weight, way: str, state: dict, bn: str, eps: float):
    """s (O,) for ``weight`` (O, ...) by ``way``; ``bn`` and ``eps``: the batch norm
    after it, for the folded way."""
    import torch

    rows = weight.reshape(len(weight), -1)
    if way == "max":
        scale = rows.abs().amax(1)
    elif way == "rms":
        scale = rows.square().mean(1).sqrt()
    else:
        gamma, var = state[f"{bn}.weight"], state[f"{bn}.running_var"]
        scale = (var + eps).sqrt() / gamma.abs()
    # A channel of zeros (or a batch norm that zeroes it) keeps its weights as they are.
    return torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--images", type=int, default=256)
    args = cli.parse_args()
    machine = _common.Machine()

    import torch

    from qretrain.cluster.tensor import cluster_tensor
    from qretrain.models.channels import batch_norm_after

    probe = _common.LayersAlone(PLAN, args.images)
    original, ks, kl_of = probe.original, probe.ks, probe.kl_of
    after = batch_norm_after(probe.model)
    eps = {name: m.eps for name, m in probe.model.named_modules()
           if isinstance(m, torch.nn.BatchNorm2d)}  # fmt: skip

    def clustered(weight: torch.Tensor, k: int, scale: torch.Tensor | None) -> torch.Tensor:
        """``weight`` clustered to k values, divided by ``scale`` per channel first and
        multiplied back after (what the batch norm's taking the scale back computes)."""
        shape = (-1,) + (1,) * (weight.dim() - 1)
        values = weight if scale is None else weight / scale.reshape(shape)
        decoded = cluster_tensor(values, k, granularity="tensor").decode().reshape(weight.shape)
        return decoded if scale is None else decoded * scale.reshape(shape)

    scaled = [n for n in ks if n in after]
    print(f"{len(scaled)} of {len(ks)} planned weights have a batch norm after them", flush=True)
    whole = {}
    for way in ("as planned", *SCALINGS):
        replaced = {}
        for name, k in ks.items():
            scale = None
            if way != "as planned" and name in after:
                bn = after[name]
                scale = channel_scale(original[name], way, original, bn, eps[bn])
            replaced[name] = clustered(original[name], k, scale)
        whole[way] = {"kl": kl_of(replaced)}
        print(f"whole plan, {way}: KL {whole[way]['kl']:.4f}", flush=True)
    best = min(SCALINGS, key=lambda w: whole[w]["kl"])
    ratio = whole[best]["kl"] / whole["as planned"]["kl"]
    worth = ratio <= 0.80
    print(f"rule: best scaling {best}, KL ratio {ratio:.3f} (at most 0.80): "
          f"{'worth building' if worth else 'not worth building'}")  # fmt: skip
    _common.write_result(_common.RESULTS / "channel_scale.json",
                         {"plan": "case_effnet_8x_last_layer/plan.yaml", "images": len(probe.data),
                          "scaled_weights": len(scaled), "planned_weights": len(ks),
                          "whole_plan": whole,
                          "rule": {"best": best, "kl_ratio": ratio, "worth_building": worth}},
                         machine)  # fmt: skip


if __name__ == "__main__":
    main()
