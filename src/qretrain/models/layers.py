"""What a model holds: its tensors, their kinds, and the numbering of its layers.

The clusterable table below is the single place that says which tensors of which
module types can be clustered, and under which *kind* plans select them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from qretrain.models.footprint import check_one_input
from qretrain.models.names import BN_KINDS, ParamKind  # noqa: F401  (BN_KINDS: also here)

# Layers are what the seed numbers 1..N: conv and linear modules, and attention's
# input projection, in forward order.
LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.MultiheadAttention,
)
_LAYER_TENSORS = {"weight": ParamKind.WEIGHT, "bias": ParamKind.BIAS}
# nn.MultiheadAttention holds its query, key and value projections as one
# (3 x embed, embed) matrix, or as three when key and value have other widths; its
# output projection is a Linear child (``out_proj``: a layer of its own, numbered
# right after it). Absent on purpose: ``bias_k`` and ``bias_v`` (``add_bias_kv``),
# one learned key and value appended to the sequence, not a projection's weights.
_ATTENTION_TENSORS = {
    "in_proj_weight": ParamKind.WEIGHT,
    "q_proj_weight": ParamKind.WEIGHT,
    "k_proj_weight": ParamKind.WEIGHT,
    "v_proj_weight": ParamKind.WEIGHT,
    "in_proj_bias": ParamKind.BIAS,
}
_BN_TENSORS = {
    "weight": ParamKind.BN_WEIGHT,
    "bias": ParamKind.BN_BIAS,
    "running_mean": ParamKind.BN_RUNNING_MEAN,
    "running_var": ParamKind.BN_RUNNING_VAR,
    # num_batches_tracked is absent on purpose: an integer step counter, not a weight.
}
# Module type -> {tensor attribute -> kind}. Anything not listed stays float32, and
# the report says why. Extend here to make another module type clusterable.
CLUSTERABLE: dict[type[nn.Module], dict[str, ParamKind]] = {
    **{t: _LAYER_TENSORS for t in LAYER_TYPES if t is not nn.MultiheadAttention},
    nn.MultiheadAttention: _ATTENTION_TENSORS,
    nn.BatchNorm1d: _BN_TENSORS,
    nn.BatchNorm2d: _BN_TENSORS,
    nn.BatchNorm3d: _BN_TENSORS,
}


@dataclass(frozen=True)
class TensorInfo:
    """One entry of a model's state dict, with where it lives and what it is."""

    name: str  # state-dict key
    module_name: str
    module_type: str
    attr: str  # attribute on the module: weight, bias, running_mean, ...
    kind: ParamKind | None  # None: not clusterable
    layer: int | None  # layer number of its module, if a conv / linear
    shape: tuple[int, ...]
    dtype: torch.dtype
    is_parameter: bool
    tied_to: str | None = None  # first state-dict name of the same tensor

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def unclusterable_reason(self) -> str | None:
        """Why this tensor can never be clustered, or None when it can."""
        if self.tied_to is not None:
            return f"shares its storage with {self.tied_to}"
        if not self.dtype.is_floating_point:
            return f"{self.dtype} buffer, not a weight"
        if self.kind is None:
            return f"{self.module_type}.{self.attr} is not in the clusterable table"
        return None


def kind_of(module: nn.Module, attr: str) -> ParamKind | None:
    """The kind of ``module.<attr>`` per the clusterable table (subclasses included)."""
    for module_type in type(module).__mro__:
        table = CLUSTERABLE.get(module_type)
        if table is not None:
            return table.get(attr)
    return None


