import pytest
import torch
from torch.utils.data import TensorDataset

from qretrain.metrics import agreement, evaluate, mean_kl, topk_accuracy


def test_model_agrees_with_itself(tiny_vgg, images):
    data = TensorDataset(images.repeat(4, 1, 1, 1), torch.full((16,), -1))
    result = evaluate(tiny_vgg, data, reference=tiny_vgg)
    assert result.agreement == 1.0 and result.kl == pytest.approx(0.0, abs=1e-12)
    assert result.top1 is None and result.images == 16


def test_accuracy_agreement_and_kl_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0]])
    labels = torch.tensor([0, 2, 1])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    other = torch.tensor([[2.0, 1.0, 0.0], [3.0, 0.0, 1.0], [1.0, 0.0, 2.0]])
    assert agreement(logits, other) == pytest.approx(2 / 3)
    p, q = other.softmax(1), logits.softmax(1)
    assert mean_kl(logits, other) == pytest.approx((p * (p / q).log()).sum(1).mean().item())


def test_labels_beyond_the_outputs_are_refused(tiny_vgg, images):
    data = TensorDataset(images, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="labels go up to 10 but the model has 10 outputs"):
        evaluate(tiny_vgg, data)
