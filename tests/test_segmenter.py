"""fastseg.Segmenter: every input kind, both CPU runtimes, tiling, TTA, stream, precision, CRF, errors.

The reference for labels is the unfused model's own `forward(x).argmax(1)` on the input normalised
independently here (float64 arithmetic), so preprocessing, the inference rewrite, the runtime and
the fused tail are all under test together.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import fastseg
from fastseg import _torch_compat
from fastseg.models import base as model_base
from fastseg.models import fuse
from fastseg.segmenter import TTA, Segmenter, Tiling, choice, openvino_runtime
from fastseg.segmenter import precision as precision_rule
from fastseg.segmenter.openvino_runtime import available as openvino_available
from fastseg.segmenter.precision import native_bf16

from _images import agreement, image, normalise, reference_labels
from _runtimes import fp32_auto
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

RUNTIMES = ["torch", "onnxruntime"]
AGREE = 0.999


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return fastseg.models.create("lraspp_mobilenet_v3_large", num_classes=7).eval()


@pytest.fixture(scope="module")
def segs(model):
    return {rt: Segmenter(model, runtime=rt) for rt in RUNTIMES}


class Patchify(model_base.SegmentationModel):
    """A purely local toy model: logits of a stride-4 cell depend on that cell's pixels only, so
    tiled and whole inference are exactly equal; the 1x1 variant (stride 1) commutes with flips."""

    def __init__(self, stride=4, classes=5):
        super().__init__()
        self.output_stride = stride
        self.embed = nn.Conv2d(3, 16, stride, stride=stride)
        self.classify = nn.Conv2d(16, classes, 1)

    def forward_logits(self, x):
        return self.classify(torch.tanh(self.embed(x)))


# ----------------------------------------------------------------------------- input kinds
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("hw", [(64, 96), (37, 53), (31, 120)])
def test_numpy_single_image(model, segs, runtime, hw):
    img = image(*hw, seed=hw[0])
    labels = segs[runtime].predict(img).labels
    assert isinstance(labels, np.ndarray) and labels.shape == hw and labels.dtype == np.uint8
    assert agreement(labels, reference_labels(model, img[None])[0]) >= AGREE


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_numpy_batch(model, segs, runtime):
    img = image(45, 67, seed=3, n=3)
    labels = segs[runtime].predict(img).labels
    assert isinstance(labels, np.ndarray) and labels.shape == (3, 45, 67)
    assert agreement(labels, reference_labels(model, img)) >= AGREE


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_list_of_sizes_and_kinds(model, segs, runtime):
    a, b, c = image(40, 56, 1), image(33, 71, 2), image(40, 56, 3)
    d = torch.from_numpy(image(29, 45, 4)).permute(2, 0, 1).contiguous()  # torch uint8 [3,H,W]
    result = segs[runtime].predict([a, Image.fromarray(b), c, d], return_confidence=True)
    labels = result.labels
    assert isinstance(labels, list) and len(labels) == 4
    assert [type(x) for x in labels] == [np.ndarray, np.ndarray, np.ndarray, torch.Tensor]
    assert [tuple(x.shape) for x in labels] == [(40, 56), (33, 71), (40, 56), (29, 45)]
    assert [tuple(x.shape) for x in result.confidence] == [(40, 56), (33, 71), (40, 56), (29, 45)]
    for got, img in zip(labels, (a, b, c, d.permute(1, 2, 0).numpy())):
        assert agreement(np.asarray(got), reference_labels(model, img[None])[0]) >= AGREE


def test_pil_image(model, segs):
    img = image(50, 70, 5)
    labels = segs["torch"].predict(Image.fromarray(img)).labels
    assert isinstance(labels, np.ndarray) and labels.shape == (50, 70)
    assert agreement(labels, reference_labels(model, img[None])[0]) >= AGREE
    gray = Image.fromarray(img[:, :, 0])  # converted to RGB inside
    assert segs["torch"].predict(gray).labels.shape == (50, 70)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_torch_uint8_and_float(model, segs, runtime):
    img = image(41, 59, seed=6, n=2)
    u8 = torch.from_numpy(img).permute(0, 3, 1, 2)  # [N,3,H,W] uint8, channels_last strides
    f32 = u8.float() / 255
    ref = reference_labels(model, img)
    for x in (u8, u8.contiguous(), f32, f32.contiguous(), f32.to(torch.float16)):
        labels = segs[runtime].predict(x).labels
        assert isinstance(labels, torch.Tensor) and labels.shape == (2, 41, 59) and labels.dtype == torch.uint8
        assert agreement(labels.numpy(), ref) >= (AGREE if x.dtype != torch.float16 else 0.99)
    single = segs[runtime].predict(f32[1]).labels
    assert single.shape == (41, 59) and agreement(single.numpy(), ref[1]) >= AGREE


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_preprocess_is_the_normalised_image(model, segs, runtime):
    """uint8 frames (HWC or NCHW) become (x / 255 - mean) / std within float32 rounding, in the
    runtime's layout; the native kernel's scale and shift are float32, hence the 2-ulp-ish tolerance."""
    img = image(37, 53, seed=12, n=2)
    want = normalise(img, model)
    seg = segs[runtime]
    for x in (torch.from_numpy(img), torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()):
        got = seg.preprocess(x, hwc=x.shape[-1] == 3)
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert got.is_contiguous(memory_format=torch.channels_last if runtime == "torch" else torch.contiguous_format)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_readonly_and_noncontiguous_numpy(model, segs):
    img = image(48, 64, 7)
    ro = img.copy()
    ro.setflags(write=False)
    flipped = img[:, ::-1]  # negative strides
    ref = reference_labels(model, img[None])[0]
    assert agreement(segs["torch"].predict(ro).labels, ref) >= AGREE
    assert agreement(segs["torch"].predict(flipped).labels,
                     reference_labels(model, np.ascontiguousarray(flipped)[None])[0]) >= AGREE


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_confidence_and_timings(model, segs, runtime):
    img = image(36, 52, 8)
    result = segs[runtime].predict(img, return_confidence=True)
    with torch.no_grad():
        ref = torch.softmax(model(normalise(img[None], model)), 1).amax(1)[0].numpy()
    assert result.confidence.dtype == np.float32 and result.confidence.shape == (36, 52)
    np.testing.assert_allclose(result.confidence, ref, atol=2e-4)
    assert set(result.timings) == {"preprocess", "model", "tail", "total"}
    assert all(v >= 0 for v in result.timings.values())
    assert segs[runtime].predict(img).confidence is None


def test_channels_last_and_nchw_agree(model):
    img = image(43, 61, 9, n=2)
    a = Segmenter(model, runtime="torch", channels_last=True).predict(img).labels
    b = Segmenter(model, runtime="torch", channels_last=False).predict(img).labels
    assert agreement(a, b) >= AGREE


def test_pad_to(model):
    img = image(45, 70, 10)
    labels = Segmenter(model, runtime="torch", pad_to=32).predict(img).labels
    assert labels.shape == (45, 70)
    # padding changes the border context only: most pixels keep their label
    assert agreement(labels, reference_labels(model, img[None])[0]) >= 0.8


# ----------------------------------------------------------------------------- model sources
def test_model_by_name_and_by_file(tmp_path, model):
    seg = Segmenter("lraspp_mobilenet_v3_large", num_classes=4, runtime="torch")
    assert seg.predict(image(32, 40)).labels.max() < 4
    path = tmp_path / "m.safetensors"
    fastseg.models.save(model, path)
    loaded = Segmenter(str(path), runtime="torch")
    img = image(33, 47, 11)
    assert agreement(loaded.predict(img).labels, reference_labels(model, img[None])[0]) >= AGREE


def test_model_errors(tmp_path, model):
    with pytest.raises(ValueError, match="num_classes"):
        Segmenter("lraspp_mobilenet_v3_large")
    with pytest.raises(ValueError, match="registered"):
        Segmenter("no_such_model", num_classes=3)
    with pytest.raises(TypeError, match="forward_logits"):
        Segmenter(nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="model_or_name"):
        Segmenter(42)
    with pytest.raises(ValueError, match="num_classes"):
        Segmenter(model, num_classes=3)


# ----------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("tile_batch", [1, 3])
def test_tiles_equal_whole_for_a_local_model(overlap, tile_batch):
    torch.manual_seed(1)
    toy = Patchify(stride=4)
    img = image(70, 101, 12, n=2)
    whole = Segmenter(toy, runtime="torch", pad_to=4).predict(img, return_confidence=True)
    tiled = Segmenter(toy, runtime="torch", tiling=Tiling((24, 32), overlap=overlap, batch=tile_batch))
    out = tiled.predict(img, return_confidence=True)
    assert out.labels.shape == (2, 70, 101)
    assert agreement(out.labels, whole.labels) >= AGREE
    np.testing.assert_allclose(out.confidence, whole.confidence, atol=1e-5)


def test_tiles_close_to_whole_for_a_real_model(model):
    img = image(96, 160, 13)
    whole = Segmenter(model, runtime="torch", pad_to=8).predict(img).labels
    tiled = Segmenter(model, runtime="onnxruntime", tiling=Tiling((64, 64), overlap=0.5)).predict(img).labels
    assert tiled.shape == whole.shape
    assert agreement(tiled, whole) >= 0.6  # context differs (global pooling sees one tile), labels mostly not
    small = Segmenter(model, runtime="torch", tiling=Tiling((128, 256))).predict(img).labels  # one tile: whole
    assert agreement(small, whole) >= AGREE


def test_tile_arguments():
    toy = Patchify()
    with pytest.raises(ValueError, match="overlap"):
        Tiling((16, 16), overlap=1.0)
    with pytest.raises(TypeError, match="size"):
        Tiling(16)
    with pytest.raises(ValueError, match="batch"):
        Tiling((16, 16), batch=0)
    with pytest.raises(TypeError, match="tiling"):
        Segmenter(toy, tiling=(16, 16))
    assert Segmenter(toy, tiling=Tiling((17, 30))).tiling.size == (20, 32)  # rounded up to the output stride


# ----------------------------------------------------------------------------- test-time augmentation
def test_flip_tta_is_the_average_of_both_views(model):
    img = image(40, 64, 14)
    seg = Segmenter(model, runtime="torch", tta=TTA(flip=True))
    got = seg.predict(img, return_confidence=True)
    x = normalise(img[None], model)
    with torch.no_grad():
        p = (torch.softmax(model.forward_logits(x), 1) + torch.softmax(model.forward_logits(x.flip(3)), 1).flip(3)) / 2
        z = F.interpolate(p.log(), size=(40, 64), mode="bilinear", align_corners=False)
    assert agreement(got.labels, z.argmax(1)[0].numpy()) >= AGREE
    np.testing.assert_allclose(got.confidence, torch.softmax(z, 1).amax(1)[0].numpy(), atol=1e-4)


def test_tta_sanity():
    torch.manual_seed(2)
    toy = Patchify(stride=1)  # per-pixel model: flipping commutes with it, scale 1 only is plain
    img = image(30, 44, 15, n=2)
    plain = Segmenter(toy, runtime="torch").predict(img).labels
    for tta in (TTA(flip=True), TTA(scales=(1.0,)), TTA(flip=True, average="logits")):
        assert agreement(Segmenter(toy, runtime="torch", tta=tta).predict(img).labels, plain) >= AGREE
    multi = Segmenter(toy, runtime="torch", tta=TTA(scales=(0.5, 1.0, 1.5), flip=True)).predict(img).labels
    assert multi.shape == plain.shape and agreement(multi, plain) >= 0.7
    only_half = Segmenter(toy, runtime="torch", tta=TTA(scales=(0.5,))).predict(img).labels
    assert only_half.shape == plain.shape
    with pytest.raises(ValueError, match="scales"):
        TTA(scales=(0.0,))
    with pytest.raises(ValueError, match="average"):
        TTA(average="max")
    with pytest.raises(TypeError, match="tta"):
        Segmenter(toy, tta=True)


# ----------------------------------------------------------------------------- stream
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_stream_reuses_buffers(model, segs, runtime, monkeypatch):
    seg = segs[runtime]
    frames = [image(40, 60, s) for s in range(3)] + [image(32, 48, 9), image(32, 48, 10)]
    refs = [seg.predict(frame, return_confidence=True) for frame in frames]
    made = []  # the input buffers the stream allocates
    allocate = seg.input_buffer
    monkeypatch.setattr(seg, "input_buffer", lambda *shape: made.append(allocate(*shape)) or made[-1])
    seen = []
    for ref, result in zip(refs, seg.stream(iter(frames), return_confidence=True)):
        assert agreement(result.labels, ref.labels) == 1.0
        np.testing.assert_array_equal(result.confidence, ref.confidence)
        seen.append((result.labels, result.confidence))
    # the same output arrays and input buffer while the frame size stays, new ones when it changes
    assert seen[0][0] is seen[1][0] is seen[2][0] and seen[0][1] is seen[2][1]
    assert seen[3][0] is seen[4][0] and seen[3][0] is not seen[0][0]
    assert seen[3][0].shape == (32, 48)
    assert [tuple(x.shape) for x in made] == [(1, 3, 40, 60), (1, 3, 32, 48)]
    # the buffers belong to the loop: a second loop on the same Segmenter makes its own
    next(seg.stream(iter(frames[:1])))
    assert len(made) == 3 and made[2].data_ptr() != made[0].data_ptr()


# ----------------------------------------------------------------------------- precision and runtimes
def test_precision_checks(model):
    native_bf16 = _torch_compat.mkldnn_bf16_supported()
    native_fp16 = _torch_compat.mkldnn_fp16_supported()
    for precision, native in (("bf16", native_bf16), ("fp16", native_fp16)):
        if native:
            assert Segmenter(model, precision=precision).precision == precision
        else:
            with pytest.raises(ValueError, match="precision"):
                Segmenter(model, precision=precision)
    with pytest.raises(ValueError, match="precision"):
        Segmenter(model, precision="fp8")
    with pytest.raises(ValueError, match="onnxruntime"):
        Segmenter(model, precision="bf16", runtime="onnxruntime", allow_emulated_precision=True)
    with pytest.raises(ValueError, match="runtime"):
        Segmenter(model, runtime="tensorrt")
    with pytest.raises(TypeError, match="runtime='inductor'"):
        Segmenter(model, compile=True)
    with pytest.raises(ValueError, match="channels_last"):
        Segmenter(model, runtime="onnxruntime", channels_last=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Segmenter(model, device="cuda")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_runs(model, precision):
    img = image(40, 56, 16, n=2)
    seg = Segmenter(model, precision=precision, runtime="torch", allow_emulated_precision=True)
    assert seg.runtime.name == "torch" and next(seg.model.parameters()).dtype == seg.dtype
    result = seg.predict(img, return_confidence=True)
    assert result.labels.dtype == np.uint8 and result.confidence.dtype == np.float32
    # random weights give small logit margins; reduced precision flips only near-ties
    assert agreement(result.labels, reference_labels(model, img)) >= 0.9


def test_ort_spinning_option(model, segs):
    img = image(38, 54, 19)
    asleep = Segmenter(model, runtime="onnxruntime", ort_spinning=False)  # the default spins
    assert agreement(asleep.predict(img).labels, segs["onnxruntime"].predict(img).labels) == 1.0


def test_default_runtime(model):
    # LR-ASPP's CPU default in fp32, and on a CPU with AMX OpenVINO's where installed (segmenter/choice.py)
    assert Segmenter(model).runtime.name == fp32_auto("onnxruntime")
    # bf16 on the CPU: OpenVINO where the CPU has native bf16 and it is installed (segmenter/choice.py)
    bf16_runtime = "openvino" if native_bf16() and openvino_available() else "torch"
    assert Segmenter(model, precision="bf16", allow_emulated_precision=True).runtime.name == bf16_runtime


def test_compile_inductor():
    torch.manual_seed(3)
    toy = Patchify(stride=2)
    img = image(34, 50, 17)
    seg = Segmenter(toy, runtime="inductor")
    assert seg.runtime.name == "inductor"
    ref = Segmenter(toy, runtime="torch").predict(img).labels
    assert agreement(seg.predict(img).labels, ref) >= AGREE


# ----------------------------------------------------------------------------- CRF stage
def test_crf_stage(model):
    crf = fastseg.crf.DenseCRF(n_iter=2)
    img = image(40, 52, 18)
    result = Segmenter(model, runtime="torch", crf=crf).predict(img, return_confidence=True)
    assert set(result.timings) >= {"crf", "tail", "model"}
    x = normalise(img[None], model)
    with torch.no_grad():
        z = model(x)
    probs = crf(img, torch.softmax(z, 1)[0].numpy())
    assert result.labels.shape == (40, 52) and result.confidence.shape == (40, 52)
    assert agreement(result.labels, probs.argmax(0)) >= 0.995
    with pytest.raises(TypeError, match="crf"):
        Segmenter(model, crf="yes")


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((8, 8, 3), np.int32), TypeError, "uint8"),
    (np.zeros((8, 8, 5), np.uint8), ValueError, r"\[H,W,3\]"),
    (np.zeros(8, np.uint8), ValueError, "batch"),
    (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "empty"),
    (np.zeros((2, 8, 8, 5), np.uint8), ValueError, "N,H,W,3"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
    (torch.zeros(2, 4, 8, 8), ValueError, "N,3,H,W"),
    (torch.zeros(0, 3, 8, 8), ValueError, "empty"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.int32), TypeError, "uint8"),
    (torch.zeros(8, 8), ValueError, "3,H,W"),
    ([], ValueError, "empty"),
    ([np.zeros((8, 8, 3), np.uint8), "x"], TypeError, r"batch\[1\]"),
    ("image.png", TypeError, "batch"),
])
def test_bad_input(segs, bad, error, match):
    with pytest.raises(error, match=match):
        segs["torch"].predict(bad)


@pytest.mark.parametrize("amx", [False, True])
def test_auto_runtime_follows_the_model_and_the_cpu(monkeypatch, amx):
    """On the CPU in fp32, models whose convolutions Winograd serves run in torch: dilated ResNets, and
    models where it serves at least half of the multiply-adds (the default U-Net); the rest in ONNX
    Runtime. On a CPU with AMX, everything but the dilated ResNets in OpenVINO when it is installed,
    and the same rule as elsewhere when it is not (fastseg.segmenter.choice says why)."""
    assert openvino_available(), "openvino is a test dependency (pyproject.toml, [test])"
    monkeypatch.setattr(precision_rule, "amx", lambda: amx)
    for installed in (True, False):
        monkeypatch.setattr(openvino_runtime, "available", lambda installed=installed: installed)
        other = "openvino" if amx and installed else None
        assert Segmenter("deeplabv3_resnet50", num_classes=3).runtime.name == "torch"
        assert Segmenter("fcn_resnet50", num_classes=3).runtime.name == "torch"
        assert Segmenter("lraspp_mobilenet_v3_large", num_classes=3).runtime.name == (other or "onnxruntime")
        assert Segmenter("segformer_b0", num_classes=3).runtime.name == (other or "onnxruntime")
        assert Segmenter().runtime.name == (other or "torch")  # the default U-Net: Winograd serves 73 %
        assert Segmenter("unet_resnet18", num_classes=3).runtime.name == (other or "torch")
        assert Segmenter("unet_resnet18", num_classes=3, channels_last=True).runtime.name == "torch"


def test_winograd_share_counts_multiply_adds():
    """The share is the served blocks' multiply-adds over all convolutions', counted on real shapes."""
    from fastseg.models.layers import ConvBNAct

    class Net(model_base.SegmentationModel):
        def __init__(self, served_out: int):
            super().__init__()
            self.stem = ConvBNAct(3, 32, 3, stride=2)             # stride 2: not served
            self.body = ConvBNAct(32, served_out, 3)              # dense stride-1 3x3, >= 32 channels
            self.head = nn.Conv2d(served_out, 4, 1)               # a bare conv: not served

        def forward_logits(self, x):
            return self.head(self.body(self.stem(x)))

    h, w = choice.SHARE_FRAME
    for out in (32, 64, 256):
        net = Net(out).train()
        pixels = (h // 2) * (w // 2)
        stem, body, head = pixels * 32 * 3 * 9, pixels * out * 32 * 9, pixels * 4 * out
        stats = net.body.bn.running_mean.clone()
        assert choice.winograd_share(net) == pytest.approx(body / (stem + body + head))
        assert choice.winograd_share(fuse(net.eval())) == pytest.approx(body / (stem + body + head))
        assert torch.equal(net.body.bn.running_mean, stats)  # counted in eval mode, statistics kept
    net = Net(32).train()
    choice.winograd_share(net)
    assert net.training and net.body.training  # the caller's mode is given back
    assert choice.winograd_share(fastseg.models.create("lraspp_mobilenet_v3_large", num_classes=3)) == 0.0
