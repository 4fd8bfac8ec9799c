"""Bench cases of whole models: one uint8 RGB image in, full-resolution labels out, the conversion
to normalised float included on every side. fastseg runs the Segmenter (its CPU default runtime and
fused upsample + argmax); the reference runs the same weights the way PyTorch users do."""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

from .._timing import SETTLE
from . import Reference, Row, measure
from .ops import _labels_equal, smooth_image

MIN_AGREEMENT = 0.999  # fraction of pixels with the same label


def _normalise(image, model) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    return (x - mean) / std


def _label_reference(labels_fn, seg, image) -> Reference:
    equal = _labels_equal(seg.predict(image).labels, labels_fn())
    return Reference(labels_fn, f"{100 * equal:.3f} % labels equal", equal >= MIN_AGREEMENT)


def default_model_case(quick: bool, model: str | None = None) -> list[Row]:
    """The packaged CamVid model (or `model`, a fastseg model file) through the Segmenter, against
    the same weights in eager PyTorch: forward_logits -> F.interpolate -> argmax."""
    from ..models import load, pretrained
    from ..segmenter import Segmenter

    path = model or pretrained.get().path
    if not os.path.isfile(path):
        what = f"--model: {model} is not a file" if model is not None else \
            f"the packaged default model is missing ({path}); reinstall fastseg or pass --model FILE"
        raise FileNotFoundError(what)
    net, what = load(path), os.path.basename(path)
    net = net.float().eval()
    h, w = 360, 480  # CamVid's frame size, both modes
    image = smooth_image(h, w, seed=2)
    seg = Segmenter(net)

    @torch.inference_mode()
    def eager():
        logits = net.forward_logits(_normalise(image, net))
        return F.interpolate(logits, (h, w), mode="bilinear", align_corners=net.align_corners).argmax(1)[0]

    ref = _label_reference(eager, seg, image)
    return measure(f"Segmenter: {what}", f"{w}x{h} uint8 -> labels",
                   lambda: seg.predict(image), {"same weights, eager PyTorch + F.interpolate + argmax": ref},
                   rounds=3 if quick else 11, settle=SETTLE)


def randomise(model: torch.nn.Module, num_classes: int, seed: int = 1) -> torch.nn.Module:
    """Random weights whose labels vary over the image, so label agreement tests something: fan-in
    initialisation (torchvision's fan-out init makes MobileNetV3's activations fade and the classifier
    bias then picks one class everywhere), no classifier bias, non-trivial BN statistics (so that the
    Segmenter's batch-norm folding is exercised)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", generator=g)
                if m.out_channels == num_classes and m.bias is not None:
                    m.bias.zero_()
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def lraspp_case(quick: bool) -> list[Row]:
    """LR-ASPP MobileNetV3-Large (21 classes, random weights): the Segmenter on the converted model
    against torchvision's own pipeline (normalise, model(x)["out"], argmax), eager."""
    try:
        import torchvision
    except ImportError:
        print("bench: torchvision is not installed: no LR-ASPP row", file=sys.stderr)
        return []
    from ..models import from_torchvision
    from ..segmenter import Segmenter

    torch.manual_seed(0)
    tv = randomise(torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21), 21)
    h, w = (128, 256) if quick else (512, 1024)
    image = smooth_image(h, w, seed=3)
    seg = Segmenter(from_torchvision(tv))

    @torch.inference_mode()
    def torchvision_labels():
        return tv(_normalise(image, seg.model))["out"].argmax(1)[0]

    ref = _label_reference(torchvision_labels, seg, image)
    return measure("Segmenter: LR-ASPP MobileNetV3-Large", f"{w}x{h} uint8 -> labels", lambda: seg.predict(image),
                   {"torchvision (eager, NCHW), same weights": ref}, rounds=5 if quick else 11, settle=SETTLE)
