"""fastseg.ops.upsample_argmax: native and Triton kernels against the PyTorch reference."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastseg
from fastseg.ops import _launch
from fastseg.ops.upsample_argmax import native_max_logit
from fastseg.ops.upsample_argmax.triton_kernel import tile_config

from _triton import record_launches, triton_interpreted

ua = fastseg.ops.upsample_argmax

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (N, C, h, w, H, W): up, down, non-integer ratios, odd sizes, identity, 1-pixel edges, batch > 1
SHAPES = [
    (1, 1, 1, 1, 5, 7),
    (2, 3, 1, 5, 4, 9),
    (2, 5, 13, 17, 100, 90),
    (3, 4, 9, 11, 9, 11),
    (2, 6, 31, 29, 17, 13),
    (1, 7, 40, 30, 7, 5),
    (1, 2, 5, 5, 1, 1),
    (1, 21, 12, 10, 37, 113),
    (2, 19, 8, 16, 64, 128),
    (1, 3, 6, 300, 5, 41),
]
# smaller spread for the Triton interpreter
TRITON_SHAPES = [
    (1, 1, 1, 1, 5, 7),
    (2, 5, 13, 17, 40, 30),
    (3, 4, 9, 11, 9, 11),
    (2, 6, 31, 29, 17, 13),
    (1, 2, 5, 5, 1, 1),
    (1, 19, 7, 10, 29, 61),
]


def make_logits(shape, dtype=torch.float32, layout="nchw", seed=0):
    N, C, h, w = shape
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(N, C, h, w, generator=g)).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # a non-contiguous view: every other channel and column, offset rows
        big = torch.zeros(N, 2 * C, h + 1, 2 * w, dtype=dtype)
        big[:, ::2, 1:, ::2] = x
        x = big[:, ::2, 1:, ::2]
        assert x.numel() == 1 or not x.is_contiguous()
    return x


def interpolated(x, size, align_corners):
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=align_corners)


def assert_labels(labels, x, size, align_corners, exact, near_ties=1e-3):
    """Labels equal the reference's, except (when not `exact`) at genuine near-ties: where the
    reference's interpolated value of our label is within float rounding of the maximum, on at most
    a fraction `near_ties` of the pixels."""
    labels = torch.as_tensor(labels).long()
    z = interpolated(x, size, align_corners)
    ref = z.argmax(1)
    assert labels.shape == ref.shape
    wrong = labels != ref
    if exact:
        assert not wrong.any(), f"{int(wrong.sum())} of {wrong.numel()} labels differ"
        return
    top = z.amax(1)
    ours = z.gather(1, labels.clamp(0, z.shape[1] - 1).unsqueeze(1)).squeeze(1)
    gap = (top - ours)[wrong]
    tol = 1e-5 * (1 + top[wrong].abs())
    assert (labels >= 0).all() and (labels < z.shape[1]).all()
    assert (gap <= tol).all(), f"{int((gap > tol).sum())} labels differ beyond a near-tie"
    assert wrong.float().mean() < near_ties


def torch_uses_generic_kernel(x, size):
    """Whether F.interpolate uses torch's generic (separable-order) CPU kernel, which the native
    kernel reproduces bit for bit; else torch rounds differently (channels_last kernel)."""
    return size[0] + size[1] > 128


# ---- native ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_native_matches_reference(shape, align_corners, dtype, layout):
    x = make_logits(shape[:4], dtype, layout, seed=sum(shape))
    size = shape[4:]
    labels = ua(x, size, align_corners=align_corners, backend="native")
    assert labels.dtype == torch.uint8 and labels.shape == (shape[0], *size)
    # The native kernel does not depend on the layout: against the NCHW reference it is exact
    # wherever torch itself uses its generic kernel.
    exact = torch_uses_generic_kernel(x, size)
    assert_labels(labels, x.contiguous(), size, align_corners, exact=exact)
    assert_labels(labels, x, size, align_corners, exact=False)


@pytest.mark.parametrize("shape", SHAPES[2:6], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
def test_native_confidence(shape, dtype, align_corners):
    x = make_logits(shape[:4], dtype, "channels_last", seed=1)
    size = shape[4:]
    labels, conf = ua(x, size, align_corners=align_corners, return_confidence=True, backend="native")
    z = interpolated(x, size, align_corners)
    assert conf.dtype == torch.float32 and conf.shape == labels.shape
    torch.testing.assert_close(conf, torch.softmax(z, 1).amax(1), atol=2e-6, rtol=2e-6)
    assert torch.equal(labels, ua(x, size, align_corners=align_corners, backend="native"))


def test_native_benchmark_shape_is_bit_exact():
    """The benchmark's case (19 classes, 128x256 -> 1024x2048 would be slow here: 1/4 of it)."""
    x = make_logits((1, 19, 64, 128), seed=3)
    labels, conf = ua(x, (512, 1024), return_confidence=True)
    z = interpolated(x, (512, 1024), False)
    assert torch.equal(labels.long(), z.argmax(1))
    torch.testing.assert_close(conf, torch.softmax(z, 1).amax(1), atol=2e-6, rtol=2e-6)


