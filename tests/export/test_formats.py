"""Exports: safetensors keeps codebooks and indices exactly; torchscript runs."""

import copy
import importlib.util
import json

import numpy as np
import pytest
import torch

import qretrain
from qretrain.cli.main import main
from qretrain.export.formats import read_codebook_tensor

PLAN = {
    "rules": [{"type": "Conv2d", "k": 16}, {"type": "Linear", "k": 4, "granularity": "channel"}]
}


def test_safetensors_holds_every_codebook_and_index_exactly(tmp_path, tiny_vgg):
    safetensors = pytest.importorskip("safetensors.numpy", reason="pip install safetensors")
    qretrain.cluster_(tiny_vgg, PLAN, progress=False)
    result = qretrain.export(tiny_vgg, tmp_path / "m.safetensors", "safetensors")
    tensors = safetensors.load_file(str(tmp_path / "m.safetensors"))  # the reference reader
    books = qretrain.codebooks(tiny_vgg)
    for name, value in tiny_vgg.state_dict().items():
        if name in books:
            c = books[name]
            assert np.array_equal(tensors[f"{name}.codebook"], c.codebook.numpy())
            assert np.array_equal(tensors[f"{name}.indices"], c.indices.numpy())
            decoded = read_codebook_tensor(tensors[f"{name}.codebook"], tensors[f"{name}.indices"])
            assert np.array_equal(decoded, value.numpy()), name
        else:
            assert np.array_equal(tensors[name], value.numpy()), name
    with open(tmp_path / "m.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = json.loads(header["__metadata__"]["qretrain"])
    assert meta["arch"]["spec"] == "qretrain.zoo:vgg_small" and len(meta["clustered"]) == 7
    assert result.file_bytes < result.float32_bytes  # uint8 indices, not float32 values


def test_torchscript_runs_like_the_model(tmp_path, tiny_vgg, images):
    qretrain.cluster_(tiny_vgg, PLAN, progress=False)
    result = qretrain.export(tiny_vgg, tmp_path / "m.pt", "torchscript")
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    assert torch.equal(loaded(images), tiny_vgg(images))
    assert "float32-sized" in result.summary()


def test_export_cli_and_bad_format(tmp_path, tiny_vgg, capsys):
    qretrain.save(tiny_vgg, tmp_path / "m.h5")
    assert main(["export", str(tmp_path / "m.h5"), "--format", "safetensors", "-o",
                 str(tmp_path / "m.safetensors")]) == 0  # fmt: skip
    assert "safetensors" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "m.h5"), "--format", "tflite", "-o",
                 str(tmp_path / "x.tflite")]) == 2  # fmt: skip
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="format must be one of safetensors, onnx, torchscript, "
                                         "coreml; got 'tflite'"):  # fmt: skip
        qretrain.export(tiny_vgg, tmp_path / "x", "tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5", "m.safetensors"]


