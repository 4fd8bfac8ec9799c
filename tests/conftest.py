"""Fixtures of the command-line tests, found by pytest in every test module of tests/, and the
markers of the Triton tests (tests/_triton.py says when each kind runs)."""
from __future__ import annotations

import pytest

import fastseg
from fastseg.segmenter import onnx_cache

from _cli import small_model
from _triton import INTERPRETER_OFF, triton_interpreted


def pytest_collection_modifyitems(config, items):
    """Tests of Triton kernels on CPU tensors (marked `interpreter`, or parametrised with
    backend="triton" outside the `gpu` tests) skip, with the reason, where the interpreter is off."""
    skip = pytest.mark.skip(reason=INTERPRETER_OFF)
    for item in items:
        params = getattr(item, "callspec", None)
        if params is not None and params.params.get("backend") == "triton" and "gpu" not in item.keywords:
            item.add_marker(pytest.mark.interpreter)
        if "interpreter" in item.keywords and not triton_interpreted():
            item.add_marker(skip)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """small_model() saved once per test module."""
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    fastseg.models.save(small_model(), path)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh ONNX graph cache folder, and a count of the ONNX exports made."""
    monkeypatch.setenv("FASTSEG_CACHE", str(tmp_path / "cache"))
    exports = []
    export = onnx_cache._export
    monkeypatch.setattr(onnx_cache, "_export", lambda model: exports.append(1) or export(model))
    return tmp_path / "cache", exports
