"""The Core ML size model: each weight's blobs, exactly as coremltools writes them."""

import struct

import pytest
import torch

import qretrain
from qretrain.cluster.state import clusters_of
from qretrain.export.sizes import blob_bytes, coreml_blobs, coreml_tensor_bytes, lut_bits


FLOAT32 = 2  # the blob format's data type of float32


def weight_blobs(package) -> list[tuple[int, int]]:
    """(blob format data type, bytes the blob takes) of each blob in a package's weight
    file: a 64-byte file header, then per blob a 64-byte header (sentinel, data type,
    data size, data offset) and its data, the next header 64-byte aligned."""
    data = (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").read_bytes()
    at, blobs = 64, []
    while at < len(data):
        sentinel, dtype, size, offset = struct.unpack("<IIQQ", data[at : at + 24])
        assert sentinel == 0xDEADBEEF, "not a blob header"
        end = -(-(offset + size) // 64) * 64
        blobs.append((dtype, end - at))
        at = end
    return blobs


def test_index_widths_are_the_ones_core_ml_stores():
    assert [lut_bits(k) for k in (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 64, 65, 128, 256)] == [
        1, 1, 2, 2, 3, 3, 4, 4, 6, 6, 6, 8, 8, 8]  # fmt: skip
    with pytest.raises(ValueError, match="1 to 256 values; got k=257"):
        lut_bits(257)
    assert blob_bytes(0) == 64 and blob_bytes(1) == 128 and blob_bytes(64) == 128
    # 1000 values at 6 bits: 750 bytes -> 768, and a 64-value table of 256 bytes
    assert coreml_tensor_bytes(1000, 64) == (64 + 768) + (64 + 256)
    assert coreml_tensor_bytes(1000, 32) == coreml_tensor_bytes(1000, 64)  # k=32 pays 6 bits
    assert coreml_tensor_bytes(1000) == 64 + 4000 + 32  # float32, padded to 64
    # a table of 2^3 values is too small for the weight file: in the program, 4 bytes each
    assert coreml_blobs(1000, 8) == [64 + 384] and coreml_tensor_bytes(1000, 8) == 448 + 32
    assert coreml_blobs(9) == [] and coreml_tensor_bytes(9) == 36


@pytest.mark.parametrize(
    ("k", "granularity"),
    # a table in the program, padded, uint8; per channel, tables of 2 to 64 values a row
    [(8, "tensor"), (32, "tensor"), (256, "tensor"), (2, "channel"), (16, "channel"),
     (64, "channel")],
)  # fmt: skip
def test_each_lookup_table_takes_the_blobs_the_size_model_says(tmp_path, k, granularity):
    pytest.importorskip("coremltools", reason="pip install 'qretrain[coreml]'")
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:resnet_small", width=16, blocks=1).eval()
    rule = {"type": "Conv2d", "k": k, "granularity": granularity}
    qretrain.cluster_(model, {"rules": [rule]}, progress=False)
    # A table is as wide as its widest row (a channel may hold fewer values than k).
    convs = [(c.indices.numel(), c.codebook.shape[0], c.codebook.shape[1])
             for c in clusters_of(model).values()]  # fmt: skip
    qretrain.export(model, tmp_path / "m.mlpackage", "coreml")
    blobs = weight_blobs(tmp_path / "m.mlpackage")
    # A table's blobs: its indices (the only blobs not float32), then its values if
    # they are in the weight file; the model's other constants are float32 blobs.
    expected = [coreml_blobs(n, width, rows) for n, rows, width in convs]
    table_in_file = len(expected[0]) == 2
    assert all(len(e) == len(expected[0]) for e in expected)
    tables = [[blobs[i][1]] + ([blobs[i + 1][1]] if table_in_file else [])
              for i in range(len(blobs)) if blobs[i][0] != FLOAT32]  # fmt: skip
    assert sorted(tables) == sorted(expected)
