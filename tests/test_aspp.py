"""Fused ASPP (folded BN, pooling branch as a per-image projection bias) against torchvision's ASPP:
the rewrite's FusedASPP (what the Segmenter runs) and the op function on the parameters it builds.

The Triton path runs under the interpreter here (TRITON_INTERPRET=1 from conftest): small shapes.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from fastseg.models.rewrite import FusedASPP
from fastseg.ops import _launch
from fastseg.ops import activation as activations
from fastseg.ops import aspp as aspp_op
from fastseg.ops.aspp import AsppParams, aspp, reference
from fastseg.ops.atrous_conv.triton_kernel import launch_config

from _triton import compile_shipped_config, record_launches


def fuse(module: nn.Module) -> AsppParams:
    """The op's parameters exactly as the Segmenter's fused model hands them over."""
    return FusedASPP.from_torchvision(module).op_params(aspp_op)

TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}  # relative to max |output|


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics (so folding is really exercised), eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.weight[0].numel() ** 0.5)
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(c, generator=gen) - 0.5)
    return module.eval()


def assert_close(actual, expected, dtype):
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.double(), expected.double(), rtol=TOL[dtype], atol=TOL[dtype] * scale)


# (batch, cin, cout, h, w, rates, layout)
CASES = [
    (2, 20, 16, 13, 17, (6, 12, 18), "nchw"),
    (2, 20, 16, 13, 17, (12, 24, 36), "channels_last"),   # rates beyond the image: taps in padding
    (3, 16, 24, 9, 11, (6, 12, 18), "channels_last"),
    (1, 24, 16, 7, 5, (2, 3), "nchw"),                     # two rates, tiny odd map
]


def case_id(case):
    b, cin, cout, h, w, rates, layout = case
    return f"n{b}-{cin}to{cout}-{h}x{w}-r{'_'.join(map(str, rates))}-{layout}"


def build(case, dtype=torch.float32, seed=0):
    b, cin, cout, h, w, rates, layout = case
    module = randomised(ASPP(cin, rates, out_channels=cout), seed)
    x = torch.randn(b, cin, h, w, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return module, x


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_reference_equals_the_torchvision_module(case):
    module, x = build(case)
    with torch.no_grad():
        assert_close(reference(x, fuse(module)), module(x), torch.float32)


@pytest.mark.parametrize("backend", ["triton", "native", "reference"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_equals_torchvision(case, backend):
    module, x = build(case)
    with torch.no_grad():
        expected = module(x)
        y = aspp(x, fuse(module), backend=backend)
    assert y.shape == expected.shape and y.dtype == torch.float32
    assert_close(y, expected, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("backend", ["triton", "native"])
def test_half_precision(backend, dtype):
    module, x = build(CASES[2], dtype)
    with torch.no_grad():
        expected = module(x.float())
        y = aspp(x, fuse(module), backend=backend)
    assert y.dtype == dtype
    assert_close(y, expected, dtype)


@pytest.mark.interpreter  # runs the Triton kernels on CPU tensors
@pytest.mark.parametrize("case, dtype", [(CASES[0], torch.float32), (CASES[2], torch.bfloat16),
                                         (CASES[3], torch.float16)], ids=["fp32", "bf16", "fp16"])
def test_triton_gpu_tile_configuration(case, dtype, monkeypatch):
    """The tiles that ship for the GPU (launch_config's "gpu", not the interpreter's), executed here:
    the branch launch and the projection launch."""
    launches = record_launches(monkeypatch)
    module, x = build(case, dtype)
    with torch.no_grad():
        expected = module(x.float())
        with _launch.gpu_tiles():
            y = aspp(x, fuse(module), backend="triton")
    assert_close(y, expected, dtype)
    n, cin, h, w = x.shape
    cout = y.shape[1]
    branch_cfg = launch_config(dtype, n * h * w, cin, cout, "gpu")
    proj_cfg = launch_config(dtype, n * h * w, cout * (len(case[5]) + 1), cout, "gpu")
    assert [{k: meta[k] for k in branch_cfg} for _, _, meta in launches] == [branch_cfg, proj_cfg]


@pytest.mark.interpreter  # runs the Triton kernel on CPU tensors
def test_one_launch_fills_every_branch_slice():
    """The branch kernel alone: slice i of its concatenated output is branch i's conv + BN + ReLU."""
    from fastseg.ops.aspp.triton_kernel import aspp_branches

    module, x = build(CASES[0])
    params = fuse(module)
    n, _, h, w = x.shape
    cout = params.out_channels
    out = torch.full((n, 4 * cout, h, w), float("nan")).contiguous(memory_format=torch.channels_last)
    aspp_branches(x, params, out)
    with torch.no_grad():
        for i, branch in enumerate(module.convs[:-1]):
            assert_close(out[:, i * cout:(i + 1) * cout], branch(x), torch.float32)


