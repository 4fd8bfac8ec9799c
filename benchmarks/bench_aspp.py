"""ASPP on the CPU: fastseg's fused ASPP (folded BN, pooling branch as a per-image projection bias)
against torchvision's ASPP module with the same weights, eager, channels_last input for both.

    pytest benchmarks/bench_aspp.py -s            1x512x32x64 -> 256, rates (12, 24, 36)
    pytest benchmarks/bench_aspp.py -s --quick    tiny (CI)
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from fastseg.models.rewrite import FusedASPP


def test_aspp_cpu(compare, quick):
    torch.manual_seed(0)
    n, c, h, w, cout = (1, 32, 16, 32, 32) if quick else (1, 512, 32, 64, 256)
    module = ASPP(c, (12, 24, 36), out_channels=cout).eval()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
    module = module.to(memory_format=torch.channels_last)
    fused = FusedASPP.from_torchvision(module, backend="native")
    x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected, got = module(x), fused(x)
        scale = expected.abs().max().item()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)
        compare(ours={"fastseg FusedASPP (native)": lambda: fused(x)},
                references={"torchvision ASPP eager": lambda: module(x)},
                rounds=3 if quick else 7)
