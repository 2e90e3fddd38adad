"""A model file or record from a stranger names code: nothing runs, one clear error."""

import time

import h5py
import numpy as np
import pytest
import torch

import qretrain
from qretrain.cli.main import main
from qretrain.errors import QretrainFileError, UntrustedCodeError
from qretrain.storage.seal import write_seal
from qretrain.testing.files import edit_manifest, tensor_entry


def payloads(target):
    """Code-execution payloads as the issue tried them; each would create ``target``."""
    shell = f"touch {target}"
    return {
        "subprocess:run": {"args": shell, "shell": True},
        "subprocess:Popen": {"args": shell, "shell": True},
        "os:system": {"command": shell},
        "shutil:copyfile": {"src": __file__, "dst": str(target)},
        "pathlib:Path.touch": {"self": str(target)},
        "torch.hub:load": {"repo_or_dir": "pytorch/vision", "model": "resnet18"},
    }


def craft(path, spec, kwargs):
    """Rewrite a sound file's arch as a stranger would, seal and all."""
    edit_manifest(path, lambda doc: doc["arch"].update(spec=spec, kwargs=kwargs))


@pytest.fixture
def sound_file(tmp_path, tiny_vgg):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    return path


@pytest.mark.parametrize("spec", list(payloads("x")))
def test_payload_in_a_file_runs_nothing_through_the_api(tmp_path, sound_file, spec):
    target = tmp_path / "PWNED"
    craft(sound_file, spec, payloads(target)[spec])
    start = time.perf_counter()
    with pytest.raises(UntrustedCodeError, match=rf"names code to run \('{spec}'\).*--trust-code"):
        qretrain.load(sound_file)
    with pytest.raises(UntrustedCodeError):
        qretrain.load_model(str(sound_file))
    assert not target.exists()
    assert time.perf_counter() - start < 2


def test_a_teacher_spec_in_a_file_never_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small")  # the teacher's architecture
    qretrain.save(model, tmp_path / "t.h5")
    craft(tmp_path / "t.h5", "teacher:vgg", {"epochs": 1})
    start = time.perf_counter()
    loaded = qretrain.load(tmp_path / "t.h5")  # the file's weights, no training
    assert time.perf_counter() - start < 2
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert not any((tmp_path / "cache").rglob("*.h5"))
    craft(tmp_path / "t.h5", "teacher:vgg", {"epochs": 1, "evil": True})
    with pytest.raises(QretrainFileError, match="do not fit 'teacher:vgg'"):
        qretrain.load(tmp_path / "t.h5")


def test_trusted_code_must_return_a_module_and_fit_its_signature(tmp_path, sound_file):
    craft(sound_file, "torch.nn:Linear", {"in_features": 2, "bogus": 1})
    with pytest.raises(QretrainFileError, match="do not fit 'torch.nn:Linear'"):
        qretrain.load(sound_file, trust_code=True)
    craft(sound_file, "builtins:dict", {})
    with pytest.raises(QretrainFileError, match="returned dict, not a torch.nn.Module"):
        qretrain.load(sound_file, trust_code=True)
    model = torch.nn.Linear(3, 2)
    qretrain.save(model, tmp_path / "lin.h5", arch=qretrain.ArchSpec(
        "torch.nn:Linear", {"in_features": 3, "out_features": 2}))  # fmt: skip
    with pytest.raises(UntrustedCodeError):
        qretrain.load(tmp_path / "lin.h5")
    assert torch.equal(qretrain.load(tmp_path / "lin.h5", trust_code=True).weight, model.weight)


def test_code_typed_by_the_user_needs_no_flag():
    assert isinstance(qretrain.load_model("torch.nn:Identity"), torch.nn.Identity)


def test_files_name_torchvision_classifiers_only(tmp_path, sound_file):
    craft(sound_file, "torchvision:fasterrcnn_resnet50_fpn", {})
    with pytest.raises(
        QretrainFileError, match=r"not a float image classifier \(it is a detection"
    ):
        qretrain.load(sound_file)
    craft(sound_file, "torchvision:resnet18", {"weights": "DEFAULT"})
    with pytest.raises(
        QretrainFileError, match=r"may not be given weights: qretrain never downloads"
    ):
        qretrain.load(sound_file)


def test_memory_bombs_are_refused_before_anything_is_read(tmp_path, sound_file):
    craft(sound_file, "torchvision:vgg16", {"num_classes": 10**9})  # 16 TB on a real device
    with pytest.raises(QretrainFileError, match="does not fit the architecture"):
        qretrain.load(sound_file)
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=32),
                  tmp_path / "b.h5")  # fmt: skip
    bias = 4 * 10  # classifier.7.bias: 10 float32 values
    with h5py.File(tmp_path / "b.h5", "r+") as f:
        claimed = f["data"].shape[0] - bias + 4 * (1 << 32)
        del f["data"]
        f.create_dataset("data", shape=(claimed,), dtype="uint8", chunks=(1 << 20,),
                         compression="gzip")  # fmt: skip
    edit_manifest(
        tmp_path / "b.h5",
        lambda doc: tensor_entry(doc, "classifier.7.bias").update(shape=[1 << 32]),
    )
    with pytest.raises(QretrainFileError, match=f"declares {claimed} bytes but stores 0"):
        qretrain.load(tmp_path / "b.h5")


