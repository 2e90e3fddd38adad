"""Block-wise reconstruction (retrain.blocks): what trains, what must not move, how
often the teacher runs, resuming, and the fallback."""

import contextlib
import copy
import inspect

import numpy as np
import pytest
import torch

import qretrain
import qretrain.zoo
from qretrain.cluster import clusters_of
from qretrain.data.sets import tensor_set
from qretrain.retrain import RetrainConfig, retrain
from qretrain.retrain import blocks as blocks_module
from qretrain.retrain.blocks import find_blocks, plan_blocks, reconstruct
from qretrain.retrain.layout import channels_last
from qretrain.testing.reruns import assert_same

PLAN = {"rules": [{"type": "Conv2d", "k": 4}, {"type": "Linear", "k": 8}]}


def make_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    ds = tensor_set("random", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), None)
    ds.contract = qretrain.zoo.resnet_small.contract
    return ds


@pytest.fixture
def pair(tiny_resnet):
    student = copy.deepcopy(tiny_resnet)
    qretrain.cluster_(student, PLAN, progress=False)
    return tiny_resnet.eval(), student


def blocks_config(**kw):
    return RetrainConfig(
        **{"objective": "blocks", "block_epochs": 2, "batch_size": 16, "lr": 1e-2, **kw}
    )


def test_blocks_follow_the_forward_order_and_each_holds_a_clustered_tensor(pair):
    _, student = pair
    graph, blocks = find_blocks(student)
    # The stem, one residual block per stage (pooling joins the last), the classifier.
    assert [b.name for b in blocks] == ["stem.0..stem.2", "layer1.0", "layer2.0",
                                        "layer3.0..pool", "fc"]  # fmt: skip
    clustered = set(clusters_of(student))
    assert all(clustered & set(b.parameters) for b in blocks)
    read = [n for b in blocks for n in b.parameters]
    assert sorted(read) == sorted(n for n, _ in student.named_parameters())  # each once
    # Chained, the blocks compute the model exactly.
    x = torch.randn(3, 1, 28, 28)
    y = x
    for b in blocks:
        y = graph.block(b.start, b.stop)(y)
    assert torch.equal(y, student.eval()(x))


def test_frozen_tensors_stay_bit_exact_and_clustered_ones_on_their_codebooks(pair):
    teacher, student = pair
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    result = retrain(student, teacher, make_data(), blocks_config(tune_centroids=True),
                     progress=False)  # fmt: skip
    history = result.record["blocks"]["history"]
    assert len(history) == 5 and all(len(h["loss_per_pass"]) == 2 for h in history)
    clustered = clusters_of(student)
    trained = set(result.record["trainable"])
    moved = 0
    for name, p in student.named_parameters():
        if name in clustered:
            assert p.unique().numel() <= clustered[name].k
            assert torch.equal(clustered[name].decode(), p)
            moved += not torch.equal(p, before[name])
        elif name not in trained:
            assert torch.equal(p, before[name]), name
    assert moved > 0  # codebook values trained, assignments fixed
    for name in trained:
        assert not torch.equal(dict(student.named_parameters())[name], before[name]), name


def test_each_block_target_comes_from_the_teacher_once_per_image(pair):
    teacher, student = pair
    plan = plan_blocks(student, teacher)
    seen = [0] * len(plan.teacher)

    def counting(i, segment):
        def run(x):
            seen[i] += len(x)
            return segment(x)

        return run

    plan.teacher = [counting(i, s) for i, s in enumerate(plan.teacher)]
    data = make_data(40)
    trainable = {n for n, _ in student.named_parameters() if n not in clusters_of(student)}
    reconstruct(student, teacher, plan, data, blocks_config(), trainable, device="cpu",
                progress=False)  # fmt: skip
    assert seen == [40] * len(plan.teacher)


