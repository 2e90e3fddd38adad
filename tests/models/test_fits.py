"""A file whose input contract does not fit its architecture: one line, not a traceback."""

import numpy as np
import pytest
import torch

import qretrain
from qretrain.cli.main import main
from qretrain.testing.files import edit_manifest


@pytest.fixture
def misfit(tmp_path):
    """A tiny VGG-style file (1 channel, 28 px) re-sealed with a 3-channel 64-px contract."""
    torch.manual_seed(0)
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16),
                  tmp_path / "m.h5")  # fmt: skip

    def edit(doc):
        doc["arch"]["contract"].update(channels=3, size=64, mean=[0.5] * 3, std=[0.5] * 3)

    edit_manifest(tmp_path / "m.h5", edit)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
             y=rng.integers(0, 10, 8))  # fmt: skip
    return tmp_path


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
def test_a_contract_that_does_not_fit_is_one_line(misfit, capsys, command):
    argv = [command, str(misfit / "m.h5")]
    if command == "evaluate":
        argv += ["--data", str(misfit / "d.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (
        f"{str(misfit / 'm.h5')!r}: its input contract (3 channel(s) of 64 x 64 pixels) "
        "does not fit its architecture ("
    ) in err
    assert "use the file as its writer saved it" in err


def test_a_sound_file_passes_the_check_at_no_cost(tmp_path, tiny_resnet):
    import time

    from qretrain.models.fits import check_contract_fits

    qretrain.save(tiny_resnet, tmp_path / "r.h5")
    model = qretrain.load_model(tmp_path / "r.h5")
    start = time.perf_counter()
    check_contract_fits(model, "r.h5")
    assert time.perf_counter() - start < 2  # shapes only: milliseconds
