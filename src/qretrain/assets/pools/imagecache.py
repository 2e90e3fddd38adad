"""Image sets made once from packaged files and kept as JPEGs in the user cache.

A folder is complete when its marker ``complete`` exists and holds the number of
JPEGs in it. Otherwise the set is made again: each image written atomically, the
JPEGs of an unfinished earlier run that the new one does not name removed, the
marker written last. A killed run therefore leaves a folder that is made again, and
a folder missing files (deleted by hand) too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image

from qretrain.storage.atomic import atomic_path

JPEG_QUALITY = 95
MARKER = "complete"


def cached_jpegs(folder: Path, make: Callable[[], Iterable[tuple[str, Image.Image]]],
                 ) -> list[Path]:  # fmt: skip
    """The JPEGs of ``folder`` in sorted order; when it is not complete, first written
    from ``make()``'s (file name ending in .jpg, RGB image) pairs."""
    done = folder / MARKER
    made = sorted(folder.glob("*.jpg"))
    if done.exists() and done.read_text().strip() == str(len(made)):
        return made
    names: set[str] = set()
    for name, image in make():
        with atomic_path(folder / name) as tmp:
            image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        names.add(name)
    for stale in folder.glob("*.jpg"):  # left by an unfinished run over other files
        if stale.name not in names:
            stale.unlink()
    with atomic_path(done) as tmp:  # written last: a killed run makes them all again
        tmp.write_text(f"{len(names)}\n")
    return sorted(folder.glob("*.jpg"))
