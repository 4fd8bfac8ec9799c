"""The zoo itself: names, shapes and strides, forward / forward_logits / predict consistency, and
fastseg's own file format (exact round trip, clear errors on broken files)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastseg.models as M
from fastseg.models.io import CONFIG_KEY

from _zoo import one_torch_thread, randomize_batchnorm  # noqa: F401  (autouse fixture)

REQUIRED = ["fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
            "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"] + \
           [f"{a}_resnet{d}" for a in ("deeplabv3plus", "unet") for d in (18, 34, 50, 101)] + \
           [f"segformer_b{i}" for i in range(6)]

# small members of each family, for the shape tests (the big ones are covered in test_convert)
SMALL = ["fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large",
         "deeplabv3plus_resnet18", "unet_resnet18", "segformer_b0"]


def test_list_models_has_the_zoo():
    names = M.list_models()
    assert set(REQUIRED) <= set(names)
    assert names == sorted(names)
    assert M.list_models("mobilenet") == ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]


def test_create_errors():
    with pytest.raises(ValueError, match="did you mean deeplabv3_resnet50"):
        M.create("deeplabv3_resnet5")
    with pytest.raises(ValueError, match="output_stride must be one of"):
        M.create("deeplabv3_resnet50", output_stride=4)
    with pytest.raises(ValueError, match="output_stride must be one of"):
        M.create("deeplabv3plus_resnet18", output_stride=32)
    with pytest.raises(TypeError):
        M.create("unet_resnet18", output_stride=8)  # U-Net has no dilated form


def test_import_needs_no_source_library():
    code = ("import sys, fastseg.models as M; M.create('lraspp_mobilenet_v3_large'); "
            "print([m for m in ('torchvision', 'segmentation_models_pytorch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("size", [(32, 64), (45, 37)])
def test_shapes_and_views(name, size):
    model = randomize_batchnorm(M.create(name, num_classes=4))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        low = model.forward_logits(x)
        full = model(x)
        labels = model.predict(x)
    stride = model.output_stride
    assert low.shape[:2] == (2, 4)
    # the convs round sizes up (ceil) at each stride-2 step
    assert abs(low.shape[2] - size[0] / stride) < 1 and abs(low.shape[3] - size[1] / stride) < 1
    assert full.shape == (2, 4, *size) and labels.shape == (2, *size)
    expected = F.interpolate(low, size=size, mode="bilinear", align_corners=model.align_corners)
    assert torch.equal(full, expected if low.shape[-2:] != size else low)
    assert (labels.long() == full.argmax(1)).double().mean() >= 0.999


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_resnet_output_stride(output_stride):
    model = M.create("fcn_resnet50", output_stride=output_stride).eval()
    with torch.no_grad():
        assert model.forward_logits(torch.randn(1, 3, 32, 64)).shape[-1] == 64 // output_stride
    dilations = {m.dilation[0] for m in model.backbone.layer4.modules() if isinstance(m, torch.nn.Conv2d)}
    assert max(dilations) == 32 // output_stride


def test_mobilenet_output_stride_32():
    model = M.create("lraspp_mobilenet_v3_large", output_stride=32).eval()
    with torch.no_grad():
        low, high = model.backbone(torch.randn(1, 3, 64, 64))
    assert low.shape[-1] == 8 and high.shape[-1] == 2


# --- save / load ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs", [
    ("deeplabv3_mobilenet_v3_large", {"num_classes": 3, "atrous_rates": [6, 12, 18]}),
    ("lraspp_mobilenet_v3_large", {"num_classes": 2}),
    ("segformer_b0", {"num_classes": 5}),
])
@pytest.mark.parametrize("fused", [False, True])
def test_save_load_roundtrip(tmp_path, name, kwargs, fused):
    model = randomize_batchnorm(M.create(name, **kwargs))
    if fused:
        model = M.fuse(model)
    path = tmp_path / "model.safetensors"
    M.save(model, path)
    loaded = M.load(path)
    assert loaded.config == {"name": name, "kwargs": kwargs} and getattr(loaded, "fused", False) == fused
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(model.forward_logits(x), loaded.forward_logits(x))


def _rewrite(path, out, edit):
    """Write `out` with the tensors / metadata of `path` changed by edit(tensors, metadata)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    edit(tensors, meta)
    save_file(tensors, str(out), metadata=meta)