EXACT_SHAPES = [  # H + W > 128, where torch uses the kernel whose rounding the native one copies
    (2, 5, 13, 17, 100, 90),
    (1, 21, 12, 10, 37, 113),
    (1, 4, 7, 9, 131, 7),
    (2, 3, 1, 5, 45, 200),
    (1, 6, 50, 70, 97, 41),
]


@pytest.mark.parametrize("shape", EXACT_SHAPES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_native_values_bit_exact(shape, align_corners, dtype, layout):
    """Not only the labels: the interpolated maximum itself equals F.interpolate's bit for bit,
    so any deviation from torch's float32 taps or operation order fails here."""
    x = make_logits(shape[:4], dtype, layout, seed=sum(shape) + 2)
    size = shape[4:]
    got = native_max_logit(x, size, align_corners)
    want = interpolated(x.contiguous(), size, align_corners).amax(1)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["native", "triton", "reference"])
def test_first_index_on_exact_ties(backend):
    x = make_logits((2, 6, 5, 7), seed=4)
    x[:, 4] = x[:, 1] = x.abs().amax() + 1  # channels 1 and 4 tie everywhere, above the rest
    labels = ua(x, (11, 13), backend=backend)
    assert (labels == 1).all()


@pytest.mark.parametrize("backend", ["native", "triton"])
def test_nan_counts_as_maximum_like_torch_argmax(backend):
    x = make_logits((1, 4, 6, 8), seed=5)
    x[0, 2, 3, 4] = float("nan")
    x[0, 3, 3, 5] = float("nan")
    size = (96, 64)  # H + W > 128: torch's generic kernel, so even NaN spread is identical
    assert_labels(ua(x, size, backend=backend), x, size, False, exact=True)
    if backend == "native":
        want = interpolated(x, size, False).amax(1)
        assert want.isnan().any()
        torch.testing.assert_close(native_max_logit(x, size), want, atol=0, rtol=0, equal_nan=True)


def defined_confidence(z: torch.Tensor) -> torch.Tensor:
    """The documented confidence of interpolated logits z [N,C,H,W], case by case: NaN where a
    channel is NaN; 1/k where k channels are +inf; 1/C where all are -inf; the softmax otherwise."""
    C = z.shape[1]
    top = z.amax(1)
    plus = (z == float("inf")).sum(1)
    want = torch.softmax(z.nan_to_num(nan=0.0, posinf=0.0, neginf=-1e30), 1).amax(1)  # finite maxima
    want = torch.where(top == float("inf"), 1.0 / plus.clamp_min(1), want)
    want = torch.where(top == -float("inf"), torch.full_like(want, 1.0 / C), want)
    return torch.where(z.isnan().any(1), torch.full_like(want, float("nan")), want)


