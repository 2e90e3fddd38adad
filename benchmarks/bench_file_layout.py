"""What a packed file is made of: indices, codebooks, unclustered tensors, metadata.

    python benchmarks/bench_file_layout.py efficientnet-lite0 examples/plans/efficientnet-lite0-auto.yaml

Clusters the model with each plan, saves it with batch norm folded (the default) and
kept, and reports the file's bytes by part, HDF5 and manifest metadata per tensor,
and the size against float32. Results: benchmarks/results/file_layout.json.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

from _common import RESULTS, Machine, float32_bytes, parser, write_result

import qretrain


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("model", help="model spec")
    cli.add_argument("plans", nargs="+", help="plan files")
    args = cli.parse_args()
    machine = Machine()
    original = qretrain.load_model(args.model)
    float32 = float32_bytes(original)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for plan in args.plans:
            model = copy.deepcopy(original)
            qretrain.cluster_(model, plan, progress=False)
            tensors = len(model.state_dict())
            for fold in (True, False):
                saved = qretrain.save(model, Path(folder) / "m.h5", fold_batchnorm=fold)
                rows.append({
                    "plan": plan, "fold_batchnorm": fold, "file_bytes": saved.file_bytes,
                    "vs_float32": float32 / saved.file_bytes, "tensors": tensors,
                    "metadata_per_tensor": saved.breakdown["metadata"] / tensors,
                    "breakdown": saved.breakdown,
                })  # fmt: skip
                print(json.dumps(rows[-1]))
    record = {"model": args.model, "float32_bytes": float32, "rows": rows}
    write_result(RESULTS / "file_layout.json", record, machine)


if __name__ == "__main__":
    main()
