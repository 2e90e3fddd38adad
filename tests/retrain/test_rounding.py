"""Learned assignments (retrain.rounding): where the soft weights start, which
centroids a weight may move to, the per-block choice, resuming, and bad settings."""

import copy

import pytest
import torch
from test_blocks import PLAN, blocks_config, interrupted_at, make_data

import qretrain
from qretrain.cluster import clusters_of
from qretrain.errors import QretrainFileError
from qretrain.models.layers import get_tensor
from qretrain.retrain import RetrainConfig, retrain
from qretrain.retrain.centroids import CentroidTuner
from qretrain.retrain.rounding import LR as ROUNDING_LR
from qretrain.retrain.rounding import LearnedAssignments
from qretrain.testing.reruns import assert_same


@pytest.fixture
def pair(tiny_resnet):
    student = copy.deepcopy(tiny_resnet)
    qretrain.cluster_(student, PLAN, progress=False)
    return tiny_resnet.eval(), student


def assignments(student, teacher):
    tuner = CentroidTuner(student)
    names = list(tuner.names)
    originals = {n: get_tensor(teacher, n) for n in names}
    return tuner, LearnedAssignments(tuner, names, originals, steps=10, per_image=100, weight=0.01)


def test_soft_weights_start_at_the_originals_between_two_neighbouring_centroids(pair):
    teacher, student = pair
    tuner, rounding = assignments(student, teacher)
    rounding.write()
    for name in rounding.names:
        cluster = tuner.clusters[name]
        codebook, free = cluster.codebook, rounding.free[name]
        w0 = get_tensor(teacher, name).detach().reshape(free.shape)
        c_lo, c_hi = codebook.gather(1, rounding.lo[name]), codebook.gather(1, rounding.hi[name])
        assert free.any(), name
        # Neighbours: c_lo <= w0 <= c_hi, and no used centroid strictly between them.
        assert (c_lo[free] <= w0[free]).all() and (w0[free] <= c_hi[free]).all()
        for g in range(codebook.shape[0]):
            used = codebook[g, : cluster.sizes[g]]
            between = (used[None, :] > c_lo[g][:, None]) & (used[None, :] < c_hi[g][:, None])
            assert not between[free[g]].any(), name
        # The soft weight is the original where it lies inside the clamp of h (0.01..0.99).
        soft = get_tensor(student, name).detach().reshape(free.shape)
        inside = free & (w0 - c_lo > 0.011 * (c_hi - c_lo)) & (c_hi - w0 > 0.011 * (c_hi - c_lo))
        assert inside.any()
        assert torch.allclose(soft[inside], w0[inside], atol=1e-6)
        # The nearest centroid is one of the two neighbours wherever a weight is free.
        nearest = tuner.clustered_indices[name]
        assert ((nearest == rounding.lo[name]) | (nearest == rounding.hi[name]))[free].all()


def test_a_learned_choice_takes_the_neighbour_h_points_to_and_keeps_the_rest(pair):
    teacher, student = pair
    tuner, rounding = assignments(student, teacher)
    with torch.no_grad():
        for v in rounding.v.values():
            v.fill_(5.0)  # h = 1 everywhere: every free weight takes c_hi
    moved = rounding.use(learned=True)
    assert moved > 0
    for name in rounding.names:
        free, index = rounding.free[name], tuner.flat_indices[name]
        assert torch.equal(index[free], rounding.hi[name][free])
        assert torch.equal(index[~free], tuner.clustered_indices[name][~free])
        weight = get_tensor(student, name)
        assert torch.equal(weight.reshape(index.shape), tuner.codebooks[name].gather(1, index))
    assert rounding.use(learned=False) == moved  # the learned choice, counted either way
    for name in rounding.names:
        assert torch.equal(tuner.flat_indices[name], tuner.clustered_indices[name])


