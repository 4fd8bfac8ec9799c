"""fastseg/ops/resize_normalize/device.py: the torch-operation route of resize_normalize (what the
CUDA frame path runs on the device) on CPU tensors, held to the native kernel and to the reference
over shapes, pixel formats, batches, input and output layouts and dtypes. On a GPU,
test_segmenter_cuda.py runs the same function on CUDA tensors against the CPU's answer."""
from __future__ import annotations

import ast
import inspect

import pytest
import torch

from fastseg import _native
from fastseg.ops.resize_normalize import device, parse, reference, resize_normalize, to_rgb

from _images import float_output

MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])
SCALE, SHIFT = 1 / (255 * STD), MEAN / STD
VIEW = (1, 3, 1, 1)
ATOL = 2e-4  # as the native kernel's tests: float rounding of up to ~70 taps, on the normalised scale

pytestmark = pytest.mark.skipif(not _native.available(), reason="fastseg._C is not built")


def frames(name: str, N: int, H: int, W: int, seed: int, layout: str = "hwc") -> torch.Tensor:
    """uint8 frames in pixel format `name`: RGB / BGR as [N,3,H,W] (the view of an HWC frame, a
    contiguous NCHW one or a crop), NV12 [N,H*3/2,W], YUYV [N,H,W,2]."""
    g = torch.Generator().manual_seed(seed)
    if name.startswith("nv12"):
        return torch.randint(0, 256, (N, H * 3 // 2, W), dtype=torch.uint8, generator=g)
    if name.startswith("yuyv"):
        return torch.randint(0, 256, (N, H, W, 2), dtype=torch.uint8, generator=g)
    if layout == "nchw":
        return torch.randint(0, 256, (N, 3, H, W), dtype=torch.uint8, generator=g)
    if layout == "crop":
        return torch.randint(0, 256, (N, H + 2, W + 3, 3), dtype=torch.uint8, generator=g)[:, 1:1 + H, 2:2 + W] \
            .permute(0, 3, 1, 2)
    return torch.randint(0, 256, (N, H, W, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)


def run(x, name, size, out=None, scale=SCALE):
    out = torch.empty((x.shape[0], 3, *size)) if out is None else out
    return device.resize_normalize_into(x, parse(name), scale.view(VIEW), -SHIFT.view(VIEW), out)


# (N, H, W) -> (h, w): even sizes for the YUV formats; shrinking by integer and odd ratios (the
# packaged model's 8x), enlarging, one axis only, the same size, 1-pixel outputs, batches
CASES = [((1, 360, 480), (45, 60)), ((2, 38, 54), (11, 29)), ((1, 100, 76), (240, 180)),
         ((3, 18, 32), (18, 32)), ((1, 64, 64), (64, 21)), ((1, 10, 4), (3, 1)), ((1, 2, 2), (5, 4)),
         ((2, 124, 78), (1, 1)), ((1, 480, 640), (300, 400)), ((2, 30, 42), (57, 23)), ((1, 720, 960), (360, 480))]
FORMATS = ["rgb", "bgr", "nv12", "yuyv", "nv12:bt709", "yuyv:full"]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("name", FORMATS)
def test_equals_the_native_kernel_and_the_reference(case, name):
    (N, H, W), size = case
    x = frames(name, N, H, W, seed=H * W + N)
    got = run(x, name, size)
    want = resize_normalize(x, size, SCALE, SHIFT, pixel_format=name)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(got, reference(x, size, SCALE, SHIFT, parse(name)), atol=2e-6, rtol=0)


@pytest.mark.parametrize("layout", ["hwc", "nchw", "crop"])
@pytest.mark.parametrize("out_layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("name", ["rgb", "bgr"])
def test_any_input_and_output_layout(layout, out_layout, name):
    for (N, H, W), size in [((2, 37, 53), (11, 29)), ((1, 17, 31), (17, 31)), ((1, 9, 13), (20, 1))]:
        x = frames(name, N, H, W, seed=H, layout=layout)
        out = float_output((N, 3, *size), out_layout)
        got = run(x, name, size, out=out)
        assert got is out
        torch.testing.assert_close(got, resize_normalize(x, size, SCALE, SHIFT, pixel_format=name),
                                   atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["rgb", "nv12"])
def test_reduced_precision_output_rounds_once(dtype, name):
    """The runtime's dtype and layout written directly: the float32 result rounded once."""
    x = frames(name, 2, 40, 60, seed=3)
    out = torch.empty((2, 3, 15, 20), dtype=dtype).contiguous(memory_format=torch.channels_last)
    got = run(x, name, (15, 20), out=out)
    assert got is out and out.is_contiguous(memory_format=torch.channels_last)
    exact = run(x, name, (15, 20))
    torch.testing.assert_close(got, exact.to(dtype), atol=0, rtol=0)


def test_float_frames():
    x = frames("rgb", 2, 21, 33, seed=4).float() / 255
    for size in ((21, 33), (10, 15), (40, 7)):
        torch.testing.assert_close(run(x, "rgb", size, scale=SCALE * 255),
                                   reference(x, size, SCALE * 255, SHIFT, parse("rgb")), atol=2e-6, rtol=0)


def test_the_op_routes_what_the_native_kernel_refuses_here():
    """resize_normalize on frames the native kernel does not read (float here, CUDA tensors on a
    GPU) runs this module's function."""
    x = frames("bgr", 1, 20, 30, seed=5).float()
    got = resize_normalize(x, (10, 15), SCALE, SHIFT, pixel_format="bgr")
    torch.testing.assert_close(got, run(x, "bgr", (10, 15)), atol=0, rtol=0)
    spec = resize_normalize(x, (10, 15), SCALE, SHIFT, pixel_format="bgr", backend="reference")
    torch.testing.assert_close(spec, reference(x, (10, 15), SCALE, SHIFT, parse("bgr")), atol=0, rtol=0)


def test_yuv_to_rgb_as_the_reference():
    for name in ("nv12", "yuyv", "nv12:bt709:full", "yuyv:bt709"):
        x = frames(name, 2, 6, 8, seed=6)
        torch.testing.assert_close(device.rgb_planes(x, parse(name)), to_rgb(x, parse(name)), atol=1e-4, rtol=0)


def test_source_has_no_host_waits():
    """Nothing that reads a value back or makes a tensor from host data (either would make a CUDA
    frame wait, and fail a graph capture)."""
    tree = ast.parse(inspect.getsource(device))
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    banned = ("item", "tolist", "cpu", "numpy", "synchronize", "tensor", "as_tensor", "nonzero")
    assert not [c for c in calls if c.split(".")[-1] in banned]
