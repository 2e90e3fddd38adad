import os

import h5py
import numpy as np
import pytest
import torch

import qretrain
from qretrain.storage import QretrainFileError
from qretrain.storage import h5 as h5_module
from qretrain.storage.seal import write_seal as reseal
from qretrain.testing.files import edit_manifest, manifest_of, tensor_entry

PLAN = {
    "rules": [
        {"type": "Conv2d", "k": 16},
        {"type": "Linear", "k": 5, "granularity": "channel"},
        {"kinds": ["bias"], "k": 1},
        {"name": "fc", "kinds": ["weight"], "k": None},
    ]
}
RESNET_PLAN = {"rules": [{"layers": "2-12", "k": 32}, {"kinds": ["bn_running_mean"], "k": 4}]}


@pytest.mark.parametrize("layout", ["packed", "paper"])
@pytest.mark.parametrize("which", ["vgg", "resnet"])
def test_round_trip_outputs_are_exactly_equal(tmp_path, layout, which, tiny_vgg, tiny_resnet,
                                              images):  # fmt: skip
    model = tiny_vgg if which == "vgg" else tiny_resnet
    plan = {"rules": PLAN["rules"][:3]} if which == "vgg" else RESNET_PLAN
    qretrain.cluster_(model, plan)
    expected = model(images)
    path = tmp_path / "m.h5"
    result = qretrain.save(model, path, layout=layout)
    assert result.file_bytes == path.stat().st_size
    loaded = qretrain.load(path)
    assert not loaded.training
    assert torch.equal(loaded(images), expected)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    original, restored = qretrain.cluster.clusters_of(model), qretrain.cluster.clusters_of(loaded)
    assert set(restored) == set(original)
    for name, c in original.items():
        assert torch.equal(restored[name].decode(), c.decode())
        assert restored[name].k == c.k and restored[name].granularity == c.granularity
    # A loaded model saves again to the same tensors.
    qretrain.save(loaded, tmp_path / "again.h5", layout=layout)
    assert torch.equal(qretrain.load(tmp_path / "again.h5")(images), expected)


def test_file_records_arch_plan_version_and_checksums(tmp_path, tiny_vgg):
    qretrain.cluster_(tiny_vgg, {"rules": PLAN["rules"][:3]})
    qretrain.save(tiny_vgg, tmp_path / "m.h5")
    doc = manifest_of(tmp_path / "m.h5")
    assert doc["format"] == "qretrain" and doc["format_version"] == 2
    assert doc["arch"]["spec"] == "qretrain.zoo:vgg_small"
    assert doc["plans"][0]["rules"][0]["k"] == 16
    conv = tensor_entry(doc, "features.0.weight")
    assert conv["encoding"] == "clustered" and conv["cluster"]["bits"] == 4
    assert len(conv["sha256"]) == 64
    with h5py.File(tmp_path / "m.h5") as f:
        indices = f["tensors/features.0.weight/indices"]
        assert indices.compression == "gzip" and not indices.shuffle
        assert not f.attrs and not indices.attrs  # all metadata is in the manifest


def test_packed_sizes_within_one_percent_of_the_bound(tmp_path):
    """n * ceil(log2 k) / 8 bytes of indices plus the codebook plus 1 KiB, within 1%."""
    u = torch.rand(1000, 1000, generator=torch.Generator().manual_seed(0)) - 0.5
    laplacian = -torch.sign(u) * torch.log1p(-2 * u.abs())
    for k in (2, 16, 32, 200, 256):
        model = qretrain.build_model("torch.nn:Linear", in_features=1000, out_features=1000,
                                     bias=False)  # fmt: skip
        with torch.no_grad():
            model.weight.copy_(laplacian)
        report = qretrain.cluster_(model, {"rules": [{"type": "Linear", "k": k}]})
        saved = qretrain.save(model, tmp_path / f"k{k}.h5")
        c = qretrain.cluster.clusters_of(model)["weight"]
        bound = 1_000_000 * c.bits / 8 + c.codebook.numel() * 4 + 1024
        assert saved.tensor_bytes["weight"] <= 1.01 * bound
        assert report.records[0].stored_bytes <= bound
        loaded = qretrain.load(tmp_path / f"k{k}.h5", trust_code=True)
        assert torch.equal(loaded.weight, model.weight)


def test_truncated_file_is_refused(tmp_path, tiny_vgg):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(QretrainFileError, match=r"cut.h5' is \d+ bytes long but was written with"):
        qretrain.load(tmp_path / "cut.h5")