def undecided_share(teacher, student, weight, steps=100, per_image=30_000):
    """The share of free weights whose h is still between 0.01 and 0.99 after ``steps``
    steps of reconstructing the teacher's outputs, the rounding term balanced as for a
    block of ``per_image`` output values per image."""
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = teacher(x)
    tuner = CentroidTuner(student)
    names = list(tuner.names)
    originals = {n: get_tensor(teacher, n) for n in names}
    rounding = LearnedAssignments(tuner, names, originals, steps, per_image, weight)
    optimizer = torch.optim.Adam(rounding.parameters(), ROUNDING_LR)
    for p in student.parameters():
        p.requires_grad_(True)
    for _ in range(steps):
        optimizer.zero_grad()
        rounding.write()
        torch.nn.functional.mse_loss(student(x), target).backward()
        rounding.collect_grads()
        optimizer.step()
    h = torch.cat([rounding._h(n)[rounding.free[n]] for n in names])
    return float(((h > 0.01) & (h < 0.99)).float().mean())


def test_the_default_rounding_term_decides_the_assignments_within_a_blocks_steps(pair):
    # A Lite0 block has ~30,000 output values per image and a few hundred steps: at
    # AdaRound's 0.01 the soft weights stay between centroids (and near the originals),
    # so the soft passes fit a model the rounding then changes.
    teacher, student = pair
    adaround = undecided_share(teacher, copy.deepcopy(student), 0.01)
    default = undecided_share(teacher, student, RetrainConfig().rounding_lambda)
    assert adaround > 0.2
    assert default < 0.1 and default < adaround / 4


def test_block_wise_with_learned_assignments_keeps_k_values_and_records_each_choice(pair):
    teacher, student = pair
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    initial = {n: c.indices.clone() for n, c in clusters_of(student).items()}
    config = blocks_config(tune_centroids=True, tune_assignments=True)
    result = retrain(student, teacher, make_data(), config, progress=False)
    history = result.record["blocks"]["history"]
    clustered = clusters_of(student)
    for name, p in student.named_parameters():
        if name in clustered:
            assert p.unique().numel() <= clustered[name].k
            assert torch.equal(clustered[name].decode(), p)
        elif name not in result.record["trainable"]:
            assert torch.equal(p, before[name]), name
    choices = [h["assignments"] for h in history]
    assert all(c["chosen"] in ("learned", "nearest") for c in choices)
    for c in choices:  # the choice is the lower error, and only a learned one moves weights
        assert (c["mse_learned"] < c["mse_nearest"]) == (c["chosen"] == "learned")
        assert c["moved"] <= c["free"] and (c["moved"] == 0) == (c["chosen"] == "nearest")
    assert any(c["chosen"] == "learned" and c["moved"] > 0 for c in choices)
    # A moved weight takes the neighbouring centroid, one rank up or down in its row
    # (write_back sorts rows again; here the tuned values keep their order): exactly
    # the recorded weights changed rank, each by one.
    changes = [clustered[n].indices.long() - initial[n].long() for n in clustered]
    assert sum(int((d != 0).sum()) for d in changes) == sum(c["moved"] for c in choices)
    assert all(d.abs().max() <= 1 for d in changes)
    # Without learned assignments every weight keeps its rank (assignments fixed).
    fixed = copy.deepcopy(teacher)
    qretrain.cluster_(fixed, PLAN, progress=False)
    retrain(fixed, teacher, make_data(), blocks_config(tune_centroids=True), progress=False)
    assert all(torch.equal(clusters_of(fixed)[n].indices, initial[n]) for n in initial)


@pytest.mark.parametrize("killed_at", [1, 2])  # pass 2: learning assignments; 3: after the choice
def test_resuming_learned_assignments_mid_block_equals_an_uninterrupted_run(
        pair, tmp_path, monkeypatch, killed_at):  # fmt: skip
    teacher, student = pair
    config = blocks_config(tune_centroids=True, tune_assignments=True, block_epochs=3)
    whole = copy.deepcopy(student)
    retrain(whole, teacher, make_data(), config, checkpoint=tmp_path / "a.ckpt", progress=False)
    interrupted = copy.deepcopy(student)
    with interrupted_at(monkeypatch, block=2, epoch=killed_at), pytest.raises(KeyboardInterrupt):
        retrain(interrupted, teacher, make_data(), config, checkpoint=tmp_path / "b.ckpt",
                progress=False)  # fmt: skip
    resumed = copy.deepcopy(student)
    result = retrain(resumed, teacher, make_data(), config, checkpoint=tmp_path / "b.ckpt",
                     resume=True, progress=False)  # fmt: skip
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert_same(a, b, name)
    for name, cluster in clusters_of(whole).items():
        assert torch.equal(cluster.indices, clusters_of(resumed)[name].indices), name
    assert "assignments" in result.record["blocks"]["history"][2]