def test_pooling_branch_is_a_per_image_bias():
    """Images with different content get different projection biases, equal to the unfused pooling path."""
    module, x = build(CASES[2])
    params = fuse(module)
    with torch.no_grad():
        pool = module.convs[-1](x)[:, :, 0, 0]                      # [N, Cout] after BN + ReLU
        proj = module.project[0].weight[:, -params.out_channels:, 0, 0]
        bn = module.project[1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        expected = (pool @ proj.T - bn.running_mean) * scale + bn.bias
        bias = aspp_op.projection_bias(x, params)
    assert bias.shape == (x.shape[0], params.out_channels)
    assert not torch.allclose(bias[0], bias[1])
    torch.testing.assert_close(bias, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.interpreter  # runs the Triton kernel on CPU tensors
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fused_module_equals_torchvision_and_moves_dtype(layout):
    module, x = build(CASES[3])
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    fused = FusedASPP.from_torchvision(module)
    with torch.no_grad():
        expected = module(x)
        assert_close(fused(x), expected, torch.float32)
        fused.backend = "triton"
        assert_close(fused(x), expected, torch.float32)
        fused = fused.to(torch.bfloat16)
        assert fused.op_params(aspp_op).proj_weight.dtype == torch.bfloat16
        assert_close(fused(x.bfloat16()), expected, torch.bfloat16)


@pytest.mark.parametrize("backend", ["triton", "native"])
def test_bad_input_is_a_clear_error(backend):
    module, x = build(CASES[0])
    params = fuse(module)
    with pytest.raises(ValueError, match="x has 19 channels, the weights expect 20"):
        aspp(x[:, :19], params, backend=backend)
    with pytest.raises(ValueError, match="x must be 4-D"):
        aspp(x[0], params, backend=backend)
    with pytest.raises(TypeError, match="x must be float32"):
        aspp(x.to(torch.int32), params, backend=backend)
    with pytest.raises(ValueError, match="empty batch"):
        aspp(x[:0], params, backend=backend)
    with pytest.raises(TypeError, match="params must be AsppParams"):
        aspp(x, module, backend=backend)


def test_params_round_trip_devices_and_dtypes():
    params = fuse(build(CASES[0])[0])
    half = params.to(dtype=torch.float16)
    assert isinstance(half, AsppParams) and half.dilations == params.dilations
    assert all(w.dtype == torch.float16 for w in half.branch_weights)


def test_branch_kernel_compiles_for_a_real_gpu():
    """Same source and the shipped tile configuration, lowered for sm_90 through ptxas (no GPU needed):
    bf16 operands use tensor cores, and the per-branch kernel size / dilation loaded from tables are
    valid dynamic loop bounds."""
    dot = compile_shipped_config("fastseg.ops.aspp.triton_kernel:_aspp_branches_kernel", torch.bfloat16, 90,
                                 "ieee", ACT=activations.code("relu"))
    assert dot == "mma"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_pooling_makes_no_float32_copy_of_the_input(dtype):
    """The pooled branch averages in fp32 without converting the whole (2048-channel) map first: no
    op inside projection_bias produces a float32 tensor of the input's size."""
    from torch.overrides import TorchFunctionMode

    module, x = build(CASES[0], dtype)
    params = fuse(module)
    made = []

    class Outputs(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                made.append((getattr(func, "__name__", str(func)), out.dtype, out.numel()))
            return out

    with torch.no_grad(), Outputs():
        bias = aspp_op.projection_bias(x, params)
    copies = [m for m in made if m[1] == torch.float32 and m[2] == x.numel()]
    assert not copies, copies
    expected = aspp_op.projection_bias(x.double(), params.to(dtype=torch.float64))
    torch.testing.assert_close(bias.double(), expected.double(), rtol=1e-5, atol=1e-5)
