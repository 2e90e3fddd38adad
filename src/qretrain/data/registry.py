"""Dataset specs: one string names a dataset, as model specs name models.

Named sets (extend with ``@register_dataset``) resolve from packages installed on
this machine; their loaders live outside the core, in ``qretrain.assets.pools``, and
are imported when a spec one of them may name is first loaded (``register_provider``).
Anything else is a path: a folder of images (labeled when laid out one subfolder per
class), an IDX file (labels found beside it), ``.npz`` (``x``, optional ``y``) or
``.csv`` (pixels and a label column).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from qretrain._lazy import SpecProviders
from qretrain.data import forms
from qretrain.data.readers import list_images, read_csv, read_idx, read_npz
from qretrain.data.sets import ImageSet, file_set, fit_and_subset, joined, tensor_set
from qretrain.data.synthetic import synthesize
from qretrain.data.views import augmented
from qretrain.errors import QretrainError
from qretrain.models.contract import InputContract

if TYPE_CHECKING:
    from torch import nn

JOIN = "+"  # "A+B": the images of A, then those of B, as one set
SYNTHETIC = re.compile(r"synthetic(?::(?P<n>[1-9][0-9]{0,6}))?")
SYNTHETIC_DEFAULT = 256


class DataSourceMissing(FileNotFoundError):
    """A named dataset whose files are not on this machine; says how to get them."""


_REGISTRY: list[tuple[re.Pattern[str], Callable[[re.Match[str]], ImageSet], str]] = []
# The modules that register named sets, imported on the first spec each may name, so
# ``import qretrain.data`` reads no package's files.
_PROVIDERS = SpecProviders()


def register_dataset(pattern: str, description: str):
    """Decorator: datasets whose spec fully matches ``pattern`` (a regex)."""

    def decorate(loader):
        _REGISTRY.append((re.compile(pattern), loader, description))
        return loader

    return decorate


def register_provider(pattern: str, module: str) -> None:
    """Specs matching ``pattern`` (a regex, full match) are registered by ``module``,
    imported the first time such a spec is loaded (or every set is listed)."""
    _PROVIDERS.add(pattern, module)


# The named sets built from this machine's Debian and PyPI packages (docs/DATA.md).
register_provider(r"fashion-mnist(:.*)?|mnist|foolbox-imagenet", "qretrain.assets.pools.reference")
register_provider(r"opencv-frames(:.*)?", "qretrain.assets.pools.opencv")
register_provider(r"gcompris-photos(:.*)?", "qretrain.assets.pools.gcompris")
register_provider(r"natural(:.*)?", "qretrain.assets.pools.natural")
register_provider(r"tuxpaint-stamps(:.*)?", "qretrain.assets.pools.stamps")


def _registered(text: str) -> tuple[Callable[[re.Match[str]], ImageSet], re.Match[str]] | None:
    """The registered loader whose pattern ``text`` matches, with the match."""
    _PROVIDERS.load(text)
    for pattern, loader, _ in _REGISTRY:
        match = pattern.fullmatch(text)
        if match:
            return loader, match
    return None


def is_named(text: str) -> bool:
    """Whether ``text`` (one part, no "+") is a named set: a registered one or synthetic."""
    return bool(SYNTHETIC.fullmatch(text)) or _registered(text) is not None


def known_datasets() -> list[str]:
    """Every dataset form (for --help and errors): the named sets first, in the order
    of their providers, whichever was loaded first, then those registered otherwise."""
    _PROVIDERS.load()
    rank = {module: i for i, module in enumerate(_PROVIDERS.modules())}
    named = sorted(_REGISTRY, key=lambda entry: rank.get(entry[1].__module__, len(rank)))
    return [d for _, _, d in named] + [forms.SYNTHETIC, forms.FILES, forms.JOINED]


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
        return idx_set(path)
    raise QretrainError(
        f"cannot tell what {str(path)!r} holds: expected a folder, .npz, .csv or IDX "
        "(…-idx3-ubyte[.gz]) file"
    )


CLASS_MAP = "classes.txt"  # a labeled folder's own class map


def idx_set(images_path: Path) -> ImageSet:
    """The images of an IDX file, labeled by the matching ``*-idx1-ubyte`` beside it."""
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
