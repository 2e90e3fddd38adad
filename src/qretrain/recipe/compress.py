"""``qretrain.compress``: a model and unlabeled images in, a smaller model out.

One call runs the measured recipe: share the images out (``split``), sweep every
layer alone, choose the smallest plan within the target (KL planner, verified),
cluster, win quality back block by block, and keep the result only if it beats the
clustered start on images nothing was trained or chosen on. The step functions
(``analyze``, ``auto_plan``, ``cluster_``, ``retrain``) stay public beneath it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qretrain._table import human_bytes
from qretrain.analysis.settings import Signal
from qretrain.apply import CompressSettings
from qretrain.data import load_dataset
from qretrain.data.sets import ImageSet
from qretrain.device import fast_bfloat16
from qretrain.errors import QretrainError
from qretrain.export.options import Deploy
from qretrain.metrics.quality import agreement, mean_kl, predict
from qretrain.models import get_arch, load_model
from qretrain.models.channels import scale_channels
from qretrain.models.fingerprint import model_fingerprint
from qretrain.plan import Plan
from qretrain.planner import PlanSettings
from qretrain.progress import duration
from qretrain.recipe.folder import claim
from qretrain.recipe.settings import LAST_LAYER_WEIGHT, RecipeSettings, Recover
from qretrain.recipe.split import Parts, split
from qretrain.recipe.stages import (
    CLUSTERED,
    Stages,
    cluster_stage,
    plan_stage,
    retrain_stage,
    sweep_stage,
)
from qretrain.storage import atomic_path, file_bytes, folder_lock, load, write_text_atomic

logger = logging.getLogger(__name__)
RECOVERED = "label_free"  # the retraining run's name in the work folder (and in reports)


@dataclass(frozen=True)
class Quality:
    """A model against the original on the held-out images: top-1 agreement, mean KL."""

    agreement: float
    kl: float

    def __str__(self) -> str:
        return f"agreement {self.agreement:.2%}, KL {self.kl:.4f}"


@dataclass
class Compressed:
    """What ``compress`` returns: the model to keep and how it was made.

    ``model`` is the retrained model, or the clustered start when retraining did not
    beat it on the held-out images (``kept``). ``quality`` holds each stage's model
    against the original on those images.
    """

    model: nn.Module
    plan: Plan
    kept: str  # "retrained" | "clustered"
    quality: dict[str, Quality]  # "clustered", and "retrained" when retraining ran
    held_out: int
    float32_bytes: int
    file_bytes: int
    seconds: dict[str, float]
    parts: dict[str, int]
    settings: RecipeSettings
    file_data: bytes = field(repr=False)  # the kept model's file, as measured
    records: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ratio(self) -> float:
        return self.float32_bytes / self.file_bytes

    @functools.cached_property
    def deploy_bytes(self) -> int | None:
        """The kept model's Core ML package, what ``target`` sized with deploy coreml
        (measured by converting it, on first use); None with deploy h5."""
        if self.settings.deploy is not Deploy.COREML:
            return None
        from qretrain.export.formats import coreml_package_bytes

        return coreml_package_bytes(self.model)

    def save(self, path: str | Path) -> Path:
        """Write the kept model's file (the very bytes measured) to ``path``, atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_bytes(self.file_data)
        return path

    def export(self, path: str | Path, format: str):
        """``qretrain.export`` of the kept model (safetensors, onnx, coreml, torchscript)."""
        from qretrain.export import export

        return export(self.model, path, format)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept": self.kept, "ratio": self.ratio, "file_bytes": self.file_bytes,
            "float32_bytes": self.float32_bytes, "held_out": self.held_out,
            "quality": {name: vars(q) for name, q in self.quality.items()},
            "seconds": self.seconds, "parts": self.parts, "plan": self.plan.to_dict(),
            "settings": self.settings.to_dict(), "deploy_bytes": self.deploy_bytes,
        }  # fmt: skip

    def summary(self) -> str:
        lines = [f"{self.ratio:.2f}x smaller than float32: {human_bytes(self.file_bytes)} "
                 f"(float32 {human_bytes(self.float32_bytes)})"]  # fmt: skip
        if self.deploy_bytes is not None:
            lines.append(f"Core ML package: {human_bytes(self.deploy_bytes)}, "
                         f"{self.float32_bytes / self.deploy_bytes:.2f}x smaller than float32")  # fmt: skip
        for name, quality in self.quality.items():
            lines.append(f"{name:>10}: {quality} on {self.held_out} held-out images")
        lines.append(f"kept the {self.kept} model")
        lines.append(
            "time: " + ", ".join(f"{name} {duration(s)}" for name, s in self.seconds.items())
        )
        return "\n".join(lines)


