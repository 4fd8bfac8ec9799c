"""upsample_argmax's GPU kernels share taps among runs of output pixels (ops/upsample_argmax/cells.py):
every output pixel belongs to exactly one run, and the labels stay the reference's, over scale
factors 1..8 and non-integer ones, downscaling, odd sizes, batches, both layouts and every dtype.
The Triton kernel runs under the interpreter with the GPU's tile configuration; the CUDA kernel's
per-thread code runs on the CPU (fastseg._C.upsample_argmax_threadwise)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_upsample_argmax import DTYPES, assert_labels, interpolated, make_logits

import fastseg
from fastseg import _native
from fastseg.ops import _launch
from fastseg.ops.upsample_argmax import cuda_kernel, native_max_logit
from fastseg.ops.upsample_argmax.cells import axis_plan, cell_keys
from fastseg.ops.upsample_argmax.triton_kernel import upsample_argmax_triton

# (N, C, h, w, H, W): integer scales 1..8, non-integer ones, downscale, mixed axes, one-pixel inputs
SHAPES = [
    (2, 3, 4, 5, 8, 10),      # 2x
    (1, 4, 3, 5, 9, 15),      # 3x
    (1, 3, 4, 3, 16, 12),     # 4x
    (2, 2, 3, 3, 15, 15),     # 5x
    (1, 5, 3, 2, 21, 14),     # 7x
    (1, 19, 4, 6, 32, 48),    # 8x, 19 classes
    (1, 3, 7, 9, 17, 23),     # 2.4x, 2.6x
    (2, 4, 5, 7, 13, 11),     # 2.6x, 1.6x
    (1, 3, 9, 13, 7, 5),      # downscale
    (1, 3, 6, 20, 30, 9),     # up in y, down in x
    (1, 2, 1, 1, 9, 7),       # one source pixel
    (1, 3, 5, 4, 5, 4),       # identity
    (1, 2, 3, 2, 90, 70),     # 30x, 35x: cells of many runs
]


def test_cells_partition_every_axis():
    """cell_keys is monotone and clipped to [-1, in - 1]; the plan's runs hold the largest cell."""
    for in_size in (1, 2, 3, 7, 16, 128):
        for out_size in (1, 2, 5, 9, 64, 1000, 1024):
            for align in (False, True):
                keys = cell_keys(in_size, out_size, align)
                assert (np.diff(keys) >= 0).all() and keys.min() >= -1 and keys.max() <= in_size - 1
                plan = axis_plan(in_size, out_size, align, 4)
                if plan.cell:
                    assert plan.m * plan.parts >= np.bincount(keys + 1).max() and plan.m <= 4
                else:
                    assert plan.units == out_size and plan.m == 1


@pytest.mark.interpreter
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_triton_gpu_runs_cover_every_pixel_and_match(shape, align_corners, dtype, layout):
    x = make_logits(shape[:4], dtype, layout, seed=sum(shape))
    size = shape[4:]
    labels = torch.full((shape[0], *size), 200, dtype=torch.uint8)  # 200: no class here
    with _launch.gpu_tiles():
        _, conf = upsample_argmax_triton(x, size, align_corners, True, torch.uint8, labels=labels)
    assert (labels != 200).all(), "pixels no run wrote"
    # every differing label is a near-tie (the gap rule); on these few hundred pixels one tie is
    # 0.3 %, and fp16 / bf16 logits tie often, so the fraction allowed is that of a handful
    assert_labels(labels, x, size, align_corners, exact=False, near_ties=0.02)
    z = interpolated(x, size, align_corners)
    torch.testing.assert_close(conf, torch.softmax(z, 1).amax(1), atol=2e-6, rtol=2e-6)


@pytest.mark.interpreter
def test_triton_writes_into_out():
    x = make_logits((1, 3, 4, 5), seed=3)
    out = torch.full((1, 32, 40), 9, dtype=torch.uint8)
    got = fastseg.ops.upsample_argmax(x, (32, 40), backend="triton", out=out)
    want = fastseg.ops.upsample_argmax(x, (32, 40), backend="reference")
    assert got is out and torch.equal(out, want.to(torch.uint8))


@pytest.mark.skipif(not _native.available(), reason="fastseg._C is not built")
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_runs_equal_the_cpu_kernel_bit_for_bit(shape, align_corners, dtype):
    x = make_logits(shape[:4], dtype, "channels_last", seed=sum(shape) + 1)
    size = shape[4:]
    labels, conf, maxv = cuda_kernel.threadwise(x, size, align_corners, True, torch.int16)
    torch.testing.assert_close(maxv, native_max_logit(x, size, align_corners), atol=0, rtol=0)
    want, want_conf = fastseg.ops.upsample_argmax(x, size, align_corners=align_corners, return_confidence=True,
                                                  out_dtype=torch.int16, backend="native")
    assert torch.equal(labels, want)
    torch.testing.assert_close(conf, want_conf, atol=2e-6, rtol=2e-6)


@pytest.mark.skipif(not _native.available(), reason="fastseg._C is not built")
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape", [(1, 2, 7, 5, 1000, 999), (2, 3, 64, 128, 512, 1024), (1, 2, 1, 300, 77, 2401)],
                         ids=str)
def test_cuda_runs_of_large_outputs(shape, align_corners):
    """Large ratios and large outputs: the kernel's cell boundaries (estimate + correction) hold."""
    x = make_logits(shape[:4], torch.float32, "nchw", seed=5)
    size = shape[4:]
    _, _, maxv = cuda_kernel.threadwise(x, size, align_corners)
    torch.testing.assert_close(maxv, native_max_logit(x, size, align_corners), atol=0, rtol=0)


@pytest.mark.interpreter
@pytest.mark.parametrize("shape, align_corners", [((1, 2, 7, 5, 1000, 999), False), ((1, 2, 1, 300, 77, 2401), True)],
                         ids=str)
def test_triton_runs_of_large_outputs(shape, align_corners):
    x = make_logits(shape[:4], torch.float32, "nchw", seed=5)
    size = shape[4:]
    labels = torch.full((1, *size), 200, dtype=torch.uint8)
    upsample_argmax_triton(x, size, align_corners, False, torch.uint8, labels=labels)
    assert (labels != 200).all(), "pixels no run wrote"
    assert_labels(labels, x, size, align_corners, exact=False)
