"""Converted models give the source model's logits (torchvision, smp, transformers), before and after
the inference rewrite, with randomised batch-norm statistics; broken weights fail with clear errors."""
from __future__ import annotations

import pytest

# The source libraries are test dependencies: missing, they fail collection instead of skipping.
import segmentation_models_pytorch as smp
import torch
import torchvision.models.segmentation as tv_seg
import transformers

import fastseg.models as M

from _zoo import (
    LABEL_AGREEMENT,
    REL_TOL,
    agreement,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    randomize_batchnorm,
    rel_err,
)

torch.manual_seed(0)


def check(model, source_logits, x, logits):
    """The converted model and its fused form against the source; prints the figures (pytest -s)."""
    fused = M.fuse(model)
    with torch.no_grad():
        ours = logits(model, x)
        ours_fused = logits(fused, x)
        labels = fused.predict(x)
    err, err_fused = rel_err(ours, source_logits), rel_err(ours_fused, source_logits)
    ref_full = source_logits if source_logits.shape[-2:] == x.shape[-2:] else torch.nn.functional.interpolate(
        source_logits, size=x.shape[-2:], mode="bilinear", align_corners=model.align_corners)
    agree = agreement(labels, ref_full)
    print(f"{model.config['name']}: rel err {err:.2e}, fused {err_fused:.2e}, labels {agree * 100:.3f} %")
    assert err < REL_TOL and err_fused < REL_TOL
    assert agree >= LABEL_AGREEMENT


# --- torchvision -----------------------------------------------------------------------------------

TV_CASES = [("fcn_resnet50", (2, 3, 61, 75)), ("fcn_resnet101", (1, 3, 41, 37)),
            ("deeplabv3_resnet50", (2, 3, 61, 75)), ("deeplabv3_resnet101", (1, 3, 41, 37)),
            ("deeplabv3_mobilenet_v3_large", (2, 3, 95, 67)), ("lraspp_mobilenet_v3_large", (2, 3, 95, 67))]


def _tv_model(name, num_classes=5):
    aux = {} if name.startswith("lraspp") else {"aux_loss": True}  # aux heads exist, and must be dropped
    model = getattr(tv_seg, name)(weights=None, weights_backbone=None, num_classes=num_classes, **aux)
    return randomize_batchnorm(model)


@pytest.mark.parametrize("name,shape", TV_CASES, ids=[c[0] for c in TV_CASES])
def test_torchvision(name, shape):
    tv = _tv_model(name)
    x = torch.randn(shape)
    with torch.no_grad():
        ref = tv(x)["out"]
    model = M.from_torchvision(tv)
    assert model.config["name"] == name and model.config["kwargs"]["num_classes"] == 5
    check(model, ref, x, lambda m, x: m(x))


def test_torchvision_output_stride_16_and_state_dict_file(tmp_path):
    tv = randomize_batchnorm(tv_seg.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=3))
    # torchvision's dilation for output stride 16 (only layer4 dilated), built the way torchvision does
    from torchvision.models import resnet50
    from torchvision.models._utils import IntermediateLayerGetter
    body = resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
    tv.backbone = IntermediateLayerGetter(body, {"layer4": "out"})
    randomize_batchnorm(tv, seed=1)
    x = torch.randn(1, 3, 48, 32)
    with torch.no_grad():
        ref = tv(x)["out"]
    model = M.from_torchvision(tv)
    assert model.config["kwargs"]["output_stride"] == 16
    check(model, ref, x, lambda m, x: m(x))
    # the same weights through a torch.save file (read with weights_only=True) and an explicit name
    path = tmp_path / "dlv3.pth"
    torch.save(tv.state_dict(), path)
    from_file = M.from_torchvision(path, name="deeplabv3_resnet50", output_stride=16)
    with torch.no_grad():
        assert torch.equal(from_file(x), model(x))


