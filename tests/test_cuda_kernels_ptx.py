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


def test_upsample_kernel_is_the_shared_per_pixel_code():
    # every instantiation (3 logit types x 4 label types) calls the shared per-pixel function, which
    # is also what fastseg._C.upsample_argmax_pixelwise runs on the CPU for the tests
    assert "common/upsample_argmax_pixel.h" in included_headers("cuda/upsample_argmax.cu")
    ptx = compile_ptx("cuda/upsample_argmax.cu", 80)
    assert len(re.findall(r"\.entry\s+\S*upsample_argmax_kernel", ptx)) == 12
    body = kernel_body(ptx, "upsample_argmax_kernelIfhE")  # float logits, uint8 labels
    assert "fma.rn.f32" in body  # torch's lerp order: fma(x0, w0, x1 * w1)
