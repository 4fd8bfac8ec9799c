"""segmentation-models-pytorch -> fastseg: smp.Unet and smp.DeepLabV3Plus on ResNet-18/34/50/101
encoders (encoder_depth 5). A classification (aux) head, if any, is dropped."""
from __future__ import annotations

from typing import Any, NoReturn

from torch import nn

from ..io import load_state_dict_checked
from ..registry import create
from ._keys import BN_FIELDS, read_state, rename_all, resnet_rules

RESNET_DEPTHS = {("BasicBlock", 2): 18, ("BasicBlock", 6): 34, ("Bottleneck", 6): 50, ("Bottleneck", 23): 101}

UNET_RULES = [
    (r"decoder\.blocks\.(\d+)\.conv([12])\.0\.weight", r"head.blocks.\1.conv\2.conv.weight"),
    (rf"decoder\.blocks\.(\d+)\.conv([12])\.1\.{BN_FIELDS}", r"head.blocks.\1.conv\2.bn.\3"),
]

DEEPLABV3PLUS_RULES = [
    (r"decoder\.aspp\.0\.convs\.0\.0\.weight", "head.aspp.branches.0.conv.weight"),
    (rf"decoder\.aspp\.0\.convs\.0\.1\.{BN_FIELDS}", r"head.aspp.branches.0.bn.\1"),
    # separable branches: (depthwise, pointwise), BN;  plain branches: conv, BN
    (r"decoder\.aspp\.0\.convs\.([1-3])\.0\.0\.weight", r"head.aspp.branches.\1.depthwise.weight"),
    (r"decoder\.aspp\.0\.convs\.([1-3])\.0\.1\.weight", r"head.aspp.branches.\1.pointwise.weight"),
    (r"decoder\.aspp\.0\.convs\.([1-3])\.0\.weight", r"head.aspp.branches.\1.conv.weight"),
    (rf"decoder\.aspp\.0\.convs\.([1-3])\.1\.{BN_FIELDS}", r"head.aspp.branches.\1.bn.\2"),
    (r"decoder\.aspp\.0\.convs\.4\.1\.weight", "head.aspp.pooling.proj.conv.weight"),
    (rf"decoder\.aspp\.0\.convs\.4\.2\.{BN_FIELDS}", r"head.aspp.pooling.proj.bn.\1"),
    (r"decoder\.aspp\.0\.project\.0\.weight", "head.aspp.project.conv.weight"),
    (rf"decoder\.aspp\.0\.project\.1\.{BN_FIELDS}", r"head.aspp.project.bn.\1"),
    (r"decoder\.aspp\.1\.0\.weight", "head.aspp_conv.depthwise.weight"),
    (r"decoder\.aspp\.1\.1\.weight", "head.aspp_conv.pointwise.weight"),
    (rf"decoder\.aspp\.2\.{BN_FIELDS}", r"head.aspp_conv.bn.\1"),
    (r"decoder\.block1\.0\.weight", "head.skip_proj.conv.weight"),
    (rf"decoder\.block1\.1\.{BN_FIELDS}", r"head.skip_proj.bn.\1"),
    (r"decoder\.block2\.0\.0\.weight", "head.fuse.depthwise.weight"),
    (r"decoder\.block2\.0\.1\.weight", "head.fuse.pointwise.weight"),
    (rf"decoder\.block2\.1\.{BN_FIELDS}", r"head.fuse.bn.\1"),
]

HEAD_RULES = [(r"segmentation_head\.0\.(weight|bias)", r"head.classifier.\1")]


def _unsupported(what: str) -> NoReturn:
    raise ValueError(f"from_smp: {what} is not supported (fastseg mirrors smp's defaults for it)")


def _encoder_depth(encoder: Any) -> int:
    if type(encoder).__name__ != "ResNetEncoder" or not hasattr(encoder, "layer3"):
        _unsupported(f"encoder {type(encoder).__name__}")
    block = type(encoder.layer1[0]).__name__
    depth = RESNET_DEPTHS.get((block, len(encoder.layer3)))
    if depth is None or encoder.layer1[0].conv1.out_channels != 64:  # ResNeXt / wide variants
        _unsupported("this ResNet variant")
    if getattr(encoder, "_depth", 5) != 5:
        _unsupported(f"encoder_depth={encoder._depth}")
    return depth


def _describe(smp_model: Any) -> tuple[str, dict]:  # an smp model, read by its attributes
    kind = type(smp_model).__name__
    depth = _encoder_depth(smp_model.encoder)
    head = smp_model.segmentation_head
    if not isinstance(getattr(head[2], "activation", head[2]), nn.Identity):
        _unsupported("an output activation")
    if kind == "Unet":
        decoder = smp_model.decoder
        if not isinstance(decoder.center, nn.Identity):
            _unsupported("the U-Net center block")
        for block in decoder.blocks:
            if not isinstance(block.conv1[1], nn.BatchNorm2d):
                _unsupported("a decoder norm other than batchnorm")
            if block.interpolation_mode != "nearest" or not isinstance(block.attention1.attention, nn.Identity):
                _unsupported("decoder attention / non-nearest interpolation")
        return f"unet_resnet{depth}", {"decoder_channels": [b.conv1[0].out_channels for b in decoder.blocks]}
    if kind == "DeepLabV3Plus":
        aspp = smp_model.decoder.aspp[0]
        separable = isinstance(aspp.convs[1][0], nn.Sequential)
        rates = [(aspp.convs[i][0][0] if separable else aspp.convs[i][0]).dilation[0] for i in (1, 2, 3)]
        upsample = head[1]
        if not isinstance(upsample, nn.Upsample) or upsample.scale_factor != 4:
            _unsupported("a final upsampling other than x4")
        return f"deeplabv3plus_resnet{depth}", {
            "output_stride": smp_model.encoder._output_stride, "atrous_rates": rates,
            "decoder_channels": aspp.project[0].out_channels, "separable": separable}
    raise TypeError(f"from_smp expects smp.Unet or smp.DeepLabV3Plus, got {kind}")


def from_smp(source, name: str | None = None, **kwargs) -> nn.Module:
    """A fastseg model with the weights of an smp model (the model itself, or its state dict / a
    torch.save path together with name="unet_resnet34" etc.; extra kwargs go to `create`)."""
    if isinstance(source, nn.Module):
        described, inferred = _describe(source)
        if name is not None and name != described:
            raise ValueError(f"name={name!r} but the model is a {described}")
        name, kwargs = described, {**inferred, **kwargs}
        state = source.state_dict()
    else:
        if not name or not name.startswith(("unet_resnet", "deeplabv3plus_resnet")):
            raise ValueError("from_smp with a state dict needs name= 'unet_resnetNN' or 'deeplabv3plus_resnetNN'")
        state = read_state(source)
    state = {k: v for k, v in state.items() if not k.startswith("classification_head.")}
    if "num_classes" not in kwargs:
        if "segmentation_head.0.bias" not in state:
            raise ValueError("smp weights lack 'segmentation_head.0.bias': cannot tell num_classes")
        kwargs["num_classes"] = state["segmentation_head.0.bias"].shape[0]
    model = create(name, **kwargs)
    decoder_rules = UNET_RULES if name.startswith("unet") else DEEPLABV3PLUS_RULES
    state = rename_all(state, resnet_rules(r"encoder\.", "backbone.") + decoder_rules + HEAD_RULES)
    load_state_dict_checked(model, state, f"smp {name} weights")
    return model.eval()
