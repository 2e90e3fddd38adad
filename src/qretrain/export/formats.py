"""``export(model, path, format)``: the model in a format other tools read.

- ``safetensors``: every clustered tensor as its codebook (``NAME.codebook``, float32
  (G, K)), its indices (``NAME.indices``, uint8, the tensor's shape; row g of the
  tensor reads codebook row g) and, per channel, ``NAME.sizes``; a codebook of pairs
  as (1, K, 2) with indices of the tensor's shape, dimension 0 halved (index [i, ...]
  gives [2i, ...] and [2i + 1, ...]; ``read_codebook_tensor``); unclustered tensors
  as they are; the manifest's JSON under the ``qretrain`` metadata key. No code, no
  pickle: a JSON header and raw little-endian bytes, written here without the
  ``safetensors`` package (which reads the file).
- ``onnx``: the graph torch exports, with each clustered weight rebuilt in the
  graph from a float32 codebook and its indices packed at the file's bits, by one
  call of a model-local function per tensor (``qretrain.Decode{bits}``, one per bit
  width) made of stock operators (``Div`` and ``Mod`` by powers of two, ``Slice``,
  ``Add`` the row offsets, ``Gather``, ``Reshape``; for pairs ``qretrain.DecodePairs{bits}``,
  with a ``Transpose`` instead of the offsets); float32 tensors of 4,096 values
  or more stored exactly in about 29 bits per value (see ``_split_floats``), batch
  norm as one scale and one shift per channel, equal small constants shared.
  Needs ``pip install 'qretrain[onnx]'``.
- ``torchscript``: the dequantized float32 model traced on an input of its
  contract: runnable anywhere PyTorch is, and as large as float32 (said so).

- ``coreml``: an ML program ``.mlpackage`` (a folder; iOS 18 / macOS 15 or later)
  converted at float32 precision, whose clustered weights are lookup tables holding
  exactly the file's codebook values and indices (coremltools' ``palettize_weights``
  in ``unique`` mode: a tensor of K distinct values becomes a LUT of the next
  supported size, 2 to 256, padded, with ceil(log2 K)-bit indices). A per-channel
  codebook becomes one table per output channel (``per_grouped_channel``, group
  size 1), each holding exactly its row's values; a codebook of pairs one table of
  2-vectors along the output channels (``cluster_dim`` 2, vector axis 0). The input
  contract becomes the image input's preprocessing (scale 1 / (255 std), bias
  -mean / std) when std is the same for every channel, else the input is a float
  tensor already normalised; resizing is the caller's. Needs ``pip install 'qretrain[coreml]'``.

Every program is checked before it is kept (``export.check``): the ONNX graph in
onnxruntime, the TorchScript module, and the program Core ML converts (torch.export's;
Core ML itself runs only on Apple systems) must compute the model's outputs on
random images of its contract, else the export is refused with one line and nothing
is written; so is an exporter's or converter's own failure. nn.MultiheadAttention
exports through its slow path (stock operators). safetensors holds tensors, no
program: nothing to run.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qretrain.cluster.options import Granularity
from qretrain.cluster.state import clusters_of
from qretrain.errors import QretrainError
from qretrain.export.check import attention_slow_path, check_outputs, one_line
from qretrain.export.options import FORMATS, Format  # noqa: F401  (FORMATS: also here)
from qretrain.models.footprint import check_one_input
from qretrain.models.specs import get_arch
from qretrain.storage import atomic_folder, atomic_path, check_writable_folder, pack_indices
from qretrain.storage.fold import folded_state, is_folded

logger = logging.getLogger(__name__)
_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
           torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.int8: "I8",
           torch.bool: "BOOL"}  # fmt: skip


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: Format
    file_bytes: int
    float32_bytes: int  # the model's floating-point tensors as float32

    def summary(self) -> str:
        note = " (dequantized: float32-sized)" if self.format is Format.TORCHSCRIPT else ""
        return (f"{self.path}: {self.format.value}, {self.file_bytes:,} bytes, "
                f"{self.float32_bytes / self.file_bytes:.2f}x smaller than float32{note}")  # fmt: skip

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format.value,
                "file_bytes": self.file_bytes, "float32_bytes": self.float32_bytes}  # fmt: skip


def export(model: nn.Module, path: str | Path, format: str = "safetensors") -> ExportResult:
    """Write ``model`` (clustered or not) to ``path`` in ``format``, atomically."""
    try:
        fmt = Format(format)
    except ValueError:
        raise QretrainError(f"format must be one of {', '.join(FORMATS)}; got {format!r}") from None
    path = Path(path)
    if fmt is Format.COREML and path.suffix != ".mlpackage":  # coremltools saves no other
        raise QretrainError(f"a coreml export is an .mlpackage folder: name it so, e.g. "
                            f"{path.with_suffix('.mlpackage').name!r}; got {str(path)!r}")  # fmt: skip
    check_writable_folder(path)
    float32 = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    if fmt is Format.COREML:
        _write_coreml(model, path)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return ExportResult(path, fmt, size, float32)
    with atomic_path(path) as tmp:
        if fmt is Format.SAFETENSORS:
            _write_safetensors(model, tmp)
        elif fmt is Format.ONNX:
            _write_onnx(model, tmp)
        else:
            _write_torchscript(model, tmp)
    return ExportResult(path, fmt, path.stat().st_size, float32)


def _write_safetensors(model: nn.Module, path: Path) -> None:
    clusters = clusters_of(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        c = clusters.get(name)
        if c is None:
            tensors[name] = tensor.detach().cpu().contiguous()
            continue
        tensors[f"{name}.codebook"] = c.codebook.contiguous()
        tensors[f"{name}.indices"] = c.indices.contiguous()
        if c.codebook.shape[0] > 1:
            tensors[f"{name}.sizes"] = c.sizes.to(torch.int32).contiguous()
    arch = get_arch(model)
    meta = {"arch": arch.to_dict() if arch else None,
            "clustered": {n: {"k": c.k, "method": c.method.value,
                              "granularity": c.granularity.value} for n, c in clusters.items()}}  # fmt: skip
    header: dict = {"__metadata__": {"qretrain": json.dumps(meta)}}
    offset = 0
    blobs = []
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPES:
            raise QretrainError(f"{name}: dtype {tensor.dtype} has no safetensors type")
        data = tensor.numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}  # fmt: skip
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def _example(model: nn.Module, what: str) -> torch.Tensor:
    arch = get_arch(model)
    example = arch.example_input() if arch is not None else None
    if example is None:
        raise QretrainError(f"{what} export traces the model on an input of its contract, "
                            "and this model declares none")  # fmt: skip
    check_one_input(model, tuple(example.shape[1:]), f"{what} export of {type(model).__name__}")
    return example


def _write_onnx(model: nn.Module, path: Path) -> None:
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
        import onnxruntime
    except ImportError:
        raise QretrainError("the onnx export needs onnx, and onnxruntime to check the graph: "
                            "pip install 'qretrain[onnx]'") from None  # fmt: skip

    buffer = io.BytesIO()
    example = _example(model, "onnx")
    try:
        with torch.no_grad(), attention_slow_path():
            torch.onnx.export(model.eval(), example, buffer, dynamo=False,
                              do_constant_folding=False, input_names=["input"],
                              output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip
    except Exception as e:  # the exporter raises many types; the model is the user's
        raise QretrainError(f"onnx export failed: {one_line(e)}; nothing was written") from e
    graph = onnx.load_from_string(buffer.getvalue())
    books = clusters_of(model)
    kept, decoders, replaced, widths = [], [], set(), set()
    for init in graph.graph.initializer:
        c = books.get(init.name)
        if c is None:
            kept.append(init)
            continue
        n, bits, pairs = init.name, c.bits or 1, c.granularity is Granularity.PAIRS
        flat = c.indices.numpy().reshape(-1).astype(np.uint8)
        if pairs:  # a (K, 2) codebook; the indices as (O/2, R)
            codebook, rows, extra = c.codebook.numpy()[0], [c.indices.shape[0], -1], []
        else:  # a flat codebook; row g's indices offset by g K
            groups, width = c.codebook.shape
            codebook, rows = c.codebook.numpy().reshape(-1), [groups, -1]
            offsets = np.arange(groups, dtype=np.int64)[:, None] * width
            extra = [numpy_helper.from_array(offsets, f"{n}.offsets")]
        kept += [
            *_stored_indices(n, flat, bits, numpy_helper),
            numpy_helper.from_array(codebook, f"{n}.codebook"),
            *extra,
            numpy_helper.from_array(np.array(rows, dtype=np.int64), f"{n}.rows"),
            numpy_helper.from_array(np.array(c.shape, dtype=np.int64), f"{n}.shape"),
        ]
        inputs = PAIRS_INPUTS if pairs else DECODE_INPUTS
        decoders.append(helper.make_node(_decoder_name(bits, pairs),
                                         [f"{n}.{part}" for part in inputs], [n],
                                         domain=DOMAIN))  # fmt: skip
        widths.add((bits, pairs))
        replaced.add(n)
    missed = sorted(set(books) - replaced)
    if missed:  # the exporter folded or renamed them: they stay float32 in the graph
        logger.warning("onnx export: %d clustered tensor(s) are not graph initializers and "
                       "stay float32 (%s)", len(missed), ", ".join(missed[:3]))  # fmt: skip
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in onnx.shape_inference.infer_shapes(graph).graph.value_info}  # fmt: skip
    kept, nodes = _batchnorm_as_scale_and_shift(kept, decoders + list(graph.graph.node), ranks,
                                                numpy_helper, helper,
                                                {o.name for o in graph.graph.output})  # fmt: skip
    kept, unsplit = _split_floats(kept, numpy_helper, helper, TensorProto)
    nodes = unsplit + nodes
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept)
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    _compact_names(graph.graph)
    if widths:
        opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
        graph.functions.extend(_decode_function(bits, pairs, opset, numpy_helper, helper,
                                                TensorProto)
                               for bits, pairs in sorted(widths))  # fmt: skip
        graph.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check_outputs("onnx export", model,
                  lambda x: session.run(None, {"input": x.numpy()})[0], get_arch(model).contract)  # fmt: skip


DOMAIN = "qretrain"  # of the ONNX functions that decode clustered weights
DECODE_INPUTS = ("indices", "count", "codebook", "offsets", "rows", "shape")
PAIRS_INPUTS = ("indices", "count", "codebook", "rows", "shape")


def _decode_function(bits: int, pairs: bool, opset: int, numpy_helper, helper, TensorProto):
    """``qretrain.Decode{bits}``, the model-local ONNX function that rebuilds a clustered
    weight from its initializers (``DECODE_INPUTS``): unpack the indices
    (``_unpacker``), add each codebook row's offset, ``Gather`` from the flat
    codebook, reshape. One function per bit width, called once per tensor: the
    graph holds one node per clustered weight instead of 10 to 14 of its own.

    ``qretrain.DecodePairs{bits}`` (``PAIRS_INPUTS``) rebuilds a codebook of pairs:
    the indices as (O/2, R), ``Gather`` from the (K, 2) codebook (O/2, R, 2), the pair
    axis moved next to the rows (O/2, 2, R), reshaped to the weight's (O, ...)."""
    n = "x"
    constants, unpack = _unpacker(n, bits, numpy_helper, helper, TensorProto)
    if pairs:
        gather = [
            helper.make_node("Gather", [f"{n}.codebook", f"{n}.by_row"], [f"{n}.pairs"]),
            helper.make_node("Transpose", [f"{n}.pairs"], [f"{n}.values"], perm=[0, 2, 1]),
        ]
    else:
        gather = [
            helper.make_node("Add", [f"{n}.by_row", f"{n}.offsets"], [f"{n}.flat"]),
            helper.make_node("Gather", [f"{n}.codebook", f"{n}.flat"], [f"{n}.values"]),
        ]
    nodes = [
        *(helper.make_node("Constant", [], [c.name], value=c) for c in constants),
        *unpack,
        helper.make_node("Reshape", [f"{n}.idx", f"{n}.rows"], [f"{n}.by_row"]),
        *gather,
        helper.make_node("Reshape", [f"{n}.values", f"{n}.shape"], [f"{n}.weight"]),
    ]
    inputs = PAIRS_INPUTS if pairs else DECODE_INPUTS
    return helper.make_function(DOMAIN, _decoder_name(bits, pairs),
                                [f"{n}.{p}" for p in inputs], [f"{n}.weight"], nodes,
                                [helper.make_opsetid("", opset)])  # fmt: skip