def compress(
    model: nn.Module | str | Path,
    data: ImageSet | str | Path,
    *,
    target: Any = None,
    max_drop: float | None = None,
    recover: str | None = None,
    seed: int | None = None,
    settings: RecipeSettings | None = None,
    device: str = "cpu",
    progress: bool = True,
    workdir: str | Path | None = None,
    overwrite: bool = False,
) -> Compressed:
    """Compress ``model`` to ``target`` and win its quality back on ``data``, no labels.

    model: an ``nn.Module`` carrying its facts (``qretrain.load_model``), or a spec or
        file to load.
    data: unlabeled images of the kind the model sees (a folder, a named set, an
        ``ImageSet``), fitted to the model's input contract; at least 100.
    target: a ratio to float32 (``7``, ``"7x"``) or a size (``"2.6MB"``, bytes);
        ``max_drop`` instead: the largest drop of ``metric`` the plan may cost.
    recover: ``blocks`` (block-wise reconstruction, the default), ``output`` or ``none``.
    seed: decides every random choice (the images' shares, clustering, retraining).
    settings: every knob of the recipe (``RecipeSettings``); the keywords above,
        where given, override it.
    workdir: where the stages write their records (a fresh temporary folder by
        default, removed afterwards); a folder passed here keeps them (the sweep, the
        plan, the clustered start, the retrained model), and a second call with the
        same model, data and settings resumes from them; another run's folder is
        refused unless ``overwrite``.
    """
    overrides = {k: v for k, v in (("recover", recover), ("seed", seed)) if v is not None}
    if target is not None or max_drop is not None:  # one budget replaces the other
        overrides |= {"target": target, "max_drop": max_drop}
    base = settings.to_dict() if settings is not None else {}
    settings = RecipeSettings.from_dict(base | overrides)
    if isinstance(model, (str, Path)):
        model = load_model(model)
    model.eval()
    arch = get_arch(model)
    if isinstance(data, (str, Path)):
        data = load_dataset(data, arch.contract if arch is not None else None)
    parts = split(data, settings)
    logger.info("images: %s", parts.describe())
    with _work_folder(workdir, model, data, settings, overwrite) as work:
        return run_recipe(model, parts, settings, work, device=device, progress=progress)


# Everything the recipe writes in its work folder.
OUTPUTS = ["split.json", "analyze", "plan.yaml", "plan.json", CLUSTERED, "compress.json",
           f"{RECOVERED}.h5", f"{RECOVERED}.json", f"{RECOVERED}.ckpt",
           f"{RECOVERED}.blocks.ckpt"]  # fmt: skip


