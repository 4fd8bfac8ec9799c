"""Atrous conv on the CPU: folded conv + in-place activation (fastseg's native path) against what
users run, F.conv2d(dilation=d) + BatchNorm + ReLU eager, and against the same folded weights with
an out-of-place ReLU, in the same memory layout. The convolution dominates; the gain is the BN pass
and the activation tensor that folding and the in-place activation remove.

    pytest benchmarks/bench_atrous_conv.py -s            1x256x64x128, d=12 (DeepLabV3's ASPP at OS8)
    pytest benchmarks/bench_atrous_conv.py -s --quick    tiny (CI)
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastseg.models.rewrite import fold_batchnorm as fold_bn
from fastseg.ops.atrous_conv import atrous_conv


def random_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_atrous_conv_cpu(compare, quick, layout):
    torch.manual_seed(0)
    n, c, h, w, d = (1, 32, 16, 32, 12) if quick else (1, 256, 64, 128, 12)
    x = torch.randn(n, c, h, w)
    conv = nn.Conv2d(c, c, 3, padding=d, dilation=d, bias=False).eval()
    bn = random_bn(c)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        conv = conv.to(memory_format=torch.channels_last)
    weight, bias = fold_bn(conv.weight, None, bn)

    def eager():
        y = F.conv2d(x, conv.weight, None, padding=d, dilation=d)
        return F.relu(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))

    def folded_unfused_activation():
        return F.relu(F.conv2d(x, weight, bias, padding=d, dilation=d))

    def fused():
        return atrous_conv(x, weight, bias, padding=d, dilation=d, activation="relu", backend="native")

    with torch.inference_mode():
        expected, got = eager(), fused()
        scale = expected.abs().max().item()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)
        assert got.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
        compare(ours={"fastseg native (folded)": fused},
                references={"F.conv2d + BN + ReLU eager": eager,
                            "F.conv2d folded + F.relu": folded_unfused_activation},
                rounds=3 if quick else 7)