def _decoder_name(bits: int, pairs: bool) -> str:
    """The ONNX function that decodes a codebook (of pairs) with ``bits``-bit indices."""
    return f"DecodePairs{bits}" if pairs else f"Decode{bits}"


def _compact_names(graph) -> None:
    """Shorten what a reader never looks up, in place: every intermediate value gets a
    short name, node names go, and equal small constants (the decoders' shapes and
    counts, the exporter's ``Constant`` nodes, which become initializers first) become
    one. With 1,200 nodes the long names alone were ~150 KB of an EfficientNet-Lite0
    export, 5% of the file; its ``Constant`` nodes repeat a few values many times.
    Kept as they are: the graph's inputs and outputs, every ``{name}.codebook`` and
    ``{name}.indices``, and other initializers over 64 bytes (float weights)."""
    outside = {v.name for v in graph.input} | {v.name for v in graph.output}
    constants = [n for n in graph.node if n.op_type == "Constant" and len(n.output) == 1
                 and len(n.attribute) == 1 and n.attribute[0].name == "value"
                 and n.output[0] not in outside]  # fmt: skip
    for node in constants:
        value = graph.initializer.add()
        value.CopyFrom(node.attribute[0].t)
        value.name = node.output[0]
    for node in constants:
        graph.node.remove(node)
    renamed, canonical, kept = {}, {}, []
    for init in graph.initializer:
        if len(init.raw_data) > 64 or init.name in outside \
                or init.name.endswith((".codebook", ".indices")):  # fmt: skip
            kept.append(init)
            continue
        key = (init.data_type, tuple(init.dims), init.raw_data,
               tuple(init.int64_data), tuple(init.float_data), tuple(init.int32_data))  # fmt: skip
        if key not in canonical:
            canonical[key] = f"c{len(canonical)}"
            init.name, original = canonical[key], init.name
            kept.append(init)
            renamed[original] = canonical[key]
        else:
            renamed[init.name] = canonical[key]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    count = 0
    for node in graph.node:
        node.name = ""
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        for i, name in enumerate(node.output):
            if name and name not in outside:
                renamed[name] = node.output[i] = f"v{count}"
                count += 1
    del graph.value_info[:]  # it names the old values; shape inference remakes it


