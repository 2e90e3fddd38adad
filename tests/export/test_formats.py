"""Exports: safetensors keeps codebooks and indices exactly; torchscript runs."""

import json

import numpy as np
import pytest
import torch

import qretrain
from qretrain.cli.main import main
from qretrain.export.formats import read_codebook_tensor

PLAN = {"rules": [{"type": "Conv2d", "k": 16}, {"type": "Linear", "k": 4, "granularity": "channel"}]}


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
    assert main(["export", str(tmp_path / "m.h5"), "--format", "onnx", "-o", "x.onnx"]) == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="format must be one of safetensors, torchscript"):
        qretrain.export(tiny_vgg, tmp_path / "x", "coreml")