def test_saved_soft_assignments_of_another_shape_are_refused(pair):
    teacher, student = pair
    _, rounding = assignments(student, teacher)
    state = rounding.state()
    name = rounding.names[0]
    state["v"][name] = state["v"][name][:, :1]
    with pytest.raises(QretrainFileError, match=f"learned assignments of '{name}' are missing"):
        rounding.load_state(state)
    assert rounding.step == 0


@pytest.mark.parametrize("step", [True, -1, 10**9, 1.0, None])
def test_saved_soft_assignments_at_an_impossible_step_are_refused(pair, step):
    teacher, student = pair
    _, rounding = assignments(student, teacher)
    state = rounding.state()
    state["step"] = step
    with pytest.raises(QretrainFileError, match=f"at step {step!r}, expected 0 .. "):
        rounding.load_state(state)
    assert rounding.step == 0
    state["step"] = 1  # the same state at a possible step loads
    rounding.load_state(state)
    assert rounding.step == 1


def test_the_state_carries_only_changed_indices_and_restores_the_others(pair):
    teacher, student = pair
    tuner, rounding = assignments(student, teacher)
    assert not any(k.endswith("::indices") for k in tuner.state())  # nothing moved yet
    with torch.no_grad():
        for v in rounding.v.values():
            v.fill_(5.0)
    rounding.use(learned=True)
    state = tuner.state()
    moved = {n for n in tuner.names if not torch.equal(tuner.flat_indices[n],
                                                        tuner.clustered_indices[n])}  # fmt: skip
    assert moved and {k.split("::")[0] for k in state if k.endswith("::indices")} == moved
    rounding.use(learned=False)  # back to the clustering's indices, then the state again
    tuner.load_state(state)
    for name in tuner.names:
        expected = state.get(f"{name}::indices", tuner.clustered_indices[name])
        assert torch.equal(tuner.flat_indices[name], expected.long().reshape_as(
            tuner.flat_indices[name]))  # fmt: skip
    tuner.load_state({})  # a state without indices: every tensor as clustered
    assert all(torch.equal(tuner.flat_indices[n], tuner.clustered_indices[n]) for n in tuner.names)


@pytest.mark.parametrize("bad", [255, -1])  # beyond the codebook; negative (gather would fail)
def test_saved_indices_that_do_not_fit_the_codebook_are_refused(pair, bad):
    _, student = pair
    tuner = CentroidTuner(student)
    state = tuner.state()
    name = tuner.names[0]
    state[f"{name}::indices"] = torch.full_like(tuner.flat_indices[name], bad)
    with pytest.raises(QretrainFileError, match=f"saved indices of '{name}' do not fit"):
        tuner.load_state(state)


@pytest.mark.parametrize("step", [None, "3", -1, 11])
def test_a_saved_step_outside_the_schedule_is_refused(pair, step):
    teacher, student = pair
    _, rounding = assignments(student, teacher)  # 10 steps
    state = rounding.state()
    state["step"] = step
    with pytest.raises(QretrainFileError, match=r"at step .*expected 0 \.\. 10; remove the"):
        rounding.load_state(state)
    state["step"] = 10
    rounding.load_state(state)
    assert rounding.step == 10


@pytest.mark.parametrize("settings,message", [
    ({"objective": "blocks", "tune_assignments": True},
     "tune_assignments trains codebook values with the assignments; set tune_centroids too"),
    ({"tune_assignments": True, "tune_centroids": True},
     "tune_assignments is block-wise"),
])  # fmt: skip
def test_bad_assignment_settings_are_clear_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        RetrainConfig(**settings)


def test_a_teacher_whose_tensor_has_another_shape_is_refused(pair):
    """The soft weights start at the teacher's values: a teacher that is not the
    student's original is refused with one line before anything trains."""
    from qretrain.errors import QretrainError
    from qretrain.retrain.blocks import _originals

    teacher, student = pair
    name = next(iter(CentroidTuner(student).names))
    other = copy.deepcopy(teacher)
    module_name, _, attr = name.rpartition(".")
    module = other.get_submodule(module_name)
    setattr(module, attr, torch.nn.Parameter(torch.zeros(3, *get_tensor(teacher, name).shape[1:])))
    assert torch.equal(_originals(teacher, student, [name], {})[name], get_tensor(teacher, name))
    with pytest.raises(
        QretrainError,
        match=rf"tune_assignments: the teacher's '{name}' has "
        r"shape \(3, .*retrain with the original as the teacher",
    ):
        _originals(other, student, [name], {})


