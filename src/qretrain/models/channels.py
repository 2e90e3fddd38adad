"""Output channels that a batch norm scales: finding them, and moving a scale into it.

A convolution whose output only a batch norm reads computes the same function when its
output channel o (weight and bias) is divided by s_o > 0 and the batch norm's weight is
multiplied by s_o and its running mean divided by s_o::

    gamma s (conv(x, W / s) + b / s - mean / s) / sqrt(var + eps)
        = gamma (conv(x, W) + b - mean) / sqrt(var + eps)

A qretrain file and every export store such a batch norm as one scale and one shift per
channel anyway, so a weight clustered as ``W / s`` costs no byte more than ``W``; with
``s_o = max |W_o|`` every channel spans [-1, 1] and one shared codebook serves each
channel at its own scale, where clustering ``W`` leaves a channel of small weights a
few of the codebook's values (``benchmarks/bench_channel_scale.py``: the Lite0 8x
plan's KL 29% lower).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import fx, nn

from qretrain.models.graph import Graph
from qretrain.models.layers import get_tensor

logger = logging.getLogger(__name__)
_CONV_FUNCTIONS = (torch.conv2d, F.conv2d)


def batch_norm_after(model: nn.Module) -> dict[str, str]:
    """weight name -> name of the batch norm module that alone reads the output of the
    2-D convolution using that weight (and the weight is used by that convolution only).
    Empty for a model fx cannot trace."""
    graph = Graph.trace(model, "finding the batch norms after convolutions")
    if graph is None:
        return {}
    modules = dict(model.named_modules())
    reads: dict[str, int] = {}  # weight name -> nodes using it (a shared weight is left alone)
    found: dict[str, str] = {}
    for node in graph.nodes:
        weight = _conv_weight(node, modules)
        if weight is not None:
            reads[weight] = reads.get(weight, 0) + 1
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        bn = modules.get(str(node.target))
        (conv,) = node.args
        if (not _with_affine_statistics(bn) or not isinstance(conv, fx.Node)
                or len(conv.users) != 1):  # fmt: skip
            continue
        weight = _conv_weight(conv, modules)
        if weight is not None:
            found[weight] = str(node.target)
    params = dict(model.named_parameters())
    return {w: bn for w, bn in found.items() if reads.get(w) == 1 and w in params
            and params[w].shape[0] == modules[bn].num_features}  # fmt: skip


def _with_affine_statistics(module: nn.Module | None) -> bool:
    """A 2-D batch norm with a weight and running statistics (what eval mode scales by)."""
    return (type(module) is nn.BatchNorm2d and module.affine and module.track_running_stats
            and module.running_mean is not None)  # fmt: skip


def _conv_weight(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The weight's name if ``node`` is a 2-D convolution (an ``nn.Conv2d`` of its own
    or a module's ``F.conv2d`` call on a parameter), else None."""
    if node.op == "call_module" and type(modules.get(str(node.target))) is nn.Conv2d:
        return f"{node.target}.weight"
    if node.op == "call_function" and node.target in _CONV_FUNCTIONS and len(node.args) > 1:
        weight = node.args[1]
        if isinstance(weight, fx.Node) and weight.op == "get_attr":
            return str(weight.target)
    return None


def conv_bias(model: nn.Module, weight: str) -> torch.Tensor | None:
    """The bias beside ``weight`` (``name.bias`` for ``name.weight``), if there is one."""
    if not weight.endswith(".weight"):
        return None
    bias = dict(model.named_parameters()).get(weight[: -len("weight")] + "bias")
    return bias


@torch.no_grad()
def scale_channels(model: nn.Module, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Divide each output channel of every weight in ``names`` (by default all) that a
    batch norm follows (``batch_norm_after``) by its largest magnitude, the batch norm
    taking the scale back (the module doc): ``model`` computes the same function up to
    float rounding, in place. A channel of zeros keeps scale 1. Returns weight name ->
    the scales s (O,) it was divided by."""
    after = batch_norm_after(model)
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    scales = {}
    for name, bn_name in after.items():
        if names is not None and name not in names:
            continue
        weight, bn = params[name], modules[bn_name]
        scale = weight.detach().reshape(len(weight), -1).abs().amax(1)
        scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
        weight.div_(scale.reshape((-1,) + (1,) * (weight.dim() - 1)))
        bias = conv_bias(model, name)
        if bias is not None:
            bias.div_(scale)
        bn.weight.mul_(scale)
        bn.running_mean.div_(scale)
        scales[name] = scale
    logger.info("channel scales: %d of %d convolution weights scaled into their batch norms",
                len(scales), len(after))  # fmt: skip
    return scales


def batch_norm_scale(bn: nn.Module) -> torch.Tensor:
    """What eval-mode ``bn`` multiplies each channel by: gamma / sqrt(var + eps), (C,)."""
    return bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)


def in_channel_scales(teacher: nn.Module, student: nn.Module, names: list[str],
                      after: dict[str, str]) -> dict[str, torch.Tensor]:  # fmt: skip
    """The teacher's values of ``names`` expressed in the student's channel scales: where
    a batch norm follows the weight (``after``, the student's ``batch_norm_after``) and
    scales its channels by other factors in the two models (``scale_channels``, or a
    batch norm retrained), teacher channel o times teacher_bn_o / student_bn_o, so that
    the student's weight times its batch norm meets the teacher's. A factor within float
    rounding of 1 (batch norm folded into a scale and a shift) leaves the values as
    they are."""
    teacher_modules, student_modules = dict(teacher.named_modules()), dict(student.named_modules())
    values = {}
    for name in names:
        value = get_tensor(teacher, name).detach()
        bn = after.get(name)
        if bn is not None and _with_affine_statistics(teacher_modules.get(bn)):
            ratio = batch_norm_scale(teacher_modules[bn]) / batch_norm_scale(student_modules[bn])
            if ratio.shape == value.shape[:1] and not torch.allclose(ratio, torch.ones_like(ratio),
                                                                     rtol=0, atol=1e-5):  # fmt: skip
                value = value * ratio.reshape((-1,) + (1,) * (value.dim() - 1))
        values[name] = value
    return values
