"""``gcompris-photos``: the photographs of GCompris, pictures of objects, animals and places.

GCompris (Debian ``gcompris-qt-data``), the educational suite, shows photographs in
a few of its activities: tools, fish, monuments, renewable energy and other objects
to sort (``categorization``), animals to uncover (``erase``, ``explore_world_animals``)
and monuments of the world (``explore_monuments``). Taken here: every ``.webp`` picture
of those four activities, nothing picked out by eye, each byte-identical picture once
(the first by its path in the bundle, activities in sorted order). They are one
object or place per picture, as ImageNet's photographs are, and unlike the
``natural`` pool's frames. The other activities' pictures, mostly drawings,
paintings, puzzle pieces and sprite sheets, are not taken.

GCompris keeps its pictures inside Qt resource bundles (``qretrain.assets.pools.qtres`` reads
them without trusting their offsets). Each picture is decoded once, its shorter side
brought down to SHORTER_SIDE (the models fitted here read at most 297 px), transparent
pixels on mid-grey, and cached as JPEG in the user cache; later loads read the cache
and no longer need the package. None is an ImageNet image: docs/DATA.md records the
hash check against the evaluation set.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from qretrain._cache import cache_dir
from qretrain.assets.pools.imagecache import cached_jpegs
from qretrain.assets.pools.opencv import FRAME_SHORT_SIDE
from qretrain.assets.pools.qtres import read_bundle
from qretrain.data import forms
from qretrain.data.readers import flatten
from qretrain.data.registry import DataSourceMissing, register_dataset
from qretrain.data.sets import ImageSet, file_set
from qretrain.errors import QretrainError

BUNDLES_DIR = Path("/usr/share/gcompris-qt/rcc")
PACKAGE = "gcompris-qt-data"
INSTALL = f"apt-get install -y --no-install-recommends {PACKAGE}"
REINSTALL = f"reinstall it (apt-get install --reinstall -y --no-install-recommends {PACKAGE})"
ACTIVITIES = ("categorization", "erase", "explore_monuments", "explore_world_animals")
SHORTER_SIDE = FRAME_SHORT_SIDE  # as the OpenCV frames are cached
CACHE_KEY = f"webp-short{SHORTER_SIDE}"  # the user cache's folder for these settings


def photo_sources(root: Path = BUNDLES_DIR) -> list[tuple[str, bytes]]:
    """(cache file name, encoded picture) of every photograph taken, in order (see the
    module docstring)."""
    bundles = [root / f"{activity}.rcc" for activity in ACTIVITIES]
    missing = [b.name for b in bundles if not b.is_file()]
    if missing:
        raise DataSourceMissing(
            f"gcompris-photos needs GCompris's resource bundles ({', '.join(missing)} not in "
            f"{root}); they come with the Debian package {PACKAGE}: {INSTALL}"
        )
    taken, seen = [], set()
    for activity, bundle in zip(ACTIVITIES, bundles, strict=True):
        files = read_bundle(bundle, (".webp",), fix=REINSTALL)
        for path in sorted(files):
            digest = hashlib.sha256(files[path]).digest()
            if digest in seen:
                continue
            seen.add(digest)
            inside = path.split(f"/activities/{activity}/", 1)[-1].removeprefix("resource/")
            name = "_".join([activity, *Path(inside).with_suffix("").parts]) + ".jpg"
            taken.append((name, files[path]))
    return taken


def shrink(image: Image.Image, side: int = SHORTER_SIDE) -> Image.Image:
    """``image`` with its shorter side at most ``side`` (aspect kept, antialiased)."""
    scale = side / min(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR)


def photo_paths(root: Path = BUNDLES_DIR) -> list[Path]:
    """The photographs in the user cache, made on first use."""
    return cached_jpegs(cache_dir("gcompris-photos", CACHE_KEY), lambda: _decoded(root))


def _decoded(root: Path):
    for name, encoded in photo_sources(root):
        try:
            with Image.open(io.BytesIO(encoded)) as opened:
                image = flatten(opened).convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise QretrainError(
                f"cannot decode GCompris's picture {name[:-4]} ({e}); expected WebP: {REINSTALL}"
            ) from e
        yield name, shrink(image)


@register_dataset(r"gcompris-photos", forms.GCOMPRIS_PHOTOS)
def _gcompris_photos(match: re.Match[str]) -> ImageSet:
    return file_set("gcompris-photos", photo_paths(), None)