def _batchnorm_as_scale_and_shift(
    initializers, nodes, ranks, numpy_helper, helper, graph_outputs=frozenset()
):
    """Each BatchNormalization of a 4-D input over constant statistics as Mul and Add by
    one scale and one shift per channel (as the .h5 stores folded batch norm): two
    vectors instead of four, the same function up to float rounding. ``ranks``: the
    rank of each value shape inference knows. Constants the exporter shared between
    layers (equal tensors become one) are dropped only once nothing reads them."""
    constants = {i.name: numpy_helper.to_array(i) for i in initializers}
    for node in nodes:  # the exporter shares equal tensors through Identity nodes
        if node.op_type == "Constant" and len(node.output) == 1 and node.attribute \
                and node.attribute[0].name == "value":  # fmt: skip
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
    out, added = [], []
    for node in nodes:
        if node.op_type != "BatchNormalization" or len(node.output) != 1 \
                or ranks.get(node.input[0]) != 4 \
                or not all(name in constants for name in node.input[1:5]):  # fmt: skip
            out.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale, bias, mean, var = (constants[n].astype(np.float64) for n in node.input[1:5])
        a = scale / np.sqrt(var + eps)
        b = bias - mean * a
        name = node.name or node.output[0]
        added += [numpy_helper.from_array(a.astype(np.float32).reshape(-1, 1, 1), f"{name}.scale"),
                  numpy_helper.from_array(b.astype(np.float32).reshape(-1, 1, 1), f"{name}.shift")]  # fmt: skip
        out += [helper.make_node("Mul", [node.input[0], f"{name}.scale"], [f"{name}.scaled"]),
                helper.make_node("Add", [f"{name}.scaled", f"{name}.shift"], [node.output[0]])]  # fmt: skip
    for _ in range(2):  # drop constants and their Identity copies that nothing reads now
        read = {name for node in out for name in node.input}
        out = [n for n in out if n.op_type not in ("Constant", "Identity")
               or n.output[0] in read or n.output[0] in graph_outputs]  # fmt: skip
    read = {name for node in out for name in node.input}
    return [i for i in initializers if i.name in read] + added, out


