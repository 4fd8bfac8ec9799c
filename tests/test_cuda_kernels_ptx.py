"""The CUDA C++ kernels of fastseg._C compile for every GPU they ship for, and share their math with
the CPU kernels (which run here). No GPU needed; nvcc is (CI has it)."""
from __future__ import annotations

import re

import pytest
from _nvcc import ARCHS, CSRC, ROOT, compile_ptx, included_headers, kernel_body

CU_FILES = sorted(p.relative_to(CSRC).as_posix() for p in (CSRC / "cuda").glob("*.cu"))


def test_the_cuda_kernels_exist():
    assert {"cuda/densecrf.cu", "cuda/upsample_argmax.cu", "cuda/confusion_matrix.cu"} <= set(CU_FILES)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", CU_FILES)
def test_compiles_to_ptx(source, arch):
    ptx = compile_ptx(source, arch)
    assert f".target sm_{arch}" in ptx
    assert ".entry" in ptx


def test_architectures_agree_everywhere():
    """sm_87 (Jetson Orin) ships beside sm_80 / sm_90 in make cuda-check, CMake and setup.py alike."""
    make = re.search(r"^CUDA_ARCHS \?= (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    cmake = re.search(r'set\(FASTSEG_CUDA_ARCHS "([0-9;]+)"', (ROOT / "CMakeLists.txt").read_text()).group(1)
    setup = re.search(r"'FASTSEG_CUDA_ARCHS', '([0-9;]+)'", (ROOT / "setup.py").read_text()).group(1)
    want = [str(a) for a in ARCHS]
    assert make == want and cmake.split(";") == want and setup.split(";") == want


def _cpu_includes(source: str) -> set[str]:
    return set(re.findall(r'^#include "([^"]+)"', (CSRC / source).read_text(), re.M))


@pytest.mark.parametrize("cuda_source, cpu_source, shared", [
    ("cuda/upsample_argmax.cu", "cpu/upsample_argmax.cpp", "common/bilinear.h"),
    ("cuda/confusion_matrix.cu", "cpu/confusion_matrix.cpp", "common/confusion_layout.h"),
])
def test_cuda_and_cpu_kernels_share_their_math(cuda_source, cpu_source, shared):
    assert shared in included_headers(cuda_source)
    assert shared in _cpu_includes(cpu_source)


def test_upsample_kernel_is_the_shared_per_thread_code():
    # every instantiation (3 logit types x 4 run shapes x with / without confidence) calls the shared
    # per-run function, which is also what fastseg._C.upsample_argmax_threadwise runs on the CPU
    assert "common/upsample_argmax_run.h" in included_headers("cuda/upsample_argmax.cu")
    ptx = compile_ptx("cuda/upsample_argmax.cu", 80)
    assert len(re.findall(r"\.entry\s+\S*upsample_argmax_kernel", ptx)) == 24
    half = kernel_body(ptx, "upsample_argmax_kernelINS_8HalfBitsELi8ELi4ELb0E")  # 8 x 4 runs, labels only
    assert "cvt.f32.f16" in half  # the hardware conversion, not the CPU's bit manipulation
    body = kernel_body(ptx, "upsample_argmax_kernelIfLi8ELi4ELb0E")  # float logits
    assert "fma.rn.f32" in body  # torch's lerp order: fma(x0, w0, x1 * w1)