def number_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, int]:
    """Module name -> 1-based layer number of every conv / linear / attention module.

    With an example input the numbering follows the order in which a forward pass
    first calls each layer (``call_order``: attention's ``out_proj`` right after its
    attention; layers it never calls come last, in registration order); without one
    it is registration order, which is the same for torchvision models.
    """
    layers = [name for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    return {name: i + 1 for i, name in enumerate(call_order(model, layers, example_input))}


def call_order(model: nn.Module, names: list[str], example_input: torch.Tensor | None) -> list[str]:
    """``names`` (submodule names) in the order a forward pass first calls them.

    A module the pass never calls but whose enclosing module in ``names`` it calls
    counts as called at the end of that call: nn.MultiheadAttention computes with its
    ``out_proj``'s weight without calling ``out_proj``, after its input projection
    (``used_order`` gives these, in order). Modules the pass never uses come last, in
    the given order; without an example input the given order is returned as is. The
    pass runs in eval mode, so batch norm neither updates its statistics nor needs a
    batch.
    """
    if example_input is None:
        return list(names)
    used = used_order(model, names, example_input)
    seen = set(used)
    return used + [n for n in names if n not in seen]


def used_order(model: nn.Module, names: list[str], example_input: torch.Tensor) -> list[str]:
    """The modules of ``names`` that a forward pass of ``example_input`` uses, in the
    order of ``call_order``: called, or held by one of ``names`` that is called."""
    starts: dict[str, int] = {}  # name -> event count at its first call's start
    ends: dict[str, int] = {}  # ... and at that call's end
    events = 0

    def recorder(name: str, times: dict[str, int]):
        def hook(module, *args) -> None:  # a pre-hook returning a value replaces the input
            nonlocal events
            events += 1
            times.setdefault(name, events)

        return hook

    wanted = set(names)
    handles = []
    for n, m in model.named_modules():
        if n in wanted:
            handles += [m.register_forward_pre_hook(recorder(n, starts)),
                        m.register_forward_hook(recorder(n, ends))]  # fmt: skip
    param = next(model.parameters(), None)
    if param is not None:
        example_input = example_input.to(param.device, param.dtype)
    # The input's size comes from the model's contract, which a file states.
    check_one_input(model, tuple(example_input.shape[1:]), type(model).__name__)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    when = {n: float(t) for n, t in starts.items()}
    for n in names:
        holder = enclosing(n, starts)
        if n not in starts and holder is not None:
            when[n] = ends[holder] - 0.5  # inside the holder's call, after what it called
    return sorted(when, key=when.__getitem__)  # stable: uncalled ones in the given order


def enclosing(name: str, among: Collection[str]) -> str | None:
    """The nearest module around ``name`` (a dotted prefix, the root "" last) that is
    in ``among``, or None."""
    parts = name.split(".") if name else []
    for i in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:i])
        if prefix in among:
            return prefix
    return None


def type_names(module: nn.Module) -> tuple[str, ...]:
    """Class names of ``module`` and its bases, as plan rules' ``type`` matches them."""
    return tuple(c.__name__ for c in type(module).__mro__)


def describe_tensors(
    model: nn.Module, example_input: torch.Tensor | None = None
) -> list[TensorInfo]:
    """Every state-dict tensor of ``model``, in state-dict order."""
    numbers = number_layers(model, example_input)
    first_name: dict[int, str] = {}
    infos = []
    for module_name, module, attr, tensor, is_param in _module_tensors(model):
        name = f"{module_name}.{attr}" if module_name else attr
        tied = first_name.setdefault(id(tensor), name)
        infos.append(
            TensorInfo(
                name=name,
                module_name=module_name,
                module_type=type(module).__name__,
                attr=attr,
                kind=kind_of(module, attr),
                layer=numbers.get(module_name),
                shape=tuple(tensor.shape),
                dtype=tensor.dtype,
                is_parameter=is_param,
                tied_to=None if tied == name else tied,
            )
        )
    return infos


def _module_tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor, bool]]:
    """(module name, module, attribute, tensor, is parameter) for state-dict tensors."""
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attr, p in module._parameters.items():
            if p is not None:
                yield module_name, module, attr, p, True
        for attr, b in module._buffers.items():
            if b is not None and attr not in module._non_persistent_buffers_set:
                yield module_name, module, attr, b, False


def get_tensor(model: nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer behind a state-dict name."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return getattr(module, attr)
