import copy

import numpy as np
import pytest
import torch

import qretrain
import qretrain.zoo
from qretrain.cluster import clusters_of
from qretrain.data.sets import tensor_set
from qretrain.retrain import RetrainConfig, retrain

PLAN = {"rules": [{"type": "Conv2d", "k": 4}, {"layers": "5", "k": 8}]}


def make_data(n=96, seed=0, labeled=False):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    ds = tensor_set("synthetic", x, rng.integers(0, 10, n) if labeled else None)
    ds.contract = qretrain.zoo.vgg_small.contract
    return ds


@pytest.fixture
def pair(tiny_vgg):
    teacher = tiny_vgg
    student = copy.deepcopy(teacher)
    qretrain.cluster_(student, PLAN)
    return teacher, student


def test_frozen_parameters_unchanged_and_clustered_stay_on_codebooks(pair):
    teacher, student = pair
    before = {n: p.clone() for n, p in student.named_parameters()}
    result = retrain(student, teacher, make_data(), RetrainConfig(epochs=2, batch_size=32),
                     progress=False)  # fmt: skip
    trained = set(result.record["trainable"])
    assert trained and not trained & set(clusters_of(student))
    for name, p in student.named_parameters():
        if name in trained:
            continue
        assert torch.equal(p, before[name]), name
    assert not torch.equal(student.classifier[7].weight, before["classifier.7.weight"])
    for name, c in clusters_of(student).items():
        assert torch.equal(c.decode(), dict(student.named_parameters())[name])


def test_tune_centroids_moves_codebooks_but_keeps_k_values(pair, tmp_path, images):
    teacher, student = pair
    old = {n: c.codebook.clone() for n, c in clusters_of(student).items()}
    retrain(student, teacher, make_data(), RetrainConfig(epochs=2, batch_size=32,
            tune_centroids=True, lr=1e-2), progress=False)  # fmt: skip
    moved = 0
    for name, c in clusters_of(student).items():
        weight = dict(student.named_parameters())[name]
        assert weight.unique().numel() <= c.k
        assert torch.equal(c.decode(), weight)
        moved += not torch.equal(c.codebook, old[name])
    assert moved > 0
    expected = student(images)
    qretrain.save(student, tmp_path / "tuned.h5")
    assert torch.equal(qretrain.load(tmp_path / "tuned.h5")(images), expected)


def test_models_leave_retraining_in_the_default_layout(pair):
    # retraining runs convolutions channels-last for speed; callers must not notice
    teacher, student = pair
    teacher_before = {n: p.clone() for n, p in teacher.named_parameters()}
    retrain(student, teacher, make_data(), RetrainConfig(epochs=1, batch_size=32),
            progress=False)  # fmt: skip
    for model in (teacher, student):
        for name, p in model.named_parameters():
            assert p.is_contiguous(), name
    for name, p in teacher.named_parameters():
        assert torch.equal(p, teacher_before[name]), name


def test_teacher_runs_once_per_input(pair):
    teacher, student = pair
    seen = []
    teacher.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    data = make_data(96)
    retrain(student, teacher, data, RetrainConfig(epochs=3, batch_size=16), progress=False)
    assert sum(seen) == len(data)


def test_frozen_prefix_is_cached_for_last_layers(pair):
    teacher, student = pair
    calls = []
    # fx tracing runs hooks on proxies too; count real tensors only
    student.features[0].register_forward_hook(
        lambda m, args, out: calls.append(out.shape[0]) if isinstance(out, torch.Tensor) else None
    )
    result = retrain(student, teacher, make_data(64), RetrainConfig(epochs=3, batch_size=16,
                     trainable="last"), progress=False)  # fmt: skip
    assert result.record["cached_prefix"]
    # Layer 5 (classifier.1) is the last with a clustered tensor: its unclustered bias
    # and the layers after it train.
    assert result.record["trainable"] == [
        "classifier.1.bias", "classifier.4.weight", "classifier.4.bias",
        "classifier.7.weight", "classifier.7.bias",
    ]  # fmt: skip
    # Once per input (plus one example image that orders the layers and a two-image
    # probe that the prefix's outputs are per image), not once per epoch.
    assert sum(calls) == 64 + 1 + 2


