"""Mix Transformer (MiT), SegFormer's encoder: four stages of overlapping patch embedding followed by
transformer blocks with spatially reduced attention and a depthwise-conv Mix-FFN.

Tokens are kept as [N, H*W, C] inside a stage and returned as [N, C, H, W] feature maps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_channels, dim, patch_size, stride, eps):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class EfficientAttention(nn.Module):
    """Multi-head attention whose keys/values come from a map shrunk by `sr_ratio` (a strided conv)."""

    def __init__(self, dim, num_heads, sr_ratio, eps):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.reduce = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.reduce_norm = nn.LayerNorm(dim, eps=eps)

    def _heads(self, x):
        n, length, dim = x.shape
        return x.view(n, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, x, height, width):
        n, length, dim = x.shape
        kv = x
        if self.sr_ratio > 1:
            kv = x.transpose(1, 2).reshape(n, dim, height, width)
            kv = self.reduce_norm(self.reduce(kv).flatten(2).transpose(1, 2))
        out = F.scaled_dot_product_attention(self._heads(self.q_proj(x)), self._heads(self.k_proj(kv)),
                                             self._heads(self.v_proj(kv)))
        return self.out_proj(out.transpose(1, 2).reshape(n, length, dim))


class MixFFN(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, height, width):
        x = self.fc1(x)
        n, length, hidden = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(n, hidden, height, width)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(x))


class MiTBlock(nn.Module):
    def __init__(self, dim, num_heads, sr_ratio, mlp_ratio, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x, height, width):
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x), height, width)


class MiTStage(nn.Module):
    def __init__(self, in_channels, dim, depth, num_heads, sr_ratio, mlp_ratio, patch_size, stride, eps):
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, patch_size, stride, eps)
        self.blocks = nn.ModuleList(MiTBlock(dim, num_heads, sr_ratio, mlp_ratio, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        x, height, width = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, height, width)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, height, width)


class MixTransformer(nn.Module):
    def __init__(self, hidden_sizes=(32, 64, 160, 256), depths=(2, 2, 2, 2), num_heads=(1, 2, 5, 8),
                 sr_ratios=(8, 4, 2, 1), mlp_ratios=(4, 4, 4, 4), patch_sizes=(7, 3, 3, 3),
                 strides=(4, 2, 2, 2), layer_norm_eps=1e-5):
        super().__init__()
        in_channels, stages = 3, []
        for i, dim in enumerate(hidden_sizes):
            stages.append(MiTStage(in_channels, dim, depths[i], num_heads[i], sr_ratios[i], mlp_ratios[i],
                                   patch_sizes[i], strides[i], layer_norm_eps))
            in_channels = dim
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(hidden_sizes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
