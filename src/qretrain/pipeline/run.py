"""``run_pipeline``: load, analyze, plan, compress, retrain, evaluate, report.

Every stage writes its record into the output folder and is skipped when that
record exists and no earlier stage had to run, so a killed run resumes at the stage
it was in; retraining also
resumes inside a run from its per-epoch checkpoint, and ends where an uninterrupted
run would. Before any stage, ``run.json`` records the resolved config and the
model's fingerprint; a rerun with a different config, or a model whose weights
differ (a builder drawing random ones included), is refused rather than mixing two
runs' results, and so is a folder holding files no run wrote.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

from torch import nn

from qretrain.apply import cluster_
from qretrain.data import load_dataset
from qretrain.errors import QretrainError
from qretrain.metrics.quality import agreement, mean_kl, predict, top1_drop, topk_accuracy
from qretrain.models import Origin, get_arch, load_model
from qretrain.models.fingerprint import model_fingerprint
from qretrain.pipeline.config import ConfigError, PlanFile, RunConfig
from qretrain.progress import track
from qretrain.recipe import run_recipe, split
from qretrain.recipe.compress import OUTPUTS as RECIPE_OUTPUTS
from qretrain.recipe.folder import RUN_RECORD, earlier_run
from qretrain.recipe.stages import (
    CLUSTERED,
    Stages,
    cluster_stage,
    plan_file_stage,
    plan_stage,
    retrain_stage,
    sweep_stage,
)
from qretrain.report.records import RETRAIN_RUNS, RUN_LABELS
from qretrain.retrain import RetrainConfig, block_checkpoint
from qretrain.storage import (
    file_bytes,
    folder_lock,
    load,
    remove_path,
    save,
    write_text_atomic,
)

logger = logging.getLogger(__name__)
MODEL_FILES = (CLUSTERED, "original.h5")
RECORDS = ("config.yaml", "plan.yaml", "plan.json", "compress.json", "evaluate.json",
           "report.md", "report.html")  # fmt: skip
FOLDERS = ("analyze", "figures")


def run_outputs() -> list[str]:
    """Every name a run writes in its folder (besides the lock and temporaries)."""
    names = list(dict.fromkeys([RUN_RECORD, *MODEL_FILES, *RECORDS, *FOLDERS, *RECIPE_OUTPUTS]))
    for run in RETRAIN_RUNS:
        names += [f"{run}.h5", f"{run}.json", f"{run}.ckpt", block_checkpoint(f"{run}.ckpt").name]
    return names


def run_pipeline(config: RunConfig, *, progress: bool = True, trust_code: bool = False,
                 overwrite: bool = False) -> dict:  # fmt: skip
    """Run every stage ``config`` asks for; returns the evaluation record.

    The output folder is locked for the run: a second run into it is refused while
    this one lives. The config's model spec may name code (``module:callable``) only
    with ``trust_code``: a config may come from someone else.

    The folder must be new, empty, or this config's earlier run of the same model
    (same weights, by fingerprint): a folder holding files no run wrote, another
    config's run or another model's is refused, since its records would be trusted
    as stages done. ``overwrite`` starts over there instead: the files a run writes
    (``run_outputs``) are removed first, nothing else is touched.
    """
    with folder_lock(config.output, "qretrain run"):
        return _run_locked(config, progress, trust_code, overwrite)


def _run_locked(config: RunConfig, progress: bool, trust_code: bool, overwrite: bool) -> dict:
    out = config.output
    resolved = config.to_yaml()
    recorded = None if overwrite else earlier_run(out)
    if recorded is not None and recorded.get("config") != resolved:
        raise ConfigError(
            [
                f"{str(out)!r} holds a run of another config (see its config.yaml); use another "
                "output folder, or pass --overwrite to start over there"
            ]
        )
    # Nothing is written before the model loads: a refused config leaves no trace.
    model = load_model(config.model, weights=config.weights, contract=config.contract,
                       origin=Origin.CONFIG, trust_code=trust_code,
                       **config.model_args).eval()  # fmt: skip
    fingerprint = model_fingerprint(model)
    if recorded is not None and recorded.get("model_fingerprint") != fingerprint:
        raise QretrainError(
            f"{str(out)!r} holds a run of {config.model} with other weights (fingerprint "
            f"{str(recorded.get('model_fingerprint'))[:12]}, now {fingerprint[:12]}): the "
            "weights changed, or the builder draws random ones; use another output folder, "
            "or pass --overwrite to start over there"
        )
    if recorded is None:
        for name in run_outputs():  # --overwrite: no record of the old run survives
            remove_path(out / name)
        write_text_atomic(out / RUN_RECORD, json.dumps(
            {"config": resolved, "model_fingerprint": fingerprint}, indent=2))  # fmt: skip
    write_text_atomic(out / "config.yaml", resolved)
    arch = get_arch(model)
    contract = arch.contract if arch is not None else None

    def data(name: str):
        ref = config.data[name]
        return load_dataset(ref.spec, contract, limit=ref.limit, seed=ref.seed, offset=ref.offset,
                            views=ref.views, teacher=model)  # fmt: skip

    stages = Stages()
    if config.recipe is not None:
        parts = split(data("unlabeled"), config.recipe.settings)
        logger.info("images: %s", parts.describe())
        run_recipe(model, parts, config.recipe.settings, out, device=config.device,
                   progress=progress, trust_code=trust_code, stages=stages,
                   model_name=config.model)  # fmt: skip
        held_out, seed = parts.held_out, config.recipe.settings.seed
        retrain_config = config.recipe.settings.retrain_config()
        labeled = lambda: parts.labeled("retrain")  # noqa: E731
    else:
        _stages_own(config, model, data, out, stages, progress, trust_code)
        held_out = data("guard") if "guard" in config.data else None
        retrain_config = config.retrain.config if config.retrain is not None else None
        seed = retrain_config.seed if retrain_config is not None else 0
        labeled = lambda: data("retrain")  # noqa: E731
    for name in config.comparisons():
        if name == "conventional":
            # Cross-entropy on the outputs, whatever the label-free objective is.
            conventional = RetrainConfig(labels=True, seed=seed, **_conventional_schedule(config))
            work = lambda: retrain_stage("conventional", model, labeled(), out, conventional,  # noqa: E731
                                         held_out=None, device=config.device, progress=progress,
                                         trust_code=trust_code, labels=True)  # fmt: skip
        else:
            work = lambda: retrain_stage("far_off", model, data("far_off"), out, retrain_config,  # noqa: E731
                                         held_out=held_out, device=config.device,
                                         progress=progress, trust_code=trust_code)  # fmt: skip
        stages(f"retrain ({RUN_LABELS[name]})", out / f"{name}.json", work,
               pair=out / f"{name}.h5")  # fmt: skip
    stages("evaluate", out / "evaluate.json",
           lambda: _evaluate(config, model, data, out, trust_code, progress))  # fmt: skip
    from qretrain.report import write_report

    write_report(out)
    return json.loads((out / "evaluate.json").read_text())


def _stages_own(config: RunConfig, model: nn.Module, data, out: Path, stages: Stages,
                progress: bool, trust_code: bool) -> None:  # fmt: skip
    """The stages' own form: each stage's data and settings as the config names them."""
    if config.analyze is not None:
        stages("analyze", out / "analyze" / "summary.md", lambda: sweep_stage(
            model, data("analyze"), out, config.analyze, device=config.device,
            progress=progress, model_name=config.model))  # fmt: skip
    if isinstance(config.plan, PlanFile):
        stages("plan", out / "plan.json", lambda: plan_file_stage(config.plan.file, out))
    else:
        verify = "verify" if "verify" in config.data else "analyze"
        stages(
            "plan",
            out / "plan.json",
            lambda: plan_stage(
                model, data(verify), out, config.plan, device=config.device, progress=progress
            ),
        )
    # sensitive-kmeans weighs weights by their Fisher information on the analysis images
    images = (lambda: data("analyze")) if "analyze" in config.data else None
    stages(
        "compress",
        out / "compress.json",
        lambda: cluster_stage(model, out, config.compress, images),
        pair=out / CLUSTERED,
    )
    if config.retrain is not None:
        guard = data("guard") if "guard" in config.data else None
        stages("retrain (label-free)", out / "label_free.json", lambda: retrain_stage(
            "label_free", model, data("retrain"), out, config.retrain.config, held_out=guard,
            device=config.device, progress=progress, trust_code=trust_code),
            pair=out / "label_free.h5")  # fmt: skip


def _conventional_schedule(config: RunConfig) -> dict:
    """The conventional comparison's epochs: the stages' own retrain section's, or the
    recipe's ``epochs`` when it retrains by output matching, else the default."""
    if config.retrain is not None:
        return {"epochs": config.retrain.config.epochs}
    settings = config.recipe.settings
    return (
        {"epochs": settings.epochs}
        if settings.epochs and settings.recover.value == "output"
        else {}
    )


