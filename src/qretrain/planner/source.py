"""The model and data a sweep was measured on, loaded again from its record.

``qretrain plan DIR`` verifies a plan without the user repeating the sweep's
arguments: the sweep records how its model and data were loaded (``source``). The
record may come from anyone, so its model spec resolves as a record's
(``Origin.RECORD``: known architectures only unless ``trust_code``), and the model
must still have the weights the sweep measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from qretrain.analysis.record import Sweep
from qretrain.data import load_dataset
from qretrain.data.sets import ImageSet
from qretrain.errors import QretrainError
from qretrain.models import Origin, get_arch, load_model
from qretrain.models.fingerprint import model_fingerprint


@dataclass(frozen=True)
class DataChoice:
    """Which images verify: the sweep's own data by default; another spec, or another
    slice (``limit``/``seed``/``offset``) of the sweep's data, when given."""

    spec: str | None = None
    limit: int | None = None
    seed: int | None = None
    offset: int | None = None


def sweep_inputs(sweep: Sweep, where: str, choice: DataChoice = DataChoice(),
                 trust_code: bool = False) -> tuple[nn.Module, ImageSet]:  # fmt: skip
    source = sweep.settings.get("source") or {}
    if not source.get("model"):
        raise QretrainError(
            f"the sweep in {where!r} does not say how to load its model (it was run from "
            "Python); verify with qretrain.auto_plan(sweep, model, data) or --no-verify"
        )
    model = load_model(source["model"], weights=source.get("weights"), origin=Origin.RECORD,
                       trust_code=trust_code)  # fmt: skip
    if model_fingerprint(model) != sweep.settings["model_sha256"]:
        raise QretrainError(
            f"{source['model']} no longer has the weights the sweep measured; analyze it again"
        )
    arch = get_arch(model)
    same = choice.spec is None
    spec = source.get("data") if same else choice.spec
    limit = choice.limit if choice.limit is not None else (source.get("limit") if same else None)
    seed = choice.seed if choice.seed is not None else source.get("seed", 0)
    offset = (
        choice.offset if choice.offset is not None else (source.get("offset", 0) if same else 0)
    )
    data = load_dataset(spec, arch.contract if arch else None, limit=limit, seed=seed,
                        offset=offset)  # fmt: skip
    return model, data