@contextlib.contextmanager
def _work_folder(workdir: str | Path | None, model: nn.Module, data: ImageSet,
                 settings: RecipeSettings, overwrite: bool) -> Iterator[Path]:  # fmt: skip
    """A fresh temporary folder, or ``workdir`` locked and claimed for this run."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="qretrain-") as folder:
            yield Path(folder)
        return
    folder = Path(workdir)
    with folder_lock(folder, "qretrain compress"):
        recorded = settings.to_dict()
        if settings.sweep_signal is Signal.MEASURED:  # as folders made before the setting
            del recorded["signal"]
        identity = {"settings": recorded, "model": model_fingerprint(model),
                    "data": data.fingerprint()}  # fmt: skip
        if claim(folder, identity, OUTPUTS, overwrite=overwrite, what="compress"):
            logger.info("resuming the compression in %s", folder)
        yield folder


def run_recipe(model: nn.Module, parts: Parts, settings: RecipeSettings, work: Path, *,
               device: str = "cpu", progress: bool = True, trust_code: bool = False,
               stages: Stages | None = None, model_name: str | None = None) -> Compressed:  # fmt: skip
    """The recipe's stages in ``work`` (``qretrain.recipe.stages``), then the result."""
    stages = stages or Stages()
    started = time.perf_counter()
    float32_bytes = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    target = settings.target.bytes_for(float32_bytes) if settings.target else None
    if target is not None and settings.deploy is Deploy.H5:  # a package: the planner checks
        _check_reachable(model, target, float32_bytes)
    weight = LAST_LAYER_WEIGHT if settings.recover is Recover.BLOCKS else 1.0
    plan_settings = PlanSettings(target_size=target, max_drop=settings.max_drop,
                                 metric=settings.metric, deploy=settings.deploy,
                                 last_layer_weight=weight)  # fmt: skip
    write_text_atomic(work / "split.json", json.dumps(parts.to_dict(), indent=2))
    source = functools.cache(lambda: _to_cluster(model, settings))  # made if a stage runs
    stages("analyze", work / "analyze" / "summary.md", lambda: sweep_stage(
        source(), parts.sweep, work, settings.analyze_settings(float32_bytes, fast_bfloat16(device)), device=device, progress=progress,
        model_name=model_name))  # fmt: skip
    stages("plan", work / "plan.json",
           lambda: plan_stage(source(), parts.verify, work, plan_settings, device=device,
                              progress=progress))  # fmt: skip
    stages("compress", work / "compress.json",
           lambda: cluster_stage(source(), work, CompressSettings()), pair=work / CLUSTERED)  # fmt: skip
    config = settings.retrain_config()
    if config is not None:
        stages(f"retrain ({settings.recover.value})", work / f"{RECOVERED}.json",
               lambda: retrain_stage(RECOVERED, model, parts.retrain, work, config,
                                     held_out=parts.held_out, device=device,
                                     progress=progress, trust_code=trust_code),
               pair=work / f"{RECOVERED}.h5")  # fmt: skip
    return _result(model, parts, settings, work, float32_bytes, stages, started, device,
                   trust_code)  # fmt: skip


def _to_cluster(model: nn.Module, settings: RecipeSettings) -> nn.Module:
    """What the recipe sweeps, plans and clusters: ``model``, or with ``channel_scales`` a
    copy of the same function whose convolutions' channels are scaled into the batch
    norms after them (``models.channels``). The original stays the teacher."""
    if not settings.channel_scales:
        return model
    scaled = copy.deepcopy(model).eval()
    scale_channels(scaled)
    return scaled


def _check_reachable(model: nn.Module, target: int, float32_bytes: int) -> None:
    """Refuse, before any work, a target the unclustered file already meets."""
    unclustered = file_bytes(model)
    if target >= unclustered:
        raise QretrainError(
            f"the target, {target:,} bytes, is no smaller than the model's file without "
            f"clustering ({unclustered:,} bytes; its float32 tensors {float32_bytes:,}): "
            "nothing to cluster; ask for a smaller size (a ratio like 4x, or fewer bytes)"
        )


def _result(model, parts: Parts, settings: RecipeSettings, work: Path, float32_bytes: int,
            stages: Stages, started: float, device: str, trust_code: bool) -> Compressed:  # fmt: skip
    clustered = load(work / CLUSTERED, trust_code=trust_code)
    kept, file, final = "clustered", work / CLUSTERED, clustered
    records = {"compress": json.loads((work / "compress.json").read_text())}
    if settings.recover is Recover.NONE:
        with torch.no_grad():
            reference, _ = predict(model, parts.held_out, device=device)
            logits, _ = predict(clustered, parts.held_out, device=device)
        quality = {"clustered": Quality(agreement(logits, reference), mean_kl(logits, reference))}
    else:  # the guard scored both models on the held-out images: no second pass
        record = json.loads((work / f"{RECOVERED}.json").read_text())
        records["retrain"] = record
        guard = record["guard"]
        quality = {"clustered": Quality(guard["agreement_start"], guard["kl_start"]),
                   "retrained": Quality(guard["agreement_retrained"], guard["kl_retrained"])}  # fmt: skip
        if guard["kept"] == "retrained":
            kept, file = "retrained", work / f"{RECOVERED}.h5"
            final = load(file, trust_code=trust_code)
    seconds = dict(stages.seconds)
    seconds["total"] = time.perf_counter() - started
    return Compressed(
        model=final, plan=Plan.load(work / "plan.yaml"), kept=kept, quality=quality,
        held_out=len(parts.held_out), float32_bytes=float32_bytes,
        file_bytes=file.stat().st_size, seconds=seconds, parts=parts.to_dict(),
        settings=settings, file_data=file.read_bytes(), records=records,
    )  # fmt: skip