SPLIT_MIN = 4096  # float32 initializers of fewer values stay as they are


def _split_floats(initializers, numpy_helper, helper, TensorProto):
    """Large float32 initializers stored in fewer bytes, exactly: returns (initializers,
    the nodes that rebuild the split ones under their own names).

    A float32 is a sign, 8 exponent bits and a 23-bit mantissa m. A layer's weights
    use few (sign, exponent) pairs, so each value stores the pair as an index into a
    table at ceil(log2 pairs) bits, and m as 16 + 7 bits (uint16 and 7-bit packed):
    29 bits instead of 32 for up to 64 pairs (trained layers use 25-50). The graph rebuilds
    ``base[i] + m * step[i]`` with ``base = +-2^(e-127)`` and ``step = +-2^(e-150)``
    (``base = +-0``, ``step = +-2^-149`` for e = 0): the product has at most 24
    significant bits and the sum is the float itself, so every value comes back bit
    for bit in float32 arithmetic (fused or not). This is what gzip wins on the
    .h5's float32 datasets (~11%), which ONNX cannot decompress. Tensors with
    non-finite values, or more than 256 pairs, stay float32."""
    out, nodes = [], []
    for init in initializers:
        values = numpy_helper.to_array(init) if init.data_type == TensorProto.FLOAT else None
        if values is None or values.size < SPLIT_MIN or not np.isfinite(values).all():
            out.append(init)
            continue
        bits = np.ascontiguousarray(values, dtype="<f4").reshape(-1).view("<u4")
        pairs, code = np.unique(bits >> 23, return_inverse=True)
        width = max(1, int(np.ceil(np.log2(len(pairs)))))
        if width > 8:
            out.append(init)
            continue
        n = init.name
        exponent, negative = (pairs & 0xFF).astype(np.int64), (pairs >> 8).astype(bool)
        sign = np.where(negative, -1.0, 1.0)
        base = sign * np.where(exponent > 0, np.ldexp(1.0, exponent - 127), 0.0)  # -0.0 stays
        step = sign * np.ldexp(1.0, np.maximum(exponent, 1) - 150)
        mantissa = bits & 0x7FFFFF
        high = _indices_for_onnx(f"{n}.m_high", (mantissa >> 16).astype(np.uint8), 7,
                                 numpy_helper, helper, TensorProto)  # fmt: skip
        pair = _indices_for_onnx(f"{n}.pair", code.astype(np.uint8), width, numpy_helper,
                                 helper, TensorProto)  # fmt: skip
        out += [
            numpy_helper.from_array((mantissa & 0xFFFF).astype(np.uint16), f"{n}.m_low"),
            numpy_helper.from_array(base.astype(np.float32), f"{n}.base"),
            numpy_helper.from_array(step.astype(np.float32), f"{n}.step"),
            numpy_helper.from_array(np.array(1 << 16, dtype=np.int64), f"{n}.m_scale"),
            numpy_helper.from_array(np.array(values.shape, dtype=np.int64), f"{n}.shape"),
            *pair[0],
            *high[0],
        ]
        nodes += [
            *pair[1],
            *high[1],
            helper.make_node("Cast", [f"{n}.m_low"], [f"{n}.m_low64"], to=TensorProto.INT64),
            helper.make_node("Mul", [f"{n}.m_high.idx", f"{n}.m_scale"], [f"{n}.m_up"]),
            helper.make_node("Add", [f"{n}.m_up", f"{n}.m_low64"], [f"{n}.m"]),
            helper.make_node("Cast", [f"{n}.m"], [f"{n}.mf"], to=TensorProto.FLOAT),
            helper.make_node("Gather", [f"{n}.base", f"{n}.pair.idx"], [f"{n}.b"]),
            helper.make_node("Gather", [f"{n}.step", f"{n}.pair.idx"], [f"{n}.s"]),
            helper.make_node("Mul", [f"{n}.mf", f"{n}.s"], [f"{n}.ms"]),
            helper.make_node("Add", [f"{n}.b", f"{n}.ms"], [f"{n}.flat_values"]),
            helper.make_node("Reshape", [f"{n}.flat_values", f"{n}.shape"], [n]),
        ]
    return out, nodes