def non_finite_cases():
    """(name, logits [1,5,6,8]) mixing +inf, -inf and NaN."""
    inf, nan = float("inf"), float("nan")
    base = make_logits((1, 5, 6, 8), seed=11)
    cases = {}
    one = base.clone()
    one[:, 2] = inf                       # one channel at +inf: all its probability
    cases["one +inf channel"] = one
    two = base.clone()
    two[:, 1] = two[:, 3] = inf           # two at +inf: half each
    cases["two +inf channels"] = two
    cases["all -inf"] = torch.full_like(base, -inf)
    low = base.clone()
    low[:, 0] = low[:, 4] = -inf          # -inf below a finite maximum counts nothing
    cases["-inf channels"] = low
    mixed = base.clone()
    g = torch.Generator().manual_seed(12)
    picks = torch.randint(0, 4, mixed.shape, generator=g)
    mixed[picks == 0] = inf
    mixed[picks == 1] = -inf
    mixed[(picks == 2) & (torch.rand(mixed.shape, generator=g) < 0.1)] = nan
    cases["+inf, -inf and NaN scattered"] = mixed
    return list(cases.items())


@pytest.mark.parametrize("backend", ["native", "triton", "reference"])
@pytest.mark.parametrize("name,x", non_finite_cases(), ids=[c[0] for c in non_finite_cases()])
def test_confidence_of_infinite_and_nan_logits(backend, name, x):
    """Every backend gives the documented confidence (and torch's labels) wherever logits are not
    finite; the interpolated values themselves come from F.interpolate, NaNs it makes included."""
    size = (96, 64)  # H + W > 128: torch's generic kernel, so the interpolated values are identical
    labels, conf = ua(x, size, return_confidence=True, backend=backend)
    z = interpolated(x, size, False)
    want = defined_confidence(z)
    assert torch.equal(labels.long(), z.argmax(1)), name
    torch.testing.assert_close(conf, want, atol=2e-6, rtol=2e-6, equal_nan=True, msg=name)
    finite = ~z.isnan().any(1)
    assert finite.any(), "no pixel left to check the definition on"


def test_out_dtypes_and_many_classes():
    x = make_logits((1, 300, 4, 5), seed=6)
    labels = ua(x, (9, 7))
    assert labels.dtype == torch.int64  # C > 256: uint8 cannot hold the labels
    assert_labels(labels, x, (9, 7), False, exact=False)
    for spec, want in [(torch.int16, torch.int16), (np.int32, torch.int32), ("int64", torch.int64)]:
        assert ua(x, (9, 7), out_dtype=spec).dtype == want
    with pytest.raises(ValueError, match="out_dtype"):
        ua(x, (9, 7), out_dtype=torch.uint8)
    small = make_logits((1, 3, 4, 5))
    for spec in (torch.int16, torch.int32, torch.int64, "uint8"):
        for backend in ("native", "reference") + (("triton",) if triton_interpreted() else ()):
            out = ua(small, (6, 6), out_dtype=spec, backend=backend)  # triton: on CPU tensors, interpreted
            assert torch.equal(out.long(), ua(small, (6, 6), backend="reference").long())


