"""File sizes of each export next to the packed .h5, and ONNX outputs under onnxruntime.

    qretrain compress efficientnet-lite0 --plan examples/plans/efficientnet-lite0-auto.yaml -o out/lite0-auto.h5
    python benchmarks/bench_export.py out/lite0-auto.h5 --data natural --limit 256 --offset 256

Exports the model to safetensors, onnx, torchscript and coreml beside it, and runs the ONNX
file in onnxruntime on the images: top-1 agreement and the largest logit difference
against the qretrain model. A recipe's work folder also holds plan.json: its target and the
size it was planned for (``deploy``) are recorded next to the exports'. Results:
benchmarks/results/export_<name>.json (``--name``, by default the file's stem).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from _common import BATCH, RESULTS, Machine, parser, write_result

import qretrain
from qretrain.metrics.quality import agreement, predict
from qretrain.models import get_arch


def onnx_parts(path: Path) -> dict[str, int]:
    """Raw bytes of the ONNX file's initializers: codebooks, indices, float tensors
    stored split (export.formats._split_floats), other (float32 and small constants)."""
    import onnx

    parts = {"codebooks": 0, "indices": 0, "split_floats": 0, "other": 0}
    for t in onnx.load(str(path)).graph.initializer:
        if t.name.endswith((".pair.indices", ".m_high.indices", ".m_low", ".base", ".step")):
            part = "split_floats"
        else:
            part = {"codebook": "codebooks", "indices": "indices"}.get(t.name.rsplit(".", 1)[-1],
                                                                        "other")  # fmt: skip
        parts[part] += len(t.raw_data)
    return parts


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("model", help="a qretrain .h5 file")
    cli.add_argument("--data", default="natural")
    cli.add_argument("--limit", type=int, default=256)
    cli.add_argument("--offset", type=int, default=256)
    cli.add_argument("--name", help="the result's name (default: the model file's stem)")
    args = cli.parse_args()
    machine = Machine()
    import onnxruntime

    path = Path(args.model)
    model = qretrain.load(path)
    with tempfile.TemporaryDirectory() as tmp:  # its parts (saving again: the same bytes)
        breakdown = qretrain.save(model, Path(tmp) / "m.h5").breakdown
    rows = {"h5": {"file_bytes": path.stat().st_size, "breakdown": breakdown}}
    for fmt, suffix in (("safetensors", ".safetensors"), ("onnx", ".onnx"),
                        ("torchscript", ".pt"), ("coreml", ".mlpackage")):  # fmt: skip
        try:
            result = qretrain.export(model, path.with_suffix(suffix), fmt)
        except Exception as e:  # one format failing must not hide the others' figures
            rows[fmt] = {"error": f"{type(e).__name__}: {e}"}
            continue
        rows[fmt] = {
            "file_bytes": result.file_bytes,
            "vs_h5": result.file_bytes / rows["h5"]["file_bytes"],
        }
        float32 = result.float32_bytes
    data = qretrain.load_dataset(args.data, get_arch(model).contract, limit=args.limit,
                                 offset=args.offset)  # fmt: skip
    reference, _ = predict(model, data, batch_size=BATCH)
    session = onnxruntime.InferenceSession(str(path.with_suffix(".onnx")))
    outputs = []
    for start in range(0, len(data), BATCH):
        x = torch.stack([data[i][0] for i in range(start, min(start + BATCH, len(data)))])
        outputs.append(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]))
    logits = torch.cat(outputs)
    rows["onnx"]["initializer_bytes"] = onnx_parts(path.with_suffix(".onnx"))
    rows["onnx"].update(
        agreement=agreement(logits, reference),
        max_abs_logit_difference=float((logits - reference).abs().max()),
    )
    record = {"model": str(path), "float32_bytes": float32, "data": data.describe(), "rows": rows}
    planned = path.parent / "plan.json"
    if planned.is_file():  # the recipe's plan: what its target was of, and the export's ratio
        plan = json.loads(planned.read_text())
        deploy = plan.get("deploy", "h5")
        artifact = rows.get(deploy if deploy == "coreml" else "h5", {})
        record["plan"] = {"target_size": plan["target_size"], "deploy": deploy,
                          "planned_bytes": plan["file_bytes"]}  # fmt: skip
        if plan["target_size"] and "file_bytes" in artifact:
            record["plan"]["deployed_vs_target"] = artifact["file_bytes"] / plan["target_size"]
    write_result(RESULTS / f"export_{args.name or path.stem}.json", record, machine)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
