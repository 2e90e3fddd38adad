"""models.channels: a convolution's channels scaled into the batch norm after it keep the
model's function, make one codebook fit every channel, and the teacher's values follow."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qretrain.cluster.tensor import cluster_tensor
from qretrain.models.channels import (
    batch_norm_after,
    in_student_scales,
    scale_channels,
    teacher_ratios,
)


class _Functional(nn.Module):
    """A convolution called as F.conv2d on a parameter of its own (as EfficientNet's
    same-padding convolutions are)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.weight, None, 1, 1)


class Net(nn.Module):
    """Every case the finder must tell apart: a plain convolution with a bias before a
    batch norm, a depthwise one, a functional one, one whose output a batch norm and a
    skip both read, and one weight used twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn_dw = nn.BatchNorm2d(8)
        self.functional = _Functional(8, 8)
        self.bn_f = nn.BatchNorm2d(8)
        self.forked = nn.Conv2d(8, 8, 1, bias=False)
        self.bn_forked = nn.BatchNorm2d(8)
        self.shared = nn.Conv2d(8, 8, 1, bias=False)
        self.bn_shared = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.bn_dw(self.depthwise(x)))
        x = torch.relu(self.bn_f(self.functional(x)))
        y = self.forked(x)
        x = torch.relu(self.bn_forked(y)) + y  # the convolution's output read twice
        x = self.bn_shared(self.shared(self.shared(x)))  # one weight, two convolutions
        return self.fc(x.mean((2, 3)))


def _net(seed: int = 0) -> Net:
    """A Net whose output channels' weights differ in size by up to 1000x (as a trained
    depthwise convolution's do), its batch norms' statistics those of its own outputs
    on random images (as training leaves them)."""
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d) or isinstance(m, _Functional):
                m.weight.mul_(10 ** (torch.rand(len(m.weight)) * 3 - 1.5).reshape(-1, 1, 1, 1))
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.momentum = None  # running statistics: the mean over every batch
        net.train()
        for _ in range(4):
            net(torch.randn(16, 3, 12, 12))
    return net.eval()


def test_the_finder_takes_only_convolutions_a_batch_norm_alone_reads():
    assert batch_norm_after(_net()) == {
        "conv.weight": "bn", "depthwise.weight": "bn_dw", "functional.weight": "bn_f",
    }  # fmt: skip


def test_scaling_keeps_the_function_and_puts_every_channel_at_one():
    net, x = _net(), torch.randn(4, 3, 12, 12)
    scaled = copy.deepcopy(net)
    with torch.no_grad():
        zero = scaled.depthwise.weight[3].clone()
        scaled.depthwise.weight[3] = 0  # a channel of zeros keeps scale 1
        net.depthwise.weight[3] = 0
    scales = scale_channels(scaled)
    assert set(scales) == {"conv.weight", "depthwise.weight", "functional.weight"}
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), net(x), rtol=1e-5, atol=1e-5)
    for name, scale in scales.items():
        weight = dict(scaled.named_parameters())[name].detach()
        peaks = weight.reshape(len(weight), -1).abs().amax(1)
        expected = torch.ones_like(peaks)
        if name == "depthwise.weight":
            expected[3], scale_of_zero = 0.0, scale[3]
        torch.testing.assert_close(peaks, expected)
    assert scale_of_zero == 1 and zero.abs().sum() > 0
    for name in ("forked.weight", "shared.weight", "fc.weight"):  # left as they were
        assert torch.equal(
            dict(scaled.named_parameters())[name], dict(net.named_parameters())[name]
        )


def test_one_codebook_fits_channels_of_every_size_once_scaled():
    """What the scaling is for: clustered to 8 values, the depthwise layer's output
    strays far less from the original's when each channel is clustered at its scale."""
    net, x = _net(), torch.randn(8, 3, 12, 12)
    with torch.no_grad():
        reference = net(x)
    errors = {}
    for scaled in (False, True):
        model = copy.deepcopy(net)
        if scaled:
            scale_channels(model)
        with torch.no_grad():
            for name in ("conv.weight", "depthwise.weight", "functional.weight"):
                weight = dict(model.named_parameters())[name]
                weight.copy_(cluster_tensor(weight, 8).decode().reshape(weight.shape))
            errors[scaled] = (model(x) - reference).square().mean().item()
    assert errors[True] < 0.5 * errors[False], errors


def test_the_teacher_values_are_read_in_the_students_scales():
    teacher = _net()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for model in (teacher, student):  # a channel its batch norm zeroes: ratio 0 / 0
            model.bn.weight[2] = 0
    scale_channels(student)
    ratios = teacher_ratios(teacher, student)
    assert set(ratios) == {"conv.weight", "depthwise.weight", "functional.weight"}
    assert ratios["conv.weight"][2] == 1  # not NaN: a channel with no effect keeps its values
    names = ["conv.weight", "depthwise.weight", "fc.weight"]
    values = in_student_scales(teacher, names, ratios)
    params = dict(student.named_parameters())
    values["conv.weight"][2] = params["conv.weight"][2]  # (its scale is not in either model)
    for name in ("conv.weight", "depthwise.weight"):
        torch.testing.assert_close(values[name], params[name].detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(values["fc.weight"], teacher.fc.weight)  # no batch norm after it
    # An unscaled student, its batch norms folded, reads the teacher's values exactly.
    folded = copy.deepcopy(teacher)
    with torch.no_grad():
        for bn in (m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.div_(torch.sqrt(bn.running_var + bn.eps))
            bn.bias.sub_(bn.running_mean * bn.weight)
            bn.running_mean.zero_()
            bn.running_var.fill_(1 - bn.eps)
    assert teacher_ratios(teacher, folded) == {}
    same = in_student_scales(teacher, names, {})
    assert all(torch.equal(same[n], dict(teacher.named_parameters())[n]) for n in names)


class _Shared(nn.Module):
    """What must not be scaled: one batch norm after two convolutions, one weight tied
    into two modules, a batch norm in training mode; and a functional convolution whose
    bias is a parameter of another name, which must be scaled with it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.c, self.d = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.d.weight = self.c.weight  # tied
        self.bn_c, self.bn_d = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.e, self.bn_e = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.kernel = nn.Parameter(torch.randn(4, 3, 1, 1))
        self.offset = nn.Parameter(torch.randn(4))
        self.bn_f = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.a(x)) + self.bn(self.b(x)) + self.bn_c(self.c(x)) + self.bn_d(self.d(x))
        return y + self.bn_e(self.e(x)) + self.bn_f(F.conv2d(x, self.kernel, self.offset))


def test_shared_batch_norms_tied_weights_and_training_mode_are_left_alone():
    model = _Shared().eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        model.kernel.mul_(10)
    assert batch_norm_after(model) == {"e.weight": "bn_e", "kernel": "bn_f"}
    model.bn_e.train()
    assert batch_norm_after(model) == {"kernel": "bn_f"}
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        before = model(x)
    scales = scale_channels(model)
    assert set(scales) == {"kernel"} and (scales["kernel"] > 1).all()
    with torch.no_grad():  # the bias, found from the call, was divided with the weight
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_a_model_fx_cannot_trace_has_nothing_to_scale():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # control flow on a value: fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    model = Branchy().eval()
    before = copy.deepcopy(model.state_dict())
    assert batch_norm_after(model) == {} and scale_channels(model) == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("seed", [0, 1])
def test_scales_are_the_channels_peaks(seed):
    net = _net(seed)
    peaks = net.conv.weight.detach().reshape(8, -1).abs().amax(1)
    scales = scale_channels(net)
    torch.testing.assert_close(scales["conv.weight"], peaks)
