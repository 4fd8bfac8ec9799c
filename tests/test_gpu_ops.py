"""Every op's Triton backend on real CUDA tensors against its reference on the same tensors: every
dtype, both layouts, odd sizes, inputs of more than 2^31 elements where the GPU's memory allows; and
CuPy arrays in and out through DLPack without a copy.

Runs where CUDA exists and the interpreter is off (tests/_triton.py); skipped elsewhere with the
reason. The interpreter tests of the same kernels run on the CPU in each op's test file.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import fastseg
from fastseg import _arrays
from fastseg.models.rewrite import FusedASPP
from fastseg.ops import _conv_table
from fastseg.ops import aspp as aspp_op
from fastseg.ops.atrous_conv import atrous_conv
from fastseg.ops.atrous_conv import reference as conv_reference
from fastseg.ops.confusion_matrix import reference as cm_reference

from _triton import record_launches, requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

DEVICE = "cuda"
FLOATS = [torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["nchw", "channels_last"]


def on_device(x: torch.Tensor, layout: str = "nchw") -> torch.Tensor:
    x = x.to(DEVICE)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def free_bytes() -> int:
    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0


def needs_memory(nbytes: int) -> None:
    if free_bytes() < nbytes:
        pytest.skip(f"needs {nbytes / 2**30:.1f} GiB of free GPU memory, {free_bytes() / 2**30:.1f} GiB free")


# ---- upsample_argmax -----------------------------------------------------------------------------

def assert_argmax(labels: torch.Tensor, x: torch.Tensor, size, align_corners: bool) -> None:
    """Labels equal the reference's, except where two channels' interpolated values are within float
    rounding of each other (the kernel's operation order is torch's CPU one, not cuDNN's)."""
    z = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=align_corners)
    best = z.amax(1)
    picked = z.gather(1, labels.long()[:, None])[:, 0]
    tol = 1e-5 * (best.abs() + 1)
    assert bool(((best - picked) <= tol).all()), "a label is not (within rounding) the maximum"
    same = labels.long() == z.argmax(1)
    assert same.float().mean().item() > 0.999


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 5, 7), (2, 19, 33, 65, 257, 513), (3, 21, 17, 13, 9, 11),
                                   (1, 150, 64, 128, 1023, 2047), (2, 5, 300, 7, 31, 999)], ids=str)
def test_upsample_argmax_matches_reference(shape, align_corners, layout, dtype):
    x = on_device(3 * torch.randn(shape[:4]), layout).to(dtype)
    size = shape[4:]
    labels, conf = fastseg.ops.upsample_argmax(x, size, align_corners=align_corners, return_confidence=True,
                                               backend="triton")
    assert labels.device == x.device and labels.dtype == torch.uint8
    assert_argmax(labels, x, size, align_corners)
    z = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(conf, torch.softmax(z, 1).amax(1), atol=1e-5, rtol=1e-5)


def test_upsample_argmax_20_megapixels():
    """4000x5000 output: more pixel blocks than a grid axis other than 0 may hold."""
    needs_memory(19 * 4000 * 5000 * 4 * 2)  # the reference's fp32 logits, and a temporary as large
    x = on_device(torch.randn(1, 19, 500, 625)).half()
    labels = fastseg.ops.upsample_argmax(x, (4000, 5000), backend="triton")
    assert_argmax(labels, x, (4000, 5000), False)


def test_upsample_argmax_input_beyond_2_31_elements():
    numel = 3 * 26800 * 26800  # 2.15e9 elements
    needs_memory(numel * (2 + 4) + 2**30)  # the fp16 input, and the reference's fp32 copy of it
    x = torch.randn(1, 3, 26800, 26800, device=DEVICE, dtype=torch.float16)
    labels = fastseg.ops.upsample_argmax(x, (67, 67), backend="triton")
    assert_argmax(labels, x, (67, 67), False)


# ---- confusion_matrix ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("shape, C", [((1,), 1), ((7, 13), 19), ((2, 1023, 2049), 19), ((3, 333, 77), 150)],
                         ids=str)