def test_threads_do_not_change_the_result():
    x = make_logits((3, 8, 13, 21), seed=7)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ua(x, (70, 90), return_confidence=True)
        torch.set_num_threads(max(2, before))
        many = ua(x, (70, 90), return_confidence=True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_own_threads_equal_openmp_bit_for_bit():
    """The Segmenter's ONNX Runtime path runs the kernel on threads of its own (_native.own_threads);
    the shape is large enough (> 2^19 channel-pixels) for several threads, on both pools."""
    x = make_logits((2, 8, 40, 50), seed=8)
    size = (200, 300)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        want = ua(x, size, return_confidence=True), native_max_logit(x, size)
        for threads in (2, 3):
            torch.set_num_threads(threads)
            for own in (False, True):
                with fastseg._native.own_threads() if own else contextlib.nullcontext():
                    got = ua(x, size, return_confidence=True), native_max_logit(x, size)
                assert torch.equal(got[0][0], want[0][0]) and torch.equal(got[0][1], want[0][1])
                assert torch.equal(got[1], want[1])
    finally:
        torch.set_num_threads(before)
    assert torch.equal(want[1], interpolated(x, size, False).amax(1))


# ---- triton (interpreter on CPU tensors) -------------------------------------------------------

@pytest.mark.interpreter  # runs the Triton kernel on CPU tensors
@pytest.mark.parametrize("shape", TRITON_SHAPES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_triton_matches_reference(shape, align_corners, dtype, layout):
    x = make_logits(shape[:4], dtype, layout, seed=sum(shape) + 1)
    size = shape[4:]
    conf_wanted = dtype != torch.float32 or layout == "nchw"  # both modes, not every combination
    out = ua(x, size, align_corners=align_corners, return_confidence=conf_wanted, backend="triton")
    labels = out[0] if conf_wanted else out
    assert labels.dtype == torch.uint8 and labels.shape == (shape[0], *size)
    assert_labels(labels, x, size, align_corners, exact=False)
    if conf_wanted:
        z = interpolated(x, size, align_corners)
        torch.testing.assert_close(out[1], torch.softmax(z, 1).amax(1), atol=2e-6, rtol=2e-6)


@pytest.mark.interpreter  # runs the Triton kernel on CPU tensors
def test_triton_non_contiguous_input():
    x = make_logits((2, 5, 9, 12), layout="strided", seed=8)
    assert_labels(ua(x, (20, 17), backend="triton"), x, (20, 17), False, exact=False)


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_triton_gpu_tile_configuration(dtype, layout, monkeypatch):
    """The block size that ships for the GPU, executed by the interpreter (which otherwise uses its own)."""
    launches = record_launches(monkeypatch)
    for i, shape in enumerate([(2, 5, 13, 17, 40, 30), (1, 19, 7, 10, 29, 61), (3, 4, 9, 11, 9, 11)]):
        x = make_logits(shape[:4], dtype, layout, seed=i)
        size = shape[4:]
        with _launch.gpu_tiles():
            labels, conf = ua(x, size, return_confidence=True, backend="triton")
        assert_labels(labels, x, size, False, exact=False)
        torch.testing.assert_close(conf, torch.softmax(interpolated(x, size, False), 1).amax(1), atol=2e-6, rtol=2e-6)
    shipped = tile_config("gpu")["BLOCK"]
    assert {meta["BLOCK"] for _, _, meta in launches} == {shipped} and shipped != tile_config("interpreter")["BLOCK"]


@pytest.mark.parametrize("arch", [80, 87, 90])
def test_triton_kernel_compiles_for_a_real_gpu(arch):
    """The shipped block size lowered through ptxas for sm_80 / sm_90 (no GPU needed)."""
    script = Path(__file__).with_name("compile_for_gpu.py")
    cfg = tile_config("gpu")  # runs of 8 x 4 outputs: the shape of an 8x upsampling
    consts = {"ALIGN": 0, "CONF": 1, "CELL_Y": 1, "CELL_X": 1, "MY": cfg["MAX_MY"], "MX": cfg["MAX_MX"],
              "BLOCK": cfg["BLOCK"], "num_warps": cfg["num_warps"]}
    kernel = "fastseg.ops.upsample_argmax.triton_kernel:_upsample_argmax_kernel"
    result = subprocess.run([sys.executable, str(script), kernel, "fp16", str(arch),
                             *(f"{k}={v}" for k, v in consts.items())],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


# ---- array kinds -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["native", "triton", "reference"])
def test_numpy_in_numpy_out_read_only(backend):
    x = make_logits((2, 5, 7, 9), seed=9).numpy()
    x.flags.writeable = False
    labels, conf = ua(x, (15, 20), return_confidence=True, backend=backend)
    assert isinstance(labels, np.ndarray) and isinstance(conf, np.ndarray)
    assert labels.dtype == np.uint8 and conf.dtype == np.float32 and labels.shape == (2, 15, 20)
    assert_labels(labels, torch.from_numpy(x.copy()), (15, 20), False, exact=False)


def test_numpy_float16_non_contiguous():
    x = make_logits((1, 4, 8, 10), torch.float16, seed=10).numpy()[:, :, ::-1, ::2]
    labels = ua(x, (16, 9))
    assert isinstance(labels, np.ndarray)
    assert_labels(labels, torch.from_numpy(x.copy()), (16, 9), False, exact=False)


def test_size_forms():
    x = make_logits((1, 3, 4, 4))
    ref = ua(x, (8, 8), backend="reference")
    for size in (8, [8, 8], torch.Size([8, 8]), (np.int64(8), 8)):
        assert torch.equal(ua(x, size), ref)


# ---- bad input: clear errors naming the argument -----------------------------------------------

@pytest.mark.parametrize("backend", ["native", "triton", "reference"])
@pytest.mark.parametrize("bad, exc, name", [
    (torch.zeros(3, 4, 5), ValueError, "logits"),                    # wrong rank
    (torch.zeros(1, 3, 4, 5, 6), ValueError, "logits"),              # wrong rank
    (torch.zeros(1, 3, 4, 5, dtype=torch.int64), TypeError, "logits"),  # integer dtype
    (torch.zeros(1, 3, 4, 5, dtype=torch.float64), TypeError, "logits"),
    (torch.zeros(1, 0, 4, 5), ValueError, "logits"),                 # C = 0
    (torch.zeros(0, 3, 4, 5), ValueError, "logits"),                 # empty batch
    (torch.zeros(1, 3, 0, 5), ValueError, "logits"),                 # empty image
    ([[1.0]], TypeError, "logits"),                                  # not an array
])
def test_bad_logits(bad, exc, name, backend):
    with pytest.raises(exc, match=name):
        ua(bad, (4, 4), backend=backend)


@pytest.mark.parametrize("size, exc", [
    ((0, 4), ValueError), ((4, -1), ValueError), ((4, 4, 4), ValueError), ((4,), ValueError),
    ((4.5, 4), TypeError), (None, TypeError), (True, TypeError), ("44", TypeError),
])
def test_bad_size(size, exc):
    with pytest.raises(exc, match="size"):
        ua(torch.zeros(1, 3, 4, 4), size)


def test_bad_options():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(TypeError, match="out_dtype"):
        ua(x, (4, 4), out_dtype=torch.float32)
    with pytest.raises(TypeError, match="out_dtype"):
        ua(x, (4, 4), out_dtype="not-a-dtype")
    with pytest.raises(ValueError, match="backend"):
        ua(x, (4, 4), backend="cuda")
    with pytest.raises(TypeError, match="align_corners"):
        ua(x, (4, 4), align_corners=1)
    with pytest.raises(TypeError, match="return_confidence"):
        ua(x, (4, 4), return_confidence="yes")


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_out_receives_the_labels(backend):
    """out=: a video loop's labels buffer, written in place and returned (no new array)."""
    x = torch.randn(2, 7, 9, 13)
    upsample_argmax = fastseg.ops.upsample_argmax
    expected = upsample_argmax(x, (30, 41), backend=backend)
    out = torch.full((2, 30, 41), 99, dtype=torch.uint8)
    got = upsample_argmax(x, (30, 41), backend=backend, out=out)
    assert got is out and torch.equal(out, expected)
    labels, conf = upsample_argmax(x, (30, 41), backend=backend, return_confidence=True, out=out)
    assert labels is out and conf.shape == (2, 30, 41)
    with pytest.raises(ValueError, match="out"):
        upsample_argmax(x, (30, 41), out=torch.empty((2, 30, 40), dtype=torch.uint8))
    with pytest.raises(ValueError, match="out"):
        upsample_argmax(x, (30, 41), out=torch.empty((2, 30, 41), dtype=torch.int64))
