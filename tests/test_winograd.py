"""Winograd F(4x4, 3x3) convolution (fastseg.ops.winograd) against F.conv2d.

Odd sizes, images smaller than the dilation, batch > 1, channel counts that are and are not
multiples of the 8-lane vectors, every activation, a bias or none, and writing into a channel slice
of a wider tensor (how ASPP's branches fill their concatenation).
"""
from __future__ import annotations

import pytest
import torch

from fastseg import _native
from fastseg.ops import winograd

# relative to the largest |output|: the transforms cost a few ulps over the direct sum, F(6x6) more
TOL = {4: 2e-5, 6: 1e-4}


def make(n, c, k, h, w, gen, bias=True):
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(k, c, 3, 3, generator=gen) / (3 * c ** 0.5)
    b = torch.randn(k, generator=gen) if bias else None
    return x, weight, b


def assert_close(actual, expected, tile=4):
    scale = expected.abs().max().item() + 1e-6
    err = (actual.double() - expected.double()).abs().max().item() / scale
    assert err <= TOL[tile], f"max |difference| / max |expected| = {err:.2e}"


# (n, c, k, h, w, dilation)
SHAPES = [
    (1, 8, 8, 4, 4, 1), (2, 13, 11, 9, 10, 1), (1, 32, 24, 17, 23, 1), (3, 16, 40, 6, 5, 1),
    (2, 24, 16, 13, 17, 2), (1, 9, 17, 31, 7, 2), (2, 40, 32, 16, 32, 4), (1, 16, 24, 11, 13, 3),
    (2, 16, 16, 13, 17, 6), (1, 24, 8, 30, 45, 12), (1, 8, 24, 19, 40, 18),
    (2, 16, 8, 5, 7, 12),    # dilation > image: only the centre tap is inside
    (1, 3, 5, 1, 1, 1),      # a single pixel
    (1, 64, 72, 33, 65, 2),  # several chunks of tiles? (see test_chunked) and wide vectors
]


@pytest.mark.parametrize("n,c,k,h,w,d", SHAPES)
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize("tile", [4, 6])
def test_equals_conv2d(n, c, k, h, w, d, activation, tile):
    gen = torch.Generator().manual_seed(n * 1000 + c * 10 + d)
    x, weight, bias = make(n, c, k, h, w, gen, bias=activation != "relu6")
    expected = winograd.reference(x, weight, bias, d, activation)
    got = winograd.conv2d(x, weight, bias, d, activation, tile=tile)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert_close(got, expected, tile)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 12])
@pytest.mark.parametrize("m", [4, 6])
def test_tile_count_matches_the_extension(d, m):
    for h, w in ((1, 1), (4, 4), (5, 9), (17, 30), (64, 128)):
        assert winograd.num_tiles(2, h, w, d, m) == _native.ext().winograd_num_tiles(2, h, w, d, m)


def test_tile_size_choice():
    assert winograd.tile_size(64, 128, 12) == 6   # ASPP's rate 12 at 512x1024: 40% fewer products
    assert winograd.tile_size(64, 128, 4) == 4    # a dilated ResNet's stage: F(6x6) saves nothing
    assert winograd.tile_size(64, 128, 1) == 6    # 16% fewer


def test_chunked_tiles(monkeypatch):
    """Tiles run in several chunks when the workspace is smaller than the whole transform."""
    monkeypatch.setattr(winograd, "WORKSPACE_FLOATS", 36 * 64 * 7)  # 7 tiles per chunk
    gen = torch.Generator().manual_seed(3)
    x, weight, bias = make(2, 64, 40, 21, 19, gen)
    assert_close(winograd.conv2d(x, weight, bias, 2, "relu"), winograd.reference(x, weight, bias, 2, "relu"))


def test_writes_into_a_channel_slice():
    gen = torch.Generator().manual_seed(4)
    x, weight, bias = make(2, 16, 24, 11, 13, gen)
    cat = torch.full((2, 24 * 3, 11, 13), 7.0).contiguous(memory_format=torch.channels_last)
    got = winograd.conv2d(x, weight, bias, 3, "relu", out=cat[:, 24:48])
    assert got.data_ptr() == cat[:, 24:48].data_ptr()
    assert_close(cat[:, 24:48], winograd.reference(x, weight, bias, 3, "relu"))
    assert (cat[:, :24] == 7).all() and (cat[:, 48:] == 7).all()


