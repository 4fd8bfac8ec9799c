"""fastseg._torch_compat: each private torch API fastseg relies on still exists and still computes
what its public equivalent computes (a torch upgrade that changes one fails here first)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastseg import _torch_compat


@pytest.mark.parametrize("stride, padding, dilation", [((1, 1), (0, 0), (1, 1)), ((2, 2), (1, 1), (1, 1)),
                                                        ((1, 1), (2, 2), (2, 2))])
def test_conv_add_relu_matches_public_ops(stride, padding, dilation):
    assert _torch_compat.has_conv_add_relu_() == torch.backends.mkldnn.is_available()
    if not _torch_compat.has_conv_add_relu_():
        pytest.skip("no oneDNN in this torch build")
    gen = torch.Generator().manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(2, 16, 11, 13, generator=gen).contiguous(memory_format=cl)
    k = 3 if padding != (0, 0) else 1
    weight = (torch.randn(24, 16, k, k, generator=gen) / 8).contiguous(memory_format=cl)
    bias = torch.randn(24, generator=gen)
    out_shape = F.conv2d(x, weight, None, stride, padding, dilation).shape
    other = torch.randn(out_shape, generator=gen).contiguous(memory_format=cl)
    expected = _torch_compat.conv_add_relu_public(other.clone(), x, weight, bias, padding, stride, dilation, 1)
    with torch.inference_mode():
        target = other.clone()
        got = _torch_compat.conv_add_relu_(target, x, weight, bias, padding, stride, dilation, 1)
    assert got.data_ptr() == target.data_ptr()  # written in place
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got >= 0).all()


def test_mkldnn_precision_queries_exist_and_answer_bools():
    for query in (_torch_compat.mkldnn_bf16_supported, _torch_compat.mkldnn_fp16_supported):
        answer = query()
        assert isinstance(answer, bool)
        assert not answer or torch.backends.mkldnn.is_available()  # oneDNN precision needs oneDNN


def test_version_counts_in_place_changes():
    t = torch.zeros(3)
    before = _torch_compat.version(t)
    assert isinstance(before, int)
    t.add_(1)
    assert _torch_compat.version(t) == before + 1
    t + 1  # out of place: unchanged
    assert _torch_compat.version(t) == before + 1
