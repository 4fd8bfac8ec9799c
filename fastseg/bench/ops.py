"""Cases of the fused ops, each against what users would otherwise write. Ops are reached through
`fastseg.ops`'s public functions only."""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from .measure import Agreement, Reference, Row, dims, generator, measure

LABELS_EQUAL = 0.99999  # fraction of pixels whose label equals the reference's


def _upsample_setup(quick: bool, seed: int):
    shape, size = ((1, 19, 32, 64), (256, 512)) if quick else ((1, 19, 128, 256), (1024, 2048))
    return torch.randn(*shape, generator=generator(seed)), size, f"{dims(shape)} fp32 -> {dims(size)}"


def upsample_argmax(quick: bool) -> list[Row]:
    """Fused bilinear upsample + argmax against F.interpolate(...).argmax(1), eager and (full runs
    only: compiling takes about a minute of a 2-core machine) under torch.compile."""
    from ..ops import upsample_argmax as op

    logits, size, shape = _upsample_setup(quick, seed=0)

    def labels(x):
        return F.interpolate(x, size, mode="bilinear", align_corners=False).argmax(1)

    ours = op(logits, size)
    refs = {"F.interpolate + argmax (eager)": Reference(lambda: labels(logits),
                                                        Agreement.labels(ours, labels(logits), LABELS_EQUAL), 30)}
    if not quick:
        compiled = torch.compile(labels)
        refs["F.interpolate + argmax (torch.compile)"] = Reference(
            lambda: compiled(logits), Agreement.labels(ours, compiled(logits), LABELS_EQUAL), 5)
    return measure("upsample + argmax", shape, {"fastseg": lambda: op(logits, size)}, refs, rounds=5 if quick else 7)


def upsample_argmax_confidence(quick: bool) -> list[Row]:
    """Labels and the largest softmax probability in one pass, against interpolate -> softmax -> max."""
    from ..ops import upsample_argmax as op

    logits, size, shape = _upsample_setup(quick, seed=1)

    def eager():
        z = F.interpolate(logits, size, mode="bilinear", align_corners=False)
        return z.argmax(1), torch.softmax(z, 1).amax(1)

    labels, conf = op(logits, size, return_confidence=True)
    ref_labels, ref_conf = eager()
    err = Agreement.close(conf, ref_conf, 1e-5)
    agreement = Agreement.labels(labels, ref_labels, LABELS_EQUAL).requiring(
        err.ok, f"confidence max rel. error {err.value:.1e}")
    ours = {"fastseg": lambda: op(logits, size, return_confidence=True)}
    return measure("upsample + argmax + confidence", shape, ours,
                   {"F.interpolate + softmax + max (eager)": Reference(eager, agreement)}, rounds=3 if quick else 5)


