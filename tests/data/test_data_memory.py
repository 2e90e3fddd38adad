"""Dataset files and images may make qretrain allocate what they hold, not what they
claim: each crafted input here is under 1 MB and refused with one line before it
is inflated."""

import gzip
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import qretrain
from qretrain import _memory
from qretrain.cli.main import main
from qretrain.data import load_dataset
from qretrain.data.readers import read_csv, read_idx, read_image, read_npz
from qretrain.errors import QretrainError
from qretrain.testing import bombs

TOO_MUCH = r"would take [\d,]+ MiB of memory to read, more than the [\d,]+ MiB a [\d,]+-byte file"


@pytest.fixture
def model_file(tmp_path, tiny_vgg):
    qretrain.save(tiny_vgg, tmp_path / "m.h5")
    return tmp_path / "m.h5"


def evaluate_cli(model, data, capsys) -> tuple[int, list[str]]:
    code = main(["evaluate", str(model), "--data", str(data), "--limit", "8"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_an_image_larger_than_qretrain_decodes_is_refused_from_its_header(tmp_path, model_file,
                                                                          capsys):  # fmt: skip
    (tmp_path / "png").mkdir()
    path = bombs.png(tmp_path / "png" / "big.png", 12000, 12000, mode="L")
    assert path.stat().st_size < 1_000_000
    message = r"is 12000 x 12000 = 144,000,000 pixels, more than the 25,000,000 qretrain decodes"
    with pytest.raises(QretrainError, match=message + r".*downscale it, or .*--max-memory"):
        read_image(path)
    with pytest.raises(QretrainError, match=message):  # listing refuses it; it does not skip it
        load_dataset(tmp_path / "png")
    code, err = evaluate_cli(model_file, tmp_path / "png", capsys)
    assert code == 2 and len(err) == 1 and "144,000,000 pixels" in err[0]


def test_pillows_own_bomb_error_becomes_the_same_one_line(tmp_path):
    path = bombs.png(tmp_path / "huge.png", 20000, 10000, mode="L")  # past twice Pillow's limit
    with pytest.raises(QretrainError, match=r"decodes at most 25,000,000 pixels: downscale it"):
        read_image(path)


def test_the_pixel_limit_follows_max_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(_memory, "MAX_PIXELS", 1000)
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "a.png")  # 1,200 pixels
    with pytest.raises(QretrainError, match="1,200 pixels, more than the 1,000"):
        read_image(tmp_path / "a.png")
    with qretrain.memory_limit(1200 * _memory.BYTES_PER_PIXEL):
        image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 30, 40) and torch.allclose(
        image[:, 0, 0] * 255, torch.tensor([10.0, 20.0, 30.0])
    )


def test_a_zip_bombed_npz_is_refused_before_it_inflates(tmp_path, model_file, capsys):
    path = bombs.npz(tmp_path / "bomb.npz", (300_000, 28, 28))  # 235 MB of zeros
    assert path.stat().st_size < 1_000_000
    with pytest.raises(QretrainError, match=r"arrays x \(300000, 28, 28\) uint8\) " + TOO_MUCH):
        read_npz(path)
    code, err = evaluate_cli(model_file, path, capsys)
    assert code == 2 and len(err) == 1 and "MiB of memory to read" in err[0]
    claim = bombs.npz(tmp_path / "claim.npz", (1 << 20, 1024, 1024), stored=False)  # a header
    with pytest.raises(QretrainError, match=TOO_MUCH):
        read_npz(claim)