def _retrain_runs(config: RunConfig) -> list[str]:
    """The retraining runs whose models a run has, in report order."""
    main = (
        ["label_free"]
        if (
            config.retrain is not None
            or (config.recipe is not None and config.recipe.settings.retrain_config() is not None)
        )
        else []
    )
    return main + config.comparisons()


def _evaluate(config: RunConfig, model: nn.Module, data, out: Path, trust_code: bool,
              progress: bool) -> None:  # fmt: skip
    ds = data("evaluate")
    start = time.perf_counter()
    batch = config.evaluate.batch_size
    reference, labels = predict(model, ds, batch_size=batch, device=config.device)
    labeled = bool((labels >= 0).all())
    models = {"original": None, "clustered": out / "clustered.h5"}
    models.update({n: out / f"{n}.h5" for n in _retrain_runs(config)})
    baseline = _uniform_baseline(model, (out / "clustered.h5").stat().st_size)
    if baseline is not None:
        models["uniform"] = baseline
    rows = {}
    for name, path in track(models.items(), "Evaluating", total=len(models), unit="models",
                            enabled=progress):  # fmt: skip
        label = RUN_LABELS.get(name)
        if path is None:
            logits, size = reference, _float_file_bytes(model, out)
        elif name == "uniform":
            k, uniform, size = baseline
            logits, _ = predict(uniform, ds, batch_size=batch, device=config.device)
            label = f"uniform k={k} (baseline)"
        else:
            logits, _ = predict(load(path, trust_code=trust_code), ds, batch_size=batch,
                                device=config.device)  # fmt: skip
            size = path.stat().st_size
        rows[name] = {
            "label": label,
            "top1": topk_accuracy(logits, labels, 1) if labeled else None,
            "agreement": agreement(logits, reference),
            "kl": mean_kl(logits, reference),
            "file_bytes": size,
        }
        if labeled:  # points of top-1 lost, with a paired 95% bootstrap interval
            drop, low, high = top1_drop(logits, reference, labels)
            rows[name].update(top1_drop=drop, drop_95=[low, high])
    record = {"data": ds.describe(), "models": rows, "seconds": time.perf_counter() - start}
    write_text_atomic(out / "evaluate.json", json.dumps(record, indent=2))


