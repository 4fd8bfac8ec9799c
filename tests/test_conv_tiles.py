"""The convolution kernels' GPU tile configurations (fastseg/ops/atrous_conv/tiles.py): the rule that
picks one by shape, each configuration executed under the interpreter against F.conv2d over many
shapes (odd sizes, dilations 1 to 18, batches, layouts, dtypes), each compiled for sm_80 / sm_87 /
sm_90, and the kernel forms of weights and biases never stale."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastseg.ops import _launch
from fastseg.ops import activation as activations
from fastseg.ops.aspp import AsppParams, aspp
from fastseg.ops.aspp import reference as aspp_reference
from fastseg.ops.atrous_conv import atrous_conv, tiles
from fastseg.ops.atrous_conv.triton_kernel import atrous_conv as conv_launch

from _triton import compile_shipped_config, record_launches

TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}  # ~2 ulp of the output dtype
SMEM_LIMIT = 99 * 1024  # bytes of shared memory the smallest target (sm_87 / sm_80 minus headroom) gives


def assert_close(actual, expected, dtype):
    scale = expected.abs().max().item() + 1e-6
    torch.testing.assert_close(actual.double(), expected.double(), rtol=TOL[dtype], atol=TOL[dtype] * scale)


# ---- the rule -----------------------------------------------------------------------------------

@pytest.mark.parametrize("M, Cout, expected", [
    (1 * 128 * 256, 256, "wide"),        # ResNet stage at 1024x2048 / 8
    (1 * 64 * 128, 512, "wide"),
    (1 * 64 * 128, 256, "wide"),         # 128 programs: a wave on an H100 (132 SMs)
    (1 * 48 * 64, 256, "small_map"),     # 48 programs: most SMs would idle
    (1 * 128 * 256, 48, "narrow"),       # DeepLabV3+ low-level projection width
    (2 * 45 * 60, 21, "small_map"),      # 360x480 / 8 at batch 2: 43 pixel tiles
    (4 * 90 * 120, 21, "narrow"),        # 720x960 / 8 at batch 4, a classifier-sized Cout
    (1 * 33 * 33, 256, "small_map"),     # ASPP at output stride 16 on 513x513: 9 pixel tiles
    (1 * 23 * 30, 64, "small_map"),
])
def test_rule_picks_by_shape(M, Cout, expected):
    assert tiles.gpu_tile_name(M, Cout) == expected
    shipped = tiles.launch_config(torch.float16, M, 256, Cout, "gpu")
    assert shipped == tiles.gpu_tiles(expected, torch.float16, 256, Cout)


@pytest.mark.parametrize("name", tiles.GPU_TILES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cin, cout", [(3, 5), (24, 40), (256, 256), (2048, 21)])
def test_every_configuration_fits_tensor_cores_and_shared_memory(name, dtype, cin, cout):
    cfg = tiles.gpu_tiles(name, dtype, cin, cout)
    assert min(cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]) >= 16  # tl.dot's smallest tile on a GPU
    size = dtype.itemsize
    per_stage = (cfg["BLOCK_M"] * cfg["BLOCK_K"] + cfg["BLOCK_K"] * cfg["BLOCK_N"]) * size
    assert per_stage * cfg["num_stages"] <= SMEM_LIMIT
    assert cfg["BLOCK_K"] * size <= (256 if name == "small_map" else 128)  # bytes of channels per K step


def test_forced_configuration_is_local_and_checked():
    with tiles.forced("small_map"):
        assert tiles.gpu_tile_name(1 << 20, 256) == "small_map"
    assert tiles.gpu_tile_name(1 << 20, 256) == "wide"
    with pytest.raises(ValueError, match="one of"):
        with tiles.forced("huge"):
            pass


# ---- each configuration against F.conv2d under the interpreter ----------------------------------

# (batch, cin, cout, h, w, dilation, stride, layout, dtype, bias): odd sizes, every ASPP / ResNet dilation
SHAPES = [
    (2, 24, 40, 13, 17, 1, 1, "nchw", torch.float32, True),
    (1, 16, 24, 11, 9, 2, 1, "channels_last", torch.float16, True),
    (3, 20, 16, 9, 7, 6, 1, "nchw", torch.float16, False),
    (2, 40, 36, 15, 13, 12, 1, "channels_last", torch.float32, True),
    (2, 16, 130, 7, 11, 18, 1, "nchw", torch.float16, True),        # Cout past one wide tile
    (1, 70, 24, 9, 9, 2, 2, "channels_last", torch.float32, True),  # Cin not a multiple of BLOCK_K, stride 2
    (2, 64, 32, 6, 5, 6, 1, "channels_last", torch.bfloat16, True),
]


def shape_id(s):
    b, cin, cout, h, w, d, st, layout, dtype, bias = s
    return f"n{b}-{cin}to{cout}-{h}x{w}-d{d}-s{st}-{layout}-{str(dtype)[6:]}{'' if bias else '-nobias'}"


@pytest.mark.interpreter
@pytest.mark.parametrize("name", tiles.GPU_TILES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_each_gpu_configuration_equals_conv2d(shape, name, monkeypatch):
    b, cin, cout, h, w, d, st, layout, dtype, has_bias = shape
    gen = torch.Generator().manual_seed(cin * cout + d)
    x = torch.randn(b, cin, h, w, generator=gen).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(cout, cin, 3, 3, generator=gen) / (cin * 9) ** 0.5).to(dtype)
    bias = torch.randn(cout, generator=gen) if has_bias else None
    expected = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(),
                        stride=st, padding=d, dilation=d).relu()
    launches = record_launches(monkeypatch)
    with _launch.gpu_tiles(), tiles.forced(name):
        y = atrous_conv(x, weight, bias, stride=st, dilation=d, backend="triton")
    assert_close(y, expected, dtype)
    [(_, _, meta)] = launches
    assert {k: meta[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")} == {
        k: tiles.gpu_tiles(name, dtype, cin, cout)[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}


@pytest.mark.interpreter
@pytest.mark.parametrize("k, taps_as_bits", [(7, True), (9, False)])
def test_large_kernels_with_and_without_tap_bits(k, taps_as_bits, monkeypatch):
    """Up to 64 taps the kernel finds each row's in-image taps once per tile (TAP_BITS); a 9x9 kernel
    (81 taps) checks them at every step instead. Both equal F.conv2d, padding taps included."""
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(2, 16, 9, 12, generator=gen)
    weight = torch.randn(24, 16, k, k, generator=gen) / (16 * k * k) ** 0.5
    launches = record_launches(monkeypatch)
    with _launch.gpu_tiles():
        y = atrous_conv(x, weight, None, padding=(k // 2 + 1, k // 2 - 1), dilation=(2, 1), activation=None,
                        backend="triton")
    expected = F.conv2d(x.double(), weight.double(), padding=(k // 2 + 1, k // 2 - 1), dilation=(2, 1))
    assert_close(y, expected, torch.float32)
    assert [meta["TAP_BITS"] for _, _, meta in launches] == [taps_as_bits]


@pytest.mark.interpreter
@pytest.mark.parametrize("name", tiles.GPU_TILES)
def test_each_gpu_configuration_runs_aspp(name):
    gen = torch.Generator().manual_seed(7)
    cin, cout = 24, 16
    params = AsppParams(
        [torch.randn(cout, cin, 1, 1, generator=gen) / 5] + [torch.randn(cout, cin, 3, 3, generator=gen) / 15] * 3,
        [torch.randn(cout, generator=gen) for _ in range(4)], (1, 6, 12, 18),
        torch.randn(cout, cin, generator=gen) / 5, torch.randn(cout, generator=gen),
        torch.randn(cout, 4 * cout, 1, 1, generator=gen) / 8, torch.randn(cout, cout, generator=gen) / 4,
        torch.randn(cout, generator=gen))
    x = torch.randn(2, cin, 11, 9, generator=gen).half()
    with _launch.gpu_tiles(), tiles.forced(name):
        y = aspp(x, params.to(dtype=torch.float16), backend="triton")
    assert_close(y, aspp_reference(x.double(), params.to(dtype=torch.float64)), torch.float16)


# ---- compiled for real GPUs -----------------------------------------------------------------------

@pytest.mark.parametrize("name, dtype, arch, precision, dot", [
    ("wide", torch.float16, 90, "ieee", "mma"),
    ("narrow", torch.float16, 80, "ieee", "mma"),
    ("small_map", torch.float16, 87, "ieee", "mma"),
    ("wide", torch.bfloat16, 87, "ieee", "mma"),
    ("narrow", torch.float32, 90, "tf32", "mma"),
    ("small_map", torch.float32, 80, "ieee", "fma"),
])
def test_each_configuration_compiles_for_a_real_gpu(name, dtype, arch, precision, dot):
    kernel = "fastseg.ops.atrous_conv.triton_kernel:_atrous_conv_kernel"
    assert compile_shipped_config(kernel, dtype, arch, precision, tiles=name, HAS_BIAS=1,
                                  ACT=activations.code("relu")) == dot


# ---- the kernel forms of weights and biases are never stale ----------------------------------------

@pytest.mark.interpreter
@pytest.mark.parametrize("change", ["weight in place", "weight replaced", "bias in place", "bias replaced"])
def test_prepared_operands_follow_every_change(change):
    gen = torch.Generator().manual_seed(8)
    conv = torch.nn.Conv2d(16, 24, 3, padding=2, dilation=2)
    x = torch.randn(2, 16, 7, 9, generator=gen)
    w, b = conv.weight, conv.bias

    def check():
        out = torch.empty(2, 24, 7, 9).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            y = conv_launch(x, w, b, out, (1, 1), (2, 2), (2, 2), None)
            torch.testing.assert_close(y, conv(x), rtol=1e-5, atol=1e-5)

    check()
    with torch.no_grad():
        if change == "weight in place":
            w.mul_(-2)
        elif change == "weight replaced":
            w.data = torch.randn(w.shape, generator=gen)
        elif change == "bias in place":
            b.add_(3)
        else:
            b.data = torch.randn(b.shape, generator=gen)
    check()


@pytest.mark.interpreter
def test_aspp_branch_tables_follow_in_place_changes():
    gen = torch.Generator().manual_seed(9)
    cin, cout = 16, 16
    params = AsppParams(
        [torch.randn(cout, cin, 1, 1, generator=gen) / 4, torch.randn(cout, cin, 3, 3, generator=gen) / 12],
        [torch.randn(cout, generator=gen) for _ in range(2)], (1, 6),
        torch.randn(cout, cin, generator=gen) / 4, torch.randn(cout, generator=gen),
        torch.randn(cout, 2 * cout, 1, 1, generator=gen) / 6, torch.randn(cout, cout, generator=gen) / 4,
        torch.randn(cout, generator=gen))
    x = torch.randn(1, cin, 9, 8, generator=gen)
    assert_close(aspp(x, params, backend="triton"), aspp(x, params, backend="reference"), torch.float32)
    params.branch_weights[1].mul_(-1)
    params.branch_biases[0].add_(1)
    assert_close(aspp(x, params, backend="triton"), aspp(x, params, backend="reference"), torch.float32)
