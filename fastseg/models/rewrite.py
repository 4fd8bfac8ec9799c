"""Inference rewrite: what evaluation does not need is folded away.

`fuse(model)` returns an eval-mode copy in which
- every batch-norm is folded into the convolution before it (`fold_batchnorm`, the one fold;
  `ConvBNAct` -> `FoldedConv`, `SeparableConvBNAct` -> `FoldedSeparableConv`, the norm goes into the
  pointwise conv); a `FoldedConv` runs the `fastseg.ops.atrous_conv` op (on the CPU: Winograd where
  that pays, otherwise torch's conv with the activation in place);
- every dense dilated 3x3 conv + BN + activation becomes an `AtrousConv`, which on CUDA tensors
  takes the op's Triton kernel where the GPU's convolution table says it beats cuDNN;
- a (non-separable) ASPP becomes a `FusedASPP`, which runs the fused `fastseg.ops.aspp` op (spatial
  branches in one launch, image pooling folded into the projection as a per-image bias);
- SegFormer's all-MLP head is re-associated: each stage's linear projection is multiplied into its
  slice of the 1x1 fuse conv, so the fuse runs per stage at that stage's own resolution and the
  big concatenated stride-4 tensor is never built (`FoldedSegFormerHead`);
- a ResNet bottleneck's last 1x1 conv, residual add and ReLU become one oneDNN call that writes
  into the residual's memory on the CPU (`FusedBottleneck`);
- dropout layers become identities (auxiliary heads are never part of a fastseg model: the
  converters drop them).
The result computes the same function as the model in eval mode, up to float rounding.
This is the only module layer over the ops: the ops themselves are functions.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .. import _torch_compat
from ..ops import aspp as aspp_op
from ..ops._dispatch import plain_inference
from ..ops.atrous_conv import dispatch as run_atrous_conv
from .backbones.resnet import Bottleneck, ResNet
from .heads.aspp import ASPP
from .heads.segformer import SegFormerHead
from .layers import ConvBNAct, SeparableConvBNAct, make_activation


@torch.no_grad()
def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d):
    """(weight, bias) of the conv that equals conv -> bn (eval: running statistics).

    bn(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta
                = (W * s) * x + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)
    (gamma = 1, beta = 0 for a norm without affine parameters). Computed in float64, returned in the
    weight's dtype."""
    scale = (bn.running_var.double() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    folded_w = weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    b = bias.double() if bias is not None else torch.zeros_like(scale)
    folded_b = (b - bn.running_mean.double()) * scale
    if bn.bias is not None:
        folded_b = folded_b + bn.bias.double()
    return folded_w.to(weight.dtype), folded_b.to(weight.dtype)


def _folded_conv2d(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    if isinstance(bn, nn.BatchNorm2d):
        w, b = fold_batchnorm(conv.weight, conv.bias, bn)
    else:
        w = conv.weight
        b = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        out.weight.copy_(w)
        out.bias.copy_(b)
    return out


class FoldedConv(nn.Module):
    """conv (with the norm folded into weight and bias) -> activation, run by the atrous_conv op. On
    the CPU that is its native backend (Winograd where that pays, torch's conv otherwise); on other
    devices an ordinary convolution stays torch's (cuDNN), `backend_off_cpu`."""

    backend_off_cpu = "reference"

    def __init__(self, conv: nn.Conv2d, act_name: str | None):
        super().__init__()
        if not (isinstance(conv.padding, tuple) and conv.padding_mode == "zeros"):
            raise ValueError(f"FoldedConv: needs explicit zero padding, got {conv.padding!r} ({conv.padding_mode})")
        self.conv = conv
        self.act = make_activation(act_name)
        self.act_name = act_name

    def forward(self, x):
        c = self.conv  # checked when built: the op's dispatch runs without re-checking every frame
        backend = "auto" if x.device.type == "cpu" else self.backend_off_cpu
        return run_atrous_conv(x, c.weight, c.bias, c.stride, c.padding, c.dilation, self.act_name, c.groups,
                               backend)


class AtrousConv(FoldedConv):
    """A folded dense dilated 3x3 conv + activation: on CUDA tensors the op's "auto" runs it (cuDNN, or
    the Triton kernel where the GPU's convolution table says that is faster)."""

    backend_off_cpu = "auto"


class FoldedSeparableConv(nn.Module):
    """depthwise -> pointwise (norm folded in) -> activation."""

    def __init__(self, depthwise: nn.Conv2d, pointwise: nn.Conv2d, act_name: str | None):
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = pointwise
        self.act = make_activation(act_name)
        self.act_name = act_name

    def forward(self, x):
        return self.act(self.pointwise(self.depthwise(x)))


class FusedASPP(nn.Module):
    """A folded ASPP. Keeps the folded convs as sub-modules (so the state dict, and save / load, look
    like any folded model) and hands them to the fused op in its parameter form, built once and
    rebuilt only when the weights change (device, dtype, in-place edits)."""

    def __init__(self, aspp: ASPP, backend: str = "auto"):
        super().__init__()
        self.branches, self.pooling, self.project = aspp.branches, aspp.pooling, aspp.project
        self.backend = backend
        self._params_cache = None

    @classmethod
    def from_torchvision(cls, module: nn.Module, backend: str = "auto") -> FusedASPP:
        """The fused form of torchvision's DeepLabV3 ASPP (eval mode; its weights are copied)."""
        convs = list(module.convs)
        first = module.convs[0][0]
        rates = tuple(branch[0].dilation[0] for branch in convs[1:-1])
        ours = ASPP(first.in_channels, first.out_channels, rates).to(first.weight.device, first.weight.dtype)
        sources = [(ours.branches[i], branch[0], branch[1]) for i, branch in enumerate(convs[:-1])]
        sources += [(ours.pooling.proj, convs[-1][1], convs[-1][2]),
                    (ours.project, module.project[0], module.project[1])]
        with torch.no_grad():
            for block, conv, bn in sources:
                block.conv.weight.copy_(conv.weight)
                block.bn.load_state_dict(bn.state_dict())
        folded = fuse(ours.eval(), inplace=True)  # a FusedASPP: the rewrite folds every BN on the way
        folded.backend = backend
        return folded

    def op_params(self, ops):
        key = tuple((p.data_ptr(), p.dtype, p.device, _torch_compat.version(p)) for p in self.parameters())
        if self._params_cache is None or self._params_cache[0] != key:
            convs = [branch.conv for branch in self.branches]
            spatial = sum(c.out_channels for c in convs)
            proj = self.project.conv
            params = ops.AsppParams(
                [c.weight.detach().contiguous(memory_format=torch.channels_last) for c in convs],
                [c.bias.detach() for c in convs], tuple(c.dilation[0] for c in convs),
                self.pooling.proj.conv.weight.detach().flatten(1), self.pooling.proj.conv.bias.detach(),
                proj.weight.detach()[:, :spatial].contiguous(), proj.weight.detach()[:, spatial:, 0, 0].contiguous(),
                proj.bias.detach())
            self._params_cache = (key, params)
        return self._params_cache[1]

    def forward(self, x):
        return aspp_op.aspp(x, self.op_params(aspp_op), self.backend)


def _residual_in_place(x: torch.Tensor, identity: torch.Tensor, conv: nn.Conv2d) -> bool:
    """True when relu(conv(x) + identity) can be computed by oneDNN straight into identity's memory:
    CPU float32 channels_last tensors, plain inference (no autograd, not traced / exported / compiled)."""
    if not (x.device.type == "cpu" and x.dtype == identity.dtype == conv.weight.dtype == torch.float32
            and _torch_compat.has_conv_add_relu_() and conv.groups == 1 and conv.bias is not None):
        return False
    cl = torch.channels_last
    nhwc_only = not identity.is_contiguous()  # a 1x1 map is both layouts: the plain path takes it
    return x.is_contiguous(memory_format=cl) and identity.is_contiguous(memory_format=cl) and nhwc_only \
        and plain_inference(x, identity, conv.weight)


class FusedBottleneck(nn.Module):
    """A folded ResNet bottleneck whose last 1x1 conv, residual add and ReLU are one oneDNN call
    writing into the residual's memory: no fresh block-sized output (whose page faults cost as
    much as the add), no separate add and ReLU passes. The residual is the downsample's fresh
    output, or, for `consumes_input` blocks (every block after the first of a ResNet stage, whose
    input nothing else holds), the block's input itself, which is overwritten."""

    def __init__(self, block: nn.Module, consumes_input: bool = False):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = block.conv1, block.conv2, block.conv3
        self.downsample, self.relu = block.downsample, block.relu
        self.consumes_input = consumes_input

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        c = self.conv3.conv
        owned = self.downsample is not None or self.consumes_input
        if owned and self.conv3.act_name is None and _residual_in_place(out, identity, c):
            return _torch_compat.conv_add_relu_(identity, out, c.weight, c.bias, c.padding, c.stride, c.dilation,
                                                c.groups)
        out = self.conv3(out)
        out += identity
        return self.relu(out)


class FoldedSegFormerHead(nn.Module):
    """SegFormer head with proj_i folded into the fuse conv. Exact because the bilinear resize is linear
    with weights summing to one: fuse(cat_i up(P_i f_i + p_i)) = sum_i up(W_i P_i f_i + W_i p_i) + b."""

    def __init__(self, head: SegFormerHead):
        super().__init__()
        fuse = head.fuse  # already a FoldedConv (bias = folded batch-norm)
        channels, stages = fuse.conv.out_channels, len(head.proj)
        weight = fuse.conv.weight.detach().double()[:, :, 0, 0]
        convs = []
        for i, proj in enumerate(head.proj):
            part = weight[:, (stages - 1 - i) * channels:(stages - i) * channels]  # concat is coarse-first
            conv = nn.Conv2d(proj.in_features, channels, 1, device=fuse.conv.weight.device,
                             dtype=fuse.conv.weight.dtype)
            with torch.no_grad():
                conv.weight.copy_((part @ proj.weight.double())[:, :, None, None])
                bias = part @ proj.bias.double()
                conv.bias.copy_(bias + fuse.conv.bias.double() if i == 0 else bias)
            convs.append(conv)
        self.proj = nn.ModuleList(convs)
        self.act = fuse.act
        self.classifier = head.classifier

    def forward(self, features):
        size = features[0].shape[-2:]
        x = self.proj[0](features[0])
        for feature, conv in zip(features[1:], self.proj[1:]):
            x = x + F.interpolate(conv(feature), size=size, mode="bilinear", align_corners=False)
        return self.classifier(self.act(x))


def is_atrous(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (3, 3) and conv.groups == 1 and max(conv.dilation) > 1


def _rewrite(module: nn.Module) -> nn.Module:
    if isinstance(module, ConvBNAct):
        conv = _folded_conv2d(module.conv, module.bn)
        return (AtrousConv if is_atrous(conv) else FoldedConv)(conv, module.act_name)
    if isinstance(module, SeparableConvBNAct):
        return FoldedSeparableConv(module.depthwise, _folded_conv2d(module.pointwise, module.bn), module.act_name)
    if isinstance(module, nn.Dropout):
        return nn.Identity()
    for name, child in module.named_children():
        new = _rewrite(child)
        if new is not child:
            setattr(module, name, new)
    if isinstance(module, ASPP) and all(isinstance(b, FoldedConv) for b in module.branches):
        return FusedASPP(module)  # separable ASPP (smp's DeepLabV3+) stays branch by branch
    if isinstance(module, SegFormerHead):
        return FoldedSegFormerHead(module)
    if isinstance(module, Bottleneck):
        return FusedBottleneck(module)
    if isinstance(module, ResNet):  # a stage's later blocks take the previous block's fresh output
        for layer in (module.layer1, module.layer2, module.layer3, module.layer4):
            for block in list(layer)[1:]:
                if isinstance(block, FusedBottleneck):
                    block.consumes_input = True
    return module


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The inference form of `model` (eval mode); the original is left untouched unless inplace."""
    if getattr(model, "fused", False):
        return model
    if not inplace:
        model = copy.deepcopy(model)
    model = _rewrite(model.eval())
    model.fused = True
    return model
