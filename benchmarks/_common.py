"""What the benchmarks share: their arguments, the machine record, results written
atomically, the reference teachers, the ImageNet evaluation set's scores, the
label-free signals and their rank correlation, and running the command line.

Every script imports this module, never another script. Nothing here imports torch
or qretrain at import time: bench_memory's parent process must stay without torch,
so each function imports what it needs when called.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# A smoke run writes elsewhere: QRETRAIN_BENCH_RESULTS=/tmp/r python benchmarks/...
RESULTS = Path(os.environ.get("QRETRAIN_BENCH_RESULTS", ROOT / "benchmarks" / "results"))
PLANS = ROOT / "examples" / "plans"
BATCH = 32  # images per forward pass of every ImageNet-sized measurement


# --- arguments ----------------------------------------------------------------------------
def parser(doc: str, *, imagenet: bool = False) -> argparse.ArgumentParser:
    """The script's parser: its docstring's first paragraph as the description; with
    ``imagenet``, the required ``--imagenet PATH`` (the evaluation set is passed in,
    never looked for)."""
    cli = argparse.ArgumentParser(description=" ".join(doc.split("\n\n")[0].split()))
    if imagenet:
        cli.add_argument("--imagenet", type=Path, required=True,
                         help="the ImageNet evaluation set's folder "
                         "(../shared/imagenet-sample-dev; read its README)")  # fmt: skip
    return cli


# --- the machine and the results ----------------------------------------------------------
class Machine:
    """The machine a run measures on, recorded when the run starts; ``at_end`` adds
    what the end of the run saw. These machines are shared: the load average says
    how busy the other users kept it."""

    def __init__(self, device: str = "cpu") -> None:
        self.start = time.perf_counter()
        self.record = {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "torch": _version("torch"),
            "device": device,
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
        }

    def at_end(self) -> dict:
        """The record, with torch's threads, the load average now and the wall time."""
        torch = sys.modules.get("torch")  # a process that never imported it has no threads
        return {**self.record, "threads": torch.get_num_threads() if torch else None,
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
                "wall_seconds": round(time.perf_counter() - self.start, 1)}  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_json(path: Path, value: Any) -> Path:
    """``value`` as indented JSON at ``path``, atomically: a run killed while writing
    leaves the previous result, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                     delete=False) as tmp:  # fmt: skip
        tmp.write(json.dumps(value, indent=2) + "\n")
    os.replace(tmp.name, path)
    return path


def write_result(path: Path, record: dict, machine: Machine) -> Path:
    """``record`` with its machine (completed now) written to ``path``."""
    return write_json(path, {**record, "machine": machine.at_end()})


def read_json(path: Path, default: Any) -> Any:
    """An earlier result that this run adds to, or ``default`` when there is none."""
    return json.loads(path.read_text()) if path.exists() else default


# --- models -------------------------------------------------------------------------------
def reference_teacher(name: str, epochs: int | None = None):
    """A Fashion-MNIST reference teacher (``teacher:NAME``), trained once and cached."""
    from qretrain.assets.teachers import teacher

    return teacher(name) if epochs is None else teacher(name, epochs=epochs)


def float32_bytes(model) -> int:
    """The model's floating-point tensors as float32: what a file is compared with."""
    return sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())


class LayersAlone:
    """EfficientNet-Lite0 with one plan's layers changed at a time, scored by the mean KL
    to the original on unlabeled pool images (no ImageNet image): ``ks`` maps each
    planned weight to its k, ``original`` holds the unchanged state dict, and
    ``kl_of(replaced)`` scores the model with those tensors replaced, then restores it."""

    POOL = "natural+tuxpaint-stamps+tuxpaint-stamps:scenes"

    def __init__(self, plan: Path, images: int) -> None:
        import yaml

        import qretrain
        from qretrain.data import load_dataset
        from qretrain.metrics.quality import predict
        from qretrain.models import get_arch

        self.model = qretrain.load_model("efficientnet-lite0").eval()
        self.data = load_dataset(self.POOL, get_arch(self.model).contract, limit=images, seed=0)
        self.reference, _ = predict(self.model, self.data)
        self.original = {n: v.clone() for n, v in self.model.state_dict().items()}
        rules = yaml.safe_load(plan.read_text())["rules"]
        self.ks = {f"{r['name']}.weight": r["k"] for r in rules}

    def kl_of(self, replaced: dict) -> float:
        from qretrain.metrics.quality import mean_kl, predict

        self.model.load_state_dict(self.original | replaced)
        logits, _ = predict(self.model, self.data)
        self.model.load_state_dict(self.original)
        return mean_kl(logits, self.reference)


