"""The ``natural`` pool, the Tux Paint stamps and GCompris's photographs: what they
hold, and proof that no ImageNet image is in them.

    python benchmarks/check_pool.py --imagenet ../shared/imagenet-sample-dev

Counts each source; compares every file (for the stamps and the photographs: the
cached image the model reads) with every image of the ImageNet evaluation set by SHA-256 of the file
(exact copies) and by a 16x16 average hash of the decoded image (re-encoded or
resized copies: at most 10 of 256 bits differ).
Results: benchmarks/results/natural_pool.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from _common import RESULTS, Machine, parser, write_result
from PIL import Image

import qretrain
from qretrain.assets.pools.natural import SOURCES
from qretrain.data.readers import list_images

NEAR_BITS = 10


def average_hash(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        gray = np.asarray(img.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32)
    return (gray > gray.mean()).reshape(-1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    cli = parser(__doc__, imagenet=True)
    args = cli.parse_args()
    machine = Machine()
    sources = {name: qretrain.load_dataset(f"natural:{name}").paths for name in SOURCES}
    for name in ("tuxpaint-stamps", "gcompris-photos"):
        sources[name] = qretrain.load_dataset(name).paths
    pool = [p for paths in sources.values() for p in paths]
    imagenet = list_images(args.imagenet)
    imagenet_sha = {sha256(p) for p in imagenet}
    exact = [str(p) for p in pool if sha256(p) in imagenet_sha]
    imagenet_hashes = np.stack([average_hash(p) for p in imagenet])
    near = []
    for p in pool:
        distance = (imagenet_hashes != average_hash(p)).sum(1)
        if distance.min() <= NEAR_BITS:
            near.append({"pool": str(p), "imagenet": str(imagenet[int(distance.argmin())]),
                         "bits": int(distance.min())})  # fmt: skip
    record = {"sources": {k: len(v) for k, v in sources.items()}, "total": len(pool),
              "imagenet_images_checked": len(imagenet), "exact_sha256_matches": exact,
              "near_duplicates": near, "near_bits": NEAR_BITS}  # fmt: skip
    write_result(RESULTS / "natural_pool.json", record, machine)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
