"""Inputs that used to give wrong labels silently: float images on the wrong scale, numpy float,
grayscale / RGBA arrays, meta tensors, device names; and frames in other pixel formats (BGR, NV12,
YUYV) converted inside the preprocessing pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastseg.ops.resize_normalize import parse, to_rgb
from fastseg.segmenter import Segmenter

from _images import agreement, image
from _zoo import Local, one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)


@pytest.fixture(scope="module")
def seg():
    return Segmenter(Local(trained=(40, 52)), runtime="torch")


@pytest.fixture(scope="module")
def img():
    return image(40, 52, seed=9)


# ------------------------------------------------------------------------- float range
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_float_0_to_255_is_an_error_that_says_what_to_do(seg, img, kind):
    x = img.astype(np.float32) if kind == "numpy" else torch.from_numpy(img).permute(2, 0, 1).float()
    with pytest.raises(ValueError, match=r"\[0, 1\], got values up to 2\d\d.*uint8.*divide it by 255"):
        seg.predict(x)
    with pytest.raises(ValueError, match=r"batch\[1\]: float images must be RGB in \[0, 1\]"):
        seg.predict([x / 255, x])


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_normalised_input_is_an_error(seg, img, kind):
    x = (img.astype(np.float32) / 255 - 0.45) / 0.225
    x = x if kind == "numpy" else torch.from_numpy(x).permute(2, 0, 1)
    with pytest.raises(ValueError, match="normalised already"):
        seg.predict(x)


def test_numpy_float_and_torch_float_behave_the_same(seg, img):
    want = seg.predict(img).labels
    for dtype in (np.float32, np.float64, np.float16):
        as_numpy = seg.predict(img.astype(dtype) / dtype(255)).labels
        as_torch = seg.predict(torch.from_numpy(img.astype(dtype) / dtype(255)).permute(2, 0, 1)).labels
        assert isinstance(as_numpy, np.ndarray) and isinstance(as_torch, torch.Tensor)
        np.testing.assert_array_equal(as_numpy, as_torch.numpy())
        assert agreement(as_numpy, want) >= 0.995
    batch = np.stack([img, img]).astype(np.float32) / 255
    np.testing.assert_array_equal(seg.predict(batch).labels[1], seg.predict(batch[1]).labels)


# ------------------------------------------------------------------------- grayscale / RGBA
@pytest.mark.parametrize("mode, channels", [("L", None), ("L", 1), ("LA", 2), ("RGBA", 4)])
def test_grayscale_and_rgba_numpy_as_pil_converts_them(seg, mode, channels):
    rng = np.random.default_rng(0)
    shape = (40, 52) if channels is None else (40, 52, channels)
    x = image(40, 52, seed=4)[..., :1].repeat(4, 2)[..., : (channels or 1)].copy()
    x[..., -1:] = rng.integers(0, 256, x[..., -1:].shape) if mode in ("LA", "RGBA") else x[..., -1:]
    x = x.reshape(shape)
    pil = Image.fromarray(x if channels != 1 else x[..., 0], mode)
    want = seg.predict(np.asarray(pil.convert("RGB"))).labels
    np.testing.assert_array_equal(seg.predict(x).labels, want)
    np.testing.assert_array_equal(seg.predict(pil).labels, want)
    if channels in (1, 4):  # batches [N,H,W,C] too
        np.testing.assert_array_equal(seg.predict(np.stack([x, x])).labels[0], want)


# ------------------------------------------------------------------------- meta, device
def test_meta_tensors_are_refused_by_name(seg):
    with pytest.raises(ValueError, match="batch: a meta tensor holds no values"):
        seg.predict(torch.empty((1, 3, 8, 8), dtype=torch.uint8, device="meta"))
    with pytest.raises(ValueError, match=r"batch\[0\]: a meta tensor"):
        seg.predict([torch.empty((3, 8, 8), device="meta")])


@pytest.mark.parametrize("device, match", [("gpu", "device: 'gpu' is not a device.*'cuda'"),
                                           ("GPU:0", "device: 'GPU:0' is not a device"),
                                           ("meta", "device: the Segmenter runs on 'cpu' or 'cuda'"),
                                           ("cpux", "device: 'cpux'")])
def test_bad_device_names_the_argument(device, match):
    with pytest.raises(ValueError, match=match):
        Segmenter(Local(), device=device, runtime="torch")


# ------------------------------------------------------------------------- pixel formats
def bt601_yuv(rgb: np.ndarray):
    """Limited-range BT.601 Y, U, V planes (float) of an RGB image: the encoder's side."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return y, u, v


