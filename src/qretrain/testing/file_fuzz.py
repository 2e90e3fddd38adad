"""Mutation fuzzing of qretrain model files: the contract of ``qretrain.load``.

Each mutation damages a sound file one way and loads it. The contract:

- a file damaged after it was written (``truncate``, ``flip``, ``edit``: cut short,
  bytes flipped, or changed with h5py) raises ``QretrainFileError`` or loads
  identically;
- a file crafted on purpose (``crafted-*``: the same damage, then sealed again, as
  a stranger could) raises ``QretrainFileError`` or loads as a sound model;
- none raises another type, none takes more than ``SLOW_SECONDS``.

``fuzz(folder, n, seed)`` returns the outcomes; tests assert the contract, and
``benchmarks/bench_fuzz.py`` reports the counts in docs/SECURITY.md.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from qretrain.cluster.state import clusters_of, plans_of
from qretrain.apply.model import cluster_
from qretrain.errors import QretrainFileError
from qretrain.models import build_model, get_arch
from qretrain.storage import load, save
from qretrain.storage.seal import write_seal
from qretrain.testing.timed import timed_outcome

KINDS = ("truncate", "flip", "edit", "crafted-truncate", "crafted-flip", "crafted-edit")
SLOW_SECONDS = 2.0
HANG_SECONDS = 20


def corpus(folder: Path) -> list[Path]:
    """Three small sound files: packed (codebooks of pairs, per channel and of k=1),
    the same in the paper layout, and a batch-norm net with clustered running
    statistics (codebooks per tensor)."""
    torch.manual_seed(0)
    vgg = build_model("qretrain.zoo:vgg_small", width=4, hidden=16)
    cluster_(vgg, {"rules": [{"type": "Conv2d", "k": 16, "granularity": "pairs"},
                             {"type": "Linear", "k": 5, "granularity": "channel"},
                             {"kinds": ["bias"], "k": 1}]}, progress=False)  # fmt: skip
    resnet = build_model("qretrain.zoo:resnet_small", width=4, blocks=1)
    cluster_(resnet, {"rules": [{"layers": "2-4", "k": 8},
                                {"kinds": ["bn_running_mean"], "k": 4}]}, progress=False)  # fmt: skip
    paths = [folder / "packed.h5", folder / "paper.h5", folder / "bn.h5"]
    save(vgg, paths[0])
    save(vgg, paths[1], layout="paper")
    save(resnet, paths[2])
    return paths


@dataclass
class FuzzReport:
    outcomes: Counter = field(default_factory=Counter)  # (kind, outcome) -> count
    failures: list[str] = field(default_factory=list)  # broke the contract
    mutations: list[str] = field(default_factory=list)  # what each mutation did
    slowest: float = 0.0

    def table(self) -> list[tuple[str, dict[str, int]]]:
        rows = {}
        for (kind, outcome), count in sorted(self.outcomes.items()):
            rows.setdefault(kind, {})[outcome] = count
        return list(rows.items())


def fuzz(folder: Path, n: int, seed: int = 0, keep: Path | None = None) -> FuzzReport:
    """``n`` seeded mutations of ``corpus(folder)``'s files, cycling through KINDS.

    ``keep``: a folder that receives a copy of every mutant that broke the contract.
    """
    rng = np.random.default_rng(seed)
    sources = corpus(folder)
    originals = {p: _fingerprint(load(p)) for p in sources}
    report = FuzzReport()
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        source = sources[int(rng.integers(len(sources)))]
        target = folder / f"mutant-{i}.h5"
        shutil.copyfile(source, target)
        what = _mutate(target, kind.removeprefix("crafted-"), rng)
        if kind.startswith("crafted-"):
            write_seal(target)
        report.mutations.append(f"{kind} {what} on {source.name}")
        outcome, seconds = _load(target, originals[source])
        report.slowest = max(report.slowest, seconds)
        if outcome == "valid" and not kind.startswith("crafted-"):
            outcome = "loaded changed"  # damage went unnoticed: a failure
        report.outcomes[kind, outcome] += 1
        if outcome not in ("QretrainFileError", "identical", "valid") or seconds > SLOW_SECONDS:
            report.failures.append(f"{kind} {what} on {source.name}: {outcome} in {seconds:.2f} s")
            if keep is not None:
                shutil.copyfile(target, keep / f"{i}-{kind}.h5")
        target.unlink()
    return report


def _load(path: Path, original) -> tuple[str, float]:
    """``path`` loaded under the watchdog: ``identical`` (to the fingerprint
    ``original``), ``valid`` (loads, but changed), the error's type, or ``hang``."""
    return timed_outcome(lambda: "identical" if _fingerprint(load(path)) == original else "valid",
                         _error_name, HANG_SECONDS)  # fmt: skip


