"""The stages of a compression, each writing its record into a work folder.

``qretrain.compress`` and ``qretrain run`` run the same stage functions, so a run
config and a Python call with the same settings write the same files and reach the
same figures. A stage is skipped when its record exists (``Stages``), so a killed
run resumes where it was.

Files in the work folder: ``analyze/`` (the sweep), ``plan.yaml`` and ``plan.json``,
``clustered.h5`` and ``compress.json``, and per retraining run ``NAME.h5`` and
``NAME.json`` (``label_free``, ``conventional``, ``far_off``), with its checkpoints
while it runs.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from qretrain.analysis import AnalyzeSettings, Sweep, analyze
from qretrain.apply import CompressSettings, cluster_and_save
from qretrain.errors import QretrainError
from qretrain.metrics.quality import agreement, kl_change, mean_kl, predict
from qretrain.plan import Plan
from qretrain.planner import PlanSettings, auto_plan
from qretrain.progress import duration
from qretrain.retrain import Objective, RetrainConfig, block_checkpoint, retrain
from qretrain.storage import file_sha256, load, save, subfolder, write_text_atomic

logger = logging.getLogger(__name__)
CLUSTERED = "clustered.h5"


class Stages:
    """Runs each stage unless its record exists (and names its file's checksum).

    Records are trusted in order only: once one stage runs, every later stage runs
    too, since its record was made from what the earlier stage has just replaced.
    ``seconds`` keeps each stage's time in this process.
    """

    def __init__(self) -> None:
        self.ran = False
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, done: Path, work: Callable[[], object],
                 pair: Path | None = None) -> None:  # fmt: skip
        if not self.ran and done.exists() and (pair is None or paired(done, pair)):
            logger.info("[%s] done before: %s", name, done)
            return
        self.ran = True
        logger.info("[%s] ...", name)
        start = time.perf_counter()
        work()
        self.seconds[name] = time.perf_counter() - start
        logger.info("[%s] %s", name, duration(self.seconds[name]))


def paired(record: Path, file: Path) -> bool:
    """Whether ``record`` was written with ``file`` as it is now (a killed write between
    the two never counts as done)."""
    try:
        named = json.loads(record.read_text()).get("file_sha256")
    except (OSError, ValueError, RecursionError, AttributeError):
        return False
    return file.is_file() and named == file_sha256(file)


def sweep_stage(model: nn.Module, data: Dataset, out: Path, settings: AnalyzeSettings, *,
                device: str, progress: bool, model_name: str | None = None) -> None:  # fmt: skip
    """Every layer clustered alone at every k, measured on ``data`` (``out/analyze``)."""
    analyze(model, data, subfolder(out / "analyze"), settings, device=device,
            model_name=model_name, progress=progress)  # fmt: skip


def plan_stage(model: nn.Module, verify: Dataset, out: Path, settings: PlanSettings, *,
               device: str, progress: bool = False) -> None:  # fmt: skip
    """The smallest plan within the budget, verified on ``verify`` (plan.yaml/json)."""
    start = time.perf_counter()
    result = auto_plan(Sweep.load(out / "analyze"), model, verify, settings, device=device,
                       progress=progress)  # fmt: skip
    write_text_atomic(out / "plan.yaml", result.to_yaml(str(out / "analyze")))
    record = result.to_dict() | {"seconds": time.perf_counter() - start}
    write_text_atomic(out / "plan.json", json.dumps(record, indent=2))
    logger.info("plan: %s", result.describe())


def plan_file_stage(plan_file: str | Path, out: Path) -> None:
    """A plan the user wrote, checked, then copied in as plan.yaml."""
    Plan.load(plan_file)
    write_text_atomic(out / "plan.yaml", Path(plan_file).read_text())
    write_text_atomic(out / "plan.json", json.dumps({"file": str(plan_file), "seconds": 0.0}))


def cluster_stage(model: nn.Module, out: Path, settings: CompressSettings,
                  data: Callable[[], Dataset] | None = None) -> None:  # fmt: skip
    """A clustered copy of ``model`` as plan.yaml says, saved as clustered.h5.
    ``data``: images for sensitive-kmeans rules (called only if one needs them)."""
    cluster_and_save(copy.deepcopy(model), Plan.load(out / "plan.yaml"), out / CLUSTERED,
                     settings, record_path=out / "compress.json", data=data,
                     progress=False)  # fmt: skip


def retrain_stage(name: str, teacher: nn.Module, data: Dataset, out: Path,
                  config: RetrainConfig, *, held_out: Dataset | None, device: str,
                  progress: bool, trust_code: bool = False, labels: bool = False) -> None:  # fmt: skip
    """Retrain clustered.h5 on ``data`` as ``config`` says and save NAME.h5.

    Label-free runs are guarded: on ``held_out`` (images never trained on) the result
    replaces the clustered start only if its KL to ``teacher`` is lower with 95%
    confidence (``guard``); otherwise NAME.h5 is the start, and a warning says so.
    ``labels``: conventional retraining on the data's labels (unguarded: it is the
    comparison the label-free runs are measured against).
    """
    if labels:
        # The conventional baseline is cross-entropy on the outputs, whatever the objective.
        config = replace(config, labels=True, objective=Objective.OUTPUT)
    else:
        data.labels = None  # label-free: whatever labels the set has are withheld
    student = load(out / CLUSTERED, trust_code=trust_code)
    checkpoint = out / f"{name}.ckpt"
    result = retrain(student, None if labels else teacher, data, config, checkpoint=checkpoint,
                     resume=True, device=device, progress=progress)  # fmt: skip
    model, record = result.model.cpu(), dict(result.record)
    if not labels and held_out is not None:
        start = load(out / CLUSTERED, trust_code=trust_code)
        decision = guard(teacher, start, model, held_out, device=device, what=name)
        record["guard"] = decision
        if decision["kept"] == "start":
            model = start
    save(model, out / f"{name}.h5", record=lambda saved: {
        "run": name, "data": data.describe(), "file_bytes": saved.file_bytes, **record,
    })  # fmt: skip
    checkpoint.unlink(missing_ok=True)  # the stage's record says it is done
    block_checkpoint(checkpoint).unlink(missing_ok=True)


def guard(teacher: nn.Module, start: nn.Module, retrained: nn.Module, held_out: Dataset, *,
          device: str, what: str = "retraining", seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Keep ``retrained`` only if it is closer to ``teacher`` than ``start`` on
    ``held_out`` by a margin the images resolve, and gives the teacher's answer on no
    fewer of them: the paired 95% bootstrap interval of the change in mean KL lies
    below zero, and top-1 agreement does not fall. KL per image is continuous, so a few
    hundred images resolve what agreement (a count of flipped answers) cannot; but a
    model can move its probabilities closer while flipping more answers (retraining on
    far-off images did), and answers are what a user sees."""
    if len(held_out) == 0:
        raise QretrainError("the guard has no held-out images to decide on")
    with torch.no_grad():
        reference, _ = predict(teacher, held_out, device=device)
        before, _ = predict(start, held_out, device=device)
        after, _ = predict(retrained, held_out, device=device)
    change, low, high = kl_change(before, after, reference, seed=seed)
    agrees_before, agrees_after = agreement(before, reference), agreement(after, reference)
    kept = "retrained" if high < 0 and agrees_after >= agrees_before else "start"
    decision = {
        "images": len(held_out), "kept": kept,
        "kl_start": mean_kl(before, reference), "kl_retrained": mean_kl(after, reference),
        "kl_change": change, "kl_change_95": [low, high],
        "agreement_start": agrees_before, "agreement_retrained": agrees_after,
    }  # fmt: skip
    interval = (f"KL {decision['kl_start']:.4f} -> {decision['kl_retrained']:.4f}, change "
                f"{change:+.4f} [95%: {low:+.4f}, {high:+.4f}], agreement {agrees_before:.2%} -> "
                f"{agrees_after:.2%} on {len(held_out)} held-out images")  # fmt: skip
    if kept == "start":
        logger.warning("%s did not make the model surely closer to the original (%s): the "
                       "clustered start is kept", what, interval)  # fmt: skip
    else:
        logger.info("guard: %s kept (%s)", what, interval)
    return decision
