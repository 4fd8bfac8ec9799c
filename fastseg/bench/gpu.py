"""Cases run on a CUDA device (by `make gpu-check`): each op against eager PyTorch and torch.compile
in the same run (CUDA-event medians, `cuda_timing.event_medians`), and the Segmenter's frame rate
and latency as a real-time loop sees it (host uint8 frames in, labels back on the host).

Every op case takes `reference`: "eager" or "torch.compile" (the PyTorch code run as it is, or
compiled: compiling costs tens of seconds per reference, which a time-boxed run may not have, so a
run measures every case against eager first and then against torch.compile while time is left)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _native
from .cuda_timing import event_medians, frame_latencies, percentile
from .measure import Agreement, Figure, Reference, Row, dims, generator, measure, smooth_image
from .ops import LABELS_EQUAL, random_batchnorm

ROUNDS = 20
HALF_LABELS_EQUAL = 0.999  # labels equal to a reference that interpolates in fp16
CUDA = torch.device("cuda")


REFERENCES = ("eager", "torch.compile")


def _refs(name: str, fn, agree, reference: str) -> dict[str, Reference]:
    """The PyTorch reference as it is or compiled, checked against fastseg on its own output."""
    if reference not in REFERENCES:
        raise ValueError(f"reference: expected one of {REFERENCES}, got {reference!r}")
    fn = torch.compile(fn) if reference == "torch.compile" else fn
    return {f"{name} ({reference})": Reference(fn, agree(fn()))}


def _rows(case: str, shape: str, ours, refs: dict[str, Reference]) -> list[Row]:
    return measure(case, shape, {"fastseg": ours}, refs, rounds=ROUNDS, warmup=2, timer=event_medians)


def upsample_argmax(reference: str) -> list[Row]:
    return _upsample_argmax(torch.float16, reference) + _upsample_argmax(torch.float32, reference)


def _upsample_argmax(dtype: torch.dtype, reference: str) -> list[Row]:
    from ..ops import upsample_argmax as op

    logits = torch.randn(1, 19, 128, 256, generator=generator(0)).to(CUDA, dtype)
    size = (1024, 2048)
    candidates = {"fastseg": lambda: op(logits, size)}  # Triton
    if _native.has_cuda():  # the CUDA C++ kernel (where Triton is missing), timed in the same run
        candidates["fastseg CUDA C++"] = lambda: op(logits, size, backend="native")
    labels = {name: fn().cpu() for name, fn in candidates.items()}

    def eager():
        return F.interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)

    # torch interpolates fp16 in fp16 (rounding each value), fastseg in fp32: near-ties may differ
    equal = LABELS_EQUAL if dtype == torch.float32 else HALF_LABELS_EQUAL
    refs = _refs("F.interpolate + argmax", eager,
                 lambda r: {name: Agreement.labels(ours, r.cpu(), equal) for name, ours in labels.items()}, reference)
    what = str(dtype).removeprefix("torch.")
    return measure("upsample + argmax", f"{dims(logits.shape)} {what} -> {dims(size)}", candidates, refs,
                   rounds=ROUNDS, warmup=2, timer=event_medians)


def upsample_argmax_confidence(reference: str) -> list[Row]:
    from ..ops import upsample_argmax as op

    logits = torch.randn(1, 19, 128, 256, generator=generator(1)).to(CUDA, torch.float16)
    size = (1024, 2048)
    labels, conf = op(logits, size, return_confidence=True)

    def eager():
        z = F.interpolate(logits, size, mode="bilinear", align_corners=False).float()
        return z.argmax(1), torch.softmax(z, 1).amax(1)

    def agree(r):
        err = Agreement.close(conf, r[1], 1e-3)
        return Agreement.labels(labels.cpu(), r[0].cpu(), HALF_LABELS_EQUAL).requiring(
            err.ok, f"confidence max rel. error {err.value:.1e}")

    return _rows("upsample + argmax + confidence", f"{dims(logits.shape)} float16 -> {dims(size)}",
                 lambda: op(logits, size, return_confidence=True),
                 _refs("F.interpolate + softmax + max", eager, agree, reference))


def confusion_matrix(reference: str) -> list[Row]:
    from ..metrics import confusion_matrix as op

    C, ignore, (n, h, w) = 19, 255, (8, 1024, 2048)
    g = generator()
    target = torch.randint(0, C, (n, h // 32, w // 32), generator=g, dtype=torch.uint8)
    target = target.repeat_interleave(32, 1).repeat_interleave(32, 2)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.15,
                       torch.randint(0, C, target.shape, generator=g, dtype=torch.uint8), target)
    target = target.masked_fill(torch.rand(target.shape, generator=g) < 0.05, ignore)
    pred, target = pred.to(CUDA), target.to(CUDA)
    ours = op(pred, target, C, ignore)

    def bincount():  # ignored pixels counted in an extra bin, dropped: no data-dependent shapes
        index = torch.where(target != ignore, target.long() * C + pred.long(), C * C)
        return torch.bincount(index.flatten(), minlength=C * C + 1)[:C * C].reshape(C, C)

    return _rows("confusion matrix", f"{dims((n, h, w))} uint8, {C} classes", lambda: op(pred, target, C, ignore),
                 _refs("torch.bincount(t*C+p)", bincount, lambda r: Agreement.exact(torch.equal(ours, r)), reference))


def atrous_conv(reference: str) -> list[Row]:
    from ..ops import atrous_conv as op

    n, c, h, w, d = 1, 256, 64, 128, 12
    g = generator()
    x = torch.randn(n, c, h, w, generator=g).to(CUDA, torch.float16).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(c, c, 3, 3, generator=g) / (3 * c ** 0.5)).to(CUDA, torch.float16)
    weight = weight.contiguous(memory_format=torch.channels_last)
    bn = random_batchnorm(nn.BatchNorm2d(c), g).to(CUDA, torch.float16)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded_w = (weight * scale.view(-1, 1, 1, 1)).detach().contiguous(memory_format=torch.channels_last)
    folded_b = (bn.bias - bn.running_mean * scale).detach().float()

    @torch.inference_mode()
    def ours():
        return op(x, folded_w, folded_b, padding=d, dilation=d, activation="relu")

    @torch.inference_mode()
    def eager():
        return F.relu(bn(F.conv2d(x, weight, None, padding=d, dilation=d)))

    got = ours()
    return _rows("atrous conv + BN + ReLU", f"{dims((n, c, h, w))} float16 channels_last, 3x3, dilation {d}", ours,
                 _refs("F.conv2d + BatchNorm + ReLU", eager, lambda r: Agreement.close(got.float(), r.float(), 2e-2),
                       reference))


def aspp(reference: str) -> list[Row]:
    try:
        from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP
    except ImportError:
        return []
    from ..models.rewrite import FusedASPP

    n, c, h, w, cout = 1, 2048, 64, 128, 256  # DeepLabV3-ResNet50's head at 1024x2048, output stride 16
    g = generator()
    torch.manual_seed(0)
    theirs = TorchvisionASPP(c, (12, 24, 36), out_channels=cout).eval()
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):
            random_batchnorm(m, g)
    fused = FusedASPP.from_torchvision(theirs).to(CUDA, torch.float16)
    theirs = theirs.to(CUDA, torch.float16).to(memory_format=torch.channels_last)
    x = torch.randn(n, c, h, w, generator=g).to(CUDA, torch.float16).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def ours():
        return fused(x)

    @torch.inference_mode()
    def eager():
        return theirs(x)

    got = ours()
    return _rows("ASPP (rates 12, 24, 36)", f"{dims((n, c, h, w))} float16 channels_last -> {cout} channels", ours,
                 _refs("torchvision ASPP", eager, lambda r: Agreement.close(got.float(), r.float(), 2e-2), reference))


OP_CASES = (upsample_argmax, upsample_argmax_confidence, confusion_matrix, atrous_conv, aspp)


@dataclass(frozen=True)
class SegmenterCase:
    label: str
    model: str | None       # a registered name, or None for the packaged default model
    num_classes: int | None = None


SEGMENTER_MODELS = (
    SegmenterCase("default (U-Net ResNet-18/2, CamVid)", None),
    SegmenterCase("LR-ASPP MobileNetV3-Large", "lraspp_mobilenet_v3_large", 21),
    SegmenterCase("DeepLabV3-ResNet50", "deeplabv3_resnet50", 21),
)
FRAME_SIZES = ((360, 480), (1024, 2048))
PRECISIONS = ("fp16", "fp32")


def load_model(case: SegmenterCase) -> nn.Module:
    """The case's model as trained (the packaged weights, or random ones for a registered name)."""
    from ..segmenter import resolve_model

    torch.manual_seed(0)
    return resolve_model(case.model, case.num_classes).model


def segmenter_frames(case: SegmenterCase, model: nn.Module, precision: str, size: tuple[int, int], seconds: float,
                     cuda_graph: bool = False) -> Figure:
    """Frames per second and p50 / p99 latency of `Segmenter.stream` over host uint8 frames (labels
    read back to the host each frame), after `warmup` for the size."""
    from ..segmenter import Segmenter

    seg = Segmenter(model, device="cuda", precision=precision, cuda_graph=cuda_graph)
    seg.warmup([size])
    frame = smooth_image(*size)
    lat = frame_latencies(seg.stream(itertools.repeat(frame)), seconds)
    fps = len(lat) / sum(lat)
    p50, p99 = 1e3 * percentile(lat, 50), 1e3 * percentile(lat, 99)
    graph = ", cuda_graph" if cuda_graph else ""
    return Figure("Segmenter frames", f"{case.label}, {precision}{graph}, {size[1]}x{size[0]}",
                  f"{fps:.1f} frames/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(lat)} frames)", ok=True,
                  values={"model": case.label, "precision": precision, "height": size[0], "width": size[1],
                          "cuda_graph": cuda_graph, "fps": fps, "p50_ms": p50, "p99_ms": p99, "frames": len(lat)})
