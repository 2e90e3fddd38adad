"""Exporting runs the model on inputs of its contract, which a file states: within
the memory budget, as every forward pass is."""

import pytest
import torch

import qretrain
from qretrain.errors import QretrainError
from qretrain.export.check import PROBES, check_outputs
from qretrain.models.contract import InputContract
from qretrain.models.footprint import activation_bytes
from qretrain.models.specs import ArchSpec, set_arch


def resnet_small(width: int, size: int):
    model = qretrain.build_model("qretrain.zoo:resnet_small", width=width, blocks=1).eval()
    contract = InputContract(1, size, (0.5,), (0.25,))
    set_arch(model, ArchSpec("qretrain.zoo:resnet_small", {"width": width, "blocks": 1}, contract))
    return model, contract


def sizes_run(model, contract) -> list[int]:
    seen = []

    def run(batch):
        seen.append(len(batch))
        with torch.no_grad():
            return model(batch).numpy()

    check_outputs("test export", model, run, contract)
    return seen


def test_the_probes_run_as_one_batch_only_when_it_fits():
    model, contract = resnet_small(2, 28)
    assert sizes_run(model, contract) == [1] * PROBES + [PROBES]
    model, contract = resnet_small(2, 600)  # larger than ordinary: the batch must fit
    with qretrain.memory_limit(4 * activation_bytes(model, contract.shape)):
        assert sizes_run(model, contract) == [1] * PROBES


def test_an_export_whose_one_input_is_over_the_budget_is_refused(tmp_path):
    model, _ = resnet_small(16, 1024)
    with pytest.raises(QretrainError, match=r"onnx export of ResNetSmall on a 1 x 1024 x 1024 "
                                            r"input makes about 260 MiB of activations"):  # fmt: skip
        qretrain.export(model, tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()