def test_confusion_matrix_matches_reference(shape, C, dtype):
    if C > torch.iinfo(dtype).max + 1:
        pytest.skip(f"{dtype} cannot hold {C} classes")
    ignore = 255 if dtype == torch.uint8 else -1
    pred = torch.randint(0, C, shape, device=DEVICE).to(dtype)
    target = torch.randint(0, C, shape, device=DEVICE).to(dtype)
    target[torch.rand(shape, device=DEVICE) < 0.1] = ignore
    got = fastseg.ops.confusion_matrix(pred, target, C, ignore_index=ignore, backend="triton")
    assert got.device == pred.device
    assert torch.equal(got, cm_reference(pred, target, C, ignore))
    strided = pred.flatten()[::2], target.flatten()[::2]
    assert torch.equal(fastseg.ops.confusion_matrix(*strided, C, ignore_index=ignore, backend="triton"),
                       cm_reference(*strided, C, ignore))


def test_confusion_matrix_beyond_2_31_pixels():
    n = 2**31 + 4097
    needs_memory(2 * n + 2**32)  # the labels, and one chunk of the reference's int64 pairs
    pred = torch.randint(0, 19, (n,), device=DEVICE, dtype=torch.uint8)
    target = torch.randint(0, 19, (n,), device=DEVICE, dtype=torch.uint8)
    got = fastseg.ops.confusion_matrix(pred, target, 19, ignore_index=None, backend="triton")
    chunk = 2**28
    want = sum(cm_reference(pred[i:i + chunk], target[i:i + chunk], 19, None) for i in range(0, n, chunk))
    assert torch.equal(got, want)


# ---- atrous_conv ---------------------------------------------------------------------------------

# relative to max |output|: about 4 roundings of the output dtype; fp32 per cudnn.allow_tf32 (TF32 keeps a
# 10-bit mantissa); ASPP rounds twice (the concatenated branches, then the projection)
CONV_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
ASPP_TOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2}


def conv_tolerance(dtype: torch.dtype, table: dict = CONV_TOL) -> float:
    if dtype == torch.float32:
        return 2e-3 if torch.backends.cudnn.allow_tf32 else 1e-5
    return table[dtype]


def assert_conv_close(y: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, table: dict = CONV_TOL) -> None:
    tol = conv_tolerance(dtype, table)
    scale = expected.abs().max().item() + 1e-6
    torch.testing.assert_close(y.double(), expected.double(), rtol=tol, atol=tol * scale)


@pytest.fixture(params=[True, False], ids=["tf32", "ieee"])
def allow_tf32(request, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", request.param)
    return request.param


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n, cin, cout, h, w, k, stride, dilation, groups", [
    (1, 3, 16, 7, 9, 3, 1, 1, 1),
    (2, 64, 48, 33, 65, 3, 1, 12, 1),
    (1, 256, 256, 65, 129, 3, 1, 2, 1),
    (2, 96, 80, 31, 17, 3, 2, 6, 1),
    (1, 32, 32, 29, 31, 5, 1, 2, 32),     # depthwise
    (3, 48, 24, 13, 11, 1, 1, 1, 1),
])
def test_atrous_conv_matches_reference(n, cin, cout, h, w, k, stride, dilation, groups, layout, dtype, allow_tf32):
    gen = torch.Generator().manual_seed(cin + cout)
    x = on_device(torch.randn(n, cin, h, w, generator=gen), layout).to(dtype)
    weight = (torch.randn(cout, cin // groups, k, k, generator=gen) / (cin // groups * k * k) ** 0.5).to(DEVICE)
    bias = torch.randn(cout, generator=gen).to(DEVICE)
    geometry = dict(stride=stride, dilation=dilation, groups=groups, activation="relu")
    y = atrous_conv(x, weight.to(dtype), bias, backend="triton", **geometry)
    expected = conv_reference(x.double(), weight.to(dtype).double(), bias.double(), **geometry)
    assert y.dtype == dtype and y.device == x.device
    assert_conv_close(y, expected, dtype)


def test_atrous_conv_input_beyond_2_31_elements():
    numel = 64 * 5800 * 5800  # 2.15e9 elements
    needs_memory(numel * 2 * 2 + 2**32)  # the input, its channels_last copy, both outputs
    x = torch.randn(1, 64, 5800, 5800, device=DEVICE, dtype=torch.float16)
    weight = torch.randn(16, 64, 3, 3, device=DEVICE, dtype=torch.float16) / 24
    y = atrous_conv(x, weight, None, dilation=2, activation=None, backend="triton")
    expected = F.conv2d(x, weight, padding=2, dilation=2)
    assert_conv_close(y, expected, torch.float16)


# ---- aspp ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n, cin, cout, h, w, rates", [(1, 64, 32, 17, 23, (6, 12, 18)),
                                                       (2, 256, 64, 33, 65, (12, 24, 36))])
