"""fastseg.ops.resize_normalize: the native conversion + antialiased resize + normalisation against
its reference (pixel format to RGB in torch, F.interpolate with antialias, then the normalisation)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastseg import _native
from fastseg.ops.resize_normalize import parse, reference, resize_normalize, to_rgb

from _images import float_output as output

MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])
SCALE, SHIFT = 1 / (255 * STD), MEAN / STD
# float rounding of a weighted sum of up to ~70 taps, on the normalised scale (1 level = 0.017)
ATOL = 2e-4

pytestmark = pytest.mark.skipif(not _native.available(), reason="fastseg._C is not built")


def frames(N, H, W, layout, seed=0):
    """uint8 RGB [N,3,H,W]: nchw, hwc (the permuted view of an [N,H,W,3] frame) or strided (a crop)."""
    g = torch.Generator().manual_seed(seed)
    if layout == "hwc":
        return torch.randint(0, 256, (N, H, W, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
    if layout == "strided":
        big = torch.randint(0, 256, (N, H + 3, W * 2 + 1, 3), dtype=torch.uint8, generator=g)
        return big[:, 2:2 + H, 1::2].permute(0, 3, 1, 2)
    return torch.randint(0, 256, (N, 3, H, W), dtype=torch.uint8, generator=g)


def smooth_frames(N, H, W, seed=0):
    """Frames with structure at several scales (noise alone hides weight errors in averages)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((N, 3, max(2, H // 16), max(2, W // 16)), generator=g) * 255
    x = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)
    x = x + torch.rand((N, 3, H, W), generator=g) * 40
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)



# (N, H, W) -> (h, w): shrinking by integer and odd ratios, enlarging, one axis only, the same size,
# 1-pixel images and outputs
CASES = [((1, 360, 480), (45, 60)), ((2, 37, 53), (11, 29)), ((1, 100, 75), (240, 180)),
         ((3, 17, 31), (17, 31)), ((1, 64, 64), (64, 21)), ((1, 9, 4), (3, 1)), ((1, 1, 1), (5, 4)),
         ((2, 123, 77), (1, 1)), ((1, 480, 640), (300, 400)), ((1, 2880, 3840), (360, 480))]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("src", ["hwc", "nchw", "strided"])
@pytest.mark.parametrize("dst", ["nchw", "channels_last", "strided"])
def test_native_equals_reference(case, src, dst):
    (N, H, W), size = case
    if H * W > 1e6 and (src, dst) != ("hwc", "channels_last"):
        pytest.skip("the large case once, in the Segmenter's layouts")
    x = frames(N, H, W, src, seed=H + W)
    out = output((N, 3, *size), dst)
    got = resize_normalize(x, size, SCALE, SHIFT, out=out)
    assert got is out
    torch.testing.assert_close(got, reference(x, size, SCALE, SHIFT, parse("rgb")), atol=ATOL, rtol=0)


def test_reference_is_torch_antialiased_interpolate():
    """The reference's resize is F.interpolate(antialias=True) on the float image, and a real
    4K-to-480x360 shrink through the native kernel agrees with it on structured content too."""
    x = smooth_frames(1, 2880, 3840)
    want = F.interpolate(x.float(), size=(360, 480), mode="bilinear", antialias=True, align_corners=False)
    got = resize_normalize(x, (360, 480), torch.ones(3), torch.zeros(3))
    torch.testing.assert_close(got, want, atol=5e-3, rtol=0)  # 0..255 scale


@pytest.mark.parametrize("own_threads", [False, True])
def test_threads_do_not_change_the_result(own_threads):
    x = frames(2, 1001, 1405, "hwc")  # enough source values for several threads on either pool
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = resize_normalize(x, (97, 131), SCALE, SHIFT)
        torch.set_num_threads(max(3, before))
        if own_threads:
            with _native.own_threads():
                many = resize_normalize(x, (97, 131), SCALE, SHIFT)
        else:
            many = resize_normalize(x, (97, 131), SCALE, SHIFT)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


def bgr(x):
    return x.flip(1).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


@pytest.mark.parametrize("size", [(37, 53), (74, 106), (20, 9)], ids=str)
def test_bgr_is_rgb_with_channels_swapped(size):
    x = frames(2, 74, 106, "hwc", seed=3)
    want = resize_normalize(x, size, SCALE, SHIFT)
    torch.testing.assert_close(resize_normalize(bgr(x), size, SCALE, SHIFT, pixel_format="bgr"), want,
                               atol=ATOL, rtol=0)


def nv12(N, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (N, H * 3 // 2, W), dtype=torch.uint8, generator=g)


def yuyv(N, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (N, H, W, 2), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", ["nv12", "yuyv", "nv12:bt709", "yuyv:full", "nv12:bt709:full"])
@pytest.mark.parametrize("case", [((1, 36, 48), (36, 48)), ((2, 70, 94), (23, 31)), ((1, 10, 8), (25, 20)),
                                  ((1, 2, 2), (1, 1))], ids=str)
def test_yuv_native_equals_reference(name, case):
    (N, H, W), size = case
    x = (nv12 if name.startswith("nv12") else yuyv)(N, H, W, seed=H * W)
    fmt = parse(name)
    torch.testing.assert_close(resize_normalize(x, size, SCALE, SHIFT, pixel_format=name),
                               reference(x, size, SCALE, SHIFT, fmt), atol=ATOL, rtol=0)


def bt601_limited_rgb(y, u, v):
    """The textbook BT.601 limited-range equations (ITU-R BT.601, 8-bit), one pixel, as floats."""
    y, u, v = y - 16.0, u - 128.0, v - 128.0
    r = 1.164383 * y + 1.596027 * v
    g = 1.164383 * y - 0.391762 * u - 0.812968 * v
    b = 1.164383 * y + 2.017232 * u
    return [min(max(c, 0.0), 255.0) for c in (r, g, b)]


def test_yuv_reference_against_the_textbook_equations():
    """NV12 and YUYV through the reference conversion equal BT.601's equations pixel by pixel, with
    each pixel's chroma taken from its own block (the reference is held to an independent one)."""
    H, W = 4, 6
    frame = nv12(1, H, W, seed=7)
    rgb = to_rgb(frame, parse("nv12"))
    packed = torch.empty((1, H, W, 2), dtype=torch.uint8)
    for y in range(H):
        for x in range(W):
            Y = float(frame[0, y, x])
            U, V = float(frame[0, H + y // 2, x // 2 * 2]), float(frame[0, H + y // 2, x // 2 * 2 + 1])
            want = bt601_limited_rgb(Y, U, V)
            assert rgb[0, :, y, x].tolist() == pytest.approx(want, abs=2e-3)
            packed[0, y, x] = torch.tensor([Y, U if x % 2 == 0 else V])
    torch.testing.assert_close(to_rgb(packed, parse("yuyv")), rgb)


def test_known_colours():
    """Limited-range black, white and pure red come out as 0, 255 and (255, 0, 0)."""
    frame = torch.tensor([[16, 235, 81, 81], [16, 235, 81, 81], [128, 128, 90, 240]], dtype=torch.uint8)[None]
    got = resize_normalize(frame, (2, 4), torch.ones(3), torch.zeros(3), pixel_format="nv12")
    assert got[0, :, 0, 0].tolist() == pytest.approx([0, 0, 0], abs=1e-3)
    assert got[0, :, 0, 1].tolist() == pytest.approx([255, 255, 255], abs=1e-3)
    assert got[0, :, 0, 2].tolist() == pytest.approx([255, 0, 0], abs=1.5)


def test_float_frames_equal_the_reference():
    x = frames(1, 20, 30, "nchw").float() / 255
    got = resize_normalize(x, (10, 15), SCALE * 255, SHIFT)
    torch.testing.assert_close(got, reference(x, (10, 15), SCALE * 255, SHIFT, parse("rgb")))
    with pytest.raises(ValueError, match="native kernel reads uint8"):
        resize_normalize(x, (10, 15), SCALE * 255, SHIFT, backend="native")


@pytest.mark.parametrize("bad, match", [
    (dict(images=torch.zeros((1, 4, 8, 8), dtype=torch.uint8)), r"rgb frames are \[N,3,H,W\]"),
    (dict(images=torch.zeros((1, 9, 7), dtype=torch.uint8), pixel_format="nv12"), "even width"),
    (dict(images=torch.zeros((1, 8, 8, 3), dtype=torch.uint8), pixel_format="yuyv"), r"\[N,H,W,2\]"),
    (dict(pixel_format="rgba"), "pixel_format: expected one of rgb, bgr, nv12, yuyv"),
    (dict(pixel_format="rgb:bt709"), "not an option of 'rgb'"),
    (dict(size=(0, 3)), "size: must be positive"),
    (dict(out=torch.empty((1, 3, 4, 4), dtype=torch.float16)), "out: expected float32"),
])
def test_bad_arguments(bad, match):
    args = dict(images=torch.zeros((1, 3, 8, 8), dtype=torch.uint8), size=(4, 4), scale=SCALE, shift=SHIFT)
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        resize_normalize(**args)