@pytest.mark.parametrize("last", [False, True])
def test_values_spilled_to_files_train_the_same_model_as_values_in_memory(
        pair, monkeypatch, last):  # fmt: skip
    teacher, student = pair
    config = blocks_config(tune_centroids=True)
    runs = {}
    for where in ("memory", "files"):
        if where == "files":
            monkeypatch.setattr(blocks_module, "MEMORY_BUDGET", 0)
        a, b = copy.deepcopy(teacher), copy.deepcopy(student)
        # channels-last as retrain() holds a convolutional model (retrain.layout)
        with channels_last(a, b) if last else contextlib.nullcontext():
            plan = plan_blocks(b, a)
            trainable = {n for n, _ in b.named_parameters() if n not in clusters_of(b)}
            record = reconstruct(b, a, plan, make_data(), config, trainable, device="cpu",
                                 progress=False)  # fmt: skip
        assert record["activations"] == where
        runs[where] = (b, record)
    (memory, kept), (files, spilled) = runs["memory"], runs["files"]
    for (name, x), y in zip(memory.state_dict().items(), files.state_dict().values()):
        assert_same(x, y, name)
    # Each block's error is the mean squared difference of its outputs, all images.
    plan = plan_blocks(memory, teacher)
    x = torch.stack([make_data()[i][0] for i in range(48)])
    with torch.no_grad():
        y_student = plan.student[0](x)
        y_teacher = plan.teacher[0](x)
    assert kept["history"][0]["mse_after"] == pytest.approx(
        float(((y_student - y_teacher) ** 2).mean()), rel=1e-4
    )
    assert [h["mse_after"] for h in kept["history"]] == [h["mse_after"] for h in spilled["history"]]