def test_npz_that_is_no_zip_is_one_line(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    with pytest.raises(QretrainError, match="not an .npz file"):
        load_dataset(tmp_path / "plain.npz")


def test_sound_npz_loads_as_before(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=np.arange(64) % 10)
    images, labels = read_npz(tmp_path / "d.npz")
    assert np.array_equal(images, x) and list(labels[:3]) == [0, 1, 2]


def test_a_gzip_bombed_idx_is_refused_before_it_inflates(tmp_path, model_file, capsys):
    path = bombs.idx(tmp_path / "bomb-idx3-ubyte.gz", (300_000, 28, 28))
    assert path.stat().st_size < 1_000_000
    with pytest.raises(QretrainError, match=r"IDX of \[300000, 28, 28\] uint8\) " + TOO_MUCH):
        read_idx(path)
    code, err = evaluate_cli(model_file, path, capsys)
    assert code == 2 and len(err) == 1 and "MiB of memory to read" in err[0]


def test_a_raw_idx_header_is_checked_against_the_file_length_before_reading(tmp_path):
    path = bombs.idx(tmp_path / "claim-idx3-ubyte", (1 << 20, 1024, 1024), stored=False)
    with pytest.raises(QretrainError, match=r"header says \[1048576, 1024, 1024\] "
                                            r"\(1099511627776 bytes\), file holds 0"):  # fmt: skip
        read_idx(path)
    (tmp_path / "cut-idx1-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(QretrainError, match="its header ends early"):
        read_idx(tmp_path / "cut-idx1-ubyte")


def test_a_gzip_bombed_csv_is_refused_before_it_is_parsed(tmp_path, model_file, capsys):
    path = bombs.csv_gz(tmp_path / "bomb.csv.gz", 60_000)  # 94 MB of "0,"
    assert path.stat().st_size < 1_000_000
    with pytest.raises(QretrainError, match=r"\(CSV text\) would take more than the [\d,]+ MiB"):
        read_csv(path)
    code, err = evaluate_cli(model_file, path, capsys)
    assert code == 2 and len(err) == 1 and "CSV text" in err[0]


def test_a_csv_line_of_a_billion_cells_is_refused(tmp_path):
    with gzip.open(tmp_path / "line.csv.gz", "wt") as f:
        f.write("1," + "0," * 3_000_000 + "0\n")
    with pytest.raises(QretrainError, match=r"a line over 4,194,368 characters"):
        read_csv(tmp_path / "line.csv.gz")


def test_ragged_and_damaged_csv_are_one_line(tmp_path):
    (tmp_path / "ragged.csv").write_text("1,0,0,0,0\n2,0,0\n")
    with pytest.raises(QretrainError, match="row 2 has 3 cells, the first 5"):
        read_csv(tmp_path / "ragged.csv")
    (tmp_path / "quote.csv").write_text('1,"0\n' + "0" * 200_000 + "\n")
    with pytest.raises(QretrainError, match="is not CSV"):
        read_csv(tmp_path / "quote.csv")
    (tmp_path / "head.csv").write_text("label,a,b,c,d\n")
    with pytest.raises(QretrainError, match="a header and no rows"):
        read_csv(tmp_path / "head.csv")


def test_sound_csv_reads_as_before(tmp_path):
    """The row-by-row reader gives what the table reader gave: labels as int64 (from
    floats), pixels clipped to 0-255 as uint8, the label column anywhere."""
    rows = [[3, 0, 300, -5, 7.9], [1.0, 255, 1, 2, 3]]
    (tmp_path / "a.csv").write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    pixels, labels = read_csv(tmp_path / "a.csv")
    assert labels.dtype == np.int64 and list(labels) == [3, 1]
    assert pixels.dtype == np.uint8 and pixels.tolist() == [[[0, 255], [0, 7]], [[255, 1], [2, 3]]]
    pixels, labels = read_csv(tmp_path / "a.csv", label_column=-1)
    assert list(labels) == [7, 3] and pixels[0].tolist() == [[3, 0], [255, 0]]


def test_an_npz_member_shorter_than_its_header_says_is_one_line(tmp_path):
    with zipfile.ZipFile(tmp_path / "t.npz", "w") as archive:
        with archive.open("x.npy", "w") as member:
            member.write(bombs.npy_header((4, 8, 8), np.dtype("uint8")) + bytes(10))
    with pytest.raises(QretrainError, match="cannot read"):
        load_dataset(tmp_path / "t.npz")
