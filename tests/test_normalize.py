"""fastseg.ops.normalize: the native uint8 -> float32 normalisation against its reference."""
from __future__ import annotations

import pytest
import torch

from fastseg import _native
from fastseg.ops.normalize import normalize_image, reference

from _images import float_output as output

MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])


def params(C, seed=0):
    if C == 3:
        return 1 / (255 * STD), MEAN / STD
    g = torch.Generator().manual_seed(seed)
    return torch.rand(C, generator=g) * 0.1, torch.randn(C, generator=g)


def images(N, C, H, W, layout, seed=0):
    """uint8 [N,C,H,W]: nchw, hwc (the permuted view of an [N,H,W,C] frame), or strided (a crop)."""
    g = torch.Generator().manual_seed(seed)
    if layout == "hwc":
        return torch.randint(0, 256, (N, H, W, C), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
    if layout == "strided":
        big = torch.randint(0, 256, (N, H + 3, W * 2 + 1, C), dtype=torch.uint8, generator=g)
        return big[:, 2:2 + H, 1::2].permute(0, 3, 1, 2)
    return torch.randint(0, 256, (N, C, H, W), dtype=torch.uint8, generator=g)




SHAPES = [(1, 3, 1, 1), (2, 3, 7, 13), (1, 3, 37, 65), (3, 3, 5, 200), (1, 1, 9, 11), (2, 4, 6, 67),
          (1, 5, 3, 3), (1, 3, 512, 1024)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("src", ["hwc", "nchw", "strided"])
@pytest.mark.parametrize("dst", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("own_threads", [False, True])
def test_native_equals_reference_bit_for_bit(shape, src, dst, own_threads):
    x = images(*shape, src, seed=sum(shape))
    scale, shift = params(shape[1], seed=shape[1])
    out = output(x.shape, dst)
    if own_threads:
        with _native.own_threads():
            got = normalize_image(x, scale, shift, out=out)
    else:
        got = normalize_image(x, scale, shift, out=out)
    assert got is out
    assert torch.equal(got, reference(x, scale, shift))


def test_threads_do_not_change_the_result():
    x = images(2, 3, 600, 900, "hwc", seed=3)  # > 1 M pixels: several threads on both pools
    scale, shift = params(3)
    want = reference(x, scale, shift)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert torch.equal(normalize_image(x, scale, shift), want)
            with _native.own_threads():
                assert torch.equal(normalize_image(x, scale, shift), want)
    finally:
        torch.set_num_threads(before)


def test_reference_backend_and_empty_batch():
    x = images(2, 3, 5, 6, "hwc")
    scale, shift = params(3)
    assert torch.equal(normalize_image(x, scale, shift, backend="reference"), normalize_image(x, scale, shift))
    empty = torch.zeros((0, 3, 4, 4), dtype=torch.uint8)
    assert normalize_image(empty, scale, shift).shape == (0, 3, 4, 4)
    wide = images(1, 65, 3, 4, "nchw")  # beyond the native kernel's 64 channels: the reference serves
    s65, t65 = params(65)
    assert torch.equal(normalize_image(wide, s65, t65), reference(wide, s65, t65))
    with pytest.raises(ValueError, match="64 channels"):
        normalize_image(wide, s65, t65, backend="native")


@pytest.mark.parametrize("bad, match", [
    (lambda x, s, t: normalize_image(x.float(), s, t), "uint8"),
    (lambda x, s, t: normalize_image(x[0], s, t), "uint8"),
    (lambda x, s, t: normalize_image(x, s[:2], t), "3 values"),
    (lambda x, s, t: normalize_image(x, s, t, out=torch.empty(1, 3, 4, 4)), "out"),
    (lambda x, s, t: normalize_image(x, s, t, out=torch.empty(x.shape, dtype=torch.float64)), "out"),
    (lambda x, s, t: normalize_image(x, s, t, backend="triton"), "backend"),
])
def test_bad_arguments(bad, match):
    scale, shift = params(3)
    with pytest.raises((TypeError, ValueError), match=match):
        bad(images(1, 3, 5, 6, "hwc"), scale, shift)


def test_buffers_carry_their_dtype_to_the_kernel():
    """The dtype travels inside the buffer descriptor (a fastseg._C.DType): the kernel checks it."""
    ext = _native.ext()
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="images: expected uint8, got float32"):
        ext.normalize_image(_native.buf(x), _native.buf(x), [1.0] * 3, [0.0] * 3, 1, False)
    assert _native.buf(x)[3] == ext.DType.float32
    with pytest.raises(TypeError, match="no torch.float64 buffers"):
        _native.buf(x.double())
