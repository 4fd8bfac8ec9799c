"""The labels-only shortcut of the native upsample_argmax (cells whose four corners agree by a clear
margin are filled without interpolating): its labels equal the full computation's bit for bit (the
full one runs when the interpolated maximum is asked for too), on smooth maps where most cells are
decided at their corners, on near-ties, exact ties and large magnitudes."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from fastseg import _native
from fastseg.ops.upsample_argmax import _native_upsample_argmax, upsample_argmax

pytestmark = pytest.mark.skipif(not _native.available(), reason="fastseg._C is not built")


def full_labels(x, size, align_corners):
    """Labels of the path that interpolates every channel at every pixel (asked for the maximum too)."""
    N, _, _, _ = x.shape
    maxv = torch.empty((N, *size))
    return _native_upsample_argmax(x, size, align_corners, False, torch.int64, maxv)


def smooth_logits(N, C, h, w, seed, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn((N, C, max(2, h // 6), max(2, w // 6)), generator=g) * scale
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).contiguous()


CASES = [((1, 11, 45, 60), (360, 480)), ((2, 19, 16, 32), (128, 256)), ((1, 3, 7, 9), (61, 50)),
         ((1, 11, 360, 480), (2880, 3840)), ((3, 5, 10, 13), (31, 27)), ((1, 2, 1, 1), (9, 9)),
         ((1, 1, 4, 4), (16, 16))]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_shortcut_labels_equal_full_computation(case, align_corners, dtype):
    shape, size = case
    x = smooth_logits(*shape, seed=sum(shape)).to(dtype)
    got = upsample_argmax(x, size, align_corners=align_corners, out_dtype=torch.int64)
    assert torch.equal(got, full_labels(x, size, align_corners))


def test_near_ties_and_exact_ties():
    """Two classes within rounding of each other (relative 1e-7 .. 1e-3), exact ties, large values,
    in a band of rows (elsewhere the map is smooth, so the shortcut runs: it steps aside for maps
    whose neighbouring pixels mostly disagree)."""
    g = torch.Generator().manual_seed(0)
    base = smooth_logits(1, 4, 48, 48, seed=1) * 1000
    for rel in (0.0, 1e-7, 1e-5, 2.4e-4, 1e-3):
        x = base.clone()
        noise = torch.randn((6, 48), generator=g) * rel
        x[0, 2, 20:26] = x[0, 1, 20:26] * (1 + noise)  # classes 1 and 2 nearly tied
        x[0, 3, 20:26] = x[0, 1, 20:26]                # class 3 exactly tied with class 1 (first index wins)
        for size in ((48 * 8, 48 * 8), (201, 157)):
            assert torch.equal(upsample_argmax(x, size, out_dtype=torch.int64), full_labels(x, size, False))


def test_noise_like_logits():
    """Logits whose neighbours mostly disagree (the full path serves them): labels as ever."""
    x = torch.randn((2, 19, 16, 32), generator=torch.Generator().manual_seed(5))
    assert torch.equal(upsample_argmax(x, (128, 256), out_dtype=torch.int64), full_labels(x, (128, 256), False))


def test_non_finite_logits_take_the_full_path():
    x = smooth_logits(1, 5, 12, 12, seed=3)
    x[0, 2, 3, 4] = float("nan")
    x[0, 1, 8, 8] = float("inf")
    got = upsample_argmax(x, (96, 96), out_dtype=torch.int64)
    assert torch.equal(got, full_labels(x, (96, 96), False))


@pytest.mark.parametrize("own", [False, True], ids=["openmp", "own_pool"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "bfloat16", "strided"])
def test_shortcut_shared_out_among_threads(own, layout):
    """Two threads share the certain labels' rows and then the tiles (on OpenMP's pool and on
    fastseg's own), from contiguous float rows and from rows converted first."""
    x = smooth_logits(2, 13, 90, 120, seed=7)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "bfloat16":
        x = x.bfloat16()
    elif layout == "strided":
        x = smooth_logits(2, 13, 90, 240, seed=7)[:, :, :, ::2]
    size = (1080, 1440)
    want = full_labels(x, size, False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _native.own_threads() if own else contextlib.nullcontext():
            got = upsample_argmax(x, size, out_dtype=torch.int64)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, want)
