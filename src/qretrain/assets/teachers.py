"""Reference teachers: the zoo's VGG- and ResNet-style nets trained on Fashion-MNIST.

``teacher("vgg")`` returns the trained model, training it once and caching it in the
user cache folder as a qretrain file, keyed by architecture, epochs and seed; later
calls only load it. The record beside it holds test accuracy and training time.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from torch import nn

from qretrain._cache import cache_dir
from qretrain.data import load_dataset
from qretrain.errors import QretrainError
from qretrain.metrics import evaluate
from qretrain.models import forms
from qretrain.models.specs import Builder, build_model, get_arch, register_builder
from qretrain.storage import FORMAT_VERSION, load, save, write_text_atomic
from qretrain.training import TrainConfig, train_classifier

logger = logging.getLogger(__name__)

# name -> (model spec, keyword arguments)
TEACHERS = {"vgg": ("qretrain.zoo:vgg_small", {}), "resnet": ("qretrain.zoo:resnet_small", {})}
DEFAULT_EPOCHS = 15


def teacher_path(
    name: str, epochs: int = DEFAULT_EPOCHS, seed: int = 0, train_limit: int | None = None
) -> Path:
    check_teacher(name, epochs, seed, train_limit)
    subset = f"-n{train_limit}" if train_limit is not None else ""
    # The file format is part of the key: a cache written in an older format is never read.
    return cache_dir("teachers") / f"{name}-e{epochs}-s{seed}{subset}-f{FORMAT_VERSION}.h5"


def check_teacher(name: str, epochs: int, seed: int, train_limit: int | None = None) -> None:
    """Raise QretrainError for an unknown teacher or settings it cannot train with."""
    if name not in TEACHERS:
        raise QretrainError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}")
    limits = {"epochs": (epochs, 1), "seed": (seed, 0)}
    if train_limit is not None:
        limits["train_limit"] = (train_limit, 1)
    for what, (value, low) in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise QretrainError(f"teacher {what} must be an int >= {low}; got {value!r}")


def cached_teacher(name: str, epochs: int = DEFAULT_EPOCHS, seed: int = 0) -> nn.Module:
    """The teacher from the cache; never trains. QretrainError says how to train it."""
    path = teacher_path(name, epochs, seed)
    if not path.exists():
        raise QretrainError(
            f"teacher:{name} ({epochs} epochs, seed {seed}) is not trained on this machine; "
            f"train it once with `qretrain teacher {name} --epochs {epochs} --seed {seed}`"
        )
    return load(path)


def teacher_record(
    name: str, epochs: int = DEFAULT_EPOCHS, seed: int = 0, train_limit: int | None = None
) -> dict | None:
    path = teacher_path(name, epochs, seed, train_limit).with_suffix(".json")
    return json.loads(path.read_text()) if path.exists() else None


def teacher(
    name: str,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    *,
    train_limit: int | None = None,
    progress: bool = True,
) -> nn.Module:
    """The trained teacher, from the cache or trained now on fashion-mnist:train.

    ``train_limit`` trains on a random subset of that many images (quick runs).
    """
    path = teacher_path(name, epochs, seed, train_limit)
    if path.exists():
        return load(path)
    spec, kwargs = TEACHERS[name]
    torch.manual_seed(seed)
    model = build_model(spec, **kwargs)
    contract = get_arch(model).contract
    logger.warning(
        "teacher:%s is not cached: training it now on fashion-mnist:train (%d epochs, seed "
        "%d; about a minute per epoch on 2 cores), once; it is cached in %s",
        name,
        epochs,
        seed,
        path.parent,
    )
    train_set = load_dataset("fashion-mnist:train", contract, limit=train_limit, seed=seed)
    config = TrainConfig(epochs=epochs, seed=seed)
    history = train_classifier(model, train_set, config, progress=progress)
    result = evaluate(model, load_dataset("fashion-mnist:test", contract), batch_size=256)
    model.to(memory_format=torch.contiguous_format)
    save(model, path, fold_batchnorm=False)  # the reference: its tensors exactly as trained
    record = {
        "teacher": name,
        "spec": spec,
        "kwargs": kwargs,
        "epochs": epochs,
        "seed": seed,
        "train_images": len(train_set),
        "train_seconds": history.seconds,
        "samples_per_second": history.samples_per_second,
        "loss": history.loss,
        "test_top1": result.top1,
        "test_images": result.images,
        "threads": torch.get_num_threads(),
    }
    write_text_atomic(path.with_suffix(".json"), json.dumps(record, indent=2))
    return model


@register_builder(r"teacher:(?P<name>\w+)", forms.TEACHER)
def _teacher_spec(match: re.Match[str]) -> Builder:
    """Typed by the user, the spec trains the teacher when it is not cached (saying so);
    from a record it only reads the cache; from a file it is the bare architecture."""
    from qretrain import zoo

    name = match["name"]
    if name not in TEACHERS:
        raise QretrainError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}")
    factory = zoo.FACTORIES[TEACHERS[name][0].removeprefix("qretrain.zoo:")]

    def build(epochs: int = DEFAULT_EPOCHS, seed: int = 0):
        # Minutes of training: a bar on a terminal, lines with an ETA in a log.
        return teacher(name, epochs, seed, progress=True)

    def quiet(epochs: int = DEFAULT_EPOCHS, seed: int = 0):
        return cached_teacher(name, epochs, seed)

    def architecture(epochs: int = DEFAULT_EPOCHS, seed: int = 0):
        return factory(**TEACHERS[name][1])

    return Builder(build, factory.contract, quiet=quiet, architecture=architecture)
