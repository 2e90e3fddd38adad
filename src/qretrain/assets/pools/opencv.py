"""``opencv-frames``: OpenCV's sample videos and photos (Debian ``opencv-doc``), unlabeled.

Every second frame of a street scene, a film and a tree, plus 20 sample photos; none
is an ImageNet image. The frames are decoded once and cached as JPEGs in the user
cache (``qretrain.data.video``), after which the videos are no longer needed.
"""

from __future__ import annotations

import re
from pathlib import Path

from qretrain._cache import cache_dir
from qretrain.assets.pools.imagecache import JPEG_QUALITY
from qretrain.data import forms
from qretrain.data.registry import DataSourceMissing, register_dataset
from qretrain.data.sets import ImageSet, file_set
from qretrain.data.video import cached_frames, frames_cached

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


@register_dataset(r"opencv-frames(?::(?P<part>video|photos))?", forms.OPENCV_FRAMES)
def _opencv_frames(match: re.Match[str]) -> ImageSet:
    part = match["part"]
    name = "opencv-frames" + (f":{part}" if part else "")
    return file_set(name, opencv_paths(part), None)


def opencv_paths(part: str | None = None) -> list[Path]:
    """The cached video frames (``part="video"``), the photos (``"photos"``) or both."""
    frames = _frames() if part != "photos" else []
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


def _frames() -> list[Path]:
    """Every FRAME_STRIDE-th frame of the sample videos, cached as JPEG once (~30 MB)."""
    folder = cache_dir("opencv-frames", f"stride{FRAME_STRIDE}-short{FRAME_SHORT_SIDE}")
    if not frames_cached(folder):
        _require_opencv_data()
    videos = [OPENCV_DATA_DIR / video for video in OPENCV_VIDEOS]
    return cached_frames(videos, folder, stride=FRAME_STRIDE, short_side=FRAME_SHORT_SIDE,
                         quality=JPEG_QUALITY)  # fmt: skip
