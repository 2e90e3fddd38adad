import os

import h5py
import numpy as np
import pytest
import torch

import qretrain
from qretrain.analysis.census import module_census
from qretrain.storage import QretrainFileError
from qretrain.storage import h5 as h5_module
from qretrain.storage.schema import read_manifest
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
# Codebooks of pairs of output channels; the biases (one dimension) fall back to one
# scalar codebook.
PAIRS_PLAN = {"granularity": "pairs", "rules": [{"type": "Conv2d", "k": 16},
                                                {"type": "Linear", "k": 64}]}  # fmt: skip


@pytest.mark.parametrize("layout", ["packed", "paper"])
@pytest.mark.parametrize("which", ["vgg", "resnet", "pairs"])
def test_round_trip_outputs_are_exactly_equal(tmp_path, layout, which, tiny_vgg, tiny_resnet,
                                              images):  # fmt: skip
    model = tiny_resnet if which == "resnet" else tiny_vgg
    plan = {"vgg": {"rules": PLAN["rules"][:3]}, "resnet": RESNET_PLAN, "pairs": PAIRS_PLAN}[which]
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
    if which == "pairs":
        assert "pairs" in {c.granularity.value for c in original.values()}
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
    assert doc["format"] == "qretrain" and doc["format_version"] == 3
    assert doc["arch"]["spec"] == "qretrain.zoo:vgg_small"
    assert doc["plans"][0]["rules"][0]["k"] == 16
    assert len(doc["sha256"]) == 64
    conv = tensor_entry(doc, "features.0.weight")
    assert conv["encoding"] == "clustered" and conv["cluster"]["bits"] == 4
    assert conv["cluster"]["width"] == 16
    with h5py.File(tmp_path / "m.h5") as f:
        assert set(f) == {"manifest", "data"}
        assert f["data"].compression == "gzip" and not f["data"].shuffle
        assert not f.attrs and not f["data"].attrs  # all metadata is in the manifest


def _offset(path, name: str) -> int:
    with h5py.File(path) as f:
        manifest = read_manifest(f, "test")
    return next(e.offset for e in manifest.entries if e.name == name)


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
    at = _offset(path, "classifier.1.weight")
    with h5py.File(path, "r+") as f:
        f["data"][at : at + 4] = np.frombuffer(np.float32(7.5).tobytes(), np.uint8)
    with pytest.raises(QretrainFileError, match="(fails its SHA-256 seal|bytes long but was)"):
        qretrain.load(path)
    reseal(path)  # a stranger's consistent file: the tensors' checksum still tells
    with pytest.raises(QretrainFileError, match="its tensors fail their checksum"):
        qretrain.load(path)


