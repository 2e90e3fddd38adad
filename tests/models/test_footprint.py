"""One input's activations, estimated on the meta device, bound forward passes."""

import pytest
import torch

import qretrain
from qretrain import _memory
from qretrain.errors import QretrainError
from qretrain.models.footprint import (
    FACTOR,
    ORDINARY_PIXELS,
    activation_bytes,
    batch_within_budget,
)

MIB = 1 << 20


def resnet_small(width: int):
    return qretrain.build_model("qretrain.zoo:resnet_small", width=width, blocks=1).eval()


def test_the_estimate_is_the_largest_output_times_the_factor_plus_the_input():
    # The stem's output, width x 1024 x 1024 float32, is the largest.
    assert activation_bytes(resnet_small(8), (1, 1024, 1024)) == FACTOR * 32 * MIB + 4 * MIB
    assert activation_bytes(resnet_small(8), (1, 28, 28)) == FACTOR * 8 * 28 * 28 * 4 + 28 * 28 * 4


def test_the_estimate_allocates_nothing_and_survives_a_failing_pass():
    model = resnet_small(4)
    before = [t.clone() for t in model.state_dict().values()]
    # Three channels into a one-channel stem: the pass fails at its first layer.
    assert activation_bytes(model, (3, 64, 64)) is None
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values()))
    assert not model._forward_hooks and not model.stem[0]._forward_hooks


def test_ordinary_inputs_keep_their_batch_and_large_ones_fit_the_budget(caplog):
    model = resnet_small(8)
    assert batch_within_budget(model, (1, 260, 260), 64, "m") == 64
    assert 260 * 260 == ORDINARY_PIXELS
    per_input = activation_bytes(model, (1, 1024, 1024))
    expected = max(1, _memory.ACTIVATIONS // per_input)
    with caplog.at_level("INFO"):
        assert batch_within_budget(model, (1, 1024, 1024), 64, "m") == expected
    assert f"batches of {expected}, not 64" in caplog.text
    with qretrain.memory_limit(8 * per_input):
        assert batch_within_budget(model, (1, 1024, 1024), 64, "m") == 8


def test_one_input_over_the_budget_is_refused():
    with pytest.raises(QretrainError, match=r"ResNetSmall on a 1 x 1024 x 1024 input makes about "
                                            r"260 MiB of activations .* more than the 256 MiB"):  # fmt: skip
        batch_within_budget(resnet_small(16), (1, 1024, 1024), 1, "ResNetSmall")


def test_predict_runs_large_inputs_in_small_batches(caplog):
    """Same logits as one batch of all, within float rounding of the batch size."""
    model = resnet_small(2)
    images = torch.rand(3, 1, 600, 600, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.TensorDataset(images, torch.zeros(3, dtype=torch.int64))
    from qretrain.metrics.quality import predict

    budget = 2 * activation_bytes(model, (1, 600, 600))
    with qretrain.memory_limit(budget), caplog.at_level("INFO"):
        logits, _ = predict(model, data, batch_size=64)
    assert "batches of 2, not 64" in caplog.text
    with torch.no_grad():
        assert torch.allclose(logits, model(images), atol=1e-5)


def test_the_callers_hooks_do_not_see_the_estimate():
    """A hook counting a teacher's inputs (retraining's test does) counts real ones only."""
    model = resnet_small(4)
    seen = []
    handle = model.register_forward_hook(lambda m, args, out: seen.append(args[0].device.type))
    model.stem[0].register_forward_pre_hook(lambda m, args: seen.append("pre"))
    assert activation_bytes(model, (1, 28, 28)) > 0
    assert seen == []
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    assert seen == ["pre", "cpu"]
    handle.remove()