def test_block_values_trains_each_pass_on_as_many_images_as_hold_that_many_outputs(
        pair, monkeypatch):  # fmt: skip
    """Each training pass of block i sees min(N, max(MIN, ceil(V / D_i))) images (D_i:
    its output values per image) in as many steps as a pass over all N; every image
    still goes through every block once more to feed the next; a budget no block
    reaches trains exactly as without it."""
    teacher, student = pair
    monkeypatch.setattr(blocks_module, "MIN_PASS_IMAGES", 8)
    trainable = {n for n, _ in student.named_parameters() if n not in clusters_of(student)}
    runs, counts = {}, {}
    for budget in (None, 4096, 48 * 10**6):
        b = copy.deepcopy(student)
        plan = plan_blocks(b, teacher)
        trained = [0] * len(plan.student)

        steps = [0] * len(plan.student)

        def counting(i, segment):
            def run(x):
                if torch.is_grad_enabled():
                    trained[i] += len(x)
                    steps[i] += 1
                return segment(x)

            return run

        values = []
        x = torch.zeros(1, 1, 28, 28)
        for segment in plan.teacher:
            x = segment(x)
            values.append(x[0].numel())
        plan.student = [counting(i, s) for i, s in enumerate(plan.student)]
        config = blocks_config(tune_centroids=True, block_values=budget)
        reconstruct(b, teacher, plan, make_data(), config, trainable, device="cpu",
                    progress=False)  # fmt: skip
        per_pass = [48 if budget is None else min(48, max(8, -(-budget // v))) for v in values]
        assert trained == [2 * n for n in per_pass]
        assert steps == [2 * 3] * len(values)  # 48 images in batches of 16: 3 steps a pass
        runs[budget], counts[budget] = b, trained
    assert 2 * 8 in counts[4096] and 2 * 48 in counts[4096]  # it caps the large blocks only
    for name, x in runs[None].state_dict().items():
        assert torch.equal(x, runs[48 * 10**6].state_dict()[name]), name
    assert not torch.equal(runs[4096].stem[0].weight, runs[None].stem[0].weight)


def test_pass_images_is_every_image_or_the_budget_at_least_the_minimum():
    config = blocks_config(block_values=10**6)
    assert blocks_module.pass_images(5000, 100, blocks_config()) == 5000
    assert blocks_module.pass_images(5000, 100, config) == 5000
    assert blocks_module.pass_images(50_000, 100, config) == 10_000
    assert blocks_module.pass_images(5000, 10**5, config) == blocks_module.MIN_PASS_IMAGES
    assert blocks_module.pass_images(100, 10**5, config) == 100


@contextlib.contextmanager
def interrupted_at(monkeypatch, block: int, epoch: int):
    """Block-wise passes raise KeyboardInterrupt at (block, epoch), both from 0, inside."""
    original = blocks_module._train_pass

    def killed(*args, **kwargs):
        called = inspect.signature(original).bind(*args, **kwargs).arguments
        if called["block"] == block and called["epoch"] == epoch:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(blocks_module, "_train_pass", killed)
    try:
        yield
    finally:
        monkeypatch.setattr(blocks_module, "_train_pass", original)


def test_resuming_mid_block_equals_an_uninterrupted_run(pair, tmp_path, monkeypatch):
    teacher, student = pair
    config = blocks_config(tune_centroids=True)
    whole = copy.deepcopy(student)
    retrain(whole, teacher, make_data(), config, checkpoint=tmp_path / "a.ckpt", progress=False)

    interrupted = copy.deepcopy(student)
    with interrupted_at(monkeypatch, block=3, epoch=1), pytest.raises(KeyboardInterrupt):
        retrain(interrupted, teacher, make_data(), config, checkpoint=tmp_path / "b.ckpt",
                progress=False)  # fmt: skip
    assert (tmp_path / "b.blocks.ckpt").exists()
    resumed = copy.deepcopy(student)
    retrain(resumed, teacher, make_data(), config, checkpoint=tmp_path / "b.ckpt", resume=True,
            progress=False)  # fmt: skip
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert_same(a, b, name)
    # Another seed is another run: the result differs.
    other = copy.deepcopy(student)
    retrain(other, teacher, make_data(), blocks_config(tune_centroids=True, seed=1),
            progress=False)  # fmt: skip
    assert not torch.equal(other.fc.bias, whole.fc.bias)


def test_an_untraceable_model_falls_back_to_output_matching(tiny_resnet, caplog):
    class Untraceable(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if x.sum() > 0:  # Python control flow on a tensor: fx cannot trace it
                return self.inner(x)
            return self.inner(-x)

    teacher = Untraceable(tiny_resnet).eval()
    student = copy.deepcopy(teacher)
    qretrain.cluster_(student, PLAN, progress=False)
    # epochs is for blocks+output's second stage: the fallback runs block_epochs (2)
    result = retrain(student, teacher, make_data(), blocks_config(epochs=5), progress=False)
    said = "output matching instead, 2 epochs (block_epochs)"
    assert said in result.record["blocks"]["fallback"] and said in caplog.text
    assert len(result.record["history"]) == 2
    # blocks+output asked for its epochs of output matching anyway: those run
    student = copy.deepcopy(teacher)
    qretrain.cluster_(student, PLAN, progress=False)
    result = retrain(student, teacher, make_data(),
                     blocks_config(objective="blocks+output", epochs=1), progress=False)  # fmt: skip
    assert "output matching instead, 1 epoch" in result.record["blocks"]["fallback"]
    assert len(result.record["history"]) == 1


@pytest.mark.parametrize("settings,message", [
    ({"objective": "layers"}, "objective: must be one of 'output', 'blocks', 'blocks[+]output'; got 'layers'"),
    ({"objective": "blocks", "block_epochs": 0}, "block_epochs: "),
    ({"objective": "blocks", "block_values": 0}, "block_values: "),
    ({"objective": "blocks", "bn_stats": "update"}, "keeps batch norm frozen"),
    ({"objective": "blocks", "labels": True}, "is label-free"),
])  # fmt: skip
def test_bad_block_settings_are_clear_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        RetrainConfig(**settings)


def test_the_guard_undoes_a_block_stage_worse_than_the_start(pair, monkeypatch):
    from qretrain.retrain import loop

    teacher, student = pair
    start = {k: v.clone() for k, v in student.state_dict().items()}

    def ruinous(student, *args, **kwargs):  # a block stage that makes things worse
        with torch.no_grad():
            student.fc.bias.add_(100 * torch.arange(10.0))
        return {"blocks": [], "history": [], "activations": "memory", "seconds": 0.0}

    monkeypatch.setattr(loop, "reconstruct", ruinous)
    result = retrain(student, teacher, make_data(), blocks_config(), val_data=make_data(16, 1),
                     progress=False)  # fmt: skip
    record = result.record
    assert "never beat the clustered start" in record["guard"]
    assert record["quality_after"] == record["quality_before"]
    assert record["blocks"]["quality_blocks"] < record["blocks"]["quality_start"]
    for name, value in student.state_dict().items():
        assert torch.equal(value, start[name]), name