def test_corrupted_values_fail_the_checksum(tmp_path, tiny_vgg):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    with h5py.File(path, "r+") as f:
        f["tensors/classifier.1.weight"][0, 0] += 1.0
    with pytest.raises(QretrainFileError, match="fails its SHA-256 seal"):
        qretrain.load(path)
    reseal(path)  # a stranger's consistent file: the per-tensor checksum still tells
    with pytest.raises(QretrainFileError, match="'classifier.1.weight' fails its checksum"):
        qretrain.load(path)


def test_corrupted_bytes_are_refused(tmp_path, tiny_vgg):
    qretrain.cluster_(tiny_vgg, {"rules": PLAN["rules"][:3]})
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    with h5py.File(path) as f:
        info = f["tensors/classifier.1.weight/indices"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    for i in range(info.byte_offset + 4, info.byte_offset + info.size - 4):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(QretrainFileError, match="fails its SHA-256 seal"):
        qretrain.load(path)
    reseal(path)
    with pytest.raises(QretrainFileError, match="(fails its checksum|truncated or corrupted)"):
        qretrain.load(path)


def test_unknown_version_and_foreign_files(tmp_path, tiny_vgg):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    edit_manifest(path, lambda doc: doc.update(format_version=3))
    with pytest.raises(QretrainFileError, match="format version 3; this qretrain reads version 2"):
        qretrain.load(path)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(QretrainFileError, match="HDF5 file without a qretrain seal"):
        qretrain.load(tmp_path / "other.h5")
    with h5py.File(tmp_path / "other.h5", "w", userblock_size=512) as f:
        f["x"] = np.zeros(3)
    reseal(tmp_path / "other.h5")
    with pytest.raises(QretrainFileError, match="HDF5 file but not a qretrain model file"):
        qretrain.load(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(QretrainFileError, match="not a qretrain model file"):
        qretrain.load(tmp_path / "text.h5")
    with pytest.raises(FileNotFoundError):
        qretrain.load(tmp_path / "missing.h5")


def test_tensors_that_do_not_fit_the_architecture(tmp_path, tiny_vgg):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    edit_manifest(path, lambda doc: doc["arch"]["kwargs"].update(width=8))
    with pytest.raises(QretrainFileError, match="does not fit the architecture: shape: features"):
        qretrain.load(path)


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path, tiny_vgg, monkeypatch):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    old = path.read_bytes()
    qretrain.cluster_(tiny_vgg, {"rules": PLAN["rules"][:3]})

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5_module, "_write_packed", explode)
    with pytest.raises(OSError, match="disk full"):
        qretrain.save(tiny_vgg, path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.h5"]


def test_tensor_changed_after_clustering_is_not_saved(tmp_path, tiny_vgg):
    qretrain.cluster_(tiny_vgg, {"rules": PLAN["rules"][:3]})
    with torch.no_grad():
        tiny_vgg.features[0].weight.add_(0.001)
    with pytest.raises(ValueError, match="features.0.weight no longer holds its codebook"):
        qretrain.save(tiny_vgg, tmp_path / "m.h5")
    assert not any(tmp_path.iterdir())


def test_model_without_a_known_architecture_needs_arch(tmp_path):
    class Local(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.fc = torch.nn.Linear(n, n)

    with pytest.raises(ValueError, match="cannot record how to rebuild Local"):
        qretrain.save(Local(3), tmp_path / "m.h5")
    assert not any(tmp_path.iterdir())


def test_paper_layout_stores_float32_and_a_codebook_companion(tmp_path):
    model = qretrain.build_model("torch.nn:Linear", in_features=9, out_features=64, bias=False)
    plan = {"rules": [{"type": "Linear", "k": 6, "granularity": "channel"}]}
    qretrain.cluster_(model, plan)
    qretrain.save(model, tmp_path / "p.h5", layout="paper")
    with h5py.File(tmp_path / "p.h5") as f:
        assert f["tensors/weight"].dtype == np.float32
        assert f["tensors/weight.codebook"].shape == (64, 6)
    loaded = qretrain.cluster.clusters_of(qretrain.load(tmp_path / "p.h5", trust_code=True))
    loaded = loaded["weight"]
    original = qretrain.cluster.clusters_of(model)["weight"]
    assert torch.equal(loaded.indices, original.indices)
    assert torch.equal(loaded.codebook, original.codebook)