def test_constants_may_not_claim_more_than_they_store(sound_file):
    def huge_constant(doc):
        entry = tensor_entry(doc, "classifier.7.bias")
        entry.update(encoding="constant", value=0.0, shape=[1 << 40])

    edit_manifest(sound_file, huge_constant)
    with pytest.raises(QretrainFileError, match="declares 1099511627776 values with none stored"):
        qretrain.load(sound_file)
    edit_manifest(sound_file, lambda doc: tensor_entry(doc, "classifier.7.bias").update(
        shape=[10], value=1e300))  # fmt: skip
    with pytest.raises(QretrainFileError, match="constant value 1e[+]300 is not a float32"):
        qretrain.load(sound_file)


def test_deep_json_and_bad_contracts_are_refused(sound_file):
    nested = {}
    for _ in range(50):
        nested = {"x": nested}
    edit_manifest(sound_file, lambda doc: doc["plans"].append(nested))
    with pytest.raises(QretrainFileError, match="manifest nests deeper than 16 levels"):
        qretrain.load(sound_file)
    with h5py.File(sound_file, "r+") as f:
        del f["manifest"]
        f["manifest"] = np.frombuffer(b"[" * 100_000 + b"]" * 100_000, np.uint8)
    write_seal(sound_file)
    with pytest.raises(QretrainFileError, match="manifest nests deeper than 16 levels"):
        qretrain.load(sound_file)


@pytest.mark.parametrize("field,value,message", [
    ("std", [0.0], "std must be finite and > 0"),
    ("mean", [float("nan")], "mean must be finite"),
    ("size", 0, "size must be an int in"),
    ("channels", 2, "channels must be 1 or 3"),
])  # fmt: skip
def test_contracts_are_checked(tmp_path, sound_file, field, value, message):
    edit_manifest(sound_file, lambda doc: doc["arch"]["contract"].update({field: value}))
    with pytest.raises(QretrainFileError, match=message):
        qretrain.load(sound_file)


def cli(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("spec", list(payloads("x")))
def test_every_command_that_opens_a_file_refuses_code(tmp_path, sound_file, capsys, spec):
    target = tmp_path / "PWNED"
    craft(sound_file, spec, payloads(target)[spec])
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8))
    sound = tmp_path / "sound.h5"
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=32), sound)
    plan = tmp_path / "plan.yaml"
    plan.write_text("rules:\n  - {type: Linear, k: 4}\n")
    data = ["--data", tmp_path / "d.npz"]
    commands = {
        "inspect": ["inspect", sound_file],
        "evaluate": ["evaluate", sound_file, *data],
        "evaluate --reference": ["evaluate", sound, *data, "--reference", sound_file],
        "compress": ["compress", sound_file, "--plan", plan, "-o", tmp_path / "c.h5"],
        "analyze": ["analyze", sound_file, *data, "-o", tmp_path / "sweep", "--quiet"],
        "retrain student": [
            "retrain",
            sound_file,
            "--teacher",
            sound,
            *data,
            "-o",
            tmp_path / "r.h5",
        ],
        "retrain teacher": [
            "retrain",
            sound,
            "--teacher",
            sound_file,
            *data,
            "-o",
            tmp_path / "r.h5",
        ],
    }
    for name, argv in commands.items():
        code, err = cli(argv, capsys)
        assert code == 2, name
        assert f"names code to run ('{spec}')" in err and err.count("\n") == 1, (name, err)
    assert not target.exists()
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "r.h5").exists()


def test_run_configs_and_sweep_records_refuse_code(tmp_path, capsys):
    target = tmp_path / "PWNED"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: os:system\nmodel_args: {{command: 'touch {target}'}}\n"
        f"output: {tmp_path / 'out'}\nplan: {{file: p.yaml}}\n"
        f"data: {{evaluate: {{spec: {tmp_path / 'd.npz'}}}}}\n"
    )
    code, err = cli(["run", config], capsys)
    assert code == 2 and "names code to run ('os:system')" in err, err
    # A sweep folder whose record names code: plan verifies by loading that model.
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=32).eval()
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8).numpy()
    from qretrain.data.sets import tensor_set

    qretrain.analyze(model, tensor_set("d", images, None), tmp_path / "sweep",
                     qretrain.AnalyzeSettings(ks=[4], kinds=["weight"]), progress=False,
                     plots=False, source={"model": "os:system", "data": "x"})  # fmt: skip
    code, err = cli(["plan", tmp_path / "sweep", "--max-drop", 1, "-o", tmp_path / "p.yaml"],
                    capsys)  # fmt: skip
    assert code == 2 and "names code to run ('os:system')" in err, err
    assert not target.exists() and not (tmp_path / "p.yaml").exists()


def test_an_architecture_that_builds_forever_is_stopped_early(tmp_path):
    torch.manual_seed(0)
    qretrain.save(qretrain.build_model("qretrain.zoo:resnet_small", width=4, blocks=1),
                  tmp_path / "r.h5")  # fmt: skip
    edit_manifest(tmp_path / "r.h5", lambda doc: doc["arch"]["kwargs"].update(blocks=1 << 31))
    start = time.perf_counter()
    with pytest.raises(QretrainFileError, match="registers more than .* far more than the file"):
        qretrain.load(tmp_path / "r.h5")
    assert time.perf_counter() - start < 2


def test_a_teacher_spec_in_a_file_trains_nothing_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small"), tmp_path / "t.h5")
    craft(tmp_path / "t.h5", "teacher:vgg", {"epochs": 1})
    before = sorted(tmp_path.rglob("*"))
    assert main(["inspect", str(tmp_path / "t.h5")]) == 0  # the file's own weights
    assert "teacher:vgg" in capsys.readouterr().out  # the table names the recorded spec
    assert sorted(tmp_path.rglob("*")) == before  # no cache, no training, nothing written
