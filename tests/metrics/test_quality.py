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


@pytest.mark.parametrize("labels,bad", [([0, 1, 2, 10], "image 3 has 10"),
                                        ([0, -5, 2, 3], "image 1 has -5"),
                                        ([1000, -1, 2, 3], "image 0 has 1000")])  # fmt: skip
def test_labels_outside_the_models_classes_are_refused(tiny_vgg, images, labels, bad):
    """A negative label used to read as 'unlabeled' and turn top-1 off without a word."""
    data = TensorDataset(images, torch.tensor(labels))
    with pytest.raises(ValueError, match=rf"labels of the dataset must be classes 0 to 9 of the "
                       rf"model \(or -1 for none\); {bad}: fix the labels"):  # fmt: skip
        evaluate(tiny_vgg, data)
    assert evaluate(tiny_vgg, TensorDataset(images, torch.tensor([0, -1, 2, 3]))).top1 is None
