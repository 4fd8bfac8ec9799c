"""The inference rewrite: batch-norm folded (also in separable and pooled branches), dropout gone,
dilated 3x3 convs marked for the fused atrous op, the function unchanged."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastseg.models as M
import fastseg.models.rewrite as rewrite
from fastseg.models.rewrite import AtrousConv, FoldedConv, FoldedSeparableConv, fold_batchnorm

from _zoo import REL_TOL, one_torch_thread, randomize_batchnorm, rel_err  # noqa: F401  (autouse fixture)

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


def test_atrous_conv_runs_the_fused_op(monkeypatch):
    """Every folded conv, among them each dense dilated 3x3 conv of a dilated ResNet, goes through
    fastseg.ops.atrous_conv."""
    model = randomize_batchnorm(M.create("deeplabv3_resnet50", num_classes=3, output_stride=8))
    fused = M.fuse(model)
    calls = []
    real = rewrite.run_atrous_conv

    def spy(x, weight, bias, stride, padding, dilation, activation, *args):
        calls.append((dilation, activation))
        return real(x, weight, bias, stride, padding, dilation, activation, *args)

    monkeypatch.setattr(rewrite, "run_atrous_conv", spy)
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        assert rel_err(fused.forward_logits(x), model.forward_logits(x)) < REL_TOL
    # layer3 (dilation 2) and layer4 (dilation 4) at output stride 8; the first block of each keeps
    # the previous dilation, as torchvision's dilated ResNet does
    dilated = [(d, act) for d, act in calls if max(d) > 1]
    assert {d[0] for d, _ in dilated} >= {2, 4} and all(act == "relu" for _, act in dilated)
    in_aspp = {id(m) for a in fused.modules() if isinstance(a, rewrite.FusedASPP) for m in a.modules()}
    assert len(calls) == sum(isinstance(m, FoldedConv) and id(m) not in in_aspp for m in fused.modules())


def test_fuse_is_idempotent_and_inplace():
    model = M.create("lraspp_mobilenet_v3_large")
    fused = M.fuse(model)
    assert M.fuse(fused) is fused
    same = M.fuse(model, inplace=True)
    assert same is model and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_aspp_runs_the_fused_op_with_cached_parameters(monkeypatch):
    """FusedASPP hands its folded weights to fastseg.ops.aspp, builds that parameter form once and
    rebuilds it when the weights change."""
    calls = []
    real = rewrite.aspp_op

    def spy(x, params, *args, **kwargs):
        calls.append(params)
        return real.aspp(x, params, *args, **kwargs)

    monkeypatch.setattr(rewrite, "aspp_op", types.SimpleNamespace(AsppParams=real.AsppParams, aspp=spy))
    model = randomize_batchnorm(M.create("deeplabv3_resnet50", num_classes=3, output_stride=16, atrous_rates=(2, 3, 5)))
    fused = M.fuse(model)
    assert sum(isinstance(m, rewrite.FusedASPP) for m in fused.modules()) == 1
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert rel_err(fused.forward_logits(x), model.forward_logits(x)) < REL_TOL
        assert len(calls) == 1 and calls[0].dilations == (1, 2, 3, 5)  # the 1x1 branch, then the rates
        head = fused.head.aspp
        assert head.op_params(real) is head.op_params(real)  # built once
        head.project.conv.bias.add_(1.0)                    # ... and rebuilt when the weights change
        assert torch.equal(head.op_params(real).proj_bias, head.project.conv.bias)


def test_segformer_head_is_reassociated():
    model = randomize_batchnorm(M.create("segformer_b1", num_classes=5))
    fused = M.fuse(model)
    assert isinstance(fused.head, rewrite.FoldedSegFormerHead)
    assert [c.in_channels for c in fused.head.proj] == [64, 128, 320, 512]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert rel_err(fused.forward_logits(x), model.forward_logits(x)) < REL_TOL


def test_cpu_fast_paths_run_and_agree(monkeypatch):
    """channels_last float32 inference on the CPU: stride-1 3x3 convs go to Winograd, each bottleneck's
    last conv + residual + ReLU to oneDNN's in-place sum; the logits still equal the eval model's, the
    input and the stage outputs other heads read (DeepLabV3+'s low-level feature) are left intact."""
    from fastseg import _torch_compat
    from fastseg.ops import winograd

    calls = {"winograd": 0, "sum": 0}
    real_conv, real_sum = winograd.conv2d, _torch_compat._CONV_ADD_RELU_

    def counting_conv(*args, **kwargs):
        calls["winograd"] += 1
        return real_conv(*args, **kwargs)

    class CountingSum:
        def binary(self, *args):
            calls["sum"] += 1
            return real_sum.binary(*args)

    monkeypatch.setattr(winograd, "conv2d", counting_conv)
    monkeypatch.setattr(_torch_compat, "_CONV_ADD_RELU_", CountingSum())
    for name in ("deeplabv3_resnet50", "deeplabv3plus_resnet50"):
        model = randomize_batchnorm(M.create(name, num_classes=5))
        fused = M.fuse(model).to(memory_format=torch.channels_last)
        blocks = [b for b in fused.modules() if isinstance(b, rewrite.FusedBottleneck)]
        assert len(blocks) == 16 and sum(b.consumes_input for b in blocks) == 12  # all but each stage's first
        x = torch.randn(2, 3, 72, 88).contiguous(memory_format=torch.channels_last)
        kept = x.clone()
        calls.update(winograd=0, sum=0)
        with torch.inference_mode():
            ref = model.forward_logits(x)
            got = fused.forward_logits(x)
        assert calls["winograd"] > 0 and calls["sum"] == 16, (name, calls)
        assert torch.equal(x, kept)
        assert rel_err(got, ref) < REL_TOL, name


def test_bottleneck_keeps_its_input_when_it_does_not_own_it():
    """A first block (downsample) or a block not marked consumes_input leaves its input untouched."""
    model = randomize_batchnorm(M.create("fcn_resnet50", num_classes=3))
    fused = M.fuse(model).to(memory_format=torch.channels_last)
    block = fused.backbone.layer3[2]
    block.consumes_input = False
    x = torch.randn(1, 1024, 9, 11).contiguous(memory_format=torch.channels_last)
    kept = x.clone()
    with torch.inference_mode():
        y = block(x)
    assert torch.equal(x, kept)
    block.consumes_input = True
    with torch.inference_mode():
        y2 = block(x)
    assert y2.data_ptr() == x.data_ptr() and rel_err(y2, y) < 1e-6  # written into the input's memory