def _error_name(error: Exception) -> str:
    # QretrainFileError's subclasses (UntrustedCodeError) keep the contract as well.
    return "QretrainFileError" if isinstance(error, QretrainFileError) else type(error).__name__


def _fingerprint(model) -> tuple:
    state = tuple((k, v.dtype, tuple(v.shape), v.numpy().tobytes())
                  for k, v in model.state_dict().items())  # fmt: skip
    clusters = tuple(
        (k, c.k, c.method, c.granularity, c.sq_error, c.codebook.numpy().tobytes(),
         c.indices.numpy().tobytes(), c.sizes.numpy().tobytes())
        for k, c in sorted(clusters_of(model).items())
    )  # fmt: skip
    return state, clusters, json.dumps(plans_of(model)), get_arch(model).to_json()


def _mutate(path: Path, how: str, rng: np.random.Generator) -> str:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        cut = int(rng.integers(0, len(data)))
        path.write_bytes(bytes(data[:cut]))
        return f"cut at {cut} of {len(data)}"
    if how == "flip":
        spots = rng.integers(0, len(data), int(rng.integers(1, 9)))
        for spot in spots:
            data[spot] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(data))
        return f"flipped {len(spots)} bytes"
    with h5py.File(path, "r+") as f:
        return _edit(f, rng)


def _edit(f: h5py.File, rng: np.random.Generator) -> str:
    """One h5py edit: a manifest value changed, dropped or added, a dataset dropped,
    replaced, overwritten or renamed, an attribute or a link added."""
    action = ["manifest", "manifest", "manifest", "manifest", "drop", "replace",
              "overwrite", "rename", "link", "attr"][int(rng.integers(10))]  # fmt: skip
    if action == "manifest":
        doc = json.loads(f["manifest"][()].tobytes())
        what = _edit_json(doc, rng)
        del f["manifest"]
        f["manifest"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
        return f"manifest {what}"
    datasets = []
    f.visititems(lambda name, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
    ds = datasets[int(rng.integers(len(datasets)))]
    name, parent = ds.name, ds.parent
    if action == "drop":
        del f[name]
    elif action == "replace":
        shape = tuple(int(rng.integers(0, 5)) for _ in range(int(rng.integers(0, 3))))
        dtype = ["float32", "uint8", "int64", "float64"][int(rng.integers(4))]
        del f[name]
        f.create_dataset(name, data=rng.integers(0, 255, shape).astype(dtype))
    elif action == "overwrite" and ds.size:
        flat = np.asarray(ds[()]).reshape(-1)
        flat[int(rng.integers(flat.size))] = flat.dtype.type(int(rng.integers(0, 255)))
        ds[...] = flat.reshape(ds.shape)
    elif action == "rename":
        parent.move(name.rsplit("/", 1)[1], name.rsplit("/", 1)[1] + "x")
    elif action == "link":
        parent["link"] = h5py.SoftLink(name)
    else:
        ds.attrs["extra"] = 1  # qretrain reads no attributes: loads the same when sealed
    return f"{action} {name}"


def _edit_json(doc: dict, rng: np.random.Generator) -> str:
    """Change, drop or add one value somewhere in the manifest; says where."""
    path, node = [], doc
    while True:  # walk down to a random container
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = keys[int(rng.integers(len(keys)))]
        if not isinstance(node[key], (dict, list)) or rng.random() < 0.3:
            break
        path.append(key)
        node = node[key]
    if not (list(node) if isinstance(node, dict) else node):
        node_key = None
    else:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        node_key = keys[int(rng.integers(len(keys)))]
    choice = int(rng.integers(4))
    if node_key is None or choice == 0:
        if isinstance(node, dict):
            node["extra"] = 1
        else:
            node.append({"extra": 1})
        return f"{path} added"
    if choice == 1:
        del node[node_key]
        return f"{path + [node_key]} dropped"
    node[node_key] = _changed(node[node_key], rng)
    return f"{path + [node_key]} changed"


def _changed(value, rng: np.random.Generator):
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        choice = int(rng.integers(4))
        if choice == 0 or not value:
            return "os:system"
        if choice == 1:
            return value[: int(rng.integers(len(value)))]
        i = int(rng.integers(len(value)))
        return value[:i] + "9" + value[i + 1 :] if choice == 2 else 7
    if isinstance(value, int):
        return value + [1, -1, 1 << 31, -(1 << 40), 255][int(rng.integers(5))]
    if isinstance(value, float):
        return [float("nan"), float("inf"), -1.0, 0.0, value * 2][int(rng.integers(5))]
    if isinstance(value, list):
        return value[:-1] if value and rng.random() < 0.5 else value + [value[0] if value else 1]
    return {"x": 1} if value is None else None