def _confusion_matrix(quick: bool, dtype: torch.dtype) -> list[Row]:
    """Block-shaped ground truth (like real label maps), predictions right on ~85 % of the pixels,
    5 % ignored; references: the bincount route a user writes, and torchmetrics when installed."""
    from ..metrics import confusion_matrix, scores_from_matrix

    C, ignore = 19, 255
    n, h, w = (2, 256, 512) if quick else (8, 1024, 2048)
    g = generator()
    target = torch.randint(0, C, (n, h // 32, w // 32), generator=g, dtype=torch.uint8)
    target = target.repeat_interleave(32, 1).repeat_interleave(32, 2)
    noise = torch.rand(target.shape, generator=g) < 0.15
    pred = torch.where(noise, torch.randint(0, C, target.shape, generator=g, dtype=torch.uint8), target)
    target = target.masked_fill(torch.rand(target.shape, generator=g) < 0.05, ignore)
    pred, target = pred.to(dtype).contiguous(), target.to(dtype).contiguous()

    def ours():
        return confusion_matrix(pred, target, C, ignore)

    def bincount():
        valid = target != ignore  # widened to int64: uint8 * 19 would overflow
        return torch.bincount(target[valid].long() * C + pred[valid].long(), minlength=C * C).reshape(C, C)

    mine = ours()
    uint8 = dtype == torch.uint8
    refs = {"torch.bincount(t*C+p)": Reference(bincount, Agreement.exact(torch.equal(mine, bincount())),
                                               5 if uint8 else None)}
    try:
        from torchmetrics.classification import MulticlassJaccardIndex
    except ImportError:
        print("bench: torchmetrics is not installed: no torchmetrics row", file=sys.stderr)
    else:
        metric = MulticlassJaccardIndex(num_classes=C, ignore_index=ignore, average=None)

        def torchmetrics():
            metric.reset()
            metric.update(pred, target)
            return metric.compute()

        iou = torchmetrics()
        same = torch.equal(metric.confmat.long(), mine) and \
            torch.allclose(iou.double(), scores_from_matrix(mine).iou, rtol=1e-6, atol=1e-6)
        refs["torchmetrics MulticlassJaccardIndex"] = Reference(torchmetrics, Agreement.exact(same),
                                                                10 if uint8 else None)
    what = str(dtype).removeprefix("torch.")
    return measure("confusion matrix", f"{dims((n, h, w))} {what}, {C} classes", {"fastseg": ours}, refs,
                   rounds=3 if quick else 5)


def confusion_matrix_uint8(quick: bool) -> list[Row]:
    """uint8 labels: what upsample_argmax and PNG label files give."""
    return _confusion_matrix(quick, torch.uint8)


def confusion_matrix_int64(quick: bool) -> list[Row]:
    return _confusion_matrix(quick, torch.int64)


def random_batchnorm(bn: nn.BatchNorm2d, g: torch.Generator) -> nn.BatchNorm2d:
    """Statistics and affine terms away from the identity, so that folding them is exercised."""
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1, generator=g)
        bn.running_var.uniform_(0.5, 2, generator=g)
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-0.5, 0.5, generator=g)
    return bn.eval()


def _atrous_conv(quick: bool, channels_last: bool) -> list[Row]:
    """3x3 dilated conv + BN + ReLU as users run it, against fastseg's folded conv with its in-place
    activation; also against the same folded weights with an out-of-place ReLU (what folding alone
    gives). The convolution dominates: the gain is the BN pass and the activation tensor."""
    from ..ops import atrous_conv

    n, c, h, w, d = (1, 128, 32, 64, 12) if quick else (1, 256, 64, 128, 12)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    g = generator()
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=layout)
    weight = (torch.randn(c, c, 3, 3, generator=g) / (3 * c ** 0.5)).contiguous(memory_format=layout)
    bn = random_batchnorm(nn.BatchNorm2d(c), g)
    # folded here, independently of fastseg's own folding: w * gamma / sigma, beta - mean * gamma / sigma
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded_w = (weight * scale.view(-1, 1, 1, 1)).detach().contiguous(memory_format=layout)
    folded_b = (bn.bias - bn.running_mean * scale).detach()

    @torch.inference_mode()
    def eager():
        return F.relu(bn(F.conv2d(x, weight, None, padding=d, dilation=d)))

    @torch.inference_mode()
    def folded():
        return F.relu(F.conv2d(x, folded_w, folded_b, padding=d, dilation=d))

    @torch.inference_mode()
    def ours():
        return atrous_conv(x, folded_w, folded_b, padding=d, dilation=d, activation="relu")

    got = ours()
    same_layout = got.is_contiguous(memory_format=layout)
    agreement = Agreement.close(got, eager(), 1e-4).requiring(
        same_layout, "" if same_layout else "output layout differs from the input's")
    shape = f"{dims((n, c, h, w))} {'channels_last' if channels_last else 'NCHW'}, 3x3, dilation {d}"
    return measure("atrous conv + BN + ReLU", shape, {"fastseg": ours},
                   {"F.conv2d + BatchNorm + ReLU (eager)": Reference(eager, agreement),
                    "F.conv2d folded + F.relu": Reference(folded, agreement)}, rounds=3 if quick else 7)


def atrous_conv_channels_last(quick: bool) -> list[Row]:
    return _atrous_conv(quick, channels_last=True)


def atrous_conv_nchw(quick: bool) -> list[Row]:
    return _atrous_conv(quick, channels_last=False)
