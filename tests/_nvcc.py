"""nvcc without a GPU: compile a csrc/cuda source to PTX for one architecture, and read the PTX.

The CUDA build is checked here by what the compiler emits (the GPU code cannot run on a machine
without a GPU); CI has nvcc, a machine without it skips these tests with the reason.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
# The options of `make cuda-check` and of the CMake CUDA build.
FLAGS = ("-std=c++17", "-O3", "--expt-relaxed-constexpr", f"-I{CSRC}")
ARCHS = (80, 87, 90)  # the Makefile's CUDA_ARCHS (A100, Jetson Orin, H100); a test holds them equal


def nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        pytest.skip("nvcc is not installed here: the CUDA sources cannot be compiled (CI has nvcc)")
    return path


@functools.cache
def compile_ptx(source: str, arch: int) -> str:
    """The PTX of csrc/<source> for sm_<arch> (compiled once per test session)."""
    src = CSRC / source
    out = Path(tempfile.mkdtemp(prefix="fastseg-ptx-")) / f"{Path(source).stem}.sm_{arch}.ptx"
    run = subprocess.run([nvcc(), *FLAGS, f"-arch=sm_{arch}", "-ptx", str(src), "-o", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"nvcc -ptx {source} for sm_{arch} failed:\n{run.stderr}"
    ptx = out.read_text()
    shutil.rmtree(out.parent)
    return ptx


def included_headers(source: str | Path) -> set[str]:
    """The csrc-relative headers a source includes (nvcc -M), e.g. {"common/bilinear.h", ...}."""
    run = subprocess.run([nvcc(), *FLAGS, "-M", str(CSRC / source)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    deps = run.stdout.replace("\\\n", " ").split()
    return {Path(d).resolve().relative_to(CSRC).as_posix() for d in deps
            if Path(d).resolve().is_relative_to(CSRC)}


def kernel_body(ptx: str, name_part: str) -> str:
    """The PTX of the one .entry (kernel) whose mangled name contains name_part."""
    bodies = re.findall(r"\.entry\s+(\S+?)\s*\((.*?)\n}\n", ptx, flags=re.S)
    found = [body for name, body in bodies if name_part in name]
    assert len(found) == 1, f"{len(found)} kernels named like {name_part!r} in the PTX"
    return found[0]
