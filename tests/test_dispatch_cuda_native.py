"""Which backend runs on CUDA tensors: Triton where it is installed, else the CUDA C++ kernels
compiled into fastseg._C (backend "native"), for the ops that have them. Decided without a GPU."""
from __future__ import annotations

import importlib

import pytest
import torch

from fastseg import _native
from fastseg.ops import _dispatch
from fastseg.ops._dispatch import Op, resolve

CUDA = torch.device("cuda")
WITH_CUDA_KERNELS = Op("with_cuda_kernels", native_cuda=True)
CPU_ONLY = Op("cpu_only")


@pytest.fixture
def no_triton(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: False)


@pytest.mark.parametrize("op", ["upsample_argmax", "confusion_matrix"])
def test_ops_with_cuda_kernels_say_so(op):
    assert importlib.import_module(f"fastseg.ops.{op}").OP.native_cuda


def test_auto_runs_the_cuda_kernels_without_triton(no_triton, monkeypatch):
    monkeypatch.setattr(_native, "has_cuda", lambda: True)
    assert resolve(WITH_CUDA_KERNELS, "auto", CUDA) == "native"
    assert resolve(WITH_CUDA_KERNELS, "native", CUDA) == "native"
    assert resolve(WITH_CUDA_KERNELS, "auto", CUDA, native_refuses="not these arguments") != "native"
    assert resolve(CPU_ONLY, "auto", CUDA) != "native"


def test_auto_prefers_triton_where_it_is_installed(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: True)
    monkeypatch.setattr(_native, "has_cuda", lambda: True)
    assert resolve(WITH_CUDA_KERNELS, "auto", CUDA) == "triton"


def test_native_on_cuda_needs_the_cuda_build(no_triton, monkeypatch):
    monkeypatch.setattr(_native, "has_cuda", lambda: False)
    assert resolve(WITH_CUDA_KERNELS, "auto", CUDA) != "native"
    with pytest.raises(RuntimeError, match="built with its CUDA kernels"):
        resolve(WITH_CUDA_KERNELS, "native", CUDA)
    with pytest.raises(ValueError, match="runs on CPU tensors"):
        resolve(CPU_ONLY, "native", CUDA)