def test_torchvision_errors(tmp_path):
    tv = _tv_model("fcn_resnet50")
    state = tv.state_dict()
    with pytest.raises(ValueError, match="needs name="):
        M.from_torchvision(state)
    with pytest.raises(ValueError, match="but the model is a fcn_resnet50"):
        M.from_torchvision(tv, name="deeplabv3_resnet50")
    with pytest.raises(TypeError, match="FCN, DeepLabV3 or LRASPP"):
        M.from_torchvision(torch.nn.Conv2d(1, 1, 1))
    # the weights of another architecture: keys are missing and others unexpected, all named
    with pytest.raises(M.WeightsMismatchError, match=r"missing keys .*head\.aspp") as info:
        M.from_torchvision(state, name="deeplabv3_resnet50")
    assert "unexpected keys" in str(info.value)
    # a truncated state dict names what is missing
    partial = {k: v for k, v in state.items() if not k.startswith("backbone.layer4.2.")}
    with pytest.raises(M.WeightsMismatchError, match=r"missing keys \(\d+\): backbone\.layer4\.2\.conv1"):
        M.from_torchvision(partial, name="fcn_resnet50")
    # a tensor of the wrong shape is named with both shapes
    bad = dict(state)
    bad["classifier.0.weight"] = bad["classifier.0.weight"][:, :10]
    expected = r"head\.conv\.conv\.weight \(file \(512, 10, 3, 3\), model \(512, 2048, 3, 3\)\)"
    with pytest.raises(M.WeightsMismatchError, match=expected):
        M.from_torchvision(bad, name="fcn_resnet50")
    # a pickled module is refused by weights_only=True, a truncated file is reported
    torch.save(torch.nn.ReLU(), tmp_path / "module.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        M.from_torchvision(tmp_path / "module.pth", name="fcn_resnet50")
    torch.save(state, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read a state dict"):
        M.from_torchvision(tmp_path / "cut.pth", name="fcn_resnet50")


# --- segmentation-models-pytorch ----------------------------------------------------------------------

# smp's default encoder (resnet34) for both, BasicBlock and Bottleneck encoders, both output strides,
# separable and plain ASPP, custom decoder widths and a dropped aux head.
SMP_CASES = [("Unet", "resnet34", {}), ("Unet", "resnet50", {}),
             ("Unet", "resnet18", {"decoder_channels": (128, 64, 32, 16, 8), "aux_params": {"classes": 4}}),
             ("DeepLabV3Plus", "resnet34", {}), ("DeepLabV3Plus", "resnet101", {}),
             ("DeepLabV3Plus", "resnet18", {"encoder_output_stride": 8, "decoder_atrous_rates": (6, 12, 18),
                                            "decoder_aspp_separable": False})]


@pytest.mark.parametrize("arch,encoder,kwargs", SMP_CASES,
                         ids=[f"{a}-{e}-{i}" for i, (a, e, _) in enumerate(SMP_CASES)])
def test_smp(arch, encoder, kwargs):
    source = randomize_batchnorm(getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=6, **kwargs))
    x = torch.randn((1, 3, 64, 32) if encoder in ("resnet50", "resnet101") else (2, 3, 64, 96))
    with torch.no_grad():
        ref = source(x)
        ref = ref[0] if isinstance(ref, tuple) else ref  # with aux_params smp also returns class scores
    model = M.from_smp(source)
    assert model.config["name"] == f"{arch.lower()}_{encoder}"
    check(model, ref, x, lambda m, x: m(x))


def test_smp_unsupported_and_state_dict():
    with pytest.raises(ValueError, match="decoder attention"):
        M.from_smp(smp.Unet("resnet18", encoder_weights=None, decoder_attention_type="scse"))
    with pytest.raises(ValueError, match="encoder"):
        M.from_smp(smp.Unet("mobilenet_v2", encoder_weights=None))
    source = randomize_batchnorm(smp.Unet("resnet18", encoder_weights=None, classes=2))
    model = M.from_smp(source.state_dict(), name="unet_resnet18")
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        assert rel_err(model(x), source(x)) < REL_TOL
    with pytest.raises(M.WeightsMismatchError, match="missing keys"):
        M.from_smp(source.state_dict(), name="unet_resnet34")


# --- Hugging Face transformers: SegFormer B0..B5 ---------------------------------------------------

HF_CONFIGS = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768),
    "b3": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 18, 3], decoder_hidden_size=768),
    "b4": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3], decoder_hidden_size=768),
    "b5": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3], decoder_hidden_size=768),
}


@pytest.mark.parametrize("variant", list(HF_CONFIGS))
def test_transformers_segformer(variant):
    config = transformers.SegformerConfig(num_labels=7, **HF_CONFIGS[variant])
    source = randomize_batchnorm(transformers.SegformerForSemanticSegmentation(config))
    x = torch.randn((2, 3, 64, 96) if variant in ("b0", "b1") else (1, 3, 64, 64))
    with torch.no_grad():
        ref = source(pixel_values=x).logits  # stride-4 logits, as HF returns them
    model = M.from_transformers(source)
    assert model.config == {"name": f"segformer_{variant}", "kwargs": {"num_classes": 7}}
    check(model, ref, x, lambda m, x: m.forward_logits(x))


def test_transformers_custom_config_and_errors():
    config = transformers.SegformerConfig(num_labels=3, depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128],
                                          num_attention_heads=[1, 2, 4, 8], decoder_hidden_size=64)
    source = randomize_batchnorm(transformers.SegformerForSemanticSegmentation(config))
    model = M.from_transformers(source)
    assert model.config["name"] == "segformer"
    x = torch.randn(1, 3, 45, 70)  # not a multiple of 32: the patch embeddings round like HF's
    with torch.no_grad():
        assert rel_err(model.forward_logits(x), source(pixel_values=x).logits) < REL_TOL
    with pytest.raises(TypeError, match="SegformerForSemanticSegmentation"):
        M.from_transformers(torch.nn.Linear(2, 2))
    with pytest.raises(M.WeightsMismatchError, match="shape mismatch"):
        M.from_transformers(source.state_dict(), name="segformer_b0")
