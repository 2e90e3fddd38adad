"""Census: what each layer holds, and which block it belongs to.

Two views of one model, both from here: ``module_census`` lists every module holding
tensors (what ``qretrain inspect`` prints), ``take_census`` every layer with what it
owns (what ``qretrain analyze`` sweeps).

A *layer* is a conv, linear or attention module, numbered in forward order as plans
number them. Each layer owns its weight and bias (attention: its input projection's)
and the batch-norm module that a forward pass calls right after it (the seed counts
batch norm per layer too). Layers fall into *blocks*: maximal runs, in forward order,
whose outputs share one spatial size. That is VGG's blocks between poolings and
ResNet's or EfficientNet's stages for any model, with no per-architecture table;
linear and attention layers, which act on features or tokens, form the
``classifier`` block (a transformer's encoder included: analyse it per layer).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from qretrain._table import format_table, human_bytes
from qretrain.cluster.state import clusters_of
from qretrain.models.layers import (
    BN_KINDS,
    CLUSTERABLE,
    LAYER_TYPES,
    ParamKind,
    describe_tensors,
    enclosing,
    kind_of,
)
from qretrain.analysis.settings import SWEEP_KINDS
from qretrain.models.specs import get_arch

_BN_TYPES = tuple(t for t, table in CLUSTERABLE.items() if "running_var" in table)
_TOKEN_TYPES = (nn.Linear, nn.MultiheadAttention)  # layers without a spatial output


@dataclass(frozen=True)
class LayerCensus:
    """One conv / linear layer: where it lives and what it holds."""

    layer: int  # 1-based, forward order
    module: str  # module name
    type: str  # class name
    block: str  # "block3" or "classifier"
    output_size: tuple[int, ...]  # spatial size of its output; () for linear layers
    bn_module: str | None  # the batch norm called right after it, if any
    tensors: dict[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> names
    params: dict[str, int] = field(default_factory=dict)  # kind -> parameter count

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "module": self.module,
            "type": self.type,
            "block": self.block,
            "output_size": list(self.output_size),
            "bn_module": self.bn_module,
            "tensors": {k: list(v) for k, v in self.tensors.items()},
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, d: dict) -> LayerCensus:
        return cls(
            layer=d["layer"],
            module=d["module"],
            type=d["type"],
            block=d["block"],
            output_size=tuple(d["output_size"]),
            bn_module=d["bn_module"],
            tensors={k: tuple(v) for k, v in d["tensors"].items()},
            params=dict(d["params"]),
        )


@torch.no_grad()
def take_census(model: nn.Module, example_input: torch.Tensor) -> list[LayerCensus]:
    """One row per conv / linear / attention layer the forward pass of
    ``example_input`` uses.

    example_input: (N, C, H, W) or whatever the model takes; one image is enough.
    A layer computed inside another's call without being called (attention's
    ``out_proj``) follows it, as ``number_layers`` numbers it. Layers the pass never
    uses are left out (they cannot affect the output).
    """
    calls: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    seen: set[str] = set()

    def recorder(name: str):
        def hook(module: nn.Module, args, output) -> None:
            if isinstance(output, tuple) and output:  # attention: (output, weights)
                output = output[0]
            if name not in seen and isinstance(output, torch.Tensor):
                seen.add(name)
                calls.append((name, module, tuple(output.shape[2:])))

        return hook

    watched = (*LAYER_TYPES, *_BN_TYPES)
    handles = [
        m.register_forward_hook(recorder(n))
        for n, m in model.named_modules()
        if isinstance(m, watched)
    ]
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    if param is not None:
        example_input = example_input.to(param.device, param.dtype)
    try:
        model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return _rows(_with_held_layers(model, calls))


def _with_held_layers(model: nn.Module, calls: list[tuple[str, nn.Module, tuple[int, ...]]]
                      ) -> list[tuple[str, nn.Module, tuple[int, ...]]]:  # fmt: skip
    """``calls`` with each layer that was not called but sits inside a called layer
    right after that layer's entry, with its output size."""
    layers = {n for n, m, _ in calls if isinstance(m, LAYER_TYPES)}
    held: dict[str, list[tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES) and name not in layers:
            holder = enclosing(name, layers)
            if holder is not None:
                held.setdefault(holder, []).append((name, module))
    return [entry for call in calls
            for entry in (call, *((n, m, call[2]) for n, m in held.get(call[0], ())))]  # fmt: skip


def _rows(calls: list[tuple[str, nn.Module, tuple[int, ...]]]) -> list[LayerCensus]:
    rows: list[dict] = []
    block, last_size = 0, None
    for name, module, size in calls:
        if isinstance(module, _BN_TYPES):
            # A batch norm belongs to the layer called just before it, if that layer
            # has none yet (a batch norm on the raw input belongs to no layer).
            if rows and rows[-1]["bn_module"] is None:
                names = _tensor_names(name, module)
                rows[-1]["bn_module"] = name
                rows[-1]["tensors"]["bn"] = names
                rows[-1]["params"]["bn"] = sum(
                    getattr(module, n.rpartition(".")[2]).numel() for n in names
                )
            continue
        if isinstance(module, _TOKEN_TYPES):
            block_name = "classifier"
        else:
            if size != last_size:
                block += 1
                last_size = size
            block_name = f"block{block}"
        tensors, params = {}, {}
        for attr in _layer_attrs(module):
            tensor = getattr(module, attr, None)
            if tensor is not None:
                kind = kind_of(module, attr).value
                tensors[kind] = tensors.get(kind, ()) + (f"{name}.{attr}",)
                params[kind] = params.get(kind, 0) + tensor.numel()
        rows.append(
            {
                "layer": len(rows) + 1,
                "module": name,
                "type": type(module).__name__,
                "block": block_name,
                "output_size": size if block_name != "classifier" else (),
                "bn_module": None,
                "tensors": tensors,
                "params": params,
            }
        )
    return [LayerCensus(**r) for r in rows]


def _layer_attrs(module: nn.Module) -> list[str]:
    """The attributes of a layer that the clusterable table makes weights or biases."""
    table = next((CLUSTERABLE[t] for t in type(module).__mro__ if t in CLUSTERABLE), {})
    return [a for a, kind in table.items() if kind in (ParamKind.WEIGHT, ParamKind.BIAS)]


def _tensor_names(name: str, bn: nn.Module) -> tuple[str, ...]:
    return tuple(
        f"{name}.{attr}"
        for attr in ("weight", "bias", "running_mean", "running_var")
        if getattr(bn, attr, None) is not None
    )


def census_table(rows: list[LayerCensus]) -> str:
    """The census as a terminal table: one line per layer, then one per block."""
    kinds = [k for k in SWEEP_KINDS if any(k in r.params for r in rows)]
    total = sum(sum(r.params.values()) for r in rows) or 1
    body = []
    for r in rows:
        size = "x".join(map(str, r.output_size)) or "-"
        counts = [r.params.get(k, "") for k in kinds]
        share = f"{sum(r.params.values()) / total:.1%}"
        body.append([r.layer, r.module, r.type, r.block, size, *counts, share])
    layer_table = format_table(
        ["layer", "module", "type", "block", "output", *kinds, "share"],
        body,
        right="r    " + "r" * (len(kinds) + 1),
    )
    blocks: dict[str, list[LayerCensus]] = {}
    for r in rows:
        blocks.setdefault(r.block, []).append(r)
    block_body = []
    for name, members in blocks.items():
        n = sum(sum(r.params.values()) for r in members)
        span = f"{members[0].layer}-{members[-1].layer}" if len(members) > 1 else members[0].layer
        counts = [sum(r.params.get(k, 0) for r in members) for k in kinds]
        block_body.append([name, span, *counts, f"{n / total:.1%}"])
    block_table = format_table(
        ["block", "layers", *kinds, "share"], block_body, right="rr" + "r" * (len(kinds) + 1)
    )
    return f"{layer_table}\n\n{block_table}"


@dataclass(frozen=True)
class ModuleCensus:
    """Every module holding tensors, in state-dict order (batch norm after its conv)."""

    model: str
    layer_order: str  # "forward" (an example input numbered them) or "registration"
    modules: list[dict[str, Any]]  # layer, name, type, weight_shape, counts, bytes, share,
    #                                clustered ("attr:k" per clustered tensor, "attr:k pairs")
    parameters: int
    buffers: int
    bytes: int

    @property
    def layers(self) -> int:
        return sum(1 for r in self.modules if r["layer"] is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "layer_order": self.layer_order, "layers": self.layers,
                "parameters": self.parameters, "buffers": self.buffers, "bytes": self.bytes,
                "modules": self.modules}  # fmt: skip

    def table(self) -> str:
        rows = [[r["layer"] or "", r["name"] or "(root)", r["type"],
                 "x".join(map(str, r["weight_shape"])) if r["weight_shape"] else "",
                 r["counts"].get("weight", ""), r["counts"].get("bias", ""),
                 r["counts"].get("bn", ""), f"{r['share']:.2%}", ",".join(r["clustered"])]
                for r in self.modules]  # fmt: skip
        headers = ["layer", "name", "type", "weight shape", "weights", "biases", "bn", "share",
                   "clustered (k)"]  # fmt: skip
        return format_table(headers, rows, right="rlllrrrrl")

    def summary(self) -> str:
        return (f"{self.model}: {self.layers} conv/linear layers (numbered in "
                f"{self.layer_order} order), {self.parameters:,} parameters, "
                f"{self.buffers:,} buffer values, {human_bytes(self.bytes)}")  # fmt: skip


def module_census(model: nn.Module) -> ModuleCensus:
    """Per-module counts per kind and share of the model's bytes, and what is clustered."""
    arch = get_arch(model)
    example = arch.example_input() if arch is not None else None
    infos = describe_tensors(model, example)
    clusters = clusters_of(model)
    total_bytes = sum(i.nbytes for i in infos) or 1
    modules: dict[str, dict] = {}
    for info in infos:
        row = modules.setdefault(info.module_name, {
            "layer": info.layer, "name": info.module_name, "type": info.module_type,
            "weight_shape": None, "counts": defaultdict(int), "bytes": 0, "clustered": [],
        })  # fmt: skip
        if info.kind is ParamKind.WEIGHT:
            row["weight_shape"] = list(info.shape)
        group = "bn" if info.kind in BN_KINDS else (info.kind.value if info.kind else "other")
        row["counts"][group] += info.numel
        row["bytes"] += info.nbytes
        if info.name in clusters:  # "weight:16", or "weight:64 pairs" for a codebook of pairs
            c = clusters[info.name]
            pairs = " pairs" if c.vector > 1 else ""
            row["clustered"].append(f"{info.attr}:{int(c.sizes.max())}{pairs}")
    rows = list(modules.values())
    for row in rows:
        row["counts"] = dict(row["counts"])
        row["share"] = row["bytes"] / total_bytes
    return ModuleCensus(
        model=arch.spec if arch else type(model).__name__,
        layer_order="forward" if example is not None else "registration",
        modules=rows,
        parameters=sum(i.numel for i in infos if i.is_parameter),
        buffers=sum(i.numel for i in infos if not i.is_parameter),
        bytes=total_bytes,
    )
