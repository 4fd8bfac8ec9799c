"""The inference rewrite: batch-norm folded (also in separable and pooled branches), dropout gone,
dilated 3x3 convs marked for the fused atrous op, the function unchanged."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastseg.models as M
import fastseg.models.rewrite as rewrite
from fastseg.models.rewrite import AtrousConv, FoldedConv, FoldedSeparableConv, fold_batchnorm

from _zoo import REL_TOL, randomize_batchnorm, rel_err, one_torch_thread  # noqa: F401  (autouse fixture)

ALL_SMALL = ["fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large",
             "deeplabv3plus_resnet18", "deeplabv3plus_resnet50", "unet_resnet34", "segformer_b0"]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups,dilation,stride", [(1, 1, 1), (1, 3, 2), (4, 2, 1), (8, 1, 2)])
def test_fold_batchnorm(bias, groups, dilation, stride):
    conv = nn.Conv2d(8, 16 if groups != 8 else 8, 3, stride=stride, padding=dilation, dilation=dilation,
                     groups=groups, bias=bias)
    bn = randomize_batchnorm(nn.BatchNorm2d(conv.out_channels, eps=1e-3), seed=groups)
    w, b = fold_batchnorm(conv.weight, conv.bias, bn)
    x = torch.randn(2, 8, 13, 11)
    with torch.no_grad():
        ref = bn(conv(x))
        out = F.conv2d(x, w, b, stride=stride, padding=dilation, dilation=dilation, groups=groups)
    assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("name", ALL_SMALL)
def test_fused_equals_eval(name):
    model = randomize_batchnorm(M.create(name, num_classes=6))
    fused = M.fuse(model)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        ref = model.forward_logits(x)
        assert rel_err(fused.forward_logits(x), ref) < REL_TOL
        assert rel_err(fused.forward_logits(x.contiguous(memory_format=torch.channels_last)), ref) < REL_TOL


def test_fuse_marks_exactly_the_dilated_3x3_convs():
    model = M.create("deeplabv3_resnet50")  # output stride 8, torchvision dilation
    fused = M.fuse(model)
    atrous = [n for n, m in fused.named_modules() if isinstance(m, AtrousConv)]
    # layer3: blocks 1..5 dilation 2 (block 0 keeps 1); layer4: all 3 blocks (2, 4, 4); ASPP: 3 rates
    assert len(atrous) == 5 + 3 + 3
    assert all(m.conv.kernel_size == (3, 3) and m.conv.groups == 1 and m.conv.dilation[0] > 1
               for m in fused.modules() if isinstance(m, AtrousConv))
    plain = [m for m in fused.modules() if type(m) is FoldedConv]
    assert all(m.conv.dilation == (1, 1) or m.conv.kernel_size == (1, 1) or m.conv.groups > 1 for m in plain)
    # smp's separable ASPP: folded into the pointwise conv; depthwise dilated convs are not atrous-op work
    fused = M.fuse(M.create("deeplabv3plus_resnet18"))
    assert sum(isinstance(m, FoldedSeparableConv) for m in fused.modules()) == 3 + 2
    assert sum(isinstance(m, AtrousConv) for m in fused.modules()) == 4  # layer4: 2 blocks x 2 convs (smp dilates all)


def test_atrous_conv_calls_the_fused_op_when_present(monkeypatch):
    model = randomize_batchnorm(M.create("deeplabv3_mobilenet_v3_large", num_classes=3))
    fused = M.fuse(model)
    calls = []

    def fake_atrous_conv(x, weight, bias, stride, padding, dilation, activation):
        calls.append((tuple(weight.shape), stride, padding, dilation, activation))
        return F.relu(F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation))

    monkeypatch.setattr(rewrite, "_atrous_op", lambda: fake_atrous_conv)
    monkeypatch.setattr(rewrite, "_aspp_op", lambda: None)  # ASPP branch by branch, through the atrous op
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = fused.forward_logits(x)
        assert rel_err(out, model.forward_logits(x)) < REL_TOL
    assert sorted(calls) == sorted([((256, 960, 3, 3), 1, r, r, "relu") for r in (12, 24, 36)])


def test_fuse_is_idempotent_and_inplace():
    model = M.create("lraspp_mobilenet_v3_large")
    fused = M.fuse(model)
    assert M.fuse(fused) is fused
    same = M.fuse(model, inplace=True)
    assert same is model and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_aspp_hands_its_folded_weights_to_the_fused_op(monkeypatch):
    """FusedASPP's parameter form, run through the folded ASPP math, equals the module."""
    import dataclasses
    import types

    @dataclasses.dataclass
    class AsppParams:  # the field layout of fastseg.ops.aspp.AsppParams
        branch_weights: list
        branch_biases: list
        dilations: tuple
        pool_weight: torch.Tensor
        pool_bias: torch.Tensor
        proj_weight: torch.Tensor
        proj_pool_weight: torch.Tensor
        proj_bias: torch.Tensor

    def aspp(x, p):
        branches = [F.relu(F.conv2d(x, w, b, padding=d * (w.shape[-1] // 2), dilation=d))
                    for w, b, d in zip(p.branch_weights, p.branch_biases, p.dilations)]
        pooled = F.relu(F.linear(x.mean((2, 3)), p.pool_weight, p.pool_bias))
        bias = F.linear(pooled, p.proj_pool_weight, p.proj_bias)
        return F.relu(F.conv2d(torch.cat(branches, 1), p.proj_weight) + bias[:, :, None, None])

    model = randomize_batchnorm(M.create("deeplabv3_resnet50", num_classes=3, output_stride=16, atrous_rates=(2, 3, 5)))
    fused = M.fuse(model)
    assert sum(isinstance(m, rewrite.FusedASPP) for m in fused.modules()) == 1
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        ref = model.forward_logits(x)
        ops = types.SimpleNamespace(AsppParams=AsppParams, aspp=aspp)
        monkeypatch.setattr(rewrite, "_aspp_op", lambda: ops)
        assert rel_err(fused.forward_logits(x), ref) < REL_TOL
        head = fused.head.aspp
        assert head.op_params(ops) is head.op_params(ops)  # built once
        head.project.conv.bias.add_(1.0)                  # ... and rebuilt when the weights change
        assert torch.equal(head.op_params(ops).proj_bias, head.project.conv.bias)


def test_segformer_head_is_reassociated():
    model = randomize_batchnorm(M.create("segformer_b1", num_classes=5))
    fused = M.fuse(model)
    assert isinstance(fused.head, rewrite.FoldedSegFormerHead)
    assert [c.in_channels for c in fused.head.proj] == [64, 128, 320, 512]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert rel_err(fused.forward_logits(x), model.forward_logits(x)) < REL_TOL
