"""docs/FORMAT.md's plain-h5py reader decodes a real file exactly."""

import re
from pathlib import Path

import numpy as np

import qretrain

DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"


def doc_reader():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # our own doc, not a user's file
    return namespace["read_qretrain"], code


def test_the_documented_reader_decodes_every_tensor(tmp_path, tiny_resnet):
    read_qretrain, code = doc_reader()
    assert len([line for line in code.splitlines() if line.strip()]) <= 36
    qretrain.cluster_(tiny_resnet, {"rules": [
        {"type": "Conv2d", "k": 16}, {"type": "Linear", "k": 5, "granularity": "channel"},
        {"kinds": ["bn_running_mean"], "k": 1},
        {"layers": "2-3", "k": 8, "granularity": "pairs"}]}, progress=False)  # fmt: skip
    qretrain.save(tiny_resnet, tmp_path / "m.h5")
    tensors = read_qretrain(tmp_path / "m.h5")
    state = qretrain.load(tmp_path / "m.h5", trust_code=True).state_dict()
    assert set(tensors) == set(state)
    for name, value in state.items():
        assert np.array_equal(tensors[name], value.numpy()), name


def test_codebooks_is_the_public_read_only_view(tmp_path, tiny_vgg):
    import pytest

    qretrain.cluster_(tiny_vgg, {"rules": [{"type": "Linear", "k": 4}]}, progress=False)
    qretrain.save(tiny_vgg, tmp_path / "m.h5")
    books = qretrain.codebooks(qretrain.load(tmp_path / "m.h5"))
    assert set(books) == {"classifier.1.weight", "classifier.4.weight", "classifier.7.weight"}
    assert all(int(c.sizes.max()) <= 4 for c in books.values())
    with pytest.raises(TypeError):
        books["x"] = None  # a view, not the model's own dict
