"""Fixtures of the command-line tests, found by pytest in every test module of tests/."""
from __future__ import annotations

import pytest

import fastseg
from fastseg.segmenter import onnx_cache

from _cli import small_model


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