def _indices_for_onnx(n: str, flat: np.ndarray, bits: int, numpy_helper, helper, TensorProto):
    """``flat`` (count,) uint8 indices stored as ``{n}.indices``, packed at ``bits``, and
    the nodes that unpack them into ``{n}.idx`` (count,) int64: (initializers, nodes)."""
    initializers, nodes = _unpacker(n, bits, numpy_helper, helper, TensorProto)
    return [*_stored_indices(n, flat, bits, numpy_helper), *initializers], nodes


def _stored_indices(n: str, flat: np.ndarray, bits: int, numpy_helper) -> list:
    """The initializers ``_unpacker`` reads: ``{n}.indices`` (``flat`` packed at ``bits``)
    and ``{n}.count``."""
    return [numpy_helper.from_array(_packed(flat, bits), f"{n}.indices"),
            numpy_helper.from_array(np.array([flat.size], dtype=np.int64), f"{n}.count")]  # fmt: skip


def _packed(flat: np.ndarray, bits: int) -> np.ndarray:
    """``flat`` (count,) uint8 indices packed as ``_unpacker`` reads them.

    1, 2, 4 or 8 bits: 8 / bits indices per byte, index j at bits [j * bits, ...).
    3, 5, 6 or 7 bits: as in the .h5 file, eight indices in ``bits`` bytes (one
    little-endian word, index j at bits [j * bits, ...))."""
    if bits not in (1, 2, 4, 8):
        return pack_indices(flat, bits)
    per_byte = 8 // bits
    if per_byte == 1:
        return flat
    padded = np.zeros(-(-flat.size // per_byte) * per_byte, np.uint8)
    padded[: flat.size] = flat
    lanes = padded.reshape(-1, per_byte).astype(np.uint16) << (np.arange(per_byte) * bits)
    return lanes.sum(1).astype(np.uint8)


def _unpacker(n: str, bits: int, numpy_helper, helper, TensorProto):
    """The constants and stock-operator nodes that unpack ``{n}.indices`` (``_packed`` at
    ``bits``) into ``{n}.idx``, its first ``{n}.count`` indices as int64:
    (initializers, nodes); ``{n}.indices`` and ``{n}.count`` are the caller's.

    A byte divided by 2^(j * bits), modulo 2^bits, is index j of the byte (1, 2, 4, 8
    bits); at 3, 5, 6 or 7 bits the graph reads each index from the two bytes it lies
    in. (Summing a whole 56-bit word into one int64 with ReduceSum decoded 7-bit
    indices wrongly under onnxruntime; two bytes at a time stay exact in any
    arithmetic.)
    """

    def const(values, name):
        return numpy_helper.from_array(np.asarray(values, dtype=np.int64), f"{n}.{name}")

    nodes = [helper.make_node("Cast", [f"{n}.indices"], [f"{n}.i64"], to=TensorProto.INT64)]
    if bits in (1, 2, 4, 8):
        per_byte = 8 // bits
        initializers = [const([-1, 1], "column"),
                        const(1 << (np.arange(per_byte) * bits), "divisors")]  # fmt: skip
        nodes.append(helper.make_node("Reshape", [f"{n}.i64", f"{n}.column"], [f"{n}.words"]))
    else:
        # Index j of a group starts at bit j * bits: in byte lo = j * bits // 8, at
        # shift j * bits % 8, reaching at most into byte lo + 1. Two bytes make a
        # 16-bit value (exact in any arithmetic); where lo + 1 is past the group, the
        # index fits in byte lo and whatever the clamped second byte adds is above
        # 2^bits, which the modulus removes.
        start = np.arange(8) * bits
        lo = start // 8
        initializers = [const([-1, bits], "word_bytes"), const(lo, "lo"),
                        const(np.minimum(lo + 1, bits - 1), "hi"), const(256, "byte"),
                        const(1 << (start % 8), "divisors")]  # fmt: skip
        nodes += [
            helper.make_node("Reshape", [f"{n}.i64", f"{n}.word_bytes"], [f"{n}.bytes"]),
            helper.make_node("Gather", [f"{n}.bytes", f"{n}.lo"], [f"{n}.low"], axis=1),
            helper.make_node("Gather", [f"{n}.bytes", f"{n}.hi"], [f"{n}.high"], axis=1),
            helper.make_node("Mul", [f"{n}.high", f"{n}.byte"], [f"{n}.high_valued"]),
            helper.make_node("Add", [f"{n}.low", f"{n}.high_valued"], [f"{n}.words"]),
        ]
    initializers += [const(1 << bits, "modulus"), const([-1], "line"), const([0], "zero")]
    nodes += [  # (groups, lanes) -> one line -> the first count values
        helper.make_node("Div", [f"{n}.words", f"{n}.divisors"], [f"{n}.shifted"]),
        helper.make_node("Mod", [f"{n}.shifted", f"{n}.modulus"], [f"{n}.lanes"]),
        helper.make_node("Reshape", [f"{n}.lanes", f"{n}.line"], [f"{n}.all"]),
        helper.make_node("Slice", [f"{n}.all", f"{n}.zero", f"{n}.count"], [f"{n}.idx"]),
    ]
    return initializers, nodes


def _write_torchscript(model: nn.Module, path: Path) -> None:
    example = _example(model, "torchscript")
    try:
        with torch.no_grad(), attention_slow_path():
            traced = torch.jit.trace(model.eval(), example, check_trace=False)
    except Exception as e:  # the tracer raises many types; the model is the user's
        raise QretrainError(f"torchscript export failed: {one_line(e)}; nothing was written") from e
    traced.save(str(path))
    saved = torch.jit.load(str(path), map_location="cpu")
    check_outputs("torchscript export", model, lambda x: saved(x).numpy(), get_arch(model).contract)


def _write_coreml(model: nn.Module, path: Path) -> None:
    """Convert, palettize with the model's own values, check them, save as a folder
    that replaces ``path`` only once complete."""
    palettized = _coreml_model(model, check=True)
    with atomic_folder(path) as tmp:
        palettized.save(str(tmp))


def coreml_package_bytes(model: nn.Module) -> int:
    """The bytes of ``model``'s Core ML package, as ``export`` would write it: the
    conversion saved to a temporary folder and measured (the program's own size is
    known only by making it). The outputs are not checked: nothing is kept."""
    chatter = io.StringIO()  # coremltools' progress bars: a size needs none of them
    with contextlib.redirect_stderr(chatter):
        palettized = _coreml_model(model, check=False)
    logger.debug("coreml conversion: %s", chatter.getvalue()[-2000:])
    with tempfile.TemporaryDirectory(prefix="qretrain-coreml-") as folder:
        package = Path(folder) / "model.mlpackage"
        palettized.save(str(package))
        return sum(f.stat().st_size for f in package.rglob("*") if f.is_file())


def _coreml_model(model: nn.Module, *, check: bool):
    """The palettized ML program of ``model`` (coremltools' MLModel); ``check``: first
    run the program Core ML converts against the model (``export.check``)."""
    try:
        import coremltools as ct
        from coremltools.optimize.coreml import (
            OpPalettizerConfig,
            OptimizationConfig,
            palettize_weights,
        )
    except ImportError:
        raise QretrainError("the coreml export needs coremltools: "
                            "pip install 'qretrain[coreml]'") from None  # fmt: skip
    example = _example(model, "coreml")
    contract = get_arch(model).contract
    # torch.export, not jit.trace: coremltools' TorchScript frontend fails on some
    # graphs (EfficientNet-Lite's static same-padding) that the exported program carries.
    printed = io.StringIO()  # torch.export prints the graph it stopped in when it fails
    try:
        with torch.no_grad(), attention_slow_path(), contextlib.redirect_stderr(printed):
            program = torch.export.export(batchnorm_as_scale_shift(model), (example,))
            program = program.run_decompositions({})
    except Exception as e:  # torch.export raises many types; the model is the user's
        why = "the model"
        if "DataDependent" in type(e).__name__:  # GuardOnDataDependentSymNode and kin
            why = ("a forward that branches on tensor values (a Python `if` on a tensor): "
                   "write the branch with torch.where or torch.cond, or export safetensors")  # fmt: skip
        raise QretrainError(f"coreml export failed: torch.export cannot capture {why} "
                            f"({one_line(e)}); nothing was written") from e  # fmt: skip
    sys.stderr.write(printed.getvalue())  # its warnings, when it succeeded
    if check:
        runnable = program.module()  # what Core ML converts: batch size fixed to the example's
        check_outputs("coreml export", model, lambda x: runnable(x).numpy(), contract,
                      batched=False)  # fmt: skip
    name = next(s.arg.name for s in program.graph_signature.input_specs
                if s.kind == torch.export.graph_signature.InputKind.USER_INPUT)  # fmt: skip
    if len(set(contract.std)) == 1:
        std = contract.std[0]
        layout = ct.colorlayout.RGB if contract.channels == 3 else ct.colorlayout.GRAYSCALE
        bias = [-m / std for m in contract.mean]
        inputs = [ct.ImageType(name=name, shape=example.shape, scale=1 / (255 * std),
                               bias=bias if contract.channels == 3 else bias[0],
                               color_layout=layout)]  # fmt: skip
    else:
        inputs = [ct.TensorType(name=name, shape=example.shape)]
    # Folding batch norm or a scale into a convolution's weights would turn its codebook
    # into other values: those passes are off, so the tables hold the file's values.
    passes = ct.PassPipeline.DEFAULT
    passes.remove_passes(["common::fuse_conv_batchnorm", "common::fuse_conv_scale"])
    try:
        converted = ct.convert(program, inputs=inputs, convert_to="mlprogram",
                               compute_precision=ct.precision.FLOAT32, pass_pipeline=passes,
                               minimum_deployment_target=ct.target.iOS18)  # fmt: skip
        # Tables for the weights of convolutions, linear layers and matmuls; the batch
        # norms' scales and shifts (mul, add) stay float32, whatever values they hold.
        # A per-channel codebook becomes one table per output channel (dimension 0 of
        # the weight, as in the file; group size 1 of coremltools' grouped channels).
        # A codebook of pairs becomes one table of 2-vectors along dimension 0.
        per_channel = OpPalettizerConfig(mode="unique", granularity="per_grouped_channel",
                                         group_size=1, channel_axis=0, weight_threshold=1)  # fmt: skip
        pairs = OpPalettizerConfig(mode="unique", cluster_dim=2, weight_threshold=1)
        program = converted._mil_program
        config = OptimizationConfig(
            global_config=OpPalettizerConfig(mode="unique", weight_threshold=1),
            op_type_configs={"mul": None, "add": None},
            op_name_configs={
                **dict.fromkeys(_constants_of(program, model, Granularity.CHANNEL), per_channel),
                **dict.fromkeys(_constants_of(program, model, Granularity.PAIRS), pairs),
            },
        )
        palettized = palettize_weights(converted, config)
    except Exception as e:  # coremltools raises many types for what it cannot convert
        raise QretrainError(f"coreml export failed: coremltools cannot convert the model "
                            f"({one_line(e)}); nothing was written") from e  # fmt: skip
    tables = coreml_tables(palettized._mil_program)
    kept = [n for n, c in clusters_of(model).items() if not _has_table(c, tables)]
    if kept:
        logger.warning("coreml export: %d clustered tensor(s) are not lookup tables and stay "
                       "float32 (%s)", len(kept), ", ".join(kept[:3]))  # fmt: skip
    return palettized


def _constants_of(program, model: nn.Module, granularity: Granularity) -> list[str]:
    """Names of the program's constants that hold a clustered weight of ``granularity``
    (per channel, or pairs): found by value (the converter names constants its own
    way), among constants of such a weight's shape."""
    wanted: dict[tuple[int, ...], list[np.ndarray]] = {}
    for c in clusters_of(model).values():
        if c.granularity is granularity:
            wanted.setdefault(tuple(c.shape), []).append(c.decode().numpy())
    names = []
    for function in program.functions.values() if wanted else ():
        for op in function.operations:
            value = op.outputs[0].val if op.op_type == "const" else None
            if isinstance(value, np.ndarray) and value.shape in wanted \
                    and any(np.array_equal(value, w) for w in wanted[value.shape]):  # fmt: skip
                names.append(op.name)
    return names


class ScaleShift(nn.Module):
    """A folded batch norm (``storage.fold``) as ``x * scale + shift`` per channel
    (dimension 1): two vectors where Core ML's ``batch_norm`` keeps four."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


def batchnorm_as_scale_shift(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose batch norms are folded as the packed file
    folds them (``storage.fold.folded_state``; none owning a clustered tensor), each
    then a ``ScaleShift`` of its folded weight and bias: the same outputs up to float
    rounding, and a model in memory converts to the package its saved file does. The
    convolutions keep their weights, so every table stays the file's."""
    copy_ = copy.deepcopy(model).eval()
    clustered = set(clusters_of(model))
    copy_.load_state_dict(folded_state(copy_, copy_.state_dict(), clustered))
    for name, module in list(copy_.named_modules()):
        if not is_folded(module) or any(t.startswith(f"{name}.") for t in clustered):
            continue  # not foldable, or its own tables must stay as they are
        parent, _, attribute = name.rpartition(".")
        setattr(copy_.get_submodule(parent) if parent else copy_, attribute,
                ScaleShift(module.weight, module.bias))  # fmt: skip
    return copy_


def coreml_tables(program) -> list[tuple[np.ndarray, np.ndarray]]:
    """(values (G, L), indices (the weight's shape)) of every lookup table in a Core ML
    program (in memory, or read back from a saved package with coremltools'
    ``milproto`` loader): G = 1 for a table of the whole tensor, else one row per
    channel of dimension 0, which row g of the indices reads (``read_codebook_tensor``).
    A table of pairs: values (1, L, 2), indices the weight's shape with dimension 0
    halved."""
    tables = []
    for function in program.functions.values():
        for op in function.operations:
            if op.op_type == "constexpr_lut_to_dense":
                lut = np.asarray(op.inputs["lut"].val)  # (G, 1, ..., L, vector size)
                values = lut.reshape(lut.shape[0], -1, lut.shape[-1])
                tables.append((values if lut.shape[-1] > 1 else values[..., 0],
                               np.asarray(op.inputs["indices"].val)))  # fmt: skip
    return tables


def _has_table(c, tables) -> bool:
    """Whether some table decodes to exactly ``c``'s weights."""
    decoded = c.decode().numpy()
    return any(values.ndim == c.codebook.dim() and indices.shape == tuple(c.indices.shape)
               and np.array_equal(read_codebook_tensor(values, indices), decoded)
               for values, indices in tables)  # fmt: skip


def read_codebook_tensor(codebook: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Decode an exported codebook and its indices: row g of ``indices`` (the tensor's
    shape) reads row g of ``codebook`` (G, K); for a codebook of pairs (1, K, 2),
    index [i, ...] gives the tensor's [2i, ...] and [2i + 1, ...]. For tests and
    readers of the safetensors export."""
    if codebook.ndim == 3:
        pairs = codebook[0][indices.astype(np.int64)]  # (O/2, ..., 2)
        return np.moveaxis(pairs, -1, 1).reshape(2 * indices.shape[0], *indices.shape[1:])
    rows = indices.reshape(codebook.shape[0], -1).astype(np.int64)
    return np.take_along_axis(codebook, rows, 1).reshape(indices.shape)
