"""torchvision.models.segmentation -> fastseg: fcn_resnet50/101, deeplabv3_resnet50/101,
deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large. Auxiliary classifiers are dropped."""
from __future__ import annotations

from typing import Any, cast

from torch import nn

from ..backbones.mobilenetv3 import InvertedResidual, MobileNetV3Large
from ..io import load_state_dict_checked
from ..registry import create
from ._keys import BN_FIELDS, read_state, rename_all, resnet_rules

NAMES = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
         "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
CLASSIFIER_BIAS = {"fcn": "classifier.4.bias", "deeplabv3": "classifier.4.bias",
                   "lraspp": "classifier.low_classifier.bias"}


def _mobilenet_rules(backbone: MobileNetV3Large) -> list[tuple[str, str]]:
    """torchvision numbers features 0 (stem) .. 16 (last conv); each block's layers 0.. in order."""
    last = len(backbone.blocks) + 1
    rules = [(r"backbone\.0\.0\.weight", "backbone.stem.conv.weight"),
             (rf"backbone\.0\.1\.{BN_FIELDS}", r"backbone.stem.bn.\1"),
             (rf"backbone\.{last}\.0\.weight", "backbone.last_conv.conv.weight"),
             (rf"backbone\.{last}\.1\.{BN_FIELDS}", r"backbone.last_conv.bn.\1")]
    for index, block in enumerate(backbone.blocks):
        for j, part in enumerate(cast(InvertedResidual, block).parts()):
            src, dst = rf"backbone\.{index + 1}\.block\.{j}", f"backbone.blocks.{index}.{part}"
            if part == "se":
                rules += [(rf"{src}\.fc1\.(weight|bias)", rf"{dst}.reduce.\1"),
                          (rf"{src}\.fc2\.(weight|bias)", rf"{dst}.expand.\1")]
            else:
                rules += [(rf"{src}\.0\.weight", rf"{dst}.conv.weight"),
                          (rf"{src}\.1\.{BN_FIELDS}", rf"{dst}.bn.\1")]
    return rules


def _head_rules(kind: str) -> list[tuple[str, str]]:
    if kind == "fcn":
        return [(r"classifier\.0\.weight", "head.conv.conv.weight"),
                (rf"classifier\.1\.{BN_FIELDS}", r"head.conv.bn.\1"),
                (r"classifier\.4\.(weight|bias)", r"head.classifier.\1")]
    if kind == "deeplabv3":
        return [(r"classifier\.0\.convs\.([0-3])\.0\.weight", r"head.aspp.branches.\1.conv.weight"),
                (rf"classifier\.0\.convs\.([0-3])\.1\.{BN_FIELDS}", r"head.aspp.branches.\1.bn.\2"),
                (r"classifier\.0\.convs\.4\.1\.weight", "head.aspp.pooling.proj.conv.weight"),
                (rf"classifier\.0\.convs\.4\.2\.{BN_FIELDS}", r"head.aspp.pooling.proj.bn.\1"),
                (r"classifier\.0\.project\.0\.weight", "head.aspp.project.conv.weight"),
                (rf"classifier\.0\.project\.1\.{BN_FIELDS}", r"head.aspp.project.bn.\1"),
                (r"classifier\.1\.weight", "head.conv.conv.weight"),
                (rf"classifier\.2\.{BN_FIELDS}", r"head.conv.bn.\1"),
                (r"classifier\.4\.(weight|bias)", r"head.classifier.\1")]
    return [(r"classifier\.cbr\.0\.weight", "head.high_proj.conv.weight"),
            (rf"classifier\.cbr\.1\.{BN_FIELDS}", r"head.high_proj.bn.\1"),
            (r"classifier\.scale\.1\.weight", "head.high_gate.weight"),
            (r"classifier\.(low|high)_classifier\.(weight|bias)", r"head.\1_classifier.\2")]


def _describe(tv: Any) -> tuple[str, dict]:  # a torchvision model, read by its attributes
    """The fastseg name and kwargs of a torchvision segmentation model, read off its modules."""
    kind = {"FCN": "fcn", "DeepLabV3": "deeplabv3", "LRASPP": "lraspp"}.get(type(tv).__name__)
    if kind is None:
        raise TypeError(f"from_torchvision expects a torchvision FCN, DeepLabV3 or LRASPP, got {type(tv).__name__}")
    body = tv.backbone
    kwargs = {}
    if hasattr(body, "layer4"):
        depth = {6: 50, 23: 101}.get(len(body.layer3))
        if depth is None or kind == "lraspp":
            raise ValueError(f"unsupported torchvision backbone for {kind} (layer3 has {len(body.layer3)} blocks)")
        name = f"{kind}_resnet{depth}"
        kwargs["output_stride"] = 8 * body.layer3[0].conv2.stride[0] * body.layer4[0].conv2.stride[0]
    else:
        name = f"{kind}_mobilenet_v3_large"
        last_stage = body["13"].block[1][0]  # depthwise conv of the first block of the last stage
        kwargs["output_stride"] = 16 if last_stage.dilation[0] > 1 else 32
    if kind == "deeplabv3":
        kwargs["atrous_rates"] = [tv.classifier[0].convs[i][0].dilation[0] for i in (1, 2, 3)]
    if kind == "lraspp":
        kwargs["channels"] = tv.classifier.cbr[0].out_channels
    return name, kwargs


def from_torchvision(source, name: str | None = None, **kwargs) -> nn.Module:
    """A fastseg model with the weights of a torchvision segmentation model.

    `source` is the torchvision model itself, or its state dict (a mapping, or a path to a
    `torch.save` file, read with weights_only=True) together with `name` (one of NAMES).
    Extra kwargs go to `fastseg.models.create` (e.g. output_stride for a state dict).
    """
    if isinstance(source, nn.Module):
        described, inferred = _describe(source)
        if name is not None and name != described:
            raise ValueError(f"name={name!r} but the model is a {described}")
        name, kwargs = described, {**inferred, **kwargs}
        state = source.state_dict()
    else:
        if name not in NAMES:
            raise ValueError(f"from_torchvision with a state dict needs name= one of {NAMES}, got {name!r}")
        state = read_state(source)
    kind = name.split("_")[0]
    state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    if "num_classes" not in kwargs:
        bias = state.get(CLASSIFIER_BIAS[kind])
        if bias is None:
            raise ValueError(f"torchvision {name} weights lack {CLASSIFIER_BIAS[kind]!r}: cannot tell num_classes")
        kwargs["num_classes"] = bias.shape[0]
    model = create(name, **kwargs)
    body_rules = (_mobilenet_rules(model.backbone) if isinstance(model.backbone, MobileNetV3Large)
                  else resnet_rules(r"backbone\.", "backbone."))
    state = rename_all(state, body_rules + _head_rules(kind))
    load_state_dict_checked(model, state, f"torchvision {name} weights")
    return model.eval()
