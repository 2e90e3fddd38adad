"""``tuxpaint-stamps``: Tux Paint's stamps, cut-out pictures of single objects.

The ``natural`` pool is mostly frames of three videos: many images, few scenes, and
almost no picture of one object, which is what ImageNet is made of. Tux Paint's
stamps (Debian ``tuxpaint-stamps-default``) are a few hundred cut-outs of animals,
birds, fish, fruit, vegetables, flowers, instruments, tools and vehicles, most of
them photographs, with a transparent background. Taken here: every stamp outside
the ``cartoon`` folders and ``symbols/`` (letters, signs of maths and money), in its
original orientation (the ``_mirror`` files are left out); drawings among them
(hats, clothes, road signs, flags) are kept, not picked out by eye.

Each stamp is composited once, centred on a mid-grey square 1.25 times its longer
side (so the model's centre crop keeps the whole object), and cached as JPEG in the
user cache; later loads read the cache and no longer need the package.
``tuxpaint-stamps:scenes`` puts each on a random square crop of a ``natural`` pool
image instead (an object in a street or a room rather than on grey). None is an
ImageNet image: docs/DATA.md records the hash check against the evaluation set.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from qretrain._cache import cache_dir
from qretrain.assets.pools.imagecache import cached_jpegs
from qretrain.data import forms
from qretrain.data.readers import TRANSPARENT_FILL
from qretrain.data.registry import DataSourceMissing, load_dataset, register_dataset
from qretrain.data.sets import ImageSet, file_set
from qretrain.errors import QretrainError

STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
STAMPS_PACKAGE = "tuxpaint-stamps-default"
LEFT_OUT = ("cartoon", "symbols")  # folder names whose stamps are not taken
BACKGROUND = TRANSPARENT_FILL  # mid-grey, as transparent pixels of any image read
MARGIN = 1.25  # canvas side / the stamp's longer side
CACHE_KEY = f"grey{BACKGROUND[0]}-margin{MARGIN}"  # the user cache's folder for these settings
SCENE_SEED = 0  # draws each stamp's background image and its crop (tuxpaint-stamps:scenes)


def stamp_sources(root: Path = STAMPS_DIR) -> list[Path]:
    """The stamp files taken, in sorted order (see the module docstring)."""
    return sorted(
        p for p in root.rglob("*.png")
        if not set(p.relative_to(root).parts[:-1]) & set(LEFT_OUT)
        and not p.stem.endswith(("_mirror", "_thumb"))
    )  # fmt: skip


def composite(stamp: Image.Image, background: Image.Image | None = None) -> Image.Image:
    """``stamp`` (any mode, transparency honoured) centred on a square, RGB: grey, or
    ``background`` (square) resized to it."""
    rgba = stamp.convert("RGBA")
    side = max(1, int(max(rgba.size) * MARGIN))
    if background is None:
        canvas = Image.new("RGBA", (side, side), (*BACKGROUND, 255))
    else:
        canvas = background.convert("RGB").resize((side, side), Image.BILINEAR).convert("RGBA")
    canvas.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas.convert("RGB")


def square_crop(image: Image.Image, rng: random.Random) -> Image.Image:
    """A random square crop of ``image`` as large as its shorter side."""
    side = min(image.size)
    x, y = rng.randrange(image.width - side + 1), rng.randrange(image.height - side + 1)
    return image.crop((x, y, x + side, y + side))


def stamp_paths(root: Path = STAMPS_DIR, scenes: list[Path] | None = None) -> list[Path]:
    """The composited stamps in the user cache, made on first use: on grey, or with
    ``scenes`` on a random square crop of one of those images each (drawn from
    SCENE_SEED, in the stamps' sorted order)."""
    if scenes is None:
        folder = cache_dir("tuxpaint-stamps", CACHE_KEY)
    else:  # the backgrounds are part of the data: another list, another cache
        digest = hashlib.sha256("\n".join(map(str, scenes)).encode()).hexdigest()[:12]
        folder = cache_dir("tuxpaint-stamps", f"scenes-seed{SCENE_SEED}-margin{MARGIN}-{digest}")
    return cached_jpegs(folder, lambda: _composites(root, scenes))


def _composites(root: Path, scenes: list[Path] | None):
    """(file name, composited stamp) for every stamp taken, in sorted order."""
    sources = stamp_sources(root) if root.is_dir() else []
    if not sources:
        raise DataSourceMissing(
            f"tuxpaint-stamps needs Tux Paint's stamps (looked in {root}); they come "
            f"with the Debian package {STAMPS_PACKAGE}: apt-get install -y --no-install-recommends "
            f"{STAMPS_PACKAGE}"
        )
    rng = random.Random(SCENE_SEED)
    for source in sources:
        name = "_".join(source.relative_to(root).with_suffix("").parts) + ".jpg"
        try:
            with Image.open(source) as opened:
                stamp = opened.convert("RGBA")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise QretrainError(
                f"cannot read {source} as an image ({e}); the stamps must be PNG files: "
                "reinstall them (apt-get install --reinstall -y --no-install-recommends "
                f"{STAMPS_PACKAGE})"
            ) from e
        background = None
        if scenes is not None:  # the pool's files were checked readable when listed
            with Image.open(rng.choice(scenes)) as scene:
                background = square_crop(scene.convert("RGB"), rng)
        yield name, composite(stamp, background)


@register_dataset(r"tuxpaint-stamps(?P<scenes>:scenes)?", forms.TUXPAINT_STAMPS)
def _tuxpaint_stamps(match: re.Match[str]) -> ImageSet:
    if not match["scenes"]:
        return file_set("tuxpaint-stamps", stamp_paths(), None)
    scenes = load_dataset("natural").paths
    return file_set("tuxpaint-stamps:scenes", stamp_paths(scenes=scenes), None)
