"""Frozen batch norm computed inside the convolution before it, while a segment trains.

Block-wise retraining keeps batch norm in eval mode, where it is an affine map per
channel: ``conv(x, W) -> bn`` equals ``conv(x, W * s, bias')`` with
``s = gamma / sqrt(var + eps)`` and ``bias' = beta + (b - mean) * s``. The rewritten
segment computes ``W * s`` and ``bias'`` from the *live* parameters on every call, so
gradients still reach the convolution's weight (a clustered tensor's codebook and
learned assignments train through it), gamma and beta, and the same parameters are
trained; only float rounding differs. What it saves: batch norm's forward and
backward passes over the block's largest activations, a quarter to a half of a training step
in EfficientNet-Lite0's high-resolution blocks (``benchmarks/bench_fuse.py``).

A zero padding module (EfficientNet's "same" padding) whose pads are equal on both
sides of each axis, read only by a convolution without padding of its own, becomes
that convolution's padding: the same values, without copying the input into a padded
tensor and its gradient back out of one.

Only ``torch.nn.functional.conv2d`` calls and ``nn.Conv2d`` modules with zero padding
are rewritten, each only where the batch norm (or the convolution) is the single
reader of its input; every other node stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx, nn

from qretrain.models.channels import CONV_FUNCTIONS
from qretrain.retrain.layout import pointwise_with_stride
from qretrain.storage.fold import foldable

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def conv_bn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            gamma: torch.Tensor, beta: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
            eps: float, stride, padding, dilation, groups: int) -> torch.Tensor:  # fmt: skip
    """``batch_norm(conv2d(x, weight, bias, ...))`` in eval mode, as one convolution.

    x: (N, C_in, H, W); weight: (C_out, C_in / groups, kH, kW); gamma, beta, mean,
    var: (C_out,). Returns (N, C_out, H', W').
    """
    # storage.fold folds the same way for the file (float64, no gradient); the two stay
    # apart because sharing one would move the float rounding of one of them.
    scale = gamma * torch.rsqrt(var + eps)
    shift = beta - mean * scale if bias is None else beta + (bias - mean) * scale
    weight = weight * scale.reshape(-1, 1, 1, 1)
    if pointwise_with_stride(weight.shape[2:], stride):  # retrain.layout: not channels-last
        x, weight = x.contiguous(), weight.contiguous()
    return torch.conv2d(x, weight, shift, stride, padding, dilation, groups)


def fuse_frozen(segment: Callable) -> Callable:
    """``segment`` with eval-mode batch norms folded into their convolutions and
    symmetric zero pads into the convolutions that read them (see the module doc).
    Returns a new module sharing ``segment``'s parameters and buffers; ``segment`` is
    unchanged (and returned as it is when nothing applies, or when it is not a traced
    module). Call it with the batch norms in eval mode: the result ignores their mode
    from then on."""
    if not isinstance(segment, fx.GraphModule):
        return segment
    graph = fx.Graph()
    graph.output(graph.graph_copy(segment.graph, {}))  # a copy: the segment keeps its own
    # Made before the edits, so that it holds every module the segment calls (the
    # rewritten nodes read batch norms' buffers that no node read before).
    fused = fx.GraphModule(segment, graph)
    modules = dict(segment.named_modules())
    changed = False
    for node in list(graph.nodes):
        changed |= _fold_batch_norm(graph, node, modules)
    for node in list(graph.nodes):
        changed |= _fold_padding(node, modules)
    if not changed:
        return segment
    graph.eliminate_dead_code()
    graph.lint()
    fused.recompile()
    return fused


def _conv_call(node: fx.Node, modules: dict[str, nn.Module]):
    """The arguments of a 2-D convolution ``node`` as a dict of ``_CONV_ARGS`` (weight
    and bias as nodes), or None if it is not one this module rewrites."""
    if node.op == "call_function" and node.target in CONV_FUNCTIONS:
        if len(node.args) > len(_CONV_ARGS) or set(node.kwargs) - set(_CONV_ARGS):
            return None
        call = {**_CONV_DEFAULTS, **dict(zip(_CONV_ARGS, node.args)), **node.kwargs}
        return call if "input" in call and "weight" in call else None
    if node.op == "call_module" and len(node.args) == 1 and not node.kwargs:
        conv = modules.get(str(node.target))
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros":
            return None
        graph, prefix = node.graph, str(node.target)
        with graph.inserting_before(node):
            weight = graph.get_attr(f"{prefix}.weight")
            bias = graph.get_attr(f"{prefix}.bias") if conv.bias is not None else None
        return {"input": node.args[0], "weight": weight, "bias": bias, "stride": conv.stride,
                "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}  # fmt: skip
    return None


def _fold_batch_norm(graph: fx.Graph, node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return False
    bn = modules.get(str(node.target))
    (conv,) = node.args
    if (type(bn) is not nn.BatchNorm2d or bn.training or not foldable(bn)
            or not isinstance(conv, fx.Node) or len(conv.users) != 1):  # fmt: skip
        return False
    call = _conv_call(conv, modules)
    if call is None:
        return False
    prefix = str(node.target)
    with graph.inserting_before(node):
        gamma, beta, mean, var = (graph.get_attr(f"{prefix}.{part}") for part in
                                  ("weight", "bias", "running_mean", "running_var"))  # fmt: skip
        fused = graph.call_function(conv_bn, (call["input"], call["weight"], call["bias"], gamma,
                                              beta, mean, var, float(bn.eps), call["stride"],
                                              call["padding"], call["dilation"],
                                              call["groups"]))  # fmt: skip
    node.replace_all_uses_with(fused)
    graph.erase_node(node)
    graph.erase_node(conv)
    return True


def _fold_padding(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A symmetric ``nn.ZeroPad2d`` read only by ``node`` (a convolution without
    padding) becomes ``node``'s padding."""
    call = None
    if node.op == "call_function" and node.target is conv_bn:
        padding = node.args[9]
    elif node.op == "call_function" and node.target in CONV_FUNCTIONS:
        call = _conv_call(node, modules)
        if call is None:
            return False
        padding = call["padding"]
    else:
        return False
    pad = node.args[0]  # the input, first for both
    if not isinstance(pad, fx.Node) or pad.op != "call_module" or len(pad.users) != 1:
        return False
    module = modules.get(str(pad.target))
    if type(module) is not nn.ZeroPad2d or padding not in (0, (0, 0), [0, 0]):
        return False
    left, right, top, bottom = module.padding
    if left != right or top != bottom:
        return False
    if call is None:  # conv_bn
        node.args = (pad.args[0], *node.args[1:9], (top, left), *node.args[10:])
    else:
        call["input"], call["padding"] = pad.args[0], (top, left)
        node.args, node.kwargs = tuple(call[name] for name in _CONV_ARGS), {}
    pad.graph.erase_node(pad)
    return True
