"""``natural``: every natural, non-ImageNet photo reachable offline, as one pool.

Label-free retraining of ImageNet models needs unlabeled images from *another*
dataset; a few hundred street-video frames are a narrow one. The pool gathers:

- ``opencv``: OpenCV's sample video frames and photos (Debian ``opencv-doc``; the
  ``opencv-frames`` set);
- ``wallpapers``: the photographs among Debian's desktop backgrounds, chosen by eye
  (abstract art, renders and drawings left out; ``gnome-backgrounds`` holds none);
  one file per wallpaper, the largest, since Plasma ships each in several sizes;
- ``cifar``: the 40 CIFAR-10/100 images that ship with ``foolbox``.

``natural`` is all present sources; ``natural:SOURCE`` one of them, an error naming
its package when it is missing. Images are listed in sorted order per source, so the
pool (and any ``--limit`` subset of it) is the same on every machine with the same
packages. No file is an ImageNet image: docs/DATA.md records the hash check against
the ImageNet evaluation set.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from qretrain.assets.pools.opencv import opencv_paths
from qretrain.assets.pools.packages import foolbox_data
from qretrain.data import forms
from qretrain.data.readers import IMAGE_SUFFIXES
from qretrain.data.registry import DataSourceMissing, register_dataset
from qretrain.data.sets import ImageSet, file_set

logger = logging.getLogger(__name__)

MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
MATE_PHOTOS = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
               "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")  # fmt: skip
PLASMA_DIR = Path("/usr/share/wallpapers")
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                 "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")  # fmt: skip
WALLPAPER_PACKAGES = "mate-backgrounds plasma-workspace-wallpapers"
SOURCES = ("opencv", "wallpapers", "cifar")


def wallpaper_photos() -> list[Path]:
    """The chosen photographs that are installed, one file per wallpaper."""
    paths = [MATE_NATURE / f"{name}.jpg" for name in MATE_PHOTOS]
    paths = [p for p in paths if p.is_file()]
    for name in PLASMA_PHOTOS:
        images = [p for p in (PLASMA_DIR / name / "contents" / "images").glob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
        if images:
            paths.append(max(images, key=_pixels))
    return sorted(paths)


def _pixels(path: Path) -> tuple[int, str]:
    match = re.fullmatch(r"(\d+)x(\d+)", path.stem)  # Plasma names files WxH
    return (int(match[1]) * int(match[2]) if match else 0, path.name)


def _source(name: str) -> list[Path]:
    if name == "opencv":
        return opencv_paths()
    if name == "wallpapers":
        paths = wallpaper_photos()
        if not paths:
            raise DataSourceMissing(
                "natural:wallpapers needs Debian's desktop backgrounds: apt-get install -y "
                + WALLPAPER_PACKAGES
            )
        return paths
    return sorted(foolbox_data().glob("cifar*.png"))


@register_dataset(r"natural(?::(?P<source>opencv|wallpapers|cifar))?", forms.NATURAL)
def _natural(match: re.Match[str]) -> ImageSet:
    if match["source"]:
        return file_set(f"natural:{match['source']}", _source(match["source"]), None)
    paths = []
    for name in SOURCES:
        try:
            paths += _source(name)
        except DataSourceMissing as e:
            logger.warning("natural: leaving out %s (%s)", name, e)
    if not paths:
        raise DataSourceMissing("natural: none of its sources is on this machine")
    return file_set("natural", paths, None)
