"""qretrain: make pretrained PyTorch classifiers small by weight clustering, and win
their accuracy back without labels.

    model = qretrain.build_model("torchvision:vgg16")
    report = qretrain.cluster_(model, "examples/plans/vgg16-paper.yaml")
    qretrain.save(model, "vgg16.h5")
    same = qretrain.load("vgg16.h5")
"""

from qretrain import teachers, zoo  # noqa: F401  (they register their model specs)
from qretrain._version import __version__
from qretrain.analysis import AnalyzeSettings, Sweep, analyze
from qretrain.cluster import (
    ClusteredTensor,
    ClusterReport,
    Granularity,
    Method,
    cluster_tensor,
    codebooks,
)
from qretrain.apply import cluster_
from qretrain.data import load_dataset
from qretrain.errors import QretrainError, QretrainFileError, UntrustedCodeError
from qretrain.export import export
from qretrain.metrics import EvalResult, evaluate
from qretrain.models import ArchSpec, ParamKind, build_model, describe_tensors, load_model
from qretrain.models.contract import InputContract
from qretrain.plan import Plan, PlanError, Rule
from qretrain.planner import AutoPlan, PlanSettings, auto_plan
from qretrain.retrain import RetrainConfig, retrain
from qretrain.storage import Layout, load, save

__all__ = [
    "AnalyzeSettings",
    "ArchSpec",
    "AutoPlan",
    "ClusterReport",
    "ClusteredTensor",
    "EvalResult",
    "InputContract",
    "Granularity",
    "Layout",
    "Method",
    "ParamKind",
    "Plan",
    "PlanError",
    "PlanSettings",
    "QretrainError",
    "QretrainFileError",
    "RetrainConfig",
    "Rule",
    "Sweep",
    "UntrustedCodeError",
    "__version__",
    "analyze",
    "auto_plan",
    "build_model",
    "cluster_",
    "cluster_tensor",
    "codebooks",
    "describe_tensors",
    "evaluate",
    "export",
    "load",
    "load_dataset",
    "load_model",
    "retrain",
    "save",
]