def test_resumed_run_equals_uninterrupted(pair, tmp_path):
    teacher, student = pair
    config = RetrainConfig(epochs=3, batch_size=16)
    full = copy.deepcopy(student)
    retrain(full, teacher, make_data(), config, progress=False)
    ckpt = tmp_path / "run.ckpt"
    resumed = copy.deepcopy(student)
    _run_and_kill_after(copy.deepcopy(student), teacher, config, ckpt, epochs_done=2)
    retrain(resumed, teacher, make_data(), config, checkpoint=ckpt, resume=True, progress=False)
    for (name, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="written with other settings"):
        retrain(copy.deepcopy(student), teacher, make_data(), RetrainConfig(epochs=4),
                checkpoint=ckpt, resume=True, progress=False)  # fmt: skip


def test_the_seed_decides_the_batches(pair):
    teacher, student = pair
    runs = [retrain(copy.deepcopy(student), teacher, make_data(),
                    RetrainConfig(epochs=1, batch_size=16, seed=s), progress=False).model
            for s in (0, 0, 1)]  # fmt: skip
    pairs = list(zip(*(r.parameters() for r in runs)))
    assert all(torch.equal(a, b) for a, b, _ in pairs)
    assert not all(torch.equal(a, c) for a, _, c in pairs)


def test_resume_refuses_another_runs_checkpoint(pair, tmp_path, caplog):
    teacher, student = pair
    config = RetrainConfig(epochs=3, batch_size=16)
    ckpt = tmp_path / "run.ckpt"
    _run_and_kill_after(copy.deepcopy(student), teacher, config, ckpt, epochs_done=1)
    other_teacher = copy.deepcopy(teacher)
    with torch.no_grad():
        other_teacher.classifier[7].bias.add_(1.0)
    other_student = copy.deepcopy(student)
    with torch.no_grad():
        other_student.classifier[7].bias.add_(1.0)
    for what, args in (("teacher", (student, other_teacher, make_data())),
                       ("student", (other_student, teacher, make_data())),
                       ("data", (student, teacher, make_data(seed=1)))):  # fmt: skip
        with pytest.raises(ValueError, match=f"belongs to another run: its {what} differ"):
            retrain(copy.deepcopy(args[0]), args[1], args[2], config, checkpoint=ckpt,
                    resume=True, progress=False)  # fmt: skip
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(qretrain.QretrainFileError, match="unreadable or incomplete.*remove it"):
        retrain(copy.deepcopy(student), teacher, make_data(), config, checkpoint=ckpt,
                resume=True, progress=False)  # fmt: skip
    ckpt.unlink()
    with caplog.at_level("INFO"):
        retrain(copy.deepcopy(student), teacher, make_data(), RetrainConfig(epochs=1),
                checkpoint=ckpt, resume=True, progress=False)  # fmt: skip
    assert "no checkpoint at" in caplog.text and "starting fresh" in caplog.text


def _run_and_kill_after(student, teacher, config, ckpt, epochs_done, val=None):
    """Write the checkpoint a run of ``config`` leaves after ``epochs_done`` epochs."""
    from qretrain.retrain import loop

    original = loop._train_epoch
    calls = {"n": 0}

    def train_then_die(*args, **kwargs):
        if calls["n"] == epochs_done:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(*args, **kwargs)

    loop._train_epoch = train_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            retrain(student, teacher, make_data(), config, val_data=val, checkpoint=ckpt,
                    progress=False)  # fmt: skip
    finally:
        loop._train_epoch = original
    assert torch.load(ckpt, weights_only=True)["epoch"] == epochs_done


