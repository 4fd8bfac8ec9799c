"""What every Triton launch goes through (fastseg/ops/_launch.py), checked without a GPU: CUDA's grid
limits on each op's grid arithmetic, the tensor's device guarding the launch, the GPU tile
configuration forced under the interpreter; and what runs when Triton cannot (the version floor,
the warning). The convolution table: test_conv_table.py."""
from __future__ import annotations

import ast
import contextlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import triton

import fastseg
from fastseg.ops import _dispatch, _launch, _triton_support
from fastseg.ops.atrous_conv import triton_kernel as conv_kernel
from fastseg.ops.confusion_matrix import TRITON_MAX_CLASSES
from fastseg.ops.confusion_matrix import triton_kernel as cm_kernel
from fastseg.ops.upsample_argmax import triton_kernel as ua_kernel
from fastseg.ops.upsample_argmax.cells import axis_plan

from _triton import record_launches

OPS = Path(fastseg.__file__).parent / "ops"


# ---- CUDA's grid limits ------------------------------------------------------------------------

def test_check_grid_holds_cuda_limits():
    assert _launch.check_grid((2**31 - 1, 65535, 65535)) == (2**31 - 1, 65535, 65535)
    for grid in [(2**31,), (1, 65536), (1, 1, 65536), (1, 1, 1, 1)]:
        with pytest.raises(ValueError, match="CUDA allows|1 to 3 axes"):
            _launch.check_grid(grid, "k")


@pytest.mark.interpreter
def test_20_megapixel_upsample_argmax_launches_within_limits(monkeypatch):
    """A 4000x5000 output with the GPU's block size: every pixel block on axis 0. The former grid
    (image, pixel block) put 78125 blocks on axis 1, which a GPU refuses."""
    launches = record_launches(monkeypatch, run=False)
    logits = torch.randn(2, 3, 50, 40)
    with _launch.gpu_tiles():
        fastseg.ops.upsample_argmax(logits, (4000, 5000), backend="triton")
    [(name, grid, meta)] = launches
    units = runs(50, 40, 4000, 5000, "gpu")
    assert meta["BLOCK"] == 128 and grid == (2 * triton.cdiv(units, 128),)
    with pytest.raises(ValueError, match="axis 1"):
        _launch.check_grid((2, triton.cdiv(4000 * 5000, 256)))


def runs(h, w, H, W, target):
    """upsample_argmax's runs of output pixels (one per GPU thread) for these sizes."""
    cfg = ua_kernel.tile_config(target)
    return (axis_plan(h, H, False, cfg["MAX_MY"]).units * axis_plan(w, W, False, cfg["MAX_MX"]).units)


@pytest.mark.parametrize("N, H, W", [(1, 4000, 5000), (8, 7680, 4320), (64, 8192, 8192)])
@pytest.mark.parametrize("h, w", [(1, 1), (64, 64), (8192, 8192)])  # one cell, 8x-ish, identity (a run a pixel)
def test_upsample_argmax_grid_fits_large_frames(N, H, W, h, w):
    for target in ("gpu", "interpreter"):
        block = ua_kernel.tile_config(target)["BLOCK"]
        _launch.check_grid(ua_kernel.grid(N, runs(h, w, H, W, target), block))


@pytest.mark.parametrize("n", [8 * 1024 * 2048, 2**40])
def test_confusion_matrix_grid_fits(n):
    """Pixel blocks on axis 0, one pass whatever the number of classes: any pixel count."""
    _launch.check_grid(cm_kernel.grid(n))


def test_confusion_matrix_class_limit_keeps_the_pair_index_in_int32():
    assert TRITON_MAX_CLASSES**2 < 2**31 <= (TRITON_MAX_CLASSES + 1) ** 2