def test_aspp_matches_reference(n, cin, cout, h, w, rates, layout, dtype, allow_tf32):
    from torchvision.models.segmentation.deeplabv3 import ASPP

    torch.manual_seed(cin)
    module = ASPP(cin, rates, out_channels=cout).eval()
    params = FusedASPP.from_torchvision(module).op_params(aspp_op).to(device=DEVICE)
    x = on_device(torch.randn(n, cin, h, w), layout).to(dtype)
    y = aspp_op.aspp(x, params, backend="triton")
    with torch.no_grad():
        expected = module.double().to(DEVICE)(x.double())
    assert y.dtype == dtype and y.device == x.device
    assert_conv_close(y, expected, dtype, ASPP_TOL)


def test_aspp_input_beyond_2_31_elements():
    """DeepLabV3's ASPP on a 2048-channel map of 2.18e9 elements, against the reference in fp16 (cuDNN)."""
    from torchvision.models.segmentation.deeplabv3 import ASPP

    cin, cout, h, w = 2048, 256, 1024, 1040
    needs_memory(18 * 2**30)  # the input and its channels_last copy, both sides' branches and outputs
    torch.manual_seed(0)
    module = ASPP(cin, (12, 24, 36), out_channels=cout).eval()
    params = FusedASPP.from_torchvision(module).op_params(aspp_op).to(device=DEVICE, dtype=torch.float16)
    x = torch.randn(1, cin, h, w, device=DEVICE, dtype=torch.float16)
    y = aspp_op.aspp(x, params, backend="triton")
    assert_conv_close(y, aspp_op.reference(x, params), torch.float16, ASPP_TOL)


# ---- auto: cuDNN unless this GPU's convolution table says Triton ---------------------------------