def test_nchw_input_and_non_contiguous_views():
    gen = torch.Generator().manual_seed(5)
    x, weight, bias = make(2, 16, 16, 12, 14, gen)
    wide = torch.randn(2, 16, 12, 28, generator=gen)[..., ::2]  # neither layout
    for inp in (x.contiguous(), wide):
        assert_close(winograd.conv2d(inp, weight, bias, 2), winograd.reference(inp, weight, bias, 2))


def test_filter_cache_follows_in_place_edits():
    gen = torch.Generator().manual_seed(6)
    x, weight, bias = make(1, 16, 16, 9, 9, gen)
    winograd.conv2d(x, weight, bias, 1)
    with torch.no_grad():
        weight.mul_(-2.0)  # bumps the version counter: the cached transform is stale
    assert_close(winograd.conv2d(x, weight, bias, 1), winograd.reference(x, weight, bias, 1))
    entries = len(winograd.FILTERS)
    del weight
    assert len(winograd.FILTERS) == entries - 1  # dropped with its tensor


def test_worthwhile_matches_the_resnet_and_aspp_geometry():
    for d in (1, 2, 4, 12):
        assert winograd.worthwhile(64, 128, d, 256, 256), d
    for d in (24, 36):  # tiles straddling tiny sub-grids: the direct convolution keeps these
        assert not winograd.worthwhile(64, 128, d, 2048, 256), d
    assert not winograd.worthwhile(64, 128, 1, 16, 256)  # too few channels to pay for the transforms


def test_applies_only_where_it_is_right():
    x = torch.randn(1, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3)
    ok = dict(stride=(1, 1), padding=(2, 2), dilation=(2, 2), groups=1, activation="relu")
    assert winograd.applies(x, w, **ok)
    assert not winograd.applies(x.contiguous(), w, **ok)                       # NCHW: torch's path
    assert not winograd.applies(x.double(), w.double(), **ok)
    assert not winograd.applies(x, w, **{**ok, "stride": (2, 2)})
    assert not winograd.applies(x, w, **{**ok, "padding": (1, 1)})
    assert not winograd.applies(x, w, **{**ok, "activation": "hardswish"})
    assert not winograd.applies(x, torch.randn(64, 32, 3, 3), **{**ok, "groups": 2})
    assert not winograd.applies(x.requires_grad_(), w, **ok)                   # autograd needs torch's op
    with torch.no_grad():
        assert winograd.applies(x, w, **ok)


def test_clear_errors():
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 8, 3, 3)
    with pytest.raises(TypeError, match="float32"):
        winograd.conv2d(x.double(), w)
    with pytest.raises(ValueError, match=r"\[K, 8, 3, 3\]"):
        winograd.conv2d(x, torch.randn(4, 8, 5, 5))
    with pytest.raises(ValueError, match="bias"):
        winograd.conv2d(x, w, torch.zeros(5))
    with pytest.raises(ValueError, match="activation"):
        winograd.conv2d(x, w, activation="gelu")
    with pytest.raises(ValueError, match="out"):
        winograd.conv2d(x, w, out=torch.empty(1, 4, 6, 6))  # NCHW: channels not innermost
    with pytest.raises(ValueError, match="tile"):
        winograd.conv2d(x, w, tile=5)


def test_workspace_made_in_inference_mode_serves_plain_calls():
    """The reused buffer must not become an inference tensor (in-place writes to those fail outside)."""
    winograd.release_workspace()
    gen = torch.Generator().manual_seed(7)
    x, weight, bias = make(1, 16, 16, 9, 9, gen)
    with torch.inference_mode():
        winograd.conv2d(x, weight, bias, 1)
    with torch.no_grad():
        assert_close(winograd.conv2d(x, weight, bias, 1), winograd.reference(x, weight, bias, 1))