@pytest.mark.interpreter  # asks for the Triton kernel on CPU tensors
def test_confusion_matrix_beyond_the_class_limit_is_not_triton():
    p = torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match=f"at most {TRITON_MAX_CLASSES} classes"):
        fastseg.ops.confusion_matrix(p, p, TRITON_MAX_CLASSES + 1, backend="triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("N, Cin, Cout, H, W, groups", [
    (8, 2048, 256, 128, 256, 1),     # DeepLabV3's ASPP input at 1024x2048, batch 8
    (1, 512, 512, 2048, 4096, 1),    # a stride-2 map of an 8K frame
    (1, 1024, 1024, 512, 512, 1024),  # depthwise: groups share axis 1 with the channel blocks
])
def test_conv_grids_fit(dtype, N, Cin, Cout, H, W, groups):
    for target in ("gpu", "interpreter"):
        cfg = conv_kernel.launch_config(dtype, N * H * W, Cin // groups, Cout // groups, target)
        blocks = groups * triton.cdiv(Cout // groups, cfg["BLOCK_N"])
        _launch.check_grid(conv_kernel.grid(N * H * W, blocks, cfg))
        _launch.check_grid(conv_kernel.grid(N * H * W, triton.cdiv(Cout, cfg["BLOCK_N"]), cfg, branches=4))


def test_every_triton_kernel_launches_through_the_helper():
    """No `kernel[grid](...)` in a module that imports triton, outside _launch.py: a direct launch
    would skip the grid check and the device guard."""
    direct = []
    for path in OPS.rglob("*.py"):
        text = path.read_text()
        if path.name == "_launch.py" or "import triton" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):
                direct.append(f"{path.relative_to(OPS)}:{node.lineno}")
    assert not direct, direct


# ---- the tensor's device -----------------------------------------------------------------------

class _Kernel:
    """Stands in for a JIT function: records the device that is current when it is launched."""
    __name__ = "fake_kernel"

    def __init__(self, current):
        self.current, self.ran_on = current, []

    def __getitem__(self, grid):
        return lambda *args, **meta: self.ran_on.append(self.current[0])


def test_cuda_launch_runs_under_the_tensor_device(monkeypatch):
    current = ["cuda:0"]

    @contextlib.contextmanager
    def device_guard(device):
        before, current[0] = current[0], str(device)
        try:
            yield
        finally:
            current[0] = before

    monkeypatch.setattr(torch.cuda, "device", device_guard)
    kernel = _Kernel(current)
    _launch.launch(kernel, (4,), torch.device("cuda", 1))
    _launch.launch(kernel, (4,), torch.device("cpu"))
    assert kernel.ran_on == ["cuda:1", "cuda:0"] and current == ["cuda:0"]
    with pytest.raises(ValueError, match="axis 1"):
        _launch.launch(kernel, (1, 70000), torch.device("cuda", 1))
    assert len(kernel.ran_on) == 2


def test_gpu_tiles_is_scoped():
    cpu = torch.device("cpu")
    assert _launch.tile_target(cpu) == "interpreter" and _launch.tile_target(torch.device("cuda", 0)) == "gpu"
    with _launch.gpu_tiles():
        assert _launch.tile_target(cpu) == "gpu"
    assert _launch.tile_target(cpu) == "interpreter"


# ---- Triton missing or too old -----------------------------------------------------------------

@pytest.fixture
def triton_version(monkeypatch):
    """Pretend the installed triton has another version (or is missing: None)."""
    def set_version(version):
        if version is None:
            monkeypatch.setitem(sys.modules, "triton", None)
        else:
            monkeypatch.setattr(triton, "__version__", version)
        _triton_support.triton_problem.cache_clear()
        monkeypatch.setattr(_triton_support, "_warned", set())
    yield set_version
    _triton_support.triton_problem.cache_clear()


@pytest.mark.parametrize("version, usable", [("3.3.1", False), ("3.4.0", True), ("3.10.0+git1234", True),
                                             ("2.3.0", False), (None, False)])
def test_triton_floor(triton_version, version, usable):
    triton_version(version)
    assert (_triton_support.triton_problem() is None) == usable
    assert _dispatch.triton_available() == usable


@pytest.mark.parametrize("version", ["3.2.0", None])
def test_auto_on_cuda_without_triton_warns_once(triton_version, version):
    triton_version(version)
    op = _dispatch.Op("some_op")
    cuda = torch.device("cuda", 0)
    with pytest.warns(RuntimeWarning, match="some_op: the Triton kernel needs"):
        assert _dispatch.resolve(op, "auto", cuda) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dispatch.resolve(op, "auto", cuda) == "reference"
    with pytest.raises(RuntimeError, match="backend='triton' needs"):
        _dispatch.resolve(op, "triton", cuda)


def test_a_kernel_refusing_its_arguments_is_no_fallback(triton_version):
    triton_version(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dispatch.resolve(_dispatch.Op("op"), "auto", torch.device("cuda", 0),
                                 triton_refuses="not these arguments") == "reference"
        assert _dispatch.resolve(_dispatch.Op("op", triton=False), "auto", torch.device("cuda", 0)) == "reference"


@pytest.mark.skipif(_triton_support.triton_problem() is not None, reason="this triton is below the floor")
def test_auto_on_cuda_with_triton():
    cuda = torch.device("cuda", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dispatch.resolve(_dispatch.Op("some_op"), "auto", cuda) == "triton"


# ---- on a GPU machine the interpreter tests skip instead of failing ------------------------------

def test_interpreter_tests_skip_where_the_interpreter_is_off():
    """What the suite does on a machine with a GPU (TRITON_INTERPRET stays off there): the Triton
    tests on CPU tensors skip with their reason, nothing fails."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           "tests/test_confusion_matrix.py", "-k", "not compiles"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "needs TRITON_INTERPRET=1" in done.stdout and " passed" in done.stdout
