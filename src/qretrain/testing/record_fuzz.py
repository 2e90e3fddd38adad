"""Mutation fuzzing of what qretrain reads besides model files: sweep records, run
configs and retraining checkpoints (``file_fuzz`` covers ``.h5`` files).

Each mutation changes one sound input one way and hands it to what reads it:

- ``sweep``: a real ``sweep.json``, through ``qretrain plan DIR --no-verify``;
- ``config``: a real run config, through everything ``qretrain run`` checks before
  it writes anything (``RunConfig.load``, the model, every named dataset, the
  resolved config it would store);
- ``checkpoint``: a real per-epoch checkpoint, through ``retrain(..., resume=True)``.

The ways (``HOWS``): ``set`` a random node to a hostile value (NaN, infinity, huge
or negative numbers, wrong types, a tensor of another shape, dtype or NaN),
``drop`` or ``add`` a key, ``truncate`` or ``flip`` the bytes, ``nest`` the
document 100,000 levels deep, and for configs a YAML alias ``bomb`` (10^9 values in
ten lines). The contract: a ``QretrainError`` or ``OSError`` (what the command line
prints as one line, exit 2) or a sound result; never another exception type, never
slower than ``SLOW_SECONDS``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from qretrain.errors import QretrainError
from qretrain.testing.file_fuzz import FuzzReport
from qretrain.testing.timed import timed_outcome

KINDS = ("sweep", "config", "checkpoint")
HOWS = ("set", "drop", "add", "truncate", "flip", "nest", "bomb")
SLOW_SECONDS = 5.0
HANG_SECONDS = 30
HOSTILE = (None, True, -3, 0, 2**31, 10**30, 1.5, float("nan"), float("inf"), "", "x",
           "<script>", [], {}, [1, 2], {"a": 1})  # fmt: skip
BOMB = ("model_args: {a: &a [x, x, x, x, x, x, x, x, x], b: &b [*a, *a, *a, *a, *a, *a, *a, *a, "
        "*a], c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b], d: &d [*c, *c, *c, *c, *c, *c, *c, "
        "*c, *c], e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d], f: &f [*e, *e, *e, *e, *e, *e, "
        "*e, *e, *e], g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f], h: &h [*g, *g, *g, *g, *g, "
        "*g, *g, *g, *g], i: [*h, *h, *h, *h, *h, *h, *h, *h, *h]}\n")  # fmt: skip


class _Corpus:
    """A tiny model, its data, a sweep record, a run config and a checkpoint."""

    def __init__(self, folder: Path) -> None:
        from qretrain.analysis import AnalyzeSettings, analyze
        from qretrain.apply.model import cluster_
        from qretrain.data import load_dataset
        from qretrain.models import build_model, get_arch
        from qretrain.retrain import RetrainConfig, retrain
        from qretrain.storage import save

        self.folder = folder
        torch.manual_seed(0)
        self.teacher = build_model("qretrain.zoo:vgg_small", width=4, hidden=16).eval()
        save(self.teacher, folder / "m.h5")
        rng = np.random.default_rng(0)
        np.savez(folder / "d.npz", x=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8),
                 y=rng.integers(0, 10, 32))  # fmt: skip
        (folder / "plan.yaml").write_text("rules:\n  - {type: Conv2d, k: 4}\n")
        contract = get_arch(self.teacher).contract
        self.data = load_dataset(str(folder / "d.npz"), contract, limit=24)
        self.val = load_dataset(str(folder / "d.npz"), contract, limit=8, offset=24)
        settings = AnalyzeSettings(ks=(2, 8), kinds=("weight",))
        analyze(self.teacher, self.data, folder / "sweep", settings, progress=False, plots=False)
        self.sweep = json.loads((folder / "sweep" / "sweep.json").read_text())
        self.config = {
            "output": str(folder / "never-written"),
            "model": str(folder / "m.h5"),
            "data": {"evaluate": str(folder / "d.npz"),
                     "retrain": {"spec": str(folder / "d.npz"), "limit": 16}},
            "plan": {"file": str(folder / "plan.yaml")},
            "retrain": {"epochs": 1, "batch_size": 8},
        }  # fmt: skip
        self.student = copy.deepcopy(self.teacher)
        cluster_(self.student, {"rules": [{"type": "Conv2d", "k": 4}]}, progress=False)
        self.retrain_config = RetrainConfig(epochs=2, batch_size=8)
        self.retrain = retrain
        retrain(copy.deepcopy(self.student), self.teacher, self.data, self.retrain_config,
                val_data=self.val, checkpoint=folder / "sound.ckpt", progress=False)  # fmt: skip
        self.checkpoint = torch.load(folder / "sound.ckpt", weights_only=True)


def fuzz_records(folder: Path, n: int, seed: int = 0) -> FuzzReport:
    """``n`` seeded mutations, cycling through KINDS; outcomes per (kind, outcome)."""
    rng = np.random.default_rng(seed)
    corpus = _Corpus(folder)
    report = FuzzReport()
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        how = HOWS[int(rng.integers(len(HOWS) if kind == "config" else len(HOWS) - 1))]
        target = folder / f"mutant-{i}"
        target.mkdir()
        what, consume = _MAKERS[kind](corpus, target, how, rng)
        report.mutations.append(f"{kind} {what}")
        outcome, seconds = timed_outcome(consume, _error_name, HANG_SECONDS)
        report.slowest = max(report.slowest, seconds)
        report.outcomes[kind, outcome] += 1
        if outcome not in ("refused", "sound") or seconds > SLOW_SECONDS:
            report.failures.append(f"{kind} {what}: {outcome} in {seconds:.2f} s")
    return report


def _error_name(error: Exception) -> str:
    # What the command line prints as one line (exit 2) is a refusal; anything else
    # breaks the contract and is named with the start of its message.
    if isinstance(error, (QretrainError, OSError)):
        return "refused"
    return f"{type(error).__name__}: {str(error)[:100]}"


# --- the three kinds ------------------------------------------------------------------
def _sweep(corpus: _Corpus, target: Path, how: str, rng) -> tuple[str, Callable[[], str]]:
    what, text = _mutated_text(corpus.sweep, how, rng, json.dumps)
    (target / "sweep.json").write_bytes(text)

    def consume() -> str:
        from qretrain.cli.main import main

        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(["plan", str(target), "--max-drop", "5", "--metric", "agreement",
                         "--no-verify", "-o", str(target / "plan.yaml"), "--quiet"])  # fmt: skip
        if code == 2 and err.getvalue().count("\n") == 1:
            return "refused"
        return "sound" if code == 0 else f"exit {code}: {err.getvalue()[-200:]}"

    return what, consume


def _config(corpus: _Corpus, target: Path, how: str, rng) -> tuple[str, Callable[[], str]]:
    if how == "bomb":
        what, text = "bomb", (BOMB + yaml.safe_dump(
            {k: v for k, v in corpus.config.items() if k != "model_args"})).encode()  # fmt: skip
    else:
        what, text = _mutated_text(corpus.config, how, rng, yaml.safe_dump)
    (target / "run.yaml").write_bytes(text)

    def consume() -> str:
        from qretrain.data import load_dataset
        from qretrain.models import Origin, get_arch, load_model
        from qretrain.pipeline import RunConfig

        config = RunConfig.load(target / "run.yaml")
        model = load_model(config.model, weights=config.weights, origin=Origin.CONFIG,
                           **config.model_args)  # fmt: skip
        contract = get_arch(model).contract
        for ref in config.data.values():
            load_dataset(ref.spec, contract, limit=ref.limit, seed=ref.seed, offset=ref.offset,
                         views=ref.views, teacher=model)  # fmt: skip
        config.to_yaml()
        return "sound"

    return what, consume


def _checkpoint(corpus: _Corpus, target: Path, how: str, rng) -> tuple[str, Callable[[], str]]:
    path = target / "r.ckpt"
    if how in ("truncate", "flip"):
        buffer = io.BytesIO()
        torch.save(corpus.checkpoint, buffer)
        what, data = _bytes(bytearray(buffer.getvalue()), how, rng)
        path.write_bytes(bytes(data))
    else:
        payload = copy.deepcopy(corpus.checkpoint)
        what = _mutate_tree(payload, how if how != "nest" else "set", rng, tensors=True)
        torch.save(payload, path)

    def consume() -> str:
        result = corpus.retrain(copy.deepcopy(corpus.student), corpus.teacher, corpus.data,
                                corpus.retrain_config, val_data=corpus.val, checkpoint=path,
                                resume=True, progress=False)  # fmt: skip
        expected = corpus.student.state_dict()
        for name, tensor in result.model.state_dict().items():
            if tensor.shape != expected[name].shape or (
                tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
            ):
                return f"unsound: {name} {tuple(tensor.shape)}"  # fmt: skip
        return "sound"

    return what, consume


_MAKERS = {"sweep": _sweep, "config": _config, "checkpoint": _checkpoint}


# --- mutations ------------------------------------------------------------------------
def _mutated_text(doc: Any, how: str, rng, dump: Callable[[Any], str]) -> tuple[str, bytes]:
    if how in ("set", "drop", "add"):
        doc = copy.deepcopy(doc)
        what = _mutate_tree(doc, how, rng)
        return what, dump(doc).encode()
    text = dump(doc).encode()
    if how == "nest":
        return "nest", b"[" * 100_000 + text + b"]" * 100_000
    what, data = _bytes(bytearray(text), how, rng)
    return what, bytes(data)


def _bytes(data: bytearray, how: str, rng) -> tuple[str, bytearray]:
    if how == "truncate":
        cut = int(rng.integers(len(data)))
        return f"truncate at {cut}", data[:cut]
    spots = rng.integers(len(data), size=int(rng.integers(1, 9)))
    for spot in spots:
        data[spot] ^= 1 << int(rng.integers(8))
    return f"flip {len(spots)} byte(s)", data


def _mutate_tree(doc: Any, how: str, rng, tensors: bool = False) -> str:
    """Change one node of the tree ``doc`` in place; returns what was done."""
    parent, key, path = _pick(doc, rng)
    if parent is None:
        return "nothing to change"
    if how == "drop":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
        return f"drop {path}"
    if how == "add":
        if isinstance(parent, dict):
            parent["extra"] = _hostile(rng)
        else:
            parent.append(_hostile(rng))
        return f"add to {path}"
    old = parent[key]
    if tensors and isinstance(old, torch.Tensor) and rng.random() < 0.7:
        parent[key], what = _tensor_variant(old, rng)
        return f"set {path} to {what}"
    parent[key] = _hostile(rng)
    return f"set {path} to {parent[key]!r}"


def _pick(doc: Any, rng) -> tuple[Any, Any, str]:
    """A random (container, key, path) in ``doc``, at a random depth."""
    parent, key, path = None, None, ""
    node = doc
    while isinstance(node, (dict, list)) and node and (parent is None or rng.random() < 0.6):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, keys[int(rng.integers(len(keys)))]
        path += f"/{key}"
        node = node[key]
    return parent, key, path


def _hostile(rng) -> Any:
    return copy.deepcopy(HOSTILE[int(rng.integers(len(HOSTILE)))])


def _tensor_variant(tensor: torch.Tensor, rng) -> tuple[torch.Tensor, str]:
    choice = int(rng.integers(4))
    if choice == 0 and tensor.dim() > 0 and tensor.numel() > 1:
        return tensor.reshape(-1)[: max(1, tensor.numel() // 2)].clone(), "a smaller tensor"
    if choice == 1 and tensor.dim() > 0:
        return tensor[0].clone(), "its first row (broadcastable)"
    if choice == 2 and tensor.is_floating_point():
        return torch.full_like(tensor, float("nan")), "NaN"
    other = torch.float64 if tensor.dtype != torch.float64 else torch.int64
    return tensor.to(other), "another dtype"
