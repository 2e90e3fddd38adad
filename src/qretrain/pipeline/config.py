"""The run config: one YAML file that says what ``qretrain run`` does, checked whole.

Sections and keys (every key optional unless marked; unknown keys are errors naming
the key and the section)::

    output: out/demo                 # required: folder for every file the run writes
    model: teacher:vgg               # required: a model spec (see `qretrain inspect`)
    model_args: {epochs: 2}          # keyword arguments of the model builder
    weights: null                    # a state dict to load into the model
    data:                            # named datasets: a spec, or {spec, limit, seed, offset}
      analyze: ...                   # required with analyze: images the sweep measures on
      verify: ...                    # plan verification (default: the analyze set)
      retrain: ...                   # required with retrain: label-free retraining images
      evaluate: ...                  # required: the final, held-out evaluation
      far_off: ...                   # with retrain.far_off: a far-off retraining set
      guard: ...                     # the retraining guard's val_data (optional)
    analyze: {ks, kinds, granularity, layers, precision, batch_size}
    plan: {max_drop, metric, target_size} or {file: PLAN.yaml}
    compress: {layout}
    retrain: {epochs, batch_size, lr, loss, temperature, trainable, bn_stats,
              tune_centroids, seed, conventional: bool, far_off: bool}
    device: cpu
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qretrain.analysis import DEFAULT_KS
from qretrain.errors import QretrainError

TOP_KEYS = ("output", "model", "model_args", "weights", "data", "analyze", "plan",
            "compress", "retrain", "device")  # fmt: skip
DATA_NAMES = ("analyze", "verify", "retrain", "evaluate", "far_off", "guard")
DATA_KEYS = ("spec", "limit", "seed", "offset")
SECTION_KEYS = {
    "analyze": ("ks", "kinds", "granularity", "layers", "precision", "batch_size"),
    "plan": ("max_drop", "metric", "target_size", "file"),
    "compress": ("layout",),
    "retrain": ("epochs", "batch_size", "lr", "loss", "temperature", "trainable", "bn_stats",
                "tune_centroids", "seed", "conventional", "far_off"),
}  # fmt: skip
RETRAIN_DEFAULTS = {"epochs": 3, "trainable": "unclustered", "conventional": True,
                    "far_off": False}  # fmt: skip


class ConfigError(QretrainError):
    """A run config that cannot be run; lists every problem."""


@dataclass
class DataRef:
    spec: str
    limit: int | None = None
    seed: int = 0
    offset: int = 0

    def to_dict(self) -> dict:
        return {"spec": self.spec, "limit": self.limit, "seed": self.seed, "offset": self.offset}


@dataclass
class RunConfig:
    output: Path
    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    data: dict[str, DataRef] = field(default_factory=dict)
    analyze: dict[str, Any] | None = None  # None: no sweep (an explicit plan file)
    plan: dict[str, Any] = field(default_factory=dict)
    compress: dict[str, Any] = field(default_factory=dict)
    retrain: dict[str, Any] | None = None  # None: no retraining
    device: str = "cpu"
    source: str | None = None

    def to_dict(self) -> dict:
        return {
            "output": str(self.output),
            "model": self.model,
            "model_args": self.model_args,
            "weights": self.weights,
            "data": {name: ref.to_dict() for name, ref in self.data.items()},
            "analyze": self.analyze,
            "plan": self.plan,
            "compress": self.compress,
            "retrain": self.retrain,
            "device": self.device,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def load(cls, path: str | Path, output: str | Path | None = None) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config {str(path)!r} is not valid YAML: {e}") from e
        if output is not None and isinstance(raw, dict):
            raw["output"] = str(output)
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str | None = None) -> RunConfig:
        where = f"config {source}" if source else "config"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping of sections")
        errors = [f"{where}: unknown key {k!r} (known: {', '.join(TOP_KEYS)})"
                  for k in raw if k not in TOP_KEYS]  # fmt: skip
        for key in ("output", "model"):
            if not isinstance(raw.get(key), str) or not raw.get(key):
                errors.append(f"{where}: {key!r} is required (a string)")
        sections = {}
        for name, allowed in SECTION_KEYS.items():
            value = raw.get(name, {}) if name != "retrain" else raw.get(name)
            if value is None:
                sections[name] = None
                continue
            if not isinstance(value, dict):
                errors.append(f"{where}: section {name!r} must be a mapping")
                continue
            errors += [f"{where}: unknown key {k!r} in section {name!r} (known: "
                       f"{', '.join(allowed)})" for k in value if k not in allowed]  # fmt: skip
            sections[name] = dict(value)
        data = _data_refs(raw.get("data") or {}, where, errors)
        plan = sections.get("plan") or {}
        if "file" in plan and len(plan) > 1:
            errors.append(f"{where}: plan takes either 'file' or a budget, not both")
        if "file" not in plan and ("max_drop" in plan) == ("target_size" in plan):
            errors.append(f"{where}: plan needs exactly one of 'file', 'max_drop', 'target_size'")
        analyze = None
        if "file" not in plan:
            analyze = {"ks": list(DEFAULT_KS), "kinds": ["weight", "bias"], "granularity": "layer",
                       "layers": None, "precision": "float32", "batch_size": 64,
                       **(sections.get("analyze") or {})}  # fmt: skip
            if "analyze" not in data:
                errors.append(f"{where}: data.analyze is required to plan from a sweep")
        retrain = sections.get("retrain")
        if retrain is not None:
            retrain = {**RETRAIN_DEFAULTS, **retrain}
            if "retrain" not in data:
                errors.append(f"{where}: data.retrain is required with a retrain section")
            if retrain["far_off"] and "far_off" not in data:
                errors.append(f"{where}: retrain.far_off needs data.far_off")
        if "evaluate" not in data:
            errors.append(f"{where}: data.evaluate is required (the held-out evaluation set)")
        model_args = raw.get("model_args") or {}
        if not isinstance(model_args, dict):
            errors.append(f"{where}: model_args must be a mapping")
        if errors:
            raise ConfigError("\n".join(errors))
        return cls(
            output=Path(raw["output"]),
            model=raw["model"],
            model_args=model_args,
            weights=raw.get("weights"),
            data=data,
            analyze=analyze,
            plan=plan,
            compress={"layout": "packed", **(sections.get("compress") or {})},
            retrain=retrain,
            device=raw.get("device", "cpu"),
            source=source,
        )


def _data_refs(raw: Any, where: str, errors: list[str]) -> dict[str, DataRef]:
    if not isinstance(raw, dict):
        errors.append(f"{where}: data must map names ({', '.join(DATA_NAMES)}) to datasets")
        return {}
    refs = {}
    for name, value in raw.items():
        if name not in DATA_NAMES:
            errors.append(f"{where}: unknown key {name!r} in section 'data' (known: "
                          f"{', '.join(DATA_NAMES)})")  # fmt: skip
            continue
        if isinstance(value, str):
            refs[name] = DataRef(value)
        elif isinstance(value, dict):
            bad = [k for k in value if k not in DATA_KEYS]
            if bad or "spec" not in value:
                errors.append(f"{where}: data.{name} takes spec (required), limit, seed, "
                              f"offset; got {sorted(value)}")  # fmt: skip
                continue
            refs[name] = DataRef(**value)
        else:
            errors.append(f"{where}: data.{name} must be a spec string or a mapping")
    return refs
