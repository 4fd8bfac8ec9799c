"""The named models. Defaults follow the source implementation each was written to load:
torchvision (FCN, DeepLabV3, LR-ASPP), segmentation-models-pytorch (U-Net, DeepLabV3+) and
Hugging Face transformers (SegFormer)."""
from __future__ import annotations

import inspect

from .architectures import FCN, LRASPP, DeepLabV3, DeepLabV3Plus, SegFormer, Unet
from .backbones.mobilenetv3 import MobileNetV3Large
from .backbones.resnet import ResNet
from .registry import register_model


def _check_stride(name, output_stride, allowed):
    if output_stride not in allowed:
        raise ValueError(f"{name}: output_stride must be one of {allowed}, got {output_stride}")


def _fcn(depth, num_classes, output_stride):
    _check_stride(f"fcn_resnet{depth}", output_stride, (8, 16, 32))
    return FCN(ResNet(depth, output_stride), num_classes, output_stride)


def _deeplabv3(depth, num_classes, output_stride, atrous_rates):
    _check_stride(f"deeplabv3_resnet{depth}", output_stride, (8, 16, 32))
    return DeepLabV3(ResNet(depth, output_stride), num_classes, output_stride, atrous_rates)


def _deeplabv3plus(depth, num_classes, output_stride, atrous_rates, decoder_channels, separable):
    _check_stride(f"deeplabv3plus_resnet{depth}", output_stride, (8, 16))
    return DeepLabV3Plus(ResNet(depth, output_stride, first_block_dilated=True), num_classes,
                         atrous_rates, decoder_channels, separable)


def _unet(depth, num_classes, decoder_channels, base_width, context):
    return Unet(ResNet(depth, base_width=base_width), num_classes, decoder_channels, context)


@register_model
def fcn_resnet50(num_classes=21, output_stride=8):
    return _fcn(50, num_classes, output_stride)


@register_model
def fcn_resnet101(num_classes=21, output_stride=8):
    return _fcn(101, num_classes, output_stride)


@register_model
def deeplabv3_resnet50(num_classes=21, output_stride=8, atrous_rates=(12, 24, 36)):
    return _deeplabv3(50, num_classes, output_stride, atrous_rates)


@register_model
def deeplabv3_resnet101(num_classes=21, output_stride=8, atrous_rates=(12, 24, 36)):
    return _deeplabv3(101, num_classes, output_stride, atrous_rates)


@register_model
def deeplabv3_mobilenet_v3_large(num_classes=21, output_stride=16, atrous_rates=(12, 24, 36)):
    _check_stride("deeplabv3_mobilenet_v3_large", output_stride, (16, 32))
    return DeepLabV3(MobileNetV3Large(dilated=output_stride == 16), num_classes, output_stride, atrous_rates)


@register_model
def lraspp_mobilenet_v3_large(num_classes=21, output_stride=16, channels=128):
    _check_stride("lraspp_mobilenet_v3_large", output_stride, (16, 32))
    return LRASPP(MobileNetV3Large(dilated=output_stride == 16), num_classes, channels)


def _register_resnet_variants():
    for depth in (18, 34, 50, 101):
        def deeplabv3plus(num_classes=21, output_stride=16, atrous_rates=(12, 24, 36), decoder_channels=256,
                          separable=True, _depth=depth):
            return _deeplabv3plus(_depth, num_classes, output_stride, atrous_rates, decoder_channels, separable)

        def unet(num_classes=21, decoder_channels=(256, 128, 64, 32, 16), base_width=64, context=None,
                 _depth=depth):
            return _unet(_depth, num_classes, decoder_channels, base_width, context)

        deeplabv3plus.__name__ = f"deeplabv3plus_resnet{depth}"
        unet.__name__ = f"unet_resnet{depth}"
        register_model(deeplabv3plus)
        register_model(unet)


_register_resnet_variants()

# SegFormer variants (MiT-B0..B5 encoders); the decoder width is 256 for B0/B1 and 768 above.
SEGFORMER_VARIANTS = {
    "b0": dict(hidden_sizes=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_channels=256),
    "b1": dict(hidden_sizes=(64, 128, 320, 512), depths=(2, 2, 2, 2), decoder_channels=256),
    "b2": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 6, 3), decoder_channels=768),
    "b3": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 18, 3), decoder_channels=768),
    "b4": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 8, 27, 3), decoder_channels=768),
    "b5": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 6, 40, 3), decoder_channels=768),
}
SEGFORMER_DEFAULTS = dict(num_heads=(1, 2, 5, 8), sr_ratios=(8, 4, 2, 1), mlp_ratios=(4, 4, 4, 4),
                          patch_sizes=(7, 3, 3, 3), strides=(4, 2, 2, 2), layer_norm_eps=1e-5)


def _segformer_signature(preset: dict) -> inspect.Signature:
    """What a SegFormer factory takes, with its preset's values as defaults: the keyword arguments
    pass through **kwargs, and this signature is what help() and the check of saved configs read."""
    sizes = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
             for k, v in {**SEGFORMER_DEFAULTS, **preset}.items()]
    classes = inspect.Parameter("num_classes", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=21)
    return inspect.Signature([classes, *sizes])


@register_model
def segformer(num_classes=21, **kwargs):
    """SegFormer with every encoder/decoder size given explicitly (what `from_transformers` uses
    for a configuration that is none of the B0..B5 presets)."""
    return SegFormer(num_classes, **{**SEGFORMER_DEFAULTS, **SEGFORMER_VARIANTS["b0"], **kwargs})


segformer.__signature__ = _segformer_signature(SEGFORMER_VARIANTS["b0"])  # type: ignore[attr-defined]


def _register_segformer_variants():
    for variant, preset in SEGFORMER_VARIANTS.items():
        def factory(num_classes=21, _preset=preset, **kwargs):
            return SegFormer(num_classes, **{**SEGFORMER_DEFAULTS, **_preset, **kwargs})

        factory.__name__ = f"segformer_{variant}"
        factory.__signature__ = _segformer_signature(preset)
        register_model(factory)


_register_segformer_variants()
