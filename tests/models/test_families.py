"""Every family works or says why in one line: compress (every conv, linear and
attention weight at k = 16), save, reopen, block-wise (or its logged fallback) and
ONNX, at tiny sizes (``qretrain.testing.families``: small members of each family)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import qretrain
from qretrain.analysis.census import module_census
from qretrain.cluster.state import clusters_of
from qretrain.export.check import probe_inputs
from qretrain.models import ParamKind, describe_tensors
from qretrain.testing.families import FAMILIES, Trial

STAGES = ("compress", "reopen", "blocks", "onnx")
VIT = "vit_small"


def run(name: str, folder) -> Trial:
    """The family's small member through STAGES, on 2 random images; the outcomes are
    on ``trial.outcomes``."""
    trial = Trial(FAMILIES[name], folder, images=2, method="linear", small=True)
    trial.outcomes = trial.run(STAGES)
    return trial


def weights(model: torch.nn.Module) -> set[str]:
    """Every clusterable weight: conv, linear and attention projections."""
    return {i.name for i in describe_tensors(model)
            if i.kind is ParamKind.WEIGHT and i.unclusterable_reason() is None}  # fmt: skip


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_compresses_reopens_retrains_block_wise_and_exports(name, tmp_path, caplog):
    pytest.importorskip("onnxruntime", reason="pip install 'qretrain[onnx]'")
    caplog.set_level(logging.WARNING)
    trial = run(name, tmp_path)
    out = trial.outcomes
    for stage in ("compress", "reopen", "blocks"):
        assert out[stage].ok, f"{stage}: {out[stage].note}"
    # Every conv, linear and attention weight was clustered, and the file kept them.
    assert set(clusters_of(trial.reopened)) == weights(trial.reopened) != set()
    if FAMILIES[name].untraceable:
        said = "output matching instead, 1 epoch (block_epochs)"
        assert said in out["blocks"].note and said in caplog.text
        assert not out["onnx"].ok and out["onnx"].note.startswith("onnx export refused: ")
        assert "\n" not in out["onnx"].note
        assert not list(tmp_path.glob("*.onnx*"))  # nothing written, no temporary left
        return
    assert "fallback" not in out["blocks"].note
    assert out["onnx"].ok, out["onnx"].note
    # Parity in onnxruntime, on other images than the export checked itself with.
    import onnx
    import onnxruntime

    path = str(tmp_path / "model.onnx")
    images = probe_inputs(FAMILIES[name].contract, 4, seed=1)
    got = onnxruntime.InferenceSession(path).run(None, {"input": images.numpy()})[0]
    with torch.no_grad():
        want = trial.reopened(images).numpy()
    assert np.abs(got - want).max() <= 1e-4 + 1e-3 * np.abs(want).max()
    # ... computed from the codebooks: each clustered weight is one in the graph.
    held = {i.name for i in onnx.load(path).graph.initializer}
    assert {f"{n}.codebook" for n in clusters_of(trial.reopened)} <= held


def test_attention_is_numbered_in_forward_order_clustered_and_exported(tmp_path):
    trial = run(VIT, tmp_path)
    assert all(o.ok for o in trial.outcomes.values()), trial.outcomes
    attention = "encoder.layers.encoder_layer_0.self_attention"
    clustered = clusters_of(trial.reopened)
    assert {f"{attention}.in_proj_weight", f"{attention}.out_proj.weight"} <= set(clustered)
    assert clustered[f"{attention}.in_proj_weight"].codebook.shape[1] <= 16
    rows = module_census(trial.reopened).modules
    numbered = [r["name"] for r in rows if r["layer"] is not None]
    assert [r["layer"] for r in rows if r["layer"] is not None] == \
        list(range(1, len(numbered) + 1))  # fmt: skip
    at = numbered.index(attention)  # in_proj, then out_proj, then the MLP
    assert numbered[at + 1 : at + 3] == [f"{attention}.out_proj",
                                         "encoder.layers.encoder_layer_0.mlp.0"]  # fmt: skip


def test_a_regnet_file_reopens_without_trust_code(tmp_path):
    # torchvision's builder reads tensor values (.tolist()) while it builds, which the
    # meta device refuses: loading builds it with small tensors real (models.meta).
    model = qretrain.build_model("torchvision:regnet_x_400mf", num_classes=10).eval()
    qretrain.cluster_(model, {"method": "linear", "rules": [{"kinds": ["weight"], "k": 16}]})
    qretrain.save(model, tmp_path / "regnet.h5")
    reopened = qretrain.load(tmp_path / "regnet.h5")
    x = probe_inputs(FAMILIES["regnet_x_400mf"].contract, 2)
    with torch.no_grad():
        assert torch.allclose(reopened(x), model(x), rtol=1e-4, atol=1e-5)
