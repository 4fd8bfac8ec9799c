"""Bench cases of the fused ops (setups as in benchmarks/bench_*.py, which are not in the package)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import Reference, Row, measure


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def _labels_equal(a, b) -> float:
    return float((torch.as_tensor(np.asarray(a)).long() == torch.as_tensor(np.asarray(b)).long()).double().mean())


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Low-frequency colour blobs plus a little noise, uint8 [H,W,3]: edges for a CRF or a model to
    follow, unlike white noise."""
    g = _gen(seed)
    low = torch.rand((1, 3, max(2, h // 32), max(2, w // 32)), generator=g)
    full = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    full = full + 0.05 * torch.rand(full.shape, generator=g)
    return (full.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


def upsample_argmax_case(quick: bool) -> list[Row]:
    from ..ops.upsample_argmax import upsample_argmax

    shape, size = ((1, 19, 32, 64), (256, 512)) if quick else ((1, 19, 128, 256), (1024, 2048))
    logits = torch.randn(*shape, generator=_gen())

    def ref():
        return F.interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)

    equal = _labels_equal(upsample_argmax(logits, size), ref())
    return measure("upsample + argmax", f"{_fmt(shape)} fp32 -> {_fmt(size)}", lambda: upsample_argmax(logits, size),
                   {"F.interpolate + argmax": Reference(ref, f"{100 * equal:.4f} % labels equal", equal >= 0.99999)},
                   rounds=5 if quick else 7)


def confusion_matrix_case(quick: bool) -> list[Row]:
    """Block-shaped ground truth (like real label maps), predictions right on ~85 % of the pixels,
    5 % ignored; references: the bincount route a user writes, and torchmetrics when installed."""
    from ..metrics import confusion_matrix, scores_from_matrix

    C, ignore = 19, 255
    n, h, w = (2, 256, 512) if quick else (8, 1024, 2048)
    g = _gen()
    target = torch.randint(0, C, (n, h // 32, w // 32), generator=g, dtype=torch.uint8)
    target = target.repeat_interleave(32, 1).repeat_interleave(32, 2)
    noise = torch.rand(target.shape, generator=g) < 0.15
    pred = torch.where(noise, torch.randint(0, C, target.shape, generator=g, dtype=torch.uint8), target).contiguous()
    target = target.masked_fill(torch.rand(target.shape, generator=g) < 0.05, ignore).contiguous()

    def ours():
        return confusion_matrix(pred, target, C, ignore)

    def bincount():
        valid = target != ignore  # widened to int64: uint8 * 19 would overflow
        return torch.bincount(target[valid].long() * C + pred[valid].long(), minlength=C * C).reshape(C, C)

    mine = ours()
    refs = {"torch.bincount(t*C+p)": Reference(bincount, *(("exactly equal", True) if torch.equal(mine, bincount())
                                                         else ("MATRICES DIFFER", False)))}
    try:
        from torchmetrics.classification import MulticlassJaccardIndex
    except ImportError:
        pass
    else:
        metric = MulticlassJaccardIndex(num_classes=C, ignore_index=ignore, average=None)

        def torchmetrics():
            metric.reset()
            metric.update(pred, target)
            return metric.compute()

        iou = torchmetrics()
        same = torch.equal(metric.confmat.long(), mine) and \
            torch.allclose(iou.double(), scores_from_matrix(mine).iou, rtol=1e-6, atol=1e-6)
        refs["torchmetrics MulticlassJaccardIndex"] = Reference(
            torchmetrics, "same matrix and IoU" if same else "MATRICES DIFFER", same)
    return measure("confusion matrix", f"{_fmt((n, h, w))} uint8, {C} classes", ours, refs, rounds=3 if quick else 5)


def crf_case(quick: bool) -> list[Row]:
    """The CRF with pydensecrf's usual parameters on a blob image with noisy softmax probabilities."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        print("bench: pydensecrf2 is not installed (pip install pydensecrf2): no dense CRF row")
        return []
    from ..crf import DenseCRF

    h, w, C = (180, 240, 11) if quick else (360, 480, 11)
    image = smooth_image(h, w, seed=1)
    # labels from the image's colour (so they follow its edges), made noisy
    truth = (image.astype(np.int64).sum(-1) * C // (3 * 256)).clip(0, C - 1)
    rng = np.random.default_rng(0)
    logits = 2.0 * np.eye(C, dtype=np.float32)[truth].transpose(2, 0, 1) + rng.normal(0, 1.5, (C, h, w)).astype(np.float32)
    probs = torch.softmax(torch.from_numpy(logits), 0).numpy()
    crf = DenseCRF()
    q, q_ref = crf(image, probs), crf.reference(image, probs)
    equal = float((q.argmax(0) == q_ref.argmax(0)).mean())
    dq = float(np.abs(q - q_ref).mean())
    agree = Reference(lambda: crf.reference(image, probs),
                      f"{100 * equal:.3f} % labels equal, mean |dQ| {dq:.1e}", equal >= 0.995 and dq <= 1e-3)
    return measure("dense CRF (5 iterations)", f"{w}x{h}, {C} labels", lambda: crf(image, probs),
                   {"pydensecrf2": agree}, rounds=3 if quick else 7)


def atrous_conv_case(quick: bool) -> list[Row]:
    """3x3 dilated conv + BN + ReLU as users run it, against fastseg's folded, fused native conv."""
    from ..models.rewrite import fold_batchnorm as fold_bn
    from ..ops.atrous_conv import atrous_conv

    n, c, h, w, d = (1, 128, 32, 64, 12) if quick else (1, 256, 64, 128, 12)
    g = _gen()
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(c, c, 3, padding=d, dilation=d, bias=False).eval().to(memory_format=torch.channels_last)
    bn = torch.nn.BatchNorm2d(c).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1, generator=g)
        bn.running_var.uniform_(0.5, 2, generator=g)
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-0.5, 0.5, generator=g)
    weight, bias = fold_bn(conv.weight, None, bn)

    @torch.inference_mode()
    def eager():
        return F.relu(bn(F.conv2d(x, conv.weight, None, padding=d, dilation=d)))

    @torch.inference_mode()
    def ours():
        return atrous_conv(x, weight, bias, padding=d, dilation=d, activation="relu")

    expected = eager()
    err = float((ours() - expected).abs().max() / expected.abs().max())
    return measure("atrous conv + BN + ReLU", f"{_fmt((n, c, h, w))} channels_last, 3x3, dilation {d}", ours,
                   {"F.conv2d + BatchNorm + ReLU (eager)": Reference(eager, f"max rel. error {err:.1e}", err <= 1e-4)},
                   rounds=3 if quick else 7)