def test_load_errors(tmp_path):
    model = M.create("lraspp_mobilenet_v3_large", num_classes=2)
    good = tmp_path / "good.safetensors"
    M.save(model, good)
    data = good.read_bytes()

    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        M.load(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        M.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        M.load(tmp_path / "absent.safetensors")

    _rewrite(good, tmp_path / "missing.safetensors", lambda t, m: t.pop("head.high_gate.weight"))
    with pytest.raises(M.WeightsMismatchError, match=r"missing keys \(1\): head\.high_gate\.weight"):
        M.load(tmp_path / "missing.safetensors")

    _rewrite(good, tmp_path / "extra.safetensors", lambda t, m: t.update({"head.bogus": torch.zeros(1)}))
    with pytest.raises(M.WeightsMismatchError, match=r"unexpected keys \(1\): head\.bogus"):
        M.load(tmp_path / "extra.safetensors")

    def wrong_classes(t, m):  # weights for 2 classes, config claiming 3
        cfg = json.loads(m[CONFIG_KEY])
        cfg["kwargs"]["num_classes"] = 3
        m[CONFIG_KEY] = json.dumps(cfg)
    _rewrite(good, tmp_path / "shape.safetensors", wrong_classes)
    expected = r"head\.low_classifier\.weight \(file \(2, 40, 1, 1\), model \(3, 40, 1, 1\)\)"
    with pytest.raises(M.WeightsMismatchError, match=expected):
        M.load(tmp_path / "shape.safetensors")

    _rewrite(good, tmp_path / "noconfig.safetensors", lambda t, m: m.pop(CONFIG_KEY))
    with pytest.raises(ValueError, match="without a fastseg config"):
        M.load(tmp_path / "noconfig.safetensors")

    with pytest.raises(ValueError, match="no fastseg config"):
        M.save(torch.nn.Conv2d(1, 1, 1), tmp_path / "x.safetensors")


@pytest.mark.parametrize("decoder", [(64, 32, 16, 8, 8), (64, 32, 16, 8), (64, 32, 16)])
@pytest.mark.parametrize("size", [(64, 96), (45, 37)])
def test_unet_short_decoder_and_base_width(decoder, size):
    """Fewer decoder blocks leave the logits at stride 2 ** (5 - blocks); base_width scales every stage."""
    model = randomize_batchnorm(M.create("unet_resnet18", num_classes=3, base_width=16,
                                         decoder_channels=decoder)).eval()
    stride = 2 ** (5 - len(decoder))
    assert model.output_stride == stride
    assert model.backbone.out_channels == [16, 16, 32, 64, 128]
    assert model.backbone.layer4[0].conv1.conv.weight.shape[:2] == (128, 64)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        low = model.forward_logits(x)
        full = model(x)
    # each ResNet stride rounds up (k=3/7 convs, padding): the logits take the encoder map's size
    expected = [-(-s // stride) for s in size] if stride > 1 else list(size)
    assert list(low.shape) == [2, 3, *expected]
    assert full.shape == (2, 3, *size)


@pytest.mark.parametrize("size", [(64, 96), (45, 37)])
def test_unet_image_pooling_context(tmp_path, size):
    """context="pool" adds the coarsest map's projected mean to every pixel; the inference rewrite folds
    its batch-norm, a saved model loads with it, and ONNX Runtime runs its export as torch does."""
    model = randomize_batchnorm(M.create("unet_resnet18", num_classes=3, base_width=16,
                                         decoder_channels=(32, 16, 8, 8), context="pool")).eval()
    plain = M.create("unet_resnet18", num_classes=3, base_width=16, decoder_channels=(32, 16, 8, 8))
    assert set(model.state_dict()) - set(plain.state_dict()) == {
        k for k in model.state_dict() if k.startswith("head.context.")} != set()
    x = torch.randn(2, 3, *size)
    feature = model.backbone(x)[-1]
    with torch.no_grad():
        pooled = model.head.context.project(feature.mean((2, 3), keepdim=True))
        torch.testing.assert_close(model.head.context(feature), feature + pooled)
        torch.testing.assert_close(M.fuse(model).forward_logits(x), model.forward_logits(x), rtol=1e-4, atol=1e-4)
    M.save(model, tmp_path / "m.safetensors")
    loaded = M.load(tmp_path / "m.safetensors")
    assert loaded.config["kwargs"]["context"] == "pool"
    with torch.no_grad():
        assert torch.equal(loaded.forward_logits(x), model.forward_logits(x))
    from fastseg import Segmenter

    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    ort = Segmenter(model, runtime="onnxruntime").predict(image).labels
    assert (ort == Segmenter(model, runtime="torch").predict(image).labels).mean() > 0.999
    with pytest.raises(ValueError, match="context"):
        M.create("unet_resnet18", context="aspp")


def test_unet_decoder_length_errors():
    with pytest.raises(ValueError, match="decoder_channels"):
        M.create("unet_resnet18", decoder_channels=(8,) * 6)
    with pytest.raises(ValueError, match="base_width"):
        M.create("unet_resnet18", base_width=0)
