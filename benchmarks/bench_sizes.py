"""File sizes of torchvision VGG-16 and ResNet-50 under the seed's two plans.

Both architectures with default init (torch.manual_seed(0)): pretrained weights are
not reachable from this machine. For each model: the float32 bytes, an unclustered
gzip'd HDF5 file (the seed's baseline storage), and the clustered file in the packed
and the paper layout, with reductions against both. Results go to
benchmarks/results/sizes.json.

    python benchmarks/bench_sizes.py
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch
from _common import PLANS, RESULTS, ROOT, Machine, parser, write_result

import qretrain
from qretrain.cluster import clusters_of

CASES = [
    ("torchvision:vgg16", PLANS / "vgg16-paper.yaml", -81.10),
    ("torchvision:resnet50", PLANS / "resnet50-paper.yaml", -52.45),
]


def worst_over_bound(model: torch.nn.Module, tensor_bytes: dict[str, int]) -> float:
    """Largest stored / (n * ceil(log2 k) / 8 + codebook + 1 KiB) over clustered tensors."""
    worst = 0.0
    for name, c in clusters_of(model).items():
        bound = c.indices.numel() * c.bits / 8 + c.codebook.numel() * 4 + 1024
        worst = max(worst, tensor_bytes[name] / bound)
    return worst


def main() -> None:
    parser(__doc__).parse_args()  # no options: --help says what it measures
    machine = Machine()
    record = {"command": "python benchmarks/bench_sizes.py", "seed": 0, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        for spec, plan, seed_reduction in CASES:
            torch.manual_seed(0)
            model = qretrain.build_model(spec).eval()
            float32_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            baseline = qretrain.save(model, Path(tmp) / "float.h5", layout="paper").file_bytes
            case = {
                "model": spec,
                "plan": str(plan.relative_to(ROOT)),
                "float32_bytes": float32_bytes,
                "gzip_float32_file_bytes": baseline,
                "seed_paper_reduction_percent": seed_reduction,
                "layouts": {},
            }
            for layout in ("packed", "paper"):
                clustered = copy.deepcopy(model)
                qretrain.cluster_(clustered, plan)
                start = time.perf_counter()
                saved = qretrain.save(clustered, Path(tmp) / f"{layout}.h5", layout=layout)
                size = saved.file_bytes
                case["layouts"][layout] = {
                    "worst_stored_over_bound": worst_over_bound(clustered, saved.tensor_bytes),
                    "file_bytes": size,
                    "save_seconds": time.perf_counter() - start,
                    "reduction_vs_float32_percent": -100 * (1 - size / float32_bytes),
                    "reduction_vs_gzip_file_percent": -100 * (1 - size / baseline),
                }
                print(
                    f"{spec} {layout:6s}: {size / 2**20:8.2f} MiB, "
                    f"{case['layouts'][layout]['reduction_vs_float32_percent']:+.2f}% vs float32, "
                    f"{case['layouts'][layout]['reduction_vs_gzip_file_percent']:+.2f}% vs gzip'd "
                    f"float32 file (seed: {seed_reduction:+.2f}%); worst tensor / bound "
                    f"{case['layouts'][layout]['worst_stored_over_bound']:.4f}"
                )
            record["cases"].append(case)
    print(f"wrote {write_result(RESULTS / 'sizes.json', record, machine)}")


if __name__ == "__main__":
    main()
