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
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from qretrain.models.graph import Graph
from qretrain.models.layers import get_tensor

logger = logging.getLogger(__name__)
CONV_FUNCTIONS = (torch.conv2d, F.conv2d)  # what fx records for a module calling F.conv2d


@dataclass(frozen=True)
class _Conv:
    """A convolution whose output only a batch norm reads: its weight, its bias (None
    if it has none) and the batch norm module, by name."""

    weight: str
    bias: str | None
    bn: str


def batch_norm_after(model: nn.Module) -> dict[str, str]:
    """weight name -> name of the batch norm module that alone reads the output of the
    2-D convolution using that weight, for convolutions whose weight (and bias) nothing
    else reads, under one name only, and whose batch norm is called once, in eval mode.
    Empty for a model fx cannot trace."""
    return {c.weight: c.bn for c in _convs(model)}


def _convs(model: nn.Module) -> list[_Conv]:
    graph = Graph.trace(model, "finding the batch norms after convolutions")
    if graph is None:
        return []
    modules = dict(model.named_modules())
    reads: Counter[str] = Counter()  # tensor name -> nodes reading it
    calls: Counter[str] = Counter()  # module name -> calls
    found = []
    for node in graph.nodes:
        if node.op == "get_attr":
            reads[str(node.target)] += len(node.users)
        elif node.op == "call_module":
            calls[str(node.target)] += 1
            if type(modules.get(str(node.target))) is nn.Conv2d:
                reads[f"{node.target}.weight"] += 1
                reads[f"{node.target}.bias"] += 1
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        (conv,) = node.args
        if not _eval_batch_norm(modules.get(str(node.target))):
            continue
        tensors = _conv_tensors(conv, modules) if isinstance(conv, fx.Node) else None
        if tensors is not None and len(conv.users) == 1:
            found.append(_Conv(*tensors, str(node.target)))
    names = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    params = dict(model.named_parameters())

    def alone(name: str | None) -> bool:  # read by one node, under one name
        return name is None or (name in params and reads[name] == 1
                                and names[id(params[name])] == 1)  # fmt: skip

    return [c for c in found if calls[c.bn] == 1 and alone(c.weight) and alone(c.bias)
            and params[c.weight].shape[0] == modules[c.bn].num_features]  # fmt: skip


def _eval_batch_norm(module: nn.Module | None) -> bool:
    """A 2-D batch norm in eval mode with a weight and running statistics: one scale
    and one shift per channel."""
    return (type(module) is nn.BatchNorm2d and not module.training and module.affine
            and module.track_running_stats and module.running_mean is not None)  # fmt: skip


def _conv_tensors(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, str | None] | None:
    """(weight, bias) names if ``node`` is a 2-D convolution (an ``nn.Conv2d`` of its
    own, or a module's ``F.conv2d`` call on parameters), else None; None too for a
    functional call whose bias is computed rather than a parameter."""
    if node.op == "call_module":
        conv = modules.get(str(node.target))
        if type(conv) is not nn.Conv2d:
            return None
        return f"{node.target}.weight", None if conv.bias is None else f"{node.target}.bias"
    if node.op != "call_function" or node.target not in CONV_FUNCTIONS or len(node.args) < 2:
        return None
    weight = node.args[1]
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    if not isinstance(weight, fx.Node) or weight.op != "get_attr":
        return None
    if bias is None:
        return str(weight.target), None
    if isinstance(bias, fx.Node) and bias.op == "get_attr":
        return str(weight.target), str(bias.target)
    return None


@torch.no_grad()
def scale_channels(model: nn.Module) -> dict[str, torch.Tensor]:
    """Divide each output channel of every weight that a batch norm follows
    (``batch_norm_after``; ``model`` in eval mode) by its largest
    magnitude, its bias with it, the batch norm taking the scale back (the module doc):
    ``model`` computes the same function up to float rounding, in place. A channel of
    zeros (or of magnitudes too small to divide by) keeps scale 1. Returns weight name
    -> the scales s (O,) it was divided by."""
    convs = _convs(model)
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    scales = {}
    for conv in convs:
        weight, bn = params[conv.weight], modules[conv.bn]
        scale = weight.detach().reshape(len(weight), -1).abs().amax(1)
        usable = torch.isfinite(scale) & (scale > torch.finfo(scale.dtype).tiny)
        scale = torch.where(usable, scale, torch.ones_like(scale))
        weight.div_(_per_channel(scale, weight))
        if conv.bias is not None:
            params[conv.bias].div_(scale)
        bn.weight.mul_(scale)
        bn.running_mean.div_(scale)
        scales[conv.weight] = scale
    logger.info("channel scales: %d of %d convolution weights scaled into their batch norms",
                len(scales), len(convs))  # fmt: skip
    return scales


def batch_norm_scale(bn: nn.Module) -> torch.Tensor:
    """What eval-mode ``bn`` multiplies each channel by: gamma / sqrt(var + eps), (C,)."""
    return bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)


def teacher_ratios(teacher: nn.Module, student: nn.Module) -> dict[str, torch.Tensor]:
    """weight name -> teacher_bn_o / student_bn_o (O,): for each weight that a batch norm
    follows in ``student``, by how much the teacher's batch norm scales channel o more
    than the student's (``scale_channels``), where that differs from 1 beyond float
    rounding (a batch norm folded into a scale and a shift does not). A channel that
    either batch norm zeroes keeps 1. Read the student before its batch norms train:
    the ratios are of the start, whenever the run resumes."""
    teacher_modules, student_modules = dict(teacher.named_modules()), dict(student.named_modules())
    ratios = {}
    for weight, bn in batch_norm_after(student).items():
        if not _eval_batch_norm(teacher_modules.get(bn)):
            continue
        ratio = batch_norm_scale(teacher_modules[bn]) / batch_norm_scale(student_modules[bn])
        ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
        if not torch.allclose(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5):
            ratios[weight] = ratio
    return ratios


def in_student_scales(teacher: nn.Module, names: list[str],
                      ratios: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # fmt: skip
    """The teacher's values of ``names``, channel o of each weight in ``ratios`` times
    its ratio (``teacher_ratios``): what the student's weight times its batch norm must
    be to meet the teacher's."""
    values = {}
    for name in names:
        value = get_tensor(teacher, name).detach()
        values[name] = value * _per_channel(ratios[name], value) if name in ratios else value
    return values


def _per_channel(factors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``factors`` (O,) shaped to multiply ``like`` (O, ...) channel by channel."""
    return factors.reshape((-1,) + (1,) * (like.dim() - 1))
