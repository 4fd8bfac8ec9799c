"""Fused atrous conv (folded BN + activation) against the unfused PyTorch reference, and the modules
the Segmenter runs it through (the rewrite's FoldedConv / AtrousConv) against torchvision's
conv + BN + activation block.

The Triton kernel runs under the interpreter here (TRITON_INTERPRET=1 from conftest), the native
backend is Winograd or torch's convolution on folded weights. Shapes are tiny so the interpreter stays quick.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from fastseg.models.layers import ConvBNAct
from fastseg.models.rewrite import AtrousConv, FoldedConv, fold_batchnorm, fuse
from fastseg.ops import _launch
from fastseg.ops import activation as activations
from fastseg.ops.atrous_conv import atrous_conv, reference
from fastseg.ops.atrous_conv.triton_kernel import launch_config, precision

from _triton import compile_shipped_config, record_launches

TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}  # ~2 ulp of the output dtype


def random_bn(channels: int, gen: torch.Generator) -> nn.BatchNorm2d:
    """Eval-mode BN with randomised statistics, so folding is really exercised."""
    bn = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(channels, generator=gen) * 2 - 1)
        bn.running_var.copy_(torch.rand(channels, generator=gen) * 1.5 + 0.5)
        bn.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        bn.bias.copy_(torch.rand(channels, generator=gen) - 0.5)
    return bn


def make_input(shape, layout: str, dtype, gen) -> torch.Tensor:
    x = torch.randn(shape, generator=gen).to(dtype)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # a non-contiguous view: every other column of a wider tensor
        wide = torch.randn(shape[:3] + (2 * shape[3],), generator=gen).to(dtype)
        return wide[..., ::2]
    return x


def assert_close(actual, expected, dtype):
    scale = expected.abs().max().item() + 1e-6
    tol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol * scale)


# (batch, cin, cout, h, w, kernel, stride, padding, dilation, bias, activation, layout)
CASES = [
    (2, 24, 40, 13, 17, 3, 1, None, 1, True, "relu", "nchw"),
    (2, 24, 40, 13, 17, 3, 1, "same", 2, False, "relu6", "channels_last"),
    (2, 24, 40, 13, 17, 3, 2, None, 6, True, "hardswish", "nchw"),
    (2, 24, 40, 13, 17, 3, 1, 12, 12, True, None, "channels_last"),
    (3, 16, 24, 13, 17, 3, 2, 18, 18, True, "relu", "strided"),           # dilation > image: mostly padding
    (2, 24, 40, 13, 17, 3, 2, 0, 2, True, "relu", "channels_last"),       # 'valid'
    (2, 24, 40, 13, 17, 3, 1, 3, 6, False, "hardswish", "nchw"),           # padding != dilation
    (2, 24, 40, 13, 17, 3, (2, 1), (1, 4), (2, 3), True, "relu6", "nchw"),  # per-axis geometry
    (2, 24, 40, 13, 17, 1, 2, 0, 1, True, "relu", "channels_last"),       # 1x1, strided
    (1, 16, 24, 11, 9, 5, 1, None, 2, True, None, "nchw"),                # 5x5
    (2, 70, 80, 7, 9, 3, 1, None, 2, True, "relu", "channels_last"),      # several K and N blocks
    (2, 24, 16, 13, 17, 3, 2, 1, 1, False, None, "strided"),
]


def case_id(case):
    b, cin, cout, h, w, k, s, p, d, bias, act, layout = case
    return f"n{b}-{cin}to{cout}-{h}x{w}-k{k}-s{s}-p{p}-d{d}-{'bias' if bias else 'nobias'}-{act}-{layout}"


def build(case, dtype, seed=0):
    b, cin, cout, h, w, k, s, p, d, has_bias, act, layout = case
    gen = torch.Generator().manual_seed(seed)
    x = make_input((b, cin, h, w), layout, dtype, gen)
    weight = torch.randn(cout, cin, k, k, generator=gen) / (cin * k * k) ** 0.5
    bias = torch.randn(cout, generator=gen) if has_bias else None
    return x, weight, bias, random_bn(cout, gen), dict(stride=s, padding=p, dilation=d, activation=act)


@pytest.mark.parametrize("backend", ["triton", "native", "reference"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_equals_unfused_reference(case, backend):
    x, weight, bias, bn, geometry = build(case, torch.float32)
    expected = reference(x, weight, bias, bn=bn, **geometry)        # conv + BN + activation, unfused
    w, b = fold_batchnorm(weight, bias, bn)
    y = atrous_conv(x, w, b, backend=backend, **geometry)
    assert y.dtype == torch.float32 and y.shape == expected.shape
    if backend == "triton":
        assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, expected, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("backend", ["triton", "native"])
@pytest.mark.parametrize("case", CASES[:5] + CASES[7:8] + CASES[10:11], ids=case_id)
def test_half_precision_accumulates_in_fp32(case, backend, dtype):
    """Operands rounded to the dtype, products summed in fp32: only the output rounding remains."""
    x, weight, bias, bn, geometry = build(case, dtype, seed=1)
    w, b = fold_batchnorm(weight, bias, bn)
    w = w.to(dtype)
    expected = reference(x.double(), w.double(), b.double(), **geometry)  # same operands, exact sums
    y = atrous_conv(x, w, b, backend=backend, **geometry)
    assert y.dtype == dtype
    assert_close(y, expected, dtype)


@pytest.mark.interpreter  # runs the Triton kernel on CPU tensors
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", [CASES[1], CASES[4], CASES[9], CASES[10]], ids=case_id)
def test_triton_gpu_tile_configuration(case, dtype, monkeypatch):
    """The tiles that ship for the GPU (launch_config's "gpu", not the interpreter's), executed here."""
    launches = record_launches(monkeypatch)
    x, weight, bias, bn, geometry = build(case, dtype, seed=2)
    w, b = fold_batchnorm(weight, bias, bn)
    w = w.to(dtype)
    expected = reference(x.double(), w.double(), b.double(), **geometry)
    with _launch.gpu_tiles():
        y = atrous_conv(x, w, b, backend="triton", **geometry)
    assert_close(y, expected, dtype)
    [(_, _, meta)] = launches
    shipped = launch_config(dtype, y.shape[0] * y.shape[2] * y.shape[3], x.shape[1], y.shape[1], "gpu")
    assert {k: meta[k] for k in shipped} == shipped


# (groups, cin, cout, stride, dilation, dtype): grouped and depthwise (MobileNetV3's dilated blocks)
GROUPED = [(4, 16, 24, 1, 2, torch.float32), (16, 16, 16, 2, 6, torch.float32), (16, 16, 32, 1, 2, torch.float16),
           (8, 16, 16, 1, 12, torch.bfloat16)]


@pytest.mark.parametrize("backend", ["triton", "native", "reference"])
@pytest.mark.parametrize("groups, cin, cout, stride, dilation, dtype", GROUPED,
                         ids=[f"g{g}-{i}to{o}-s{s}-d{d}-{str(t)[6:]}" for g, i, o, s, d, t in GROUPED])
def test_grouped_and_depthwise(groups, cin, cout, stride, dilation, dtype, backend):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, cin, 9, 11, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin // groups, 3, 3, generator=gen) / 3
    bias = torch.randn(cout, generator=gen)
    bn = random_bn(cout, gen)
    w, b = fold_batchnorm(weight, bias, bn)
    w = w.to(dtype)
    expected = reference(x.double(), w.double(), b.double(), stride=stride, dilation=dilation,
                         activation="relu6", groups=groups)
    y = atrous_conv(x, w, b, stride=stride, dilation=dilation, activation="relu6", groups=groups,
                    backend=backend)
    assert_close(y, expected, dtype)


@pytest.mark.parametrize("backend", ["triton", "native"])
def test_writes_into_a_channel_slice(backend):
    """out= a channel slice of a larger channels_last buffer (how ASPP concatenates): the rest untouched."""
    x, weight, bias, bn, geometry = build(CASES[2], torch.float32)
    w, b = fold_batchnorm(weight, bias, bn)
    expected = reference(x, weight, bias, bn=bn, **geometry)
    n, c, h, wd = expected.shape
    buffer = torch.full((n, 3 * c, h, wd), 7.0).contiguous(memory_format=torch.channels_last)
    y = atrous_conv(x, w, b, out=buffer[:, c:2 * c], backend=backend, **geometry)
    assert y.data_ptr() == buffer[:, c:2 * c].data_ptr()
    assert_close(buffer[:, c:2 * c], expected, torch.float32)
    assert (buffer[:, :c] == 7).all() and (buffer[:, 2 * c:] == 7).all()


@pytest.mark.parametrize("backend", ["triton", "native", "reference"])
def test_per_image_bias(backend):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 16, 9, 11, generator=gen)
    w = torch.randn(20, 16, 3, 3, generator=gen) / 12
    bias = torch.randn(3, 20, generator=gen)
    expected = torch.relu(torch.nn.functional.conv2d(x, w, padding=6, dilation=6) + bias[:, :, None, None])
    assert_close(atrous_conv(x, w, bias, dilation=6, backend=backend), expected, torch.float32)


TORCHVISION_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, None: None}


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dilation, groups, activation", [(6, 1, "relu"), (2, 1, "relu6"), (6, 40, "hardswish"),
                                                         (1, 1, None), (12, 1, "relu")])
def test_rewrite_modules_equal_torchvision_block(dilation, groups, activation, layout):
    """What the Segmenter runs: a fastseg ConvBNAct, folded by the rewrite (AtrousConv for a dense
    dilated 3x3, FoldedConv otherwise), equals torchvision's Conv2dNormActivation with the same weights."""
    gen = torch.Generator().manual_seed(4)
    cin, cout = 40, (40 if groups > 1 else 48)
    tv = Conv2dNormActivation(cin, cout, 3, stride=1, dilation=dilation, groups=groups,
                              activation_layer=TORCHVISION_ACTIVATIONS[activation]).eval()
    ours = ConvBNAct(cin, cout, 3, dilation=dilation, groups=groups, act=activation)
    with torch.no_grad():
        tv[0].weight.copy_(torch.randn(tv[0].weight.shape, generator=gen) / (cin // groups * 9) ** 0.5)
        tv[1].load_state_dict(random_bn(cout, gen).state_dict())
        ours.conv.weight.copy_(tv[0].weight)
        ours.bn.load_state_dict(tv[1].state_dict())
    fused = fuse(nn.Sequential(ours))[0]
    assert type(fused) is (AtrousConv if dilation > 1 and groups == 1 else FoldedConv)
    x = make_input((2, cin, 23, 29), layout, torch.float32, gen)
    with torch.no_grad():
        assert_close(fused(x), tv(x), torch.float32)


@pytest.mark.interpreter  # runs the Triton kernel on CPU tensors
@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("activation", ["hardsigmoid", "sigmoid", "gelu"])
def test_activations_no_kernel_fuses(activation, backend):
    """Activations of the table without a fused code run on torch's side of every backend but Triton's."""
    x, weight, bias, bn, geometry = build(CASES[0], torch.float32)
    geometry["activation"] = activation
    w, b = fold_batchnorm(weight, bias, bn)
    assert_close(atrous_conv(x, w, b, backend=backend, **geometry), reference(x, weight, bias, bn=bn, **geometry),
                 torch.float32)
    with pytest.raises(ValueError, match="Triton epilogue has no"):
        atrous_conv(x, w, b, backend="triton", **geometry)


def test_activation_codes_come_from_the_extension():
    """Fused codes are fastseg._C.Activation's: one per fusable name, distinct, the identity is 0."""
    from fastseg import _native

    fused = {name: activations.code(name) for name in activations.NAMES if activations.get(name).fused}
    assert set(fused) == {None, "relu", "relu6", "hardswish"}
    assert fused == {a.fused if a.fused != "none" else None: int(getattr(_native.ext().Activation, a.fused))
                     for a in activations.TABLE.values() if a.fused}
    assert len(set(fused.values())) == len(fused) and fused[None] == 0


def test_auto_backend_on_cpu_is_native_and_keeps_channels_last():
    x, weight, bias, bn, geometry = build(CASES[1], torch.float32)
    w, b = fold_batchnorm(weight, bias, bn)
    y = atrous_conv(x, w, b, **geometry)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, reference(x, weight, bias, bn=bn, **geometry), torch.float32)


@pytest.mark.parametrize("affine", [True, False])
def test_fold_batchnorm_is_exact_in_float64(affine):
    gen = torch.Generator().manual_seed(5)
    conv = nn.Conv2d(8, 12, 3, padding=2, dilation=2).double()
    bn = random_bn(12, gen).double()
    if not affine:
        bn.weight, bn.bias = None, None
    x = torch.randn(2, 8, 9, 9, generator=gen, dtype=torch.float64)
    w, b = fold_batchnorm(conv.weight, conv.bias, bn)
    with torch.no_grad():
        torch.testing.assert_close(torch.nn.functional.conv2d(x, w, b, padding=2, dilation=2), bn(conv(x)),
                                   rtol=1e-12, atol=1e-12)


def _args():
    return torch.randn(1, 8, 9, 9), torch.randn(16, 8, 3, 3), torch.randn(16)


@pytest.mark.parametrize("backend", ["triton", "native", "reference"])
@pytest.mark.parametrize("change, error, match", [
    (lambda a: dict(a, x=a["x"][0]), ValueError, "x must be 4-D"),
    (lambda a: dict(a, x=a["x"][:, :5]), ValueError, "x has 5 channels"),
    (lambda a: dict(a, x=a["x"].to(torch.int32)), TypeError, "x must be float32"),
    (lambda a: dict(a, x=a["x"].double()), TypeError, "x must be float32"),
    (lambda a: dict(a, x=a["x"][:0]), ValueError, "empty batch"),
    (lambda a: dict(a, x=a["x"].numpy()), TypeError, "x must be a torch.Tensor"),
    (lambda a: dict(a, weight=a["weight"][0]), ValueError, "weight must be a 4-D"),
    (lambda a: dict(a, weight=a["weight"].to(torch.int64)), TypeError, "weight must be floating"),
    (lambda a: dict(a, bias=a["bias"][:3]), ValueError, "bias must have shape"),
    (lambda a: dict(a, activation="swish"), ValueError, "activation must be one of"),
    (lambda a: dict(a, stride=0), ValueError, "stride must be >= 1"),
    (lambda a: dict(a, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda a: dict(a, padding=-1), ValueError, "padding must be >= 0"),
    (lambda a: dict(a, padding=(1, 2, 3)), TypeError, "padding must be an int or a pair"),
    (lambda a: dict(a, padding=0, dilation=6), ValueError, "too small"),
    (lambda a: dict(a, weight=a["weight"][:, :, :2, :2]), ValueError, "padding='same' needs an odd kernel"),
    (lambda a: dict(a, out=torch.empty(1, 16, 8, 8)), ValueError, "out must be"),
    (lambda a: dict(a, groups=3), ValueError, "groups must be a positive int dividing"),
    (lambda a: dict(a, groups=2), ValueError, "x has 8 channels, the weights expect 16"),
])
def test_bad_input_is_a_clear_error(change, error, match, backend):
    x, w, b = _args()
    kwargs = change(dict(x=x, weight=w, bias=b, backend=backend))
    with pytest.raises(error, match=match):
        atrous_conv(**kwargs)


def test_bad_backend_is_a_clear_error():
    x, w, b = _args()
    with pytest.raises(ValueError, match="backend must be one of"):
        atrous_conv(x, w, b, backend="cuda")


@pytest.mark.parametrize("dtype, arch, precision, dot", [
    (torch.float16, 80, "ieee", "mma"),    # fp16 operands: tensor cores whatever the flag says
    (torch.float32, 80, "tf32", "mma"),    # cudnn.allow_tf32 set (torch's default): TF32 tensor cores
    (torch.float32, 90, "ieee", "fma"),    # allow_tf32 off: exact fp32 FMAs
    (torch.float32, 90, "tf32", "mma"),    # wgmma on Hopper
    (torch.bfloat16, 87, "ieee", "mma"),   # Jetson Orin
], ids=["fp16-sm80", "fp32-tf32-sm80", "fp32-ieee-sm90", "fp32-tf32-sm90", "bf16-sm87"])
def test_kernel_compiles_for_a_real_gpu(dtype, arch, precision, dot):
    """Same source and the shipped tile configuration, lowered through ptxas (no GPU needed)."""
    kernel = "fastseg.ops.atrous_conv.triton_kernel:_atrous_conv_kernel"
    assert compile_shipped_config(kernel, dtype, arch, precision, HAS_BIAS=1, ACT=activations.code("hardswish")) == dot


@pytest.mark.interpreter  # launches the Triton kernel on CPU tensors
@pytest.mark.parametrize("allow_tf32, expected", [(True, "tf32"), (False, "ieee")])
def test_fp32_precision_follows_cudnn_allow_tf32(allow_tf32, expected, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow_tf32)
    assert precision(torch.float32) == expected
    assert precision(torch.float16) == "ieee" and precision(torch.bfloat16) == "ieee"  # ignored by tl.dot there
    launches = record_launches(monkeypatch, run=False)
    x, w, b = _args()
    atrous_conv(x, w, b, backend="triton")
    assert [meta["PRECISION"] for _, _, meta in launches] == [expected]


@pytest.mark.interpreter  # runs the Triton kernel on CPU tensors
def test_packed_weights_follow_in_place_changes():
    """The triton backend caches packed weights on the weight tensor; modifying it in place repacks."""
    x, weight, bias, bn, geometry = build(CASES[0], torch.float32)
    w, b = fold_batchnorm(weight, bias, bn)
    first = atrous_conv(x, w, b, backend="triton", **geometry)
    assert_close(first, reference(x, w, b, **geometry), torch.float32)
    w.mul_(-1)
    assert_close(atrous_conv(x, w, b, backend="triton", **geometry), reference(x, w, b, **geometry), torch.float32)
