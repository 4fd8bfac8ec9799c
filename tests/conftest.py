"""Fixtures of the command-line tests, found by pytest in every test module of tests/."""
from __future__ import annotations

import pytest

import fastseg

from _cli import small_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """small_model() saved once per test module."""
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    fastseg.models.save(small_model(), path)
    return path