def test_auto_convolutions_follow_the_table(tmp_path, monkeypatch):
    launches = record_launches(monkeypatch)
    monkeypatch.setenv(_conv_table.TABLE_ENV, str(tmp_path / "missing.json"))
    _conv_table.reload()
    x = torch.randn(1, 64, 17, 23, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(32, 64, 3, 3, device=DEVICE) / 24
    try:
        with _conv_table.recording() as asked:
            cudnn = atrous_conv(x, weight, None, dilation=2)
        assert not launches and len(asked) == 1  # no table: cuDNN
        table = {"format": 1, "gpus": {torch.cuda.get_device_name(x.device): {"triton_wins": list(asked)}}}
        (tmp_path / "missing.json").write_text(json.dumps(table))
        _conv_table.reload()
        triton_out = atrous_conv(x, weight, None, dilation=2)
        assert [name for name, _, _ in launches] == ["_atrous_conv_kernel"]
        assert_conv_close(triton_out, cudnn.double(), torch.float32)
    finally:
        _conv_table.reload()


def test_cuda_runtime_keeps_weights_and_activations_channels_last():
    """On CUDA the torch runtime holds its convolution weights channels_last even for NCHW input, so
    every activation after the first convolution is channels_last and no Triton convolution copies."""
    from fastseg.segmenter.runtimes import TorchRuntime

    model = fastseg.models.create("deeplabv3_resnet50", num_classes=21)
    runtime = TorchRuntime(fastseg.models.fuse(model), torch.device(DEVICE), torch.float16, channels_last=False)
    convs = [m.weight for m in runtime.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    seen = []
    hooks = [m.register_forward_pre_hook(lambda _, args: seen.append(args[0].stride(1) == 1))
             for m in runtime.model.modules() if type(m).__name__ in ("AtrousConv", "FusedASPP")]
    with torch.no_grad():
        runtime(torch.randn(1, 3, 96, 128, device=DEVICE, dtype=torch.float16))
    for hook in hooks:
        hook.remove()
    assert seen and all(seen)


# ---- CuPy in and out, without copies ---------------------------------------------------------------

@pytest.fixture
def cupy():
    return pytest.importorskip("cupy", reason="CuPy (cupy-cuda12x) is not installed on this GPU machine")


@pytest.fixture
def handed_back(monkeypatch):
    """The torch tensors each op hands back through _arrays.from_torch, to compare addresses."""
    tensors = []
    real = _arrays.from_torch

    def spy(t, kind):
        tensors.append(t)
        return real(t, kind)

    monkeypatch.setattr(_arrays, "from_torch", spy)
    return tensors


def assert_shares_memory(array, tensor: torch.Tensor) -> None:
    assert array.data.ptr == tensor.data_ptr() and array.device.id == tensor.device.index


def test_upsample_argmax_takes_and_returns_cupy(cupy, handed_back):
    logits = cupy.random.standard_normal((2, 19, 33, 65), dtype=cupy.float32)
    assert _arrays.to_torch(logits, "logits")[0].data_ptr() == logits.data.ptr  # in without a copy
    labels, conf = fastseg.ops.upsample_argmax(logits, (129, 257), return_confidence=True)
    assert isinstance(labels, cupy.ndarray) and isinstance(conf, cupy.ndarray)
    assert_shares_memory(labels, handed_back[0])
    assert_shares_memory(conf, handed_back[1])
    want = fastseg.ops.upsample_argmax(torch.from_dlpack(logits), (129, 257), backend="reference")
    assert (torch.from_dlpack(labels).long() == want.long()).float().mean().item() > 0.999


def test_confusion_matrix_takes_and_returns_cupy(cupy, handed_back):
    pred = cupy.random.randint(0, 19, (2, 64, 128)).astype(cupy.uint8)
    target = cupy.random.randint(0, 19, (2, 64, 128)).astype(cupy.uint8)
    assert _arrays.to_torch(pred, "pred")[0].data_ptr() == pred.data.ptr
    cm = fastseg.ops.confusion_matrix(pred, target, 19)
    assert isinstance(cm, cupy.ndarray)
    assert_shares_memory(cm, handed_back[0])
    assert torch.equal(torch.from_dlpack(cm),
                       cm_reference(torch.from_dlpack(pred), torch.from_dlpack(target), 19, 255))


def test_convolutions_take_cupy_memory_through_dlpack(cupy):
    """atrous_conv and aspp take torch tensors: a CuPy array enters through torch.from_dlpack and the
    result leaves through cupy.from_dlpack, neither copying."""
    x_cp = cupy.random.standard_normal((1, 64, 17, 23), dtype=cupy.float32)
    x = torch.from_dlpack(x_cp)
    assert x.data_ptr() == x_cp.data.ptr
    weight = torch.randn(32, 64, 3, 3, device=DEVICE) / 24
    y = atrous_conv(x, weight, None, dilation=2, backend="triton")
    y_cp = cupy.from_dlpack(y)
    assert y_cp.data.ptr == y.data_ptr()
    from torchvision.models.segmentation.deeplabv3 import ASPP

    module = ASPP(64, (6, 12, 18), out_channels=32).eval()
    params = FusedASPP.from_torchvision(module).op_params(aspp_op).to(device=DEVICE)
    z = aspp_op.aspp(x, params, backend="triton")
    assert cupy.from_dlpack(z).data.ptr == z.data_ptr()


# ---- a second GPU --------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_kernels_run_on_the_tensors_device():
    """Tensors on cuda:1 while cuda:0 is current: every kernel runs in device 1's context (a launch in
    device 0's would fault or read garbage)."""
    torch.cuda.set_device(0)
    x = torch.randn(2, 19, 33, 65, device="cuda:1")
    labels = fastseg.ops.upsample_argmax(x, (65, 129), backend="triton")
    assert labels.device == x.device
    assert_argmax(labels, x, (65, 129), False)
    pred = labels.flatten()
    assert torch.equal(fastseg.ops.confusion_matrix(pred, pred, 19, backend="triton"),
                       cm_reference(pred, pred, 19, 255))
    w = torch.randn(16, 19, 3, 3, device="cuda:1") / 13
    assert_conv_close(atrous_conv(x, w, None, dilation=2, activation=None, backend="triton"),
                      F.conv2d(x.double(), w.double(), padding=2, dilation=2), torch.float32)
