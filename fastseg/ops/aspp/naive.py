"""The ASPP op in plain PyTorch, step by step as the module computes it (the specification): each
spatial branch conv + bias + ReLU, the image-pooling branch broadcast over the map, the concatenation,
the projection conv + bias + ReLU. The fused forms drop the broadcast (the pooling branch becomes a
per-image projection bias) and the separate activation passes."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reference(x: torch.Tensor, params) -> torch.Tensor:
    """x [N, Cin, H, W] -> [N, Cout, H, W] in x's dtype, from AsppParams."""
    n, _, h, w = x.shape
    branches = [F.relu(F.conv2d(x, wt.to(x.dtype), b.to(x.dtype), padding=d * (wt.shape[-1] - 1) // 2, dilation=d))
                for wt, b, d in zip(params.branch_weights, params.branch_biases, params.dilations)]
    pooled = F.relu(F.linear(x.mean(dim=(2, 3)), params.pool_weight.to(x.dtype), params.pool_bias.to(x.dtype)))
    branches.append(pooled[:, :, None, None].expand(n, pooled.shape[1], h, w))
    proj = torch.cat([params.proj_weight, params.proj_pool_weight[:, :, None, None]], dim=1).to(x.dtype)
    return F.relu(F.conv2d(torch.cat(branches, dim=1), proj, params.proj_bias.to(x.dtype)))
