"""Whole models: fastseg.Segmenter against the implementations users would otherwise run.

Task: one uint8 RGB image [H,W,3] in, full-resolution labels out; the uint8 -> normalised float
conversion is included on every side and nothing is resized. References, same random weights:
  torchvision   `model(x)["out"].argmax(1)` in eager PyTorch, x contiguous NCHW as torchvision's
                transforms (ToTensor, Normalize) hand it over; torch then runs the network in NCHW
  torchvision-channels_last  the same on the permuted view of the HWC frame, whose channels_last
                strides torch carries through the whole network: on the CPU the faster of the two,
                so the stricter reference
  onnxruntime   the torchvision model exported to ONNX with normalisation and argmax in the graph
                (uint8 in, labels out), ONNX Runtime with 2 intra-op threads, default options;
                onnxruntime-nospin: the same with idle threads sleeping instead of spinning
                (fastseg's ort_spinning=False, for machines shared with other work)
  torch.compile the torchvision model under torch.compile (LR-ASPP only: compiling takes minutes)
fastseg is the Segmenter with its CPU default runtime ("auto": ONNX Runtime for LR-ASPP's
convolutions, the fused torch model with Winograd 3x3 convolutions for DeepLabV3-ResNet50; fastseg's
fused upsample+argmax for the tail); `fastseg-torch` is its eager-torch runtime (channels_last), for
information. Every run asserts that all implementations give the same labels on >= 99.9 % of pixels.

  pytest benchmarks/bench_models.py -s            512x1024 (the issue's size)
  pytest benchmarks/bench_models.py -s --quick    128x256, few rounds (CI)
"""
from __future__ import annotations

import io
import os
import sys
import warnings

import numpy as np
import onnxruntime as ort  # required benchmark dependencies (pyproject's test extra), never skipped
import torch
import torchvision

import fastseg
from fastseg._timing import SETTLE
from fastseg.segmenter import Segmenter

AGREE = 0.999
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def size(quick):
    return (128, 256) if quick else (512, 1024)


def make_image(hw) -> np.ndarray:
    """A smooth random image (low-frequency blobs plus a little noise), uint8 [H,W,3]."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand((1, 3, hw[0] // 32, hw[1] // 32), generator=g)
    full = torch.nn.functional.interpolate(low, size=hw, mode="bilinear", align_corners=False)
    full = full + 0.05 * torch.rand(full.shape, generator=g)
    return (full.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


def randomise(model: torch.nn.Module, num_classes: int = 21) -> torch.nn.Module:
    """Random weights whose labels vary over the image, so label agreement tests something: convs
    re-initialised fan-in (torchvision's fan-out init makes MobileNetV3's activations fade, and the
    classifier bias then decides one class for every pixel), no classifier bias, and non-trivial BN
    statistics, so the folding in the inference rewrite is really exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", generator=g)
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == num_classes and m.bias is not None:
            with torch.no_grad():
                m.bias.zero_()
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


class TorchvisionLabels(torch.nn.Module):
    """uint8 [N,H,W,3] -> labels: torchvision's own pipeline (normalise, model(x)["out"], argmax), in
    NCHW or, with channels_last=True, on the HWC frame's permuted view (channels_last strides)."""

    def __init__(self, model, channels_last: bool = False):
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, image):
        x = (image.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
        if not self.channels_last:
            x = x.contiguous()
        return self.model(x)["out"].argmax(1).to(torch.uint8)


def ort_reference(tv_model, hw, spinning=True):
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # eval(): the exporter restores the wrapper's mode afterwards, recursively, which for a
        # fresh (training-mode) wrapper would put the torchvision model into training mode
        torch.onnx.export(TorchvisionLabels(tv_model).eval(), (torch.zeros((1, *hw, 3), dtype=torch.uint8),), buffer,
                          dynamo=False, input_names=["image"], output_names=["labels"], opset_version=17,
                          dynamic_axes={"image": {0: "n", 1: "h", 2: "w"}, "labels": {0: "n", 1: "h", 2: "w"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run(compare, tv_model, hw, rounds, targets, with_compile=False):
    img = make_image(hw)
    batch = img[None]
    tv_labels = TorchvisionLabels(tv_model).eval()
    tv_labels_cl = TorchvisionLabels(tv_model, channels_last=True).eval()
    model = fastseg.models.from_torchvision(tv_model)
    seg = Segmenter(model)                       # the CPU default runtime
    seg_torch = Segmenter(model, runtime="torch")
    sess = ort_reference(tv_model, hw)
    quiet = ort_reference(tv_model, hw, spinning=False)

    def tv():
        with torch.inference_mode():
            return tv_labels(torch.from_numpy(batch))

    def tv_cl():
        with torch.inference_mode():
            return tv_labels_cl(torch.from_numpy(batch))

    results = {
        "fastseg": lambda: seg.predict(img).labels,
        "fastseg-torch": lambda: seg_torch.predict(img).labels,
        "torchvision": lambda: tv()[0].numpy(),
        "torchvision-channels_last": lambda: tv_cl()[0].numpy(),
        "onnxruntime": lambda: sess.run(None, {"image": batch})[0][0],
        "onnxruntime-nospin": lambda: quiet.run(None, {"image": batch})[0][0],
    }
    references = {"torchvision": tv, "torchvision-channels_last": tv_cl,
                  "onnxruntime": lambda: sess.run(None, {"image": batch}),
                  "onnxruntime-nospin": lambda: quiet.run(None, {"image": batch})}
    if with_compile:
        compiled = torch.compile(tv_labels)

        def tv_compiled():
            with torch.inference_mode():
                return compiled(torch.from_numpy(batch))

        results["torch.compile"] = lambda: tv_compiled()[0].numpy()
        references["torch.compile"] = tv_compiled

    want = results["torchvision"]()
    for name, fn in results.items():
        got = np.asarray(fn())
        agree = float((got == want).mean())
        print(f"  labels agreement {name} vs torchvision: {agree:.6f}", file=sys.stderr)
        assert got.shape == want.shape and agree >= AGREE, name

    print(f"  load average before: {load_average()}", file=sys.stderr)
    ratios = compare(ours={"fastseg": lambda: seg.predict(img), "fastseg-torch": lambda: seg_torch.predict(img)},
                     references=references, rounds=rounds, targets=targets, settle=SETTLE)
    print(f"  load average after: {load_average()}; threads: torch {torch.get_num_threads()}, ORT 2",
          file=sys.stderr)
    stages = seg.predict(img).timings
    print("  fastseg stages (ms): " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in stages.items()), file=sys.stderr)
    return ratios


def test_lraspp_mobilenet_v3_large(compare, quick):
    torch.manual_seed(0)
    tv_model = randomise(torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21))
    run(compare, tv_model, size(quick), rounds=5 if quick else 31,
        targets={"torchvision / fastseg": 2.5, "torchvision-channels_last / fastseg": 2.5,
                 "onnxruntime / fastseg": 1.1})


def test_deeplabv3_resnet50(compare, quick):
    torch.manual_seed(0)
    tv_model = randomise(torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=False))
    run(compare, tv_model, size(quick), rounds=3 if quick else 5,
        targets={"torchvision / fastseg": 1.5, "torchvision-channels_last / fastseg": 1.5})


def test_lraspp_against_torch_compile(compare, quick):
    """The same LR-ASPP task with torchvision under torch.compile (Inductor) as a further reference."""
    torch.manual_seed(0)
    tv_model = randomise(torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21))
    run(compare, tv_model, size(quick), rounds=5 if quick else 10, targets={}, with_compile=True)
