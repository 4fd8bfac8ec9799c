"""fastseg.viz against per-pixel loops written out here, and the layout of its grids."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastseg import viz

RNG = np.random.default_rng(0)


def random_case(h=23, w=31, classes=7, ignored=0.1):
    labels = RNG.integers(0, classes, (h, w)).astype(np.uint8)
    labels[RNG.random((h, w)) < ignored] = 255
    palette = RNG.integers(0, 256, (classes, 3)).astype(np.uint8)
    image = RNG.integers(0, 256, (h, w, 3)).astype(np.uint8)
    return image, labels, palette


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.int32])
def test_colorize_matches_a_pixel_loop(dtype):
    _, labels, palette = random_case()
    out = viz.colorize(labels.astype(dtype), palette)
    assert out.dtype == np.uint8 and out.shape == labels.shape + (3,)
    for y in range(labels.shape[0]):
        for x in range(labels.shape[1]):
            expected = viz.IGNORE_COLOR if labels[y, x] == 255 else palette[labels[y, x]]
            assert tuple(out[y, x]) == tuple(expected)


def test_colorize_accepts_torch_and_custom_ignore():
    _, labels, palette = random_case()
    labels[labels == 255] = 0
    labels[0, 0] = 6
    out = viz.colorize(torch.from_numpy(labels), palette, ignore_index=6, ignore_color=(1, 2, 3))
    assert tuple(out[0, 0]) == (1, 2, 3)
    np.testing.assert_array_equal(out[labels != 6], palette[labels[labels != 6]])


def test_colorize_errors():
    palette = np.zeros((3, 3), np.uint8)
    with pytest.raises(ValueError, match="do not fit a palette of 3"):
        viz.colorize(np.array([[0, 3]], np.uint8), palette)
    with pytest.raises(ValueError, match=r"\[H,W\]"):
        viz.colorize(np.zeros((2, 2, 3), np.uint8), palette)
    with pytest.raises(TypeError, match="integer"):
        viz.colorize(np.zeros((2, 2), np.float32), palette)


def test_overlay_blends_and_leaves_ignored_pixels_alone():
    image, labels, palette = random_case()
    for alpha in (0.0, 0.3, 1.0):
        out = viz.overlay(image, labels, palette, alpha=alpha)
        color = viz.colorize(labels, palette).astype(np.float64)
        expected = np.rint((1 - alpha) * image + alpha * color)
        ignored = labels == 255
        expected[ignored] = image[ignored]
        assert np.abs(out.astype(np.float64) - expected).max() <= 1  # float32 arithmetic, then rounding
    np.testing.assert_array_equal(viz.overlay(image, labels, palette, alpha=0.0), image)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(image, labels, palette, alpha=1.5)
    with pytest.raises(ValueError, match="must be"):
        viz.overlay(image[:-1], labels, palette)


def test_boundaries_and_zoom():
    labels = RNG.integers(0, 3, (9, 13))
    edge = viz.boundaries(labels)
    for y in range(9):
        for x in range(13):
            right = x + 1 < 13 and labels[y, x] != labels[y, x + 1]
            down = y + 1 < 9 and labels[y, x] != labels[y + 1, x]
            assert edge[y, x] == (right or down)
    big = viz.zoom(labels, 3)
    assert big.shape == (27, 39)
    np.testing.assert_array_equal(big[::3, ::3], labels)
    np.testing.assert_array_equal(big[2::3, 1::3], labels)


def test_legend_entries():
    palette = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    assert viz.legend_entries(["a", "b"], palette) == [("a", (1, 2, 3)), ("b", (4, 5, 6))]
    assert viz.legend_entries(["a", "b"], palette, ignored="void")[-1] == ("void", viz.IGNORE_COLOR)
    with pytest.raises(ValueError, match="2 colours"):
        viz.legend_entries(["a"], palette)


def test_grid_places_every_picture_unchanged():
    a = RNG.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    b = RNG.integers(0, 256, (25, 10, 3)).astype(np.uint8)
    c = Image.fromarray(RNG.integers(0, 256, (15, 40, 3)).astype(np.uint8))
    gap = 4
    sheet = np.asarray(viz.grid([[a, b], [c, None]], gap=gap))
    # columns are as wide as their widest picture, rows as tall as their tallest, gap around each
    assert sheet.shape == (gap + 25 + gap + 15 + gap, gap + 40 + gap + 10 + gap, 3)
    np.testing.assert_array_equal(sheet[gap:gap + 20, gap:gap + 30], a)
    np.testing.assert_array_equal(sheet[gap:gap + 25, 2 * gap + 40:2 * gap + 50], b)
    np.testing.assert_array_equal(sheet[2 * gap + 25:2 * gap + 40, gap:gap + 40], np.asarray(c))


def test_grid_with_titles_captions_and_legend():
    a = np.full((60, 80, 3), 128, np.uint8)
    plain = viz.grid([[a, a]])
    full = viz.grid([[a, a]], column_titles=["x", "y"], captions=[[None, "caption"]], title="two\nlines",
                    legend=viz.legend_entries(["sky", "road"], np.array([[0, 0, 255], [255, 0, 0]], np.uint8)))
    assert full.width >= plain.width and full.height > plain.height + 40
    pixels = np.asarray(full).reshape(-1, 3)
    for swatch in ((0, 0, 255), (255, 0, 0)):                        # legend swatches are drawn
        assert (pixels == swatch).all(1).any()
    grey = np.asarray(full)
    top = np.where((grey[:, 4:84] == 128).all((1, 2)))[0][0]          # the uncaptioned cell's first row
    left_cell = grey[top:top + 60, 4:84]
    right_cell = grey[top:top + 60, 88:168]
    assert (left_cell == 128).all()                                  # no caption: untouched
    assert not (right_cell == 128).all()                             # the caption is drawn on it
    assert (right_cell[30:] == 128).all()                            # ... in its top-left corner only
    with pytest.raises(ValueError, match="no pictures"):
        viz.grid([])


def test_outline_draws_the_boundaries_only():
    image, labels, _ = random_case(ignored=0)
    out = viz.outline(image, labels, color=(1, 2, 3))
    edge = viz.boundaries(labels)
    assert (out[edge] == (1, 2, 3)).all()
    np.testing.assert_array_equal(out[~edge], image[~edge])
    assert out is not image and not (image[edge] == (1, 2, 3)).all()   # the input is not modified