def nv12_of(rgb):
    y, u, v = bt601_yuv(rgb)
    H, W = y.shape
    uv = np.stack([u.reshape(H // 2, 2, W // 2, 2).mean((1, 3)), v.reshape(H // 2, 2, W // 2, 2).mean((1, 3))], -1)
    return np.concatenate([y, uv.reshape(H // 2, W)]).round().clip(0, 255).astype(np.uint8)


def yuyv_of(rgb):
    y, u, v = bt601_yuv(rgb)
    H, W = y.shape
    chroma = np.stack([u.reshape(H, W // 2, 2).mean(2), v.reshape(H, W // 2, 2).mean(2)], -1).reshape(H, W)
    return np.stack([y, chroma], -1).round().clip(0, 255).astype(np.uint8)


def test_bgr_frames(seg, img):
    want = seg.predict(img).labels
    bgr = np.ascontiguousarray(img[..., ::-1])
    np.testing.assert_array_equal(seg.predict(bgr, pixel_format="bgr").labels, want)
    np.testing.assert_array_equal(Segmenter(Local(trained=(20, 26)), runtime="torch", pixel_format="bgr")
                                  .predict(bgr).labels,
                                  Segmenter(Local(trained=(20, 26)), runtime="torch").predict(img).labels)
    torch_bgr = torch.from_numpy(bgr).permute(2, 0, 1)
    np.testing.assert_array_equal(seg.predict(torch_bgr, pixel_format="bgr").labels.numpy(), want)
    assert agreement(seg.predict(bgr).labels, want) < 0.99  # the silent error it prevents


@pytest.mark.parametrize("name, make", [("nv12", nv12_of), ("yuyv", yuyv_of)])
@pytest.mark.parametrize("trained", [(40, 52), (20, 26)])
def test_yuv_frames_equal_their_rgb_conversion(name, make, trained):
    """A YUV frame made from an RGB image: labels equal those of the frame converted to RGB by the
    reference conversion (the same pixels), and mostly those of the original RGB image."""
    seg = Segmenter(Local(trained=trained), runtime="torch")
    img = image(40, 52, seed=11)
    frame = make(img)
    rgb = to_rgb(torch.from_numpy(frame)[None], parse(name))[0] / 255
    got = seg.predict(frame, pixel_format=name).labels
    assert got.shape == img.shape[:2]
    assert agreement(got, seg.predict(rgb).labels.numpy()) >= 0.999
    assert agreement(got, seg.predict(img).labels) >= 0.9  # chroma subsampled: a sensitive toy model moves
    batch = seg.predict(np.stack([frame, frame]), pixel_format=name).labels
    np.testing.assert_array_equal(batch[0], got)
    listed = seg.predict([frame, make(image(20, 30, seed=1))], pixel_format=name).labels
    np.testing.assert_array_equal(listed[0], got)
    assert listed[1].shape == (20, 30)
    streamed = [r.labels.copy() for r in seg.stream([frame, frame], pixel_format=name)]
    np.testing.assert_array_equal(streamed[1], got)


def test_crf_sees_the_converted_colours():
    from fastseg.crf import DenseCRF

    seg = Segmenter(Local(trained=(40, 52)), runtime="torch", crf=DenseCRF(n_iter=2))
    img = image(40, 52, seed=12)
    np.testing.assert_array_equal(seg.predict(np.ascontiguousarray(img[..., ::-1]), pixel_format="bgr").labels,
                                  seg.predict(img).labels)


@pytest.mark.parametrize("name, bad, match", [
    ("nv12", np.zeros((7, 8), np.uint8), "even height"), ("nv12", np.zeros((6, 7), np.uint8), "even"),
    ("yuyv", np.zeros((4, 6, 3), np.uint8), r"\[H,W,2\]"), ("yuyv", np.zeros((4, 6, 2), np.float32), "uint8"),
    ("nv12", "frame", "numpy array or a torch tensor"),
])
def test_bad_yuv_frames(seg, name, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        seg.predict(bad, pixel_format=name)