# --- scores -------------------------------------------------------------------------------
def scores(logits, labels, reference) -> dict:
    """Every ImageNet figure the benchmarks report for one model: top-1, top-5, top-1
    agreement with ``reference`` (the original's logits), and the top-1 drop against
    it with its paired 95% bootstrap interval (``metrics.top1_drop``)."""
    from qretrain.metrics.quality import agreement, top1_drop, topk_accuracy

    drop, lo, hi = top1_drop(logits, reference, labels)
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5),
            "agreement": agreement(logits, reference), "top1_drop_points": drop,
            "drop_95_interval": [lo, hi]}  # fmt: skip


class ImageNet:
    """The ImageNet evaluation set, fitted to ``original``, with the original's logits:
    the reference every model's scores compare with. Read by nothing but the final
    measurement."""

    def __init__(self, path: Path, original) -> None:
        from qretrain.data import load_dataset
        from qretrain.metrics.quality import predict, topk_accuracy
        from qretrain.models import get_arch

        self.data = load_dataset(path, get_arch(original).contract)
        self.reference, self.labels = predict(original, self.data, batch_size=BATCH)
        self.original_top1 = topk_accuracy(self.reference, self.labels, 1)

    def logits(self, model):
        from qretrain.metrics.quality import predict

        return predict(model, self.data, batch_size=BATCH)[0]

    def scores(self, logits) -> dict:
        return scores(logits, self.labels, self.reference)

    def row(self, name: str, logits, file_bytes: int, float32: int) -> dict:
        """One model's row: its name, its file against float32, its scores."""
        return {"model": name, "file_bytes": file_bytes, "times_smaller": float32 / file_bytes,
                **self.scores(logits)}  # fmt: skip


def signal(logits, reference) -> dict:
    """The label-free signal on (N, classes) logits against the original's."""
    from qretrain.metrics.quality import agreement, mean_kl

    return {"images": len(logits), "agreement": agreement(logits, reference),
            "mean_kl": mean_kl(logits, reference)}  # fmt: skip


def synthetic_heldout(teacher, images: int = 64):
    """The synthetic images (seed 0, 100 steps) scored when a variant does not train
    on them: 64, or more from the same generator (its first 64 are those); made from
    ``teacher`` once, then read from the cache."""
    from qretrain.data.synthetic import synthesize

    return synthesize(teacher, images, seed=0, steps=100)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b``; ties share their mean rank."""
    import torch

    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(x):  # ties share their mean rank
            j = i
            while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return torch.tensor(r, dtype=torch.float64)

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


# --- fuzzing ------------------------------------------------------------------------------
def fuzz_record(fuzz: Callable[[Path, int, int], Any], mutations: int, seeds: list[int],
                kinds: Iterable[str]) -> dict:  # fmt: skip
    """Run ``fuzz(folder, mutations, seed)`` (a harness of ``qretrain.testing``) for
    each seed in a fresh folder; the outcomes counted per kind, every failure that
    broke the harness's contract, the slowest case and the peak memory."""
    outcomes, failures, slowest = Counter(), [], 0.0
    for seed in seeds:
        with tempfile.TemporaryDirectory() as folder:
            report = fuzz(Path(folder), mutations, seed)
        outcomes.update(report.outcomes)
        failures += report.failures
        slowest = max(slowest, report.slowest)
        print(f"seed {seed}: {sum(report.outcomes.values())} mutations, "
              f"{len(report.failures)} broke the contract")  # fmt: skip
    table = {kind: {o: n for (k, o), n in sorted(outcomes.items()) if k == kind}
             for kind in kinds}  # fmt: skip
    for kind, counts in table.items():
        print(f"{kind:17s} {counts}")
    print(f"slowest {slowest:.3f} s; peak RSS {peak_rss_mib():.0f} MiB")
    return {
        "mutations_per_seed": mutations,
        "seeds": seeds,
        "outcomes": table,
        "failures": failures,
        "slowest_seconds": slowest,
        "peak_rss_mib": peak_rss_mib(),
    }


def fuzz_main(doc: str, fuzz: Callable[[Path, int, int], Any], kinds: Iterable[str],
              out: Path, *, mutations: int, seeds: list[int]) -> None:  # fmt: skip
    """A fuzzing benchmark's command line: ``--mutations`` per seed and ``--seeds``
    (the harness's defaults given here), ``fuzz_record`` over them, written to ``out``."""
    cli = parser(doc)
    cli.add_argument("--mutations", type=int, default=mutations, help="per seed")
    cli.add_argument("--seeds", type=int, nargs="+", default=seeds)
    args = cli.parse_args()
    machine = Machine()
    record = fuzz_record(fuzz, args.mutations, args.seeds, kinds)
    print(f"wrote {write_result(out, record, machine)}")


def peak_rss_mib() -> float:
    """This process's peak resident memory so far."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the command line ---------------------------------------------------------------------
def run_qretrain(argv: list[str]) -> float:
    """Run ``qretrain ARGV`` in a process of its own, as a user would; its wall seconds."""
    command = [sys.executable, "-m", "qretrain", *argv]
    print("$ qretrain", " ".join(argv), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start
