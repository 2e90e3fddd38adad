import numpy as np
import pytest

from qretrain.storage import pack_indices, packed_size, unpack_indices


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1001, 2**20 + 3])
def test_round_trip_and_size(bits, n):
    x = np.random.default_rng(bits).integers(0, 2**bits, n).astype(np.uint8)
    packed = pack_indices(x, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_size(n, bits)
    assert packed.size <= n * bits / 8 + bits
    assert np.array_equal(unpack_indices(packed, bits, n), x)


def test_wrong_sizes_are_refused():
    with pytest.raises(ValueError, match="bits must be in"):
        pack_indices(np.zeros(3, np.uint8), 9)
    with pytest.raises(ValueError, match="need 3"):
        unpack_indices(np.zeros(2, np.uint8), 3, 8)
