"""A model's input contract is bounded, and fitting an image to it allocates what the
image's pixels need, not what a stretched resize would."""

import pytest
import torch
from PIL import Image

from qretrain.data import load_dataset
from qretrain.errors import QretrainError
from qretrain.models.contract import MAX_SIZE, InputContract


def test_a_contract_is_at_most_1024_pixels_a_side():
    assert InputContract(3, MAX_SIZE, (0.5,) * 3, (0.25,) * 3).size == 1024
    with pytest.raises(QretrainError, match=r"size must be an int in \[1, 1024\] \(pixels per "
                                            r"side; no classifier takes more\); got 1025"):  # fmt: skip
        InputContract(3, 1025, (0.5,) * 3, (0.25,) * 3)


def test_a_long_strip_is_not_resized_to_billions_of_pixels(tmp_path):
    Image.new("L", (30000, 1)).save(tmp_path / "strip.png")
    contract = InputContract(3, 224, (0.5,) * 3, (0.25,) * 3, resize=256)
    data = load_dataset(tmp_path, contract)
    with pytest.raises(QretrainError, match=r"30000 x 1 image would be 7,680,000 x 256 pixels "
                                            r".*crop it nearer to square"):  # fmt: skip
        data[0]


def test_fitting_a_colour_image_to_grey_is_unchanged():
    """The in-place luma (a third of the memory) is bit-identical to the weighted sum
    it replaced."""
    image = torch.rand(3, 37, 37, generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([0.299, 0.587, 0.114]).reshape(3, 1, 1)
    expected = (image * weights).sum(0, keepdim=True)
    assert torch.equal(InputContract(1, 37, (0.0,), (1.0,)).fit(image), expected)
