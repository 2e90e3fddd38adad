"""A model file may make loading allocate what its size allows, not what it claims."""

import h5py
import pytest
import torch

import qretrain
from qretrain import _memory
from qretrain.cli.main import main
from qretrain.errors import QretrainFileError
from qretrain.storage import h5
from qretrain.storage.decode import decode_bytes
from qretrain.storage.schema import read_manifest
from qretrain.testing import bombs

REFUSED = r"would take [\d,]+ MiB of memory to read, more than the [\d,]+ MiB a [\d,]+-byte file"


@pytest.fixture
def nothing_decoded(monkeypatch):
    """Loading fails the test if it reaches the tensors' data."""

    def decode(*args):
        raise AssertionError("the data was decoded before the file was refused")

    monkeypatch.setattr(h5, "_decode", decode)


def cli(argv, capsys) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_model_of_constants_claims_gigabytes_in_kilobytes(tmp_path, nothing_decoded, capsys):
    path = bombs.model_file(tmp_path / "vit.h5", "torchvision:vit_l_16")  # 1.2 GB of zeros
    assert path.stat().st_size < 10_000
    with pytest.raises(QretrainFileError, match=REFUSED + r".*--max-memory SIZE.* e\.g\. 3G"):
        qretrain.load(path)
    code, err = cli(["inspect", path], capsys)
    assert code == 2 and len(err) == 1 and "qretrain inspect: error: " in err[0]
    assert "MiB of memory to read" in err[0]


def test_gzip_of_zeros_is_no_way_around_the_budget(tmp_path, nothing_decoded):
    model = qretrain.build_model("torchvision:resnet18")
    with torch.no_grad():  # not constants (one value differs), so stored raw: 1,000:1
        for tensor in model.state_dict().values():
            tensor.zero_()
            tensor.view(-1)[:1] = 1
    qretrain.save(model, tmp_path / "zeros.h5")
    assert (tmp_path / "zeros.h5").stat().st_size < 100_000
    with pytest.raises(QretrainFileError, match=REFUSED):
        qretrain.load(tmp_path / "zeros.h5")


def test_the_limit_is_raised_in_python_and_on_the_command_line(tmp_path, capsys):
    path = bombs.model_file(tmp_path / "r18.h5", "torchvision:resnet18", sound=True)
    with pytest.raises(QretrainFileError, match=REFUSED):  # 93 MB of tensors, twice
        qretrain.load(path)
    loaded = qretrain.load(path, max_memory=1 << 30)
    assert all(not t.any() for t in loaded.state_dict().values())
    with qretrain.memory_limit(1 << 30):
        qretrain.load_model(str(path))
    with pytest.raises(QretrainFileError, match=r"more than the 64 MiB .*\(the --max-memory"):
        qretrain.load(path, max_memory=64 << 20)  # an explicit limit replaces the default
    assert cli(["inspect", path], capsys)[0] == 2
    assert cli(["inspect", path, "--max-memory", "1G"], capsys)[0] == 0
    assert cli(["--max-memory", "1G", "inspect", path], capsys)[0] == 0
    code, err = cli(["inspect", path, "--max-memory", "lots"], capsys)
    assert code == 2 and len(err) == 1 and "e.g. 4G or 512M; got 'lots'" in err[0]


def test_the_budget_counts_what_loading_holds(tmp_path, tiny_resnet):
    """/data, the state dict, the model and the largest tensor's decoding: each is
    real memory, so a file is refused where their sum, not one of them, is too much."""
    qretrain.cluster_(tiny_resnet, {"rules": [{"layers": "2-3", "k": 4}]}, progress=False)
    qretrain.save(tiny_resnet, tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5") as f:
        manifest = read_manifest(f, "m")
    tensors = sum(e.numel * 4 if e.dtype == "float32" else e.numel * 8 for e in manifest.entries)
    clustered = [e for e in manifest.entries if e.cluster is not None]
    assert clustered
    held = decode_bytes(manifest.entries, manifest.data_bytes)
    assert held >= manifest.data_bytes + 2 * tensors + sum(e.numel for e in clustered)
    exact = qretrain.load(tmp_path / "m.h5", max_memory=held)  # the limit is inclusive
    with pytest.raises(QretrainFileError, match=REFUSED):
        qretrain.load(tmp_path / "m.h5", max_memory=held - 1)
    assert exact is not None


@pytest.mark.parametrize("name", ["efficientnet-lite0", "torchvision:resnet18"])
def test_real_models_load_within_the_default_budget(tmp_path, name):
    torch.manual_seed(0)
    model = qretrain.load_model(name)
    qretrain.save(model, tmp_path / "m.h5")
    loaded = qretrain.load(tmp_path / "m.h5")
    for key, tensor in model.state_dict().items():
        if not key.endswith(("running_mean", "running_var")):  # folded into weight and bias
            assert loaded.state_dict()[key].shape == tensor.shape


def test_the_densest_sound_file_loads(tmp_path):
    """Every tensor at k = 2: one stored bit per value, the most a sound file holds
    per byte while loading (one tensor has most of the values), within MODEL_RATIO."""
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small")
    qretrain.cluster_(model, {"rules": [{"kinds": ["weight", "bias"], "k": 2}]}, progress=False)
    qretrain.save(model, tmp_path / "k2.h5")
    size = (tmp_path / "k2.h5").stat().st_size
    with h5py.File(tmp_path / "k2.h5") as f:
        manifest = read_manifest(f, "k2")
    ratio = decode_bytes(manifest.entries, manifest.data_bytes) / size
    assert 100 < ratio < _memory.MODEL_RATIO
    qretrain.load(tmp_path / "k2.h5", max_memory=_memory.MODEL_RATIO * size)  # no allowance needed


def test_a_contract_larger_than_any_classifier_is_refused(tmp_path, capsys):
    contract = {"channels": 1, "size": 4096, "mean": [0.5], "std": [0.25], "resize": None}
    path = bombs.model_file(tmp_path / "c.h5", "qretrain.zoo:resnet_small", contract=contract,
                            sound=True)  # fmt: skip
    with pytest.raises(QretrainFileError, match=r"size must be an int in \[1, 1024\]"):
        qretrain.load(path)
    for command in (["inspect", path], ["evaluate", path, "--data", path, "--limit", "8"]):
        code, err = cli(command, capsys)
        assert code == 2 and len(err) == 1 and "got 4096" in err[0]


def test_activations_a_file_would_cause_are_refused_before_the_forward(tmp_path, capsys):
    """A 1024-px contract is allowed; one input through a wide net at that size is not."""
    contract = {"channels": 1, "size": 1024, "mean": [0.5], "std": [0.25], "resize": None}
    path = bombs.model_file(tmp_path / "w.h5", "qretrain.zoo:resnet_small", sound=True,
                            kwargs={"width": 64, "blocks": 1}, contract=contract)  # fmt: skip
    code, err = cli(["inspect", path], capsys)
    assert code == 2 and len(err) == 1
    assert "ResNetSmall on a 1 x 1024 x 1024 input makes about 1,028 MiB of activations" in err[0]
    assert "more than the 256 MiB qretrain allows" in err[0] and "--max-memory" in err[0]
