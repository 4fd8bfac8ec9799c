"""The CUDA upsample + argmax kernel's arithmetic, checked on the CPU: its per-pixel code
(csrc/common/upsample_argmax_run.h, what each CUDA thread runs) is also compiled into fastseg._C
as `upsample_argmax_threadwise`, and must equal the CPU kernel bit for bit (same bilinear.h taps and
lerps), hence F.interpolate wherever the CPU kernel does. The kernel on a real GPU:
tests/test_cuda_native_ops.py."""
from __future__ import annotations

import pytest
import torch
from test_upsample_argmax import DTYPES, EXACT_SHAPES, SHAPES, interpolated, make_logits

import fastseg
from fastseg import _native
from fastseg.ops.upsample_argmax import cuda_kernel, native_max_logit

pytestmark = pytest.mark.skipif(not _native.available(), reason="fastseg._C is not built")


@pytest.mark.parametrize("shape", SHAPES + EXACT_SHAPES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_per_thread_code_equals_the_cpu_kernel_bit_for_bit(shape, align_corners, dtype, layout):
    x = make_logits(shape[:4], dtype, layout, seed=sum(shape) + 7)
    size = shape[4:]
    labels, conf, maxv = cuda_kernel.threadwise(x, size, align_corners, True, torch.uint8)
    torch.testing.assert_close(maxv, native_max_logit(x, size, align_corners), atol=0, rtol=0)
    want_labels, want_conf = fastseg.ops.upsample_argmax(x, size, align_corners=align_corners,
                                                         return_confidence=True, backend="native")
    assert torch.equal(labels, want_labels)
    torch.testing.assert_close(conf, want_conf, atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("shape", EXACT_SHAPES[:3], ids=str)
def test_per_thread_code_equals_f_interpolate(shape):
    x = make_logits(shape[:4], torch.float32, "nchw", seed=11)
    size = shape[4:]
    labels, conf, maxv = cuda_kernel.threadwise(x, size, False, True)
    z = interpolated(x, size, False)
    torch.testing.assert_close(maxv, z.amax(1), atol=0, rtol=0)
    assert torch.equal(labels, z.argmax(1))
    torch.testing.assert_close(conf, torch.softmax(z, 1).amax(1), atol=2e-6, rtol=2e-6)


def test_ties_nan_and_label_dtypes():
    x = make_logits((1, 5, 6, 8), seed=5)
    x[:, 3] = x[:, 1] = x.abs().amax() + 1  # 1 and 3 tie everywhere: the first wins
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
        labels, _, _ = cuda_kernel.threadwise(x, (11, 13), dtype=dtype)
        assert labels.dtype == dtype and (labels == 1).all()
    x[0, 4, 3, 4] = float("nan")  # a NaN is the maximum wherever it is interpolated in
    labels, conf, maxv = cuda_kernel.threadwise(x, (96, 64), return_confidence=True)
    z = interpolated(x, (96, 64), False)
    assert torch.equal(labels, z.argmax(1))
    assert torch.equal(maxv.isnan(), z.isnan().any(1)) and torch.equal(conf.isnan(), maxv.isnan())