def test_onnx_keeps_the_codebooks_and_runs_in_onnxruntime(tmp_path, tiny_resnet):
    onnx = pytest.importorskip("onnx", reason="pip install 'qretrain[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime")
    from onnx import numpy_helper

    qretrain.cluster_(
        tiny_resnet,
        {
            "rules": [
                {"type": "Conv2d", "k": 16},
                {"type": "Linear", "k": 9, "granularity": "channel"},
            ]
        },
        progress=False,
    )  # fmt: skip (k=9: 4 bits, like k=16)
    result = qretrain.export(tiny_resnet, tmp_path / "m.onnx", "onnx")
    graph = onnx.load(str(tmp_path / "m.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    for name, c in qretrain.codebooks(tiny_resnet).items():
        assert name not in inits  # rebuilt in the graph, not stored as float32
        assert np.array_equal(inits[f"{name}.codebook"], c.codebook.numpy().reshape(-1))
        packed = inits[f"{name}.indices"]  # 4-bit indices: two per byte, low nibble first
        assert packed.size == -(-c.indices.numel() // 2)
        unpacked = np.stack([packed & 15, packed >> 4], 1).reshape(-1)[: c.indices.numel()]
        assert np.array_equal(unpacked.reshape(c.indices.shape), c.indices.numpy())
    # Batch norm as one scale and one shift per channel, as the .h5 stores it.
    assert not any(n.op_type == "BatchNormalization" for n in graph.graph.node)
    # Names kept short and small constants shared: the graph's own bytes stay small.
    small = [(tuple(i.dims), i.raw_data) for i in graph.graph.initializer if not i.name.endswith(
        (".codebook", ".indices")) and len(i.raw_data) <= 64]  # fmt: skip
    assert len(small) == len(set(small)) > 0
    nodes = graph.graph.node
    assert all(not n.name for n in nodes) and max(len(o) for n in nodes for o in n.output) <= 8
    # One node per clustered weight, calling the model's own function for its bit width
    # (both tables here index with 4 bits); the exporter's constants are initializers.
    decoders = [n for n in nodes if n.domain == "qretrain"]
    assert [n.op_type for n in decoders] == ["Decode4"] * len(qretrain.codebooks(tiny_resnet))
    assert [(f.domain, f.name) for f in graph.functions] == [("qretrain", "Decode4")]
    assert not any(n.op_type == "Constant" for n in nodes)
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    out = session.run(None, {"input": x.numpy()})[0]  # a batch of 5: the batch axis is free
    with torch.no_grad():
        assert np.allclose(out, tiny_resnet(x).numpy(), atol=1e-5)
    assert result.file_bytes == (tmp_path / "m.onnx").stat().st_size


def test_onnx_packs_3_5_6_7_bit_indices_exactly_and_runs(tmp_path, tiny_resnet):
    """Eight indices in `bits` bytes, as in the .h5 file; the graph unpacks them."""
    onnx = pytest.importorskip("onnx", reason="pip install 'qretrain[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime")
    from onnx import numpy_helper

    from qretrain.storage import unpack_indices

    qretrain.cluster_(tiny_resnet, {"rules": [
        {"type": "Conv2d", "k": 32}, {"layers": "2", "k": 100},
        {"type": "Linear", "k": 6, "granularity": "channel"}]}, progress=False)  # fmt: skip
    qretrain.export(tiny_resnet, tmp_path / "m.onnx", "onnx")
    graph = onnx.load(str(tmp_path / "m.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    seen = set()
    for name, c in qretrain.codebooks(tiny_resnet).items():
        packed, n = inits[f"{name}.indices"], c.indices.numel()
        assert packed.size == -(-n // 8) * c.bits  # no padding to a power of two
        assert np.array_equal(unpack_indices(packed, c.bits, n), c.indices.numpy().reshape(-1))
        seen.add(c.bits)
    assert {3, 5, 7} <= seen
    assert sorted(f.name for f in graph.functions) == [f"Decode{b}" for b in sorted(seen)]
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(out, tiny_resnet(x).numpy(), atol=1e-5)


def test_codebooks_of_pairs_export_exactly_to_safetensors_onnx_and_core_ml(tmp_path, tiny_resnet):
    """One codebook of pairs of output channels: safetensors holds it as stored, ONNX
    rebuilds it with its own function, Core ML as one table of 2-vectors."""
    onnx = pytest.importorskip("onnx", reason="pip install 'qretrain[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime")
    pytest.importorskip("safetensors", reason="pip install safetensors")
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    from qretrain.export.formats import coreml_tables
    from qretrain.storage import unpack_indices

    qretrain.cluster_(tiny_resnet, {"granularity": "pairs", "rules": [
        {"type": "Conv2d", "k": 16}, {"type": "Linear", "k": 64}]}, progress=False)  # fmt: skip
    books = qretrain.codebooks(tiny_resnet)
    assert {c.granularity.value for c in books.values()} == {"pairs"}
    qretrain.export(tiny_resnet, tmp_path / "m.safetensors", "safetensors")
    tensors = load_file(str(tmp_path / "m.safetensors"))
    for name, c in books.items():
        assert tensors[f"{name}.codebook"].shape == (1, c.codebook.shape[1], 2)
        decoded = read_codebook_tensor(tensors[f"{name}.codebook"], tensors[f"{name}.indices"])
        assert np.array_equal(decoded, tiny_resnet.state_dict()[name].numpy()), name
    qretrain.export(tiny_resnet, tmp_path / "m.onnx", "onnx")
    graph = onnx.load(str(tmp_path / "m.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    for name, c in books.items():
        assert np.array_equal(inits[f"{name}.codebook"], c.codebook[0].numpy())
        n, packed = c.indices.numel(), inits[f"{name}.indices"]  # one index per pair
        unpacked = (
            np.stack([packed & 15, packed >> 4], 1).reshape(-1)[:n]
            if c.bits == 4
            else unpack_indices(packed, c.bits, n)
        )  # 4 bits: two a byte, as above
        assert np.array_equal(unpacked, c.indices.numpy().reshape(-1))
    assert sorted(f.name for f in graph.functions) == ["DecodePairs4", "DecodePairs6"]
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(out, tiny_resnet(x).numpy(), atol=1e-5)
    if importlib.util.find_spec("coremltools") is None:
        return
    from qretrain.export.formats import _coreml_model

    tables = coreml_tables(_coreml_model(tiny_resnet, check=True)._mil_program)
    for name, c in books.items():  # the table's pairs are the codebook's, in its own order
        decoded = c.decode().numpy()
        (values, indices), = [(v, i) for v, i in tables
                              if v.ndim == 3 and i.shape == c.indices.shape
                              and np.array_equal(read_codebook_tensor(v, i), decoded)]  # fmt: skip
        width = c.codebook.shape[1]
        assert set(map(tuple, values[0, :width].tolist())) == set(
            map(tuple, c.codebook[0].tolist())
        )


def test_coreml_tables_are_the_codebooks_exactly_when_read_back(tmp_path, tiny_resnet):
    """Core ML cannot run on Linux: read the saved package's constants back instead."""
    ct = pytest.importorskip("coremltools", reason="pip install 'qretrain[coreml]'")
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    from qretrain.export.formats import coreml_tables

    qretrain.cluster_(tiny_resnet, {"rules": [{"type": "Conv2d", "k": 16},
                                              {"type": "Linear", "k": 5}]}, progress=False)  # fmt: skip
    result = qretrain.export(tiny_resnet, tmp_path / "m.mlpackage", "coreml")
    assert (tmp_path / "m.mlpackage").is_dir() and result.file_bytes > 0
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]  # no temporary left
    package = ct.models.MLModel(str(tmp_path / "m.mlpackage"), skip_model_load=True)
    spec = package.get_spec()
    program = milproto_load(model_spec=spec, specification_version=spec.specificationVersion,
                            file_weights_dir=package.weights_dir)  # fmt: skip
    tables = coreml_tables(program)
    books = qretrain.codebooks(tiny_resnet)
    for name, c in books.items():
        width = c.codebook.shape[1]
        matches = [(v, i) for v, i in tables if i.shape == tuple(c.indices.shape)
                   and np.array_equal(i.astype(np.uint8), c.indices.numpy())]  # fmt: skip
        assert matches, name
        values, _ = matches[0]
        assert np.array_equal(values[0, :width], c.codebook.numpy().reshape(-1)), name
    image = spec.description.input[0].type.imageType
    assert image.width == 28 and image.height == 28  # the contract became the image input


def test_a_coreml_export_not_named_mlpackage_is_refused_before_converting(tmp_path, tiny_resnet):
    with pytest.raises(qretrain.QretrainError, match=r"a coreml export is an \.mlpackage folder: name it "
                       r"so, e\.g\. 'm\.mlpackage'; got '.*m\.out'"):  # fmt: skip
        qretrain.export(tiny_resnet, tmp_path / "m.out", "coreml")
    assert list(tmp_path.iterdir()) == []


def test_coreml_per_channel_codebooks_are_one_table_per_channel(tmp_path, tiny_resnet, caplog):
    """Each output channel's table holds exactly its codebook row: nothing stays float32,
    though a tensor's rows hold more than 256 values in all (one table could not)."""
    ct = pytest.importorskip("coremltools", reason="pip install 'qretrain[coreml]'")
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    from qretrain.export.formats import coreml_tables, read_codebook_tensor

    qretrain.cluster_(tiny_resnet, {"rules": [{"type": "Conv2d", "k": 32, "granularity": "channel"},
                                              {"type": "Linear", "k": 5}]}, progress=False)  # fmt: skip
    books = qretrain.codebooks(tiny_resnet)
    assert max(c.sizes.sum().item() for c in books.values()) > 256
    with caplog.at_level("WARNING", logger="qretrain"):
        qretrain.export(tiny_resnet, tmp_path / "m.mlpackage", "coreml")
    assert "stay float32" not in caplog.text
    package = ct.models.MLModel(str(tmp_path / "m.mlpackage"), skip_model_load=True)
    spec = package.get_spec()
    program = milproto_load(model_spec=spec, specification_version=spec.specificationVersion,
                            file_weights_dir=package.weights_dir)  # fmt: skip
    tables = coreml_tables(program)
    for name, c in books.items():
        rows = c.codebook.shape[0]
        (values, indices), = [(v, i) for v, i in tables if i.shape == tuple(c.shape)
                              and np.array_equal(read_codebook_tensor(v, i), c.decode().numpy())]  # fmt: skip
        assert values.shape[0] == rows, name  # one table per channel, or one in all
        for g in range(rows):
            used = int(c.sizes[g])
            assert np.array_equal(values[g, :used], c.codebook[g, :used].numpy()), (name, g)


def test_onnx_stores_large_float_tensors_split_and_rebuilds_them_bit_for_bit(tmp_path):
    """Sign-exponent index + 23-bit mantissa (export.formats._split_floats): exact for
    normal values, subnormals and both zeros; non-finite or many-exponent tensors stay."""
    onnx = pytest.importorskip("onnx", reason="pip install 'qretrain[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from qretrain.export.formats import SPLIT_MIN, _split_floats

    assert SPLIT_MIN <= 13 * 320
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal(13 * 320) * 0.05).astype(np.float32)
    weights[:6] = [0.0, -0.0, 1e-40, -3e-45, np.float32(2.0**-126), -1.5]  # zeros, subnormals
    spread = np.ldexp(1.0, rng.integers(-126, 127, SPLIT_MIN)).astype(np.float32)
    spread[::2] *= -1  # 506 (sign, exponent) pairs: more than an 8-bit index holds
    with_inf = weights.copy()
    with_inf[7] = np.inf
    inits = [
        numpy_helper.from_array(weights.reshape(13, -1), "w"),
        numpy_helper.from_array(spread, "spread"),
        numpy_helper.from_array(with_inf, "inf"),
    ]
    kept, nodes = _split_floats(inits, numpy_helper, helper, TensorProto)
    names = {i.name for i in kept}
    assert "w" not in names and {"spread", "inf"} <= names
    stored = sum(len(i.raw_data) for i in kept if i.name.startswith("w."))
    assert stored < 0.93 * weights.nbytes  # 29 of 32 bits, plus two small tables
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info(
        "w", TensorProto.FLOAT, [13, 320])], kept)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    (rebuilt,) = ort.InferenceSession(model.SerializeToString()).run(None, {})
    assert rebuilt.shape == (13, len(weights) // 13)
    assert np.array_equal(rebuilt.reshape(-1).view(np.uint32), weights.view(np.uint32))


def test_onnx_export_of_float_layers_runs_like_the_model(tmp_path, tiny_resnet, monkeypatch):
    onnx = pytest.importorskip("onnx", reason="pip install 'qretrain[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime")
    from qretrain.export import formats

    monkeypatch.setattr(formats, "SPLIT_MIN", 64)  # the tiny model's tensors are small

    qretrain.cluster_(tiny_resnet, {"rules": [{"type": "Linear", "k": 4}]}, progress=False)
    qretrain.export(tiny_resnet, tmp_path / "m.onnx", "onnx")
    names = {i.name for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    split = {n[: -len(".m_low")] for n in names if n.endswith(".m_low")}
    assert split and not split & names  # large float convolutions stored split
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(out, tiny_resnet(x).numpy(), atol=1e-5)


UNTRACEABLE = '''
import torch
from torch import nn
from qretrain import InputContract


class Branching(nn.Module):
    """Picks a convolution by the image's brightness: no exporter can record that."""

    def __init__(self):
        super().__init__()
        self.bright, self.dark = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        y = self.bright(x) if x.mean() > 0 else self.dark(x)
        return self.fc(y.mean((2, 3)))


def build():
    torch.manual_seed(0)
    return Branching()


build.contract = InputContract(3, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
'''


@pytest.mark.parametrize("fmt,suffix", [("onnx", "onnx"), ("torchscript", "pt")])
def test_an_export_that_fixed_a_branch_is_refused_and_nothing_written(tmp_path, monkeypatch,
                                                                      capsys, fmt, suffix):  # fmt: skip
    pytest.importorskip("onnxruntime", reason="pip install 'qretrain[onnx]'")
    (tmp_path / "branching.py").write_text(UNTRACEABLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    model = qretrain.build_model("branching:build")
    with pytest.raises(qretrain.QretrainError, match=rf"{fmt} export refused: in [1-8] of 9 runs "
                                                     "on random images .* branches on tensor values"):  # fmt: skip
        qretrain.export(model, out / f"m.{suffix}", fmt)
    assert main(["export", "branching:build", "--format", fmt, "-o", str(out / f"m.{suffix}")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "refused" in line]) == 1
    assert list(out.iterdir()) == []  # no file, no temporary


def test_coreml_conversion_errors_are_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("coremltools", reason="pip install 'qretrain[coreml]'")
    (tmp_path / "branching.py").write_text(UNTRACEABLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["export", "branching:build", "--format", "coreml", "-o",
                 str(out / "m.mlpackage")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert (
        "coreml export failed: torch.export cannot capture a forward that branches on "
        "tensor values (a Python `if` on a tensor): write the branch with torch.where" in err
    )
    assert len([line for line in err.splitlines() if "export failed" in line]) == 1
    assert "Traceback" not in err and "def forward" not in err  # not torch's graph dump
    assert list(out.iterdir()) == []


def test_the_probe_images_lie_inside_the_contract_and_vary_in_brightness():
    from qretrain.export.check import probe_inputs

    contract = qretrain.InputContract(3, 8, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    images = probe_inputs(contract)
    mean = torch.tensor(contract.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(contract.std).reshape(1, -1, 1, 1)
    pixels = images * std + mean
    assert images.shape == (8, 3, 8, 8) and torch.equal(images, probe_inputs(contract))
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert torch.allclose(pixels[0], torch.zeros(3, 8, 8), atol=1e-6)  # black
    assert torch.allclose(pixels[1], torch.ones(3, 8, 8), atol=1e-6)  # white
    assert pixels[2:].mean((1, 2, 3)).std() > 0.1  # brightness differs between images


def test_batch_norm_goes_to_core_ml_folded_as_the_file_folds_it(tmp_path, tiny_resnet,
                                                                 monkeypatch):  # fmt: skip
    """A scale and a shift per channel, from the file's own fold: the same outputs, a
    model in memory converts to the package its saved file exports (the planner sizes
    the one, users export the other), and a batch norm whose own tensors are clustered
    is kept as it is (its tables stay exact)."""
    pytest.importorskip("coremltools", reason="pip install 'qretrain[coreml]'")
    from qretrain.export import formats
    from qretrain.export.formats import ScaleShift, batchnorm_as_scale_shift, coreml_package_bytes

    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    folded = batchnorm_as_scale_shift(tiny_resnet)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), tiny_resnet(x), rtol=1e-5, atol=1e-5)
    qretrain.cluster_(tiny_resnet, {"rules": [{"type": "Conv2d", "k": 16},
                                              {"name": "stem.1", "k": 4, "kinds": ["bn_weight"]}]},
                      progress=False)  # fmt: skip
    kept = batchnorm_as_scale_shift(tiny_resnet)
    assert isinstance(kept.stem[1], torch.nn.BatchNorm2d) and isinstance(kept.layer1[0].bn1,
                                                                         ScaleShift)  # fmt: skip
    in_memory = coreml_package_bytes(tiny_resnet)
    qretrain.save(tiny_resnet, tmp_path / "m.h5")
    from_file = qretrain.export(
        qretrain.load(tmp_path / "m.h5"), tmp_path / "m.mlpackage", "coreml"
    )
    assert from_file.file_bytes == in_memory
    # Batch norm's four vectors, as before: the model in memory made a larger package.
    monkeypatch.setattr(formats, "batchnorm_as_scale_shift", lambda m: copy.deepcopy(m).eval())
    assert coreml_package_bytes(tiny_resnet) > in_memory
