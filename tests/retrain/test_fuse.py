"""Frozen batch norm and symmetric zero pads folded into convolutions (retrain.fuse):
the same function and the same gradients, for the layers it rewrites, and nothing
rewritten where the fold would not be the same function."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from qretrain.retrain.fuse import conv_bn, fuse_frozen


class SamePadConv(nn.Module):
    """EfficientNet's convolution: a ZeroPad2d module, then F.conv2d without padding."""

    def __init__(self, cin, cout, kernel, stride, pads, groups=1):
        super().__init__()
        self.static_padding = nn.ZeroPad2d(pads)
        self.weight = nn.Parameter(torch.randn(cout, cin // groups, kernel, kernel) * 0.3)
        self.stride, self.groups = stride, groups

    def forward(self, x):
        return F.conv2d(self.static_padding(x), self.weight, None, self.stride, 0, 1, self.groups)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = SamePadConv(3, 8, 3, 1, (1, 1, 1, 1))  # symmetric: folds
        self.bn_a = nn.BatchNorm2d(8)
        self.b = SamePadConv(8, 8, 3, 2, (0, 1, 0, 1), groups=8)  # stride 2: asymmetric
        self.bn_b = nn.BatchNorm2d(8)
        self.c = nn.Conv2d(8, 6, 1, bias=True)  # a module with a bias
        self.bn_c = nn.BatchNorm2d(6)
        self.d = nn.Conv2d(6, 6, 3, padding=1, bias=False)  # read by bn_d and the sum
        self.bn_d = nn.BatchNorm2d(6)

    def forward(self, x):
        x = F.relu6(self.bn_a(self.a(x)))
        x = F.relu6(self.bn_b(self.b(x)))
        x = self.bn_c(self.c(x))
        y = self.d(x)
        return self.bn_d(y) + y


def make_net(seed=0):
    torch.manual_seed(seed)
    net = Net()
    for bn in (net.bn_a, net.bn_b, net.bn_c, net.bn_d):  # statistics away from 0 and 1
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def calls(module: fx.GraphModule, kind) -> int:
    return sum(1 for n in module.graph.nodes if n.op == "call_module"
               and isinstance(module.get_submodule(n.target), kind))  # fmt: skip


def test_folded_segment_computes_the_same_values_and_gradients():
    net = make_net()
    traced = fx.symbolic_trace(net)
    fused = fuse_frozen(traced)
    # bn_a, bn_b and bn_c fold; bn_d's convolution has a second reader, so it stays.
    assert calls(fused, nn.BatchNorm2d) == 1
    # a's symmetric pad folds into its convolution; b's asymmetric one stays.
    assert calls(fused, nn.ZeroPad2d) == 1
    assert sum(n.target is conv_bn for n in fused.graph.nodes) == 3
    x = torch.randn(4, 3, 12, 12)
    grads = []
    for module in (traced, fused):
        net.zero_grad()
        out = module(x)
        out.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
        grads[-1]["out"] = out.detach()
    plain, folded = grads
    assert plain.keys() == folded.keys()
    for name in plain:  # every parameter, BN's gamma and beta included, gets its gradient
        torch.testing.assert_close(folded[name], plain[name], rtol=1e-4, atol=1e-5, msg=name)
    # The fold reads the live parameters: a change reaches the folded segment's output.
    with torch.no_grad():
        net.bn_a.weight.mul_(2.0)
        net.a.weight.add_(0.1)
    torch.testing.assert_close(fused(x), traced(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fused(x), plain["out"], atol=1e-3)


def test_the_segment_itself_is_left_as_it_was():
    traced = fx.symbolic_trace(make_net())
    code = traced.code
    fuse_frozen(traced)
    assert traced.code == code and calls(traced, nn.BatchNorm2d) == 4


def test_batch_norm_in_training_mode_is_not_folded():
    net = make_net().train()
    fused = fuse_frozen(fx.symbolic_trace(net))
    assert calls(fused, nn.BatchNorm2d) == 4
    assert not any(n.target is conv_bn for n in fused.graph.nodes)


def test_nothing_to_fold_returns_the_segment_and_plain_callables_pass_through():
    traced = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    assert fuse_frozen(traced) is traced

    def segment(x):
        return x

    assert fuse_frozen(segment) is segment


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_block_segments_of_a_real_model_stay_the_same_function(tiny_resnet, layout):
    import qretrain
    from qretrain.retrain.blocks import plan_blocks

    teacher = copy.deepcopy(tiny_resnet).eval().to(memory_format=layout)
    for bn in teacher.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_var.uniform_(0.5, 2.0)
    student = copy.deepcopy(teacher)
    qretrain.cluster_(student, {"rules": [{"type": "Conv2d", "k": 4}]}, progress=False)
    plan = plan_blocks(student, teacher)
    x = torch.randn(5, 1, 28, 28).contiguous(memory_format=layout)
    folded = 0
    for segment in plan.teacher:
        fused = fuse_frozen(segment)
        folded += sum(n.target is conv_bn for n in fused.graph.nodes)
        expected = segment(x)
        torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-5)
        x = expected
    assert folded == sum(isinstance(m, nn.BatchNorm2d) for m in teacher.modules())