UNIFORM_KS = (256, 128, 64, 32, 16, 8, 4, 2)


def _uniform_baseline(model: nn.Module, size: int) -> tuple[int, nn.Module, int] | None:
    """Every convolution and linear weight at one k: the smallest k whose packed file is
    no smaller than ``size``, so the run's model is compared at no larger a size (what
    one bit width for all tensors needs to match it), else the largest k tried; (k, the
    clustered copy, its file bytes), or None when the model has no such layers. Files
    shrink as k falls, so a bisection over ``UNIFORM_KS`` clusters the model three or
    four times instead of up to eight."""
    tried: dict[int, tuple[nn.Module, int]] = {}

    def clustered(k: int) -> tuple[nn.Module, int]:
        if k not in tried:
            uniform = copy.deepcopy(model)
            cluster_(
                uniform,
                {"rules": [{"type": "Conv2d", "k": k}, {"type": "Linear", "k": k}]},
                warn_larger=False,
            )  # fmt: skip (its tiny tensors need no advice)
            tried[k] = uniform, file_bytes(uniform)
        return tried[k]

    try:
        largest = clustered(UNIFORM_KS[0])[1]
    except QretrainError:
        return None  # no convolution or linear layer to cluster
    low, high = 0, len(UNIFORM_KS) - 1  # sizes fall along UNIFORM_KS; sizes[low] >= size
    if largest < size:
        high = 0
    while low < high:
        middle = (low + high + 1) // 2
        if clustered(UNIFORM_KS[middle])[1] >= size:
            low = middle
        else:
            high = middle - 1
    k = UNIFORM_KS[low]
    return (k, *clustered(k))


def _float_file_bytes(model: nn.Module, out: Path) -> int:
    """The unclustered model's packed file size (the same as float32 + gzip), written
    each time: a file found there is not taken for the original model's."""
    return save(model, out / "original.h5").file_bytes


def final_table(out: Path) -> str:
    """The run's headline figures as a terminal table, read from its records."""
    from qretrain._table import format_table
    from qretrain.report.records import headline_rows

    headers, rows = headline_rows(out)
    return format_table(headers, rows, right="l" + "r" * (len(headers) - 1))