def test_guard_returns_the_start_when_every_epoch_is_worse(pair):
    teacher, student = pair
    start = {n: p.clone() for n, p in student.named_parameters()}
    val = make_data(48, seed=5)
    # A huge learning rate wrecks every epoch on the validation set.
    result = retrain(student, teacher, make_data(), RetrainConfig(epochs=2, batch_size=16, lr=50.0),
                     val_data=val, progress=False)  # fmt: skip
    assert result.record["best_epoch"] == 0
    assert "never beat the clustered start" in result.record["guard"]
    for name, p in student.named_parameters():
        assert torch.equal(p, start[name]), name


def test_conventional_retraining_uses_labels(pair):
    teacher, student = pair
    result = retrain(student, None, make_data(labeled=True), RetrainConfig(epochs=1, labels=True),
                     progress=False)  # fmt: skip
    assert result.record["config"]["loss"] == "ce"
    assert result.record["monitor_metric"] == "accuracy"


def test_bad_inputs(pair, tiny_resnet):
    teacher, student = pair
    with pytest.raises(ValueError, match="different architectures"):
        retrain(student, tiny_resnet, make_data(), progress=False)
    with pytest.raises(ValueError, match="needs labeled data; D has none"):
        retrain(student, None, make_data(), RetrainConfig(labels=True), progress=False)
    with pytest.raises(ValueError, match="holds no images"):
        retrain(student, teacher, torch.utils.data.TensorDataset(torch.empty(0)), progress=False)
    with pytest.raises(ValueError, match="loss 'ce' needs labels"):
        RetrainConfig(loss="ce")
    with pytest.raises(ValueError, match="trainable: must be 'unclustered', 'last' or a selector"):
        RetrainConfig(trainable="fc only")  # refused when the settings are made
    with pytest.raises(ValueError, match=r"epochs: must be an int >= 1; got 0\nlr: must be > 0"):
        RetrainConfig(epochs=0, lr=-1.0)  # every problem at once
    with pytest.raises(ValueError, match="unknown key 'epoch'"):
        RetrainConfig.from_dict({"epoch": 3})


def test_guarded_run_resumes_with_its_best_epoch(pair, tmp_path):
    teacher, student = pair
    config = RetrainConfig(epochs=3, batch_size=16)
    val = make_data(32, seed=9)
    full = copy.deepcopy(student)
    expected = retrain(full, teacher, make_data(), config, val_data=val, progress=False)
    ckpt = tmp_path / "guarded.ckpt"
    _run_and_kill_after(copy.deepcopy(student), teacher, config, ckpt, epochs_done=2, val=val)
    resumed = copy.deepcopy(student)
    got = retrain(resumed, teacher, make_data(), config, val_data=val, checkpoint=ckpt,
                  resume=True, progress=False)  # fmt: skip
    assert got.record["best_epoch"] == expected.record["best_epoch"]
    for (name, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name


def test_a_prefix_passing_plain_ints_on_is_not_cached():
    """fx turns x.size(0) into an int the suffix reads: such a prefix runs every epoch."""

    class FlattensBySize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.fc = torch.nn.Linear(2 * 26 * 26, 10)

        def forward(self, x):
            n = x.size(0)  # read after fc, so the frozen prefix hands it over
            return self.fc(self.conv(x).flatten(1)).reshape(n, -1)

    torch.manual_seed(0)
    teacher = FlattensBySize().eval()
    student = FlattensBySize()
    student.load_state_dict(teacher.state_dict())
    qretrain.cluster_(student, {"rules": [{"name": "conv", "k": 2}]})
    result = retrain(student, teacher, make_data(32), RetrainConfig(epochs=1, batch_size=8,
                     trainable="name=fc"), progress=False)  # fmt: skip
    assert not result.record["cached_prefix"]
    assert result.record["history"][0]["loss"] > 0
