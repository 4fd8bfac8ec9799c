"""Cases of whole models (and of the ASPP head): one uint8 RGB image in, full-resolution labels out,
the conversion to normalised float included on every side and nothing resized.

fastseg is the Segmenter with its CPU default runtime ("auto": ONNX Runtime for LR-ASPP's
convolutions, the fused torch model for dilated ResNets; fastseg's fused upsample + argmax for the
tail) and, for information, its eager-torch runtime. The references run the same weights as users
do: torchvision's own pipeline on NCHW input (as its transforms hand it over), the same on the HWC
frame's channels_last view (faster on the CPU, so the stricter reference), the torchvision model
exported to ONNX with normalisation and argmax in the graph under ONNX Runtime (2 intra-op threads,
idle threads spinning, ORT's default, or sleeping), and optionally under torch.compile."""
from __future__ import annotations

import io
import os
import sys
import warnings

import torch
import torch.nn.functional as F

from .measure import Agreement, Reference, Row, dims, generator, measure, smooth_image
from .ops import random_batchnorm
from .timing import SETTLE

LABELS_EQUAL = 0.999  # fraction of pixels with the same label
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalise(images: torch.Tensor, mean, std, channels_last: bool = False) -> torch.Tensor:
    """uint8 [N,H,W,3] -> normalised float [N,3,H,W], NCHW-contiguous unless channels_last."""
    x = (images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / \
        torch.tensor(std).view(1, 3, 1, 1)
    return x if channels_last else x.contiguous()


def randomise(model: torch.nn.Module, num_classes: int, seed: int = 1) -> torch.nn.Module:
    """Random weights whose labels vary over the image, so label agreement tests something: fan-in
    initialisation (torchvision's fan-out init makes MobileNetV3's activations fade and the classifier
    bias then picks one class everywhere), no classifier bias, non-trivial BN statistics (so that the
    Segmenter's batch-norm folding is exercised)."""
    g = generator(seed)
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


class TorchvisionLabels(torch.nn.Module):
    """uint8 [N,H,W,3] -> labels [N,H,W] uint8: torchvision's pipeline (normalise, model(x)["out"],
    argmax), in NCHW or on the HWC frame's permuted view (channels_last strides)."""

    def __init__(self, model, channels_last: bool = False):
        super().__init__()
        self.model, self.channels_last = model, channels_last

    def forward(self, images):
        x = _normalise(images, IMAGENET_MEAN, IMAGENET_STD, self.channels_last)
        return self.model(x)["out"].argmax(1).to(torch.uint8)


def _onnxruntime_sessions(tv_model, hw) -> dict:
    """The torchvision pipeline as one ONNX graph (uint8 in, labels out) in ONNX Runtime, idle
    threads spinning and sleeping; empty without onnx / onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("bench: onnxruntime is not installed: no ONNX Runtime rows", file=sys.stderr)
        return {}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # eval(): the exporter restores the wrapper's mode afterwards, recursively, which for a fresh
        # (training-mode) wrapper would put the torchvision model into training mode
        torch.onnx.export(TorchvisionLabels(tv_model).eval(), (torch.zeros((1, *hw, 3), dtype=torch.uint8),), buffer,
                          dynamo=False, input_names=["image"], output_names=["labels"], opset_version=17,
                          dynamic_axes={"image": {0: "n", 1: "h", 2: "w"}, "labels": {0: "n", 1: "h", 2: "w"}})
    sessions = {}
    for name, spinning in (("onnxruntime", True), ("onnxruntime, idle threads asleep", False)):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return sessions


def _segmenter_case(case: str, tv_model, hw, rounds: int, targets: dict, compiled: bool = False) -> list[Row]:
    """The Segmenter (default and torch runtimes) against torchvision eager (NCHW, channels_last) and
    ONNX Runtime; compiled=True: the default Segmenter against torchvision under torch.compile only."""
    from .. import Segmenter
    from ..models import from_torchvision

    image = smooth_image(*hw, seed=0)
    batch = torch.from_numpy(image[None])
    model = from_torchvision(tv_model)
    segs = {"fastseg": Segmenter(model)}
    nchw = TorchvisionLabels(tv_model).eval()
    if compiled:
        labels_fns = {"torchvision (torch.compile)": torch.compile(nchw)}
    else:
        other = "onnxruntime" if segs["fastseg"].runtime.name == "torch" else "torch"  # the one "auto" did not pick
        segs[f"fastseg (runtime='{other}')"] = Segmenter(model, runtime=other)
        labels_fns = {"torchvision (eager, NCHW)": nchw,
                      "torchvision (eager, channels_last)": TorchvisionLabels(tv_model, channels_last=True).eval()}

    def torch_reference(fn):
        @torch.inference_mode()
        def run():
            return fn(batch)[0].numpy()
        return run

    references = {name: torch_reference(fn) for name, fn in labels_fns.items()}
    for name, session in ({} if compiled else _onnxruntime_sessions(tv_model, hw)).items():
        references[name] = lambda session=session: session.run(None, {"image": batch.numpy()})[0][0]
    ours = {name: (lambda seg=seg: seg.predict(image)) for name, seg in segs.items()}
    our_labels = {name: seg.predict(image).labels for name, seg in segs.items()}
    refs = {}
    for name, fn in references.items():
        theirs = fn()
        agreements = {o: Agreement.labels(labels, theirs, LABELS_EQUAL) for o, labels in our_labels.items()}
        refs[name] = Reference(fn, agreements, targets.get(name))
    return measure(case, f"{hw[1]}x{hw[0]} uint8 -> labels", ours, refs, rounds=rounds, settle=SETTLE)


def _torchvision():
    try:
        import torchvision
    except ImportError:
        print("bench: torchvision is not installed: no torchvision model rows", file=sys.stderr)
        return None
    return torchvision


def _lraspp(tv_module):
    torch.manual_seed(0)
    return randomise(tv_module.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21), 21)


def _size(quick: bool) -> tuple[int, int]:
    return (128, 256) if quick else (512, 1024)


def lraspp(quick: bool) -> list[Row]:
    """LR-ASPP MobileNetV3-Large, 21 classes, random weights."""
    tv = _torchvision()
    if tv is None:
        return []
    return _segmenter_case("Segmenter: LR-ASPP MobileNetV3-Large", _lraspp(tv), _size(quick), 5 if quick else 31,
                           {"torchvision (eager, NCHW)": 2.5, "torchvision (eager, channels_last)": 2.5,
                            "onnxruntime": 1.1})


def lraspp_compile(quick: bool) -> list[Row]:
    """The LR-ASPP case against torchvision under torch.compile (Inductor); compiling takes minutes."""
    tv = _torchvision()
    if tv is None:
        return []
    return _segmenter_case("Segmenter: LR-ASPP MobileNetV3-Large", _lraspp(tv), _size(quick), 5 if quick else 10,
                           {}, compiled=True)


def deeplabv3(quick: bool) -> list[Row]:
    """DeepLabV3-ResNet50, 21 classes, random weights."""
    tv = _torchvision()
    if tv is None:
        return []
    torch.manual_seed(0)
    model = randomise(tv.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=False), 21)
    return _segmenter_case("Segmenter: DeepLabV3-ResNet50", model, _size(quick), 3 if quick else 5,
                           {"torchvision (eager, NCHW)": 1.5, "torchvision (eager, channels_last)": 1.5})


def default_model(quick: bool, model: str | None = None) -> list[Row]:
    """The packaged CamVid model (or `model`, a fastseg model file) through the Segmenter, against
    the same weights in eager PyTorch: forward_logits -> F.interpolate -> argmax."""
    from .. import Segmenter
    from ..models import load, pretrained

    path = model or pretrained.get().path
    if not os.path.isfile(path):
        what = f"--model: {model} is not a file" if model is not None else \
            f"the packaged default model is missing ({path}); reinstall fastseg or pass --model FILE"
        raise FileNotFoundError(what)
    net = load(path).float().eval()
    h, w = 360, 480  # CamVid's frame size, both modes
    image = smooth_image(h, w, seed=2)
    seg = Segmenter(net)

    @torch.inference_mode()
    def eager():
        logits = net.forward_logits(_normalise(torch.from_numpy(image[None]), net.mean, net.std))
        return F.interpolate(logits, (h, w), mode="bilinear", align_corners=net.align_corners).argmax(1)[0]

    agreement = Agreement.labels(seg.predict(image).labels, eager(), LABELS_EQUAL)
    return measure(f"Segmenter: {os.path.basename(path)}", f"{w}x{h} uint8 -> labels",
                   {"fastseg": lambda: seg.predict(image)},
                   {"same weights, eager PyTorch + F.interpolate + argmax": Reference(eager, agreement)},
                   rounds=3 if quick else 11, settle=SETTLE)


def aspp(quick: bool) -> list[Row]:
    """DeepLabV3's ASPP head: torchvision's module (eager, channels_last input) against fastseg's
    fused ASPP (`FusedASPP.from_torchvision`: folded BN, the pooling branch as a per-image projection bias)
    holding the same weights."""
    tv = _torchvision()
    if tv is None:
        return []
    from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

    from ..models.rewrite import FusedASPP

    n, c, h, w, cout = (1, 32, 16, 32, 32) if quick else (1, 512, 32, 64, 256)
    rates = (12, 24, 36)
    torch.manual_seed(0)
    g = generator()
    theirs = TorchvisionASPP(c, rates, out_channels=cout).eval()
    for m in theirs.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            random_batchnorm(m, g)
    fused = FusedASPP.from_torchvision(theirs)  # fastseg's ASPP holding the same weights, folded
    theirs = theirs.to(memory_format=torch.channels_last)
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def ours():
        return fused(x)

    @torch.inference_mode()
    def reference():
        return theirs(x)

    return measure("ASPP (rates 12, 24, 36)", f"{dims((n, c, h, w))} channels_last -> {cout} channels",
                   {"fastseg": ours}, {"torchvision ASPP (eager)": Reference(reference, Agreement.close(
                       ours(), reference(), 1e-4))}, rounds=3 if quick else 7)
