"""Video files as images: every n-th frame, decoded once with OpenCV and kept as JPEGs.

A folder of frames is complete when its marker ``complete`` exists; later calls only
list it, so the videos are no longer needed once their frames are cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qretrain.data.registry import DataSourceMissing

MARKER = "complete"


def frames_cached(folder: Path) -> bool:
    """Whether ``folder`` already holds every frame ``cached_frames`` writes there."""
    return (folder / MARKER).exists()


def cached_frames(videos: Sequence[Path], folder: Path, *, stride: int, short_side: int,
                  quality: int) -> list[Path]:  # fmt: skip
    """The JPEG frames in ``folder``, in sorted order; when it is not complete, first
    every ``stride``-th frame of each video, its shorter side brought to
    ``short_side`` (area interpolation), written at JPEG ``quality`` as
    ``{video stem}_{frame index:04d}.jpg``."""
    if not frames_cached(folder):
        try:
            import cv2
        except ImportError as e:
            raise DataSourceMissing(
                f"decoding the frames of {videos[0].name} needs OpenCV, once: "
                "pip install opencv-python-headless"
            ) from e
        for video in videos:
            capture = cv2.VideoCapture(str(video))
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index % stride == 0:
                    h, w = frame.shape[:2]
                    scale = short_side / min(h, w)
                    size = (round(w * scale), round(h * scale))
                    frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                    path = folder / f"{video.stem}_{index:04d}.jpg"
                    cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
                index += 1
            capture.release()
        (folder / MARKER).write_text("ok\n")
    return sorted(folder.glob("*.jpg"))