PAIRS_PLAN = {"granularity": "pairs", "rules": PLAN["rules"]}


@pytest.fixture
def pairs(tiny_resnet):
    student = copy.deepcopy(tiny_resnet)
    qretrain.cluster_(student, PAIRS_PLAN, progress=False)
    assert {c.granularity.value for c in clusters_of(student).values()} == {"pairs"}
    return tiny_resnet.eval(), student


def test_a_pair_starts_at_its_original_projected_between_its_centroid_and_the_next(pairs):
    teacher, student = pairs
    tuner, rounding = assignments(student, teacher)
    rounding.write()
    for name in rounding.names:
        cluster = tuner.clusters[name]
        book = cluster.codebook[0]  # (K, 2)
        lo, hi, free = rounding.lo[name][0], rounding.hi[name][0], rounding.free[name][0]
        w0 = cluster.points(get_tensor(teacher, name).detach())[0]  # (N, 2)
        assert free.all() and torch.equal(lo, tuner.clustered_indices[name][0])
        # c_hi: the nearest pair other than c_lo
        distance = (w0[:, None] - book[None]).square().sum(-1)
        distance[torch.arange(len(lo)), lo] = float("inf")
        assert torch.allclose(distance.min(1).values, distance[torch.arange(len(hi)), hi])
        # The soft pair lies on the segment, where the original projects onto it.
        soft = cluster.points(get_tensor(student, name).detach())[0]
        step = book[hi] - book[lo]
        t = ((w0 - book[lo]) * step).sum(-1) / step.square().sum(-1)
        inside = (t > 0.011) & (t < 0.989)
        assert inside.any()
        expected = book[lo] + t[:, None] * step
        assert torch.allclose(soft[inside], expected[inside], atol=1e-5)


def test_block_wise_retraining_of_pairs_keeps_their_codebooks_and_saves(pairs, tmp_path, images):
    teacher, student = pairs
    initial = {n: c.indices.clone() for n, c in clusters_of(student).items()}
    config = blocks_config(tune_centroids=True, tune_assignments=True)
    result = retrain(student, teacher, make_data(), config, progress=False)
    clustered = clusters_of(student)
    for name, p in student.named_parameters():
        if name in clustered:
            c = clustered[name]
            assert c.granularity.value == "pairs" and torch.equal(c.decode(), p)
            assert torch.unique(c.points(p.detach())[0], dim=0).shape[0] <= c.k
    choices = [h["assignments"] for h in result.record["blocks"]["history"]]
    moved = sum(int((clustered[n].indices != initial[n]).sum()) for n in clustered)
    assert moved == sum(c["moved"] for c in choices) and moved > 0
    qretrain.save(student, tmp_path / "m.h5")
    loaded = qretrain.load(tmp_path / "m.h5")
    assert all(torch.equal(clusters_of(loaded)[n].indices, c.indices) for n, c in clustered.items())
    assert torch.allclose(loaded(images), student.eval()(images), atol=1e-5)


def test_a_pair_whose_next_nearest_is_its_twin_is_not_free(pairs):
    """Tuning may leave two equal pairs in a codebook: the line between them has no
    length, so such a pair keeps its centroid instead of dividing by zero."""
    teacher, student = pairs
    name = next(iter(clusters_of(student)))
    cluster = clusters_of(student)[name]
    with torch.no_grad():
        cluster.codebook[0, 1] = cluster.codebook[0, 0]  # a twin of pair 0
        get_tensor(student, name).copy_(cluster.decode())
    tuner, rounding = assignments(student, teacher)
    lo, free = rounding.lo[name][0], rounding.free[name][0]
    twins = lo == 0  # their next nearest pair is pair 1, now pair 0's twin
    assert twins.any() and not free[twins].any() and free[~twins].any()
    rounding.write()
    assert all(torch.isfinite(v).all() for v in rounding.v.values())
    assert torch.isfinite(get_tensor(student, name)).all()