def test_corrupted_bytes_are_refused(tmp_path, tiny_vgg):
    qretrain.cluster_(tiny_vgg, {"rules": PLAN["rules"][:3]})
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    with h5py.File(path) as f:
        info = f["data"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    for i in range(info.byte_offset + 4, info.byte_offset + info.size - 4):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(QretrainFileError, match="fails its SHA-256 seal"):
        qretrain.load(path)
    reseal(path)
    with pytest.raises(QretrainFileError, match="(fail their checksum|truncated or corrupted)"):
        qretrain.load(path)


def test_unknown_version_and_foreign_files(tmp_path, tiny_vgg):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    original = path.read_bytes()
    edit_manifest(path, lambda doc: doc.update(format_version=2))
    with pytest.raises(
        QretrainFileError, match="format version 2; this qretrain reads versions 3 and 4 only"
    ):
        qretrain.load(path)
    path.write_bytes(original)  # version 4 is for files with codebooks of pairs only
    edit_manifest(path, lambda doc: doc.update(format_version=4))
    with pytest.raises(QretrainFileError, match="format version 4 without codebooks of pairs; "
                       "they are version 4, other files 3"):  # fmt: skip
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

    monkeypatch.setattr(h5_module, "pack_indices", explode)
    with pytest.raises(qretrain.QretrainError, match=r"cannot write .*m\.h5' \(disk full\); "
                       "it is left as it was"):  # fmt: skip
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
        (entry,) = read_manifest(f, "test").entries
        values = f["data"][: 64 * 9 * 4].view("<f4").reshape(64, 9)
    assert entry.encoding == "raw" and entry.segments() == [("values", 64 * 9 * 4),
                                                            ("codebook", 64 * 6 * 4)]  # fmt: skip
    assert np.array_equal(values, model.weight.detach().numpy())
    loaded = qretrain.cluster.clusters_of(qretrain.load(tmp_path / "p.h5", trust_code=True))
    loaded = loaded["weight"]
    original = qretrain.cluster.clusters_of(model)["weight"]
    assert torch.equal(loaded.indices, original.indices)
    assert torch.equal(loaded.codebook, original.codebook)


def test_batchnorm_is_stored_folded_with_the_same_outputs(tmp_path, tiny_resnet, images):
    """Folded: a scale and a shift per channel, running statistics two constants; eval
    outputs equal up to float rounding. Kept: the four vectors, bit-exact."""
    with torch.no_grad():  # running statistics a trained net would have
        for m in tiny_resnet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
    tiny_resnet.eval()
    expected = tiny_resnet(images)
    folded = qretrain.save(tiny_resnet, tmp_path / "folded.h5")
    kept = qretrain.save(tiny_resnet, tmp_path / "kept.h5", fold_batchnorm=False)
    assert folded.file_bytes < kept.file_bytes
    doc = manifest_of(tmp_path / "folded.h5")
    assert tensor_entry(doc, "stem.1.running_mean") == {
        "name": "stem.1.running_mean", "encoding": "constant", "shape": [4], "dtype": "float32",
        "value": 0.0}  # fmt: skip
    assert tensor_entry(doc, "stem.1.running_var")["value"] == pytest.approx(1 - 1e-5)
    loaded = qretrain.load(tmp_path / "folded.h5", trust_code=True)
    torch.testing.assert_close(loaded(images), expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(loaded.stem[1].weight, tiny_resnet.stem[1].weight)
    exact = qretrain.load(tmp_path / "kept.h5", trust_code=True)
    assert torch.equal(exact(images), expected)
    for name, tensor in tiny_resnet.state_dict().items():
        assert torch.equal(exact.state_dict()[name], tensor)
    # Saving a folded model again folds nothing twice: the same tensors.
    qretrain.save(loaded, tmp_path / "again.h5")
    again = qretrain.load(tmp_path / "again.h5", trust_code=True).state_dict()
    assert all(torch.equal(again[k], v) for k, v in loaded.state_dict().items())


def test_folded_batchnorm_refuses_retraining_that_updates_statistics(tmp_path, tiny_resnet,
                                                                     images):  # fmt: skip
    qretrain.save(tiny_resnet, tmp_path / "m.h5")
    student = qretrain.load(tmp_path / "m.h5", trust_code=True)
    data = torch.utils.data.TensorDataset(images, torch.zeros(len(images), dtype=torch.long))
    config = qretrain.RetrainConfig(epochs=1, bn_stats="update")
    with pytest.raises(
        ValueError, match="'stem.1' .* was saved folded: retrain with bn_stats 'frozen'"
    ):
        qretrain.retrain(student, tiny_resnet, data, config, progress=False)


@pytest.mark.parametrize("which", ["vgg", "resnet"])
def test_a_small_model_file_is_its_packed_tensors_plus_at_most_4_kib(tmp_path, which,
                                                                   tiny_vgg, tiny_resnet):  # fmt: skip
    """Within 10% + 4 KiB of the tensors' packed bytes (indices, codebooks, raw tensors)."""
    model = tiny_vgg if which == "vgg" else tiny_resnet
    qretrain.cluster_(model, {"rules": [{"type": "Conv2d", "k": 16}, {"type": "Linear", "k": 16}]})
    saved = qretrain.save(model, tmp_path / "m.h5", fold_batchnorm=False)
    books = qretrain.codebooks(model)
    packed = sum(c.packed_nbytes() for c in books.values()) + sum(
        t.numel() * t.element_size() for n, t in model.state_dict().items() if n not in books
    )
    assert saved.file_bytes <= 1.1 * packed + 4096, (saved.file_bytes, packed, saved.breakdown)


def test_a_file_of_pairs_is_checked_like_any_other(tmp_path, tiny_vgg):
    """Pairs need an even first dimension; their indices stay within the codebook."""
    qretrain.cluster_(tiny_vgg, {"rules": [{"type": "Conv2d", "k": 6, "granularity": "pairs"},
                                           {"kinds": ["bias"], "k": 1}]})  # fmt: skip
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    doc = manifest_of(path)
    entry = tensor_entry(doc, "features.0.weight")
    assert entry["cluster"]["granularity"] == "pairs" and entry["cluster"]["width"] == 6
    assert doc["format_version"] == 4  # a version-3 reader would misread the pairs
    rows = {r["name"]: r["clustered"] for r in module_census(qretrain.load(path)).modules}
    assert rows["features.0"] == ["weight:6 pairs", "bias:1"]  # as `qretrain inspect` prints

    def refused(edit, match: str) -> None:  # a copy of the file, edited and sealed again
        copy = tmp_path / "edited.h5"
        copy.write_bytes(path.read_bytes())
        edit_manifest(copy, edit)
        with pytest.raises(QretrainFileError, match=match):
            qretrain.load(copy)

    refused(
        lambda doc: doc.update(format_version=3),
        "format version 3 with codebooks of pairs; they are version 4, other files 3",
    )
    refused(
        lambda doc: tensor_entry(doc, "features.0.bias")["cluster"].update(granularity="pairs"),
        "'features.0.bias': granularity 'pairs' needs 2 or more dimensions and an even first",
    )
    # An index of 7 into 6 pairs (3 bits each, the first index of the packed bytes).
    with h5py.File(path, "r+") as f:
        entry = next(e for e in read_manifest(f, "m.h5").entries
                     if e.name == "features.0.weight")  # fmt: skip
        data = f["data"][()]
        data[entry.offset + 6 * 2 * 4] |= 0b111  # after the codebook of 6 float32 pairs
        f["data"][...] = data
    reseal(path)
    with pytest.raises(QretrainFileError, match="an index exceeds its codebook row"):
        qretrain.load(path)
