"""A model file holds its manifest and data and nothing else (docs/FORMAT.md)."""

import h5py
import numpy as np
import pytest

import qretrain
from qretrain.cli.main import main
from qretrain.storage.seal import write_seal


@pytest.mark.parametrize("where", ["/", "manifest", "data"])
def test_hdf5_attributes_are_refused(tmp_path, tiny_vgg, capsys, where):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    with h5py.File(path, "r+") as f:
        f[where].attrs["note"] = "another story"
    write_seal(path)  # as a stranger crafting a consistent file would
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "carries HDF5 attributes ('note'); a qretrain file holds " \
        "only 'manifest' and 'data'" in err, err  # fmt: skip


def test_a_manifest_naming_a_key_twice_is_refused(tmp_path, tiny_vgg, capsys):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    with h5py.File(path, "r") as f:
        text = f["manifest"][()].tobytes().decode()
    # json.loads keeps the last value; a reader keeping the first would see another file.
    text = text.replace('"layout": "packed"', '"layout": "paper", "layout": "packed"', 1)
    with h5py.File(path, "r+") as f:
        del f["manifest"]
        f.create_dataset("manifest", data=np.frombuffer(text.encode(), np.uint8))
    write_seal(path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "key 'layout' appears twice in one object" in err, err
